"""Trainers of the models that need a training loop or a stage of their own, named in ``registry.TRAINERS``.

- :class:`MetaTrainer` (MCLRec): encoder and learnable augmenters updated in phases by two optimisers;
- :class:`SRMATrainer`: before the main training, the pre-training of SRMA's complement encoder (or its cache);
- :class:`BT4SRecTrainer`: before the main training, the optional Barlow-Twins-only pre-training stage.

Each builds on :class:`recbole_srma.trainer.Trainer` (safe checkpoints, exact resume) and leaves RecBole's ``fit``
and ``_train_epoch`` to do the training; models only provide the losses and say which state a stage has produced
(buffers, so checkpoints record it and a resumed run does not repeat a stage).
"""

import copy
import hashlib
import json
import os
import time

import torch
from recbole.utils import set_color

from recbole_srma.errors import CheckpointError, ConfigError
from recbole_srma.model.encoder import SASRecBackbone
from recbole_srma.model.mclrec import META_SCHEDULES
from recbole_srma.model.recommender import OBJECTIVE_KEYS
from recbole_srma.model.srma import ComplementPretrainer
from recbole_srma.trainer import (
    Trainer,
    atomic_torch_save,
    is_main_process,
    load_model_state,
    wait_for_all_processes,
)


class PhaseOptimizer:
    """Several optimisers behind the one ``optimizer`` that RecBole's training loop zeroes and steps.

    ``phase`` names the optimiser that ``step`` runs. ``zero_grad`` clears the gradients of all of them, so no phase
    ever steps with another phase's gradients. ``param_groups`` are the current phase's (what AMP's GradScaler
    unscales). The state dict holds every optimiser's state by name, so a checkpoint restores each of them.
    """

    def __init__(self, optimizers):
        self.optimizers = dict(optimizers)
        self.phase = next(iter(self.optimizers))

    @property
    def param_groups(self):
        return self.optimizers[self.phase].param_groups

    def zero_grad(self, set_to_none=True):
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        return self.optimizers[self.phase].step(closure)

    def state_dict(self):
        return {"phases": {name: opt.state_dict() for name, opt in self.optimizers.items()}}

    def load_state_dict(self, state):
        phases = state.get("phases") if isinstance(state, dict) else None
        if not isinstance(phases, dict) or set(phases) != set(self.optimizers):
            found = sorted(phases) if isinstance(phases, dict) else "one optimiser"
            raise ValueError(f"expected optimisers {sorted(self.optimizers)}, the checkpoint holds {found}")
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(phases[name])


class _PhaseSteps:
    """A training loader that hands out every batch once per phase of ``trainer.schedule``, switching the trainer's
    optimiser to that phase first and forgetting the previous batch's views."""

    def __init__(self, loader, trainer):
        self.loader, self.trainer = loader, trainer

    def __len__(self):
        return len(self.loader) * len(self.trainer.schedule)

    def __iter__(self):
        for interaction in self.loader:
            self.trainer._views = None
            for phase in self.trainer.schedule:
                self.trainer.optimizer.phase = phase
                yield interaction

    def __getattr__(self, name):  # shuffle, sampler, ... (RecBole's distributed set-up reads them)
        return getattr(self.loader, name)


class MetaTrainer(Trainer):
    """MCLRec's trainer: the encoder and the learnable augmenters updated in phases by two optimisers.

    ``meta_schedule`` gives the phases run on every batch (``mclrec.META_SCHEDULES``): ``alternate`` (encoder,
    augmenter), ``encoder_augmenter_encoder`` or ``joint`` (no phases: one optimiser over every parameter, RecBole's
    plain loop on ``calculate_loss``). The encoder optimiser has ``learning_rate``, the augmenter optimiser
    ``augmenter_learning_rate`` (``~``: the same), both RecBole's ``learner``.

    RecBole's ``fit`` and ``_train_epoch`` run unchanged: ``_train_epoch`` gets a view of the training data that yields
    each batch once per phase (so the progress bar counts optimiser steps), a loss function that computes the current
    phase's objective, and ``self.optimizer`` is a :class:`PhaseOptimizer` whose ``step`` runs the current phase's
    optimiser. AMP, gradient clipping, DDP's gradient sync, logging, early stopping and checkpoints work as for every
    model. Each step returns the encoder terms followed by the augmenter terms (zeros for the phase not running), so
    RecBole logs ``train_loss1 ..`` as the sums of each term over the epoch; the names are logged when training starts.

    The model provides ``encoder_parameters()``, ``augmenter_parameters()``, ``draw_views(interaction)`` (once per
    batch; every phase of the batch sees the same views), ``encoder_loss(interaction, views)`` and
    ``augmenter_loss(interaction, views)`` returning the terms named by ``LOSS_TERMS`` and ``AUGMENTER_LOSS_TERMS``.
    """

    def __init__(self, config, model):
        self.schedule = META_SCHEDULES[config["meta_schedule"]]  # read by _build_optimizer, run from Trainer.__init__
        self._views = None
        super().__init__(config, model)

    def _build_optimizer(self, **kwargs):
        if kwargs or self.schedule is None:
            return super()._build_optimizer(**kwargs)
        model = self._plain_model
        augmenter_lr = self.config["augmenter_learning_rate"] or self.config["learning_rate"]
        return PhaseOptimizer(
            {
                "encoder": super()._build_optimizer(params=model.encoder_parameters()),
                "augmenter": super()._build_optimizer(params=model.augmenter_parameters(), learning_rate=augmenter_lr),
            }
        )

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        if verbose:
            model = self._plain_model
            names = list(model.LOSS_TERMS)
            if self.schedule:
                names += [f"augmenter {name}" for name in model.AUGMENTER_LOSS_TERMS]
            steps = " -> ".join(self.schedule) if self.schedule else "joint (one optimiser)"
            self.logger.info(
                set_color(f"{self.config['model']} meta-training", "blue")
                + f": per batch {steps}; "
                + ", ".join(f"train_loss{i} = {name}" for i, name in enumerate(names, 1))
            )
        return super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if self.schedule is None or loss_func is not None:
            return super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        return super()._train_epoch(
            _PhaseSteps(train_data, self), epoch_idx, loss_func=self._phase_loss, show_progress=show_progress
        )

    def _phase_loss(self, interaction):
        model = self._plain_model
        if self._views is None:
            self._views = model.draw_views(interaction)
        zero = torch.zeros((), device=interaction[model.ITEM_SEQ].device)
        if self.optimizer.phase == "encoder":
            terms = model.encoder_loss(interaction, self._views)
            return tuple(terms) + (zero,) * len(model.AUGMENTER_LOSS_TERMS)
        terms = model.augmenter_loss(interaction, self._views)
        return (zero,) * len(model.LOSS_TERMS) + tuple(terms)


COMPLEMENT_FORMAT = "recbole_srma/srma_complement/1"


class SRMATrainer(Trainer):
    """SRMA's trainer: its complement encoder is pre-trained on next-item prediction over the same training split
    (or loaded from ``complement_checkpoint``, or from the cache of an earlier run with the same data and settings),
    then frozen, before the main training starts."""

    def run_stages(self, train_data, valid_data=None, show_progress=False):
        self.prepare_complement(train_data, valid_data, show_progress)

    def prepare_complement(self, train_data, valid_data, show_progress=False):
        """Give the model's complement encoder pre-trained weights, once (a resumed run's checkpoint has them)."""
        model = self._plain_model
        if model.complement is None or bool(model.complement_ready):
            return
        config = self.config
        if config["complement_checkpoint"]:
            self.load_complement(config["complement_checkpoint"])
            return
        key, path = self.complement_cache_key(train_data)
        if os.path.isfile(path):
            self.logger.info(set_color("SRMA complement encoder from cache", "blue") + f": {path}")
            self.load_complement(path)
            return
        self.logger.info(
            set_color("Pre-training SRMA's complement encoder", "blue")
            + f" ({model.complement_type}, up to {config['complement_epochs']} epochs)"
        )
        sub_config = copy.copy(config)
        sub_config.final_config_dict = dict(
            config.final_config_dict, model="SRMAComplement", epochs=config["complement_epochs"]
        )
        encoder = copy.deepcopy(model.complement).requires_grad_(True)
        pretrainer = ComplementPretrainer(sub_config, train_data._dataset, encoder).to(model.complement_ready.device)
        sub_trainer = Trainer(sub_config, pretrainer)
        sub_trainer.tensorboard.close()  # RecBole opened it on the main run's folder: the stage gets its own
        sub_trainer.tensorboard = self.stage_writer("complement_pretraining")
        try:
            sub_trainer.fit(train_data, valid_data, saved=True, show_progress=show_progress)
        finally:
            sub_trainer.tensorboard.close()
        sub_trainer._load_checkpoint_for_model(sub_trainer.saved_model_file)
        wait_for_all_processes(config)  # every process has read the sub-trainer's checkpoint before it goes
        if is_main_process(config):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_torch_save({"format": COMPLEMENT_FORMAT, "key": key, "state_dict": encoder.state_dict()}, path)
            os.remove(sub_trainer.saved_model_file)
        wait_for_all_processes(config)
        self.load_complement(path)

    def complement_cache_key(self, train_data):
        """Everything the pre-trained complement depends on: dataset, its training data, encoder and training set-up;
        returns ``(key, cache file)``."""
        model, config = self._plain_model, self.config
        dataset = train_data._dataset
        digest = hashlib.sha256()
        for field in (model.ITEM_SEQ, model.ITEM_SEQ_LEN, model.POS_ITEM_ID):
            digest.update(dataset.inter_feat[field].numpy().tobytes())
        key = {
            "dataset": config["dataset"],
            "train_data_sha256": digest.hexdigest(),
            "n_items": model.n_items,
            "complement_type": model.complement_type,
            "complement_epochs": config["complement_epochs"],
            "seed": config["seed"],
            "MAX_ITEM_LIST_LENGTH": config["MAX_ITEM_LIST_LENGTH"],
            "learning_rate": config["learning_rate"],
            "train_batch_size": config["train_batch_size"],
            **{
                k: config[k]
                for k in SASRecBackbone.CONFIG_KEYS
                if config[k] != SASRecBackbone.ADDED_KEY_DEFAULTS.get(k, object())
            },
        }
        # keys added by issue 49 count only when they are not the defaults, so caches written before them still match
        if (config["train_objective"], config["next_item_loss"]) != ("prefixes", "full_softmax"):
            key.update({k: config[k] for k in OBJECTIVE_KEYS})
        name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        file_name = f"{config['dataset']}-{model.complement_type}-{name}.pth"
        return key, os.path.join(config["checkpoint_dir"], "srma_complement", file_name)

    def load_complement(self, path):
        """Load pre-trained complement weights (a file :meth:`prepare_complement` wrote; ``weights_only=True``)."""
        model = self._plain_model
        if model.complement is None:
            raise ConfigError("complement_checkpoint is set but complement_type is 'none'")
        if not os.path.isfile(path):
            raise CheckpointError(f"complement_checkpoint {path} does not exist")
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise CheckpointError(f"complement_checkpoint {path} is not a readable checkpoint: {err}") from None
        if not isinstance(saved, dict) or saved.get("format") != COMPLEMENT_FORMAT:
            raise CheckpointError(f"{path} is not an SRMA complement encoder file (format {COMPLEMENT_FORMAT})")
        if saved["key"]["complement_type"] != model.complement_type:
            raise CheckpointError(
                f"{path} holds a '{saved['key']['complement_type']}' complement encoder, but complement_type is "
                f"'{model.complement_type}'"
            )
        device = model.complement_ready.device
        load_model_state(model.complement, {k: v.to(device) for k, v in saved["state_dict"].items()}, path)
        model.complement_ready.fill_(True)


class BT4SRecTrainer(Trainer):
    """BT4SRec's trainer: with ``pretrain_epochs > 0``, that many epochs on the Barlow Twins loss alone before the
    main training, once per model (the model's ``pretrained`` buffer records it, so a resumed run skips it).

    The stage runs RecBole's own training epoch with the model's ``pretrain_loss`` as the loss function, so progress
    bars, AMP and distributed gradient sync are RecBole's; with a separate optimiser of the same kind, so the main
    training starts from a fresh optimiser state.
    """

    def run_stages(self, train_data, valid_data=None, show_progress=False):
        self.pretrain(train_data, show_progress)

    def pretrain(self, train_data, show_progress=False):
        model = self._plain_model
        if model.pretrain_epochs == 0 or bool(model.pretrained):
            return
        self.logger.info(
            set_color("BT4SRec pre-training", "blue")
            + f": {model.pretrain_epochs} epochs on the Barlow Twins loss alone ({model.bt_positive} positives)"
        )
        main_optimizer, self.optimizer = self.optimizer, self._build_optimizer()
        writer = self.stage_writer("pretraining")
        try:
            for epoch in range(model.pretrain_epochs):
                start = time.time()
                loss = self._train_epoch(train_data, epoch, loss_func=model.pretrain_loss, show_progress=show_progress)
                writer.add_scalar("Loss/Train", loss, epoch)
                self.logger.info(
                    f"pre-training epoch {epoch} [time: {time.time() - start:.2f}s, Barlow Twins loss: {loss:.4f}]"
                )
        finally:
            self.optimizer = main_optimizer
            writer.close()
        model.pretrained.fill_(True)
        self.logger.info(set_color("BT4SRec pre-training done", "blue") + "; training with the next-item loss")
