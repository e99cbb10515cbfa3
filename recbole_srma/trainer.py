"""The plugin's trainer: RecBole's Trainer with safe checkpoints, exact resume, a run status file and more logging.

RecBole's ``fit`` and ``_train_epoch`` run unchanged, so AMP, DDP, progress bars, logging and early stopping behave as
in RecBole. :class:`SafeCheckpointMixin` (mixed into every trainer, RecBole's special ones too) overrides:

- the checkpoint hooks (``_save_checkpoint``, ``resume_checkpoint``, the best-model reload in ``evaluate``): the
  format below, and an error that says what does not match when a checkpoint is loaded into another model;
- ``fit`` and ``_train_epoch``: the ``-last.pth`` file of the latest finished epoch, with every RNG state, so a
  killed run resumed from it draws the same batches and views as a run never stopped; the status file;
- ``_valid_epoch``: every validation metric in TensorBoard (RecBole writes only the valid score);
- ``stage_writer`` and ``log_test_result``: TensorBoard folders for pre-training stages, and the test metrics.

Checkpoint format (``format: "recbole_srma/1"``): a dict of tensors, numbers, strings and the run's hyper-parameters as
a plain dict, loadable with ``torch.load(..., weights_only=True)``. It is written to a temporary file in the same
folder and renamed, so a crash while saving leaves the previous checkpoint intact. Each run gets its own file name
(model, dataset, microsecond time stamp, process id): RecBole's one-second names let two runs overwrite each other.

Two files per run: ``<name>.pth`` holds the best model so far (RecBole's checkpoint, reloaded for the test), and
``<name>-last.pth`` the state after the latest finished epoch (model, optimiser, epoch, early-stopping counters, the
best file's name and the RNG states), rewritten at the start of every epoch and removed when training ends. After a
crash or a kill ``--resume=<name>-last.pth`` continues with the next epoch; ``--resume=<name>.pth`` continues from
the best epoch. With ``status_file`` set, the trainer also rewrites that JSON file after every epoch (where the best
and last checkpoints are, epochs done, finished or not), for a supervisor such as ``bench/run_models.py``.
"""

import json
import os
import random
from datetime import datetime

import numpy as np
import torch
from recbole.trainer import Trainer as RecBoleTrainer
from recbole.utils import set_color

from recbole_srma.compat import checkpoint_config, load_checkpoint
from recbole_srma.errors import CheckpointError, ConfigError
from recbole_srma.fileio import STATUS_FORMAT, atomic_open, read_status  # noqa: F401  (read_status: API)

CHECKPOINT_FORMAT = "recbole_srma/1"


def unique_checkpoint_path(checkpoint_dir, model_name, dataset_name):
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return os.path.join(checkpoint_dir, f"{model_name}-{dataset_name}-{stamp}-{os.getpid()}.pth")


def _plain_metrics(result):
    """A metrics dict as plain floats (loadable with ``weights_only=True``), or None."""
    return None if result is None else {str(k): float(v) for k, v in result.items()}


def _is_plain(value):
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, (str, int)) and _is_plain(v) for k, v in value.items())
    return False


def storable_other_parameter(model):
    """The entries of RecBole's ``other_parameter()`` that load with ``weights_only=True``: tensors and plain data.

    Left out: modules (DIN's ``embedding_layer``: a submodule, already in the state dict) and numpy / scipy objects
    (EASE's, ItemKNN's matrices: rebuilt from the data when the model is built, and kept as they are when a run
    reloads its own best model, since ``load_other_parameter`` only sets the entries it is given).
    """
    other = model.other_parameter()
    if not isinstance(other, dict):
        return None
    return {k: v for k, v in other.items() if isinstance(k, str) and _is_plain(v)}


def rng_state(train_data=None):
    """Every random-number state a training epoch draws from, as tensors and lists (``weights_only``-loadable):
    torch's (CPU and each CUDA device), numpy's and Python's global generators, and the training loader's shuffling
    generator (RecBole seeds one per loader)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    generator = getattr(train_data, "generator", None)
    if isinstance(generator, torch.Generator):
        state["train_loader"] = generator.get_state()
    return state


def set_rng_state(state, train_data=None):
    """Restore what :func:`rng_state` recorded (a CUDA state only where this process has the same devices)."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator = getattr(train_data, "generator", None)
    if "train_loader" in state and isinstance(generator, torch.Generator):
        generator.set_state(state["train_loader"])


def atomic_torch_save(obj, path):
    with atomic_open(path, suffix=".tmp") as f:
        torch.save(obj, f)


def is_main_process(config):
    """True in a single-process run and in rank 0 of a distributed one (the process that writes files)."""
    return config["single_spec"] or config["local_rank"] == 0


def wait_for_all_processes(config):
    """A barrier in a distributed run (e.g. after rank 0 wrote a file the others read); nothing otherwise."""
    if not config["single_spec"]:
        torch.distributed.barrier()


def load_model_state(model, state_dict, source):
    """``model.load_state_dict`` with an error that says what does not match and why it usually happens."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing in checkpoint: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"not in model: {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append("shape mismatch: " + "; ".join(shapes[:5]))
        raise CheckpointError(
            f"checkpoint {source} does not match {type(model).__name__}: " + " | ".join(parts) + ". It was written "
            "for another model, dataset or hyper-parameters (hidden_size, n_layers, ...); load it with the "
            "settings it was trained with (load_data_and_model does this from the checkpoint's own config)."
        )
    model.load_state_dict(state_dict)


def mask_history(scores, users, history):
    """Set ``scores[row, item] = -inf`` for every item in the history of the row's user (``exclude_history_items``);
    ``history`` is ``(indptr, items)`` over user ids (:func:`recbole_srma.quick_start.attach_histories`)."""
    indptr, items = history
    users = users.cpu()
    starts, counts = indptr[users], indptr[users + 1] - indptr[users]
    rows = torch.repeat_interleave(torch.arange(len(users)), counts)
    offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    columns = items[torch.repeat_interleave(starts, counts) + offsets]
    scores[rows.to(scores.device), columns.to(scores.device)] = -np.inf
    return scores


class SafeCheckpointMixin:
    """Checkpoint hooks for any RecBole trainer class (see the module docstring)."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.saved_model_file = unique_checkpoint_path(self.checkpoint_dir, config["model"], config["dataset"])
        if not config["single_spec"]:
            # every process reloads the best model that rank 0 writes: they must agree on its name
            name = [self.saved_model_file]
            torch.distributed.broadcast_object_list(name, src=0)
            self.saved_model_file = name[0]

    def _build_optimizer(self, **kwargs):
        optimizer = super()._build_optimizer(**kwargs)
        beta2 = self.config["adam_beta2"]
        if beta2 is not None:  # RecBole's learners take no betas; Adam-type optimisers read them from each group
            for group in optimizer.param_groups:
                if "betas" in group:
                    group["betas"] = (group["betas"][0], beta2)
        return optimizer

    def _checkpoint_state(self, epoch, best_valid_result=None):
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.config["model"],
            "dataset": self.config["dataset"],
            "config": checkpoint_config(self.config),
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": float(self.best_valid_score),
            # a resumed run whose best epoch came before the stop must still report that epoch's metrics
            "best_valid_result": _plain_metrics(best_valid_result or self.best_valid_result),
            "state_dict": self.model.state_dict(),
            "other_parameter": storable_other_parameter(self.model),
            "optimizer": self.optimizer.state_dict(),
        }

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if is_main_process(self.config):
            saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
            # RecBole saves the best model before it records that epoch's result as the best one
            latest = getattr(self, "_latest_valid_result", None)
            atomic_torch_save(self._checkpoint_state(epoch, latest), saved_model_file)
            if verbose:
                self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")
        # every process gets here at the same step (the decision rests on the reduced valid score); the others must
        # not reload the best model before rank 0 has written it
        wait_for_all_processes(self.config)

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self._write_last_checkpoint = saved
        try:
            result = super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)
        finally:
            self._write_last_checkpoint = False
        if saved and is_main_process(self.config):
            if os.path.exists(self.last_checkpoint_file):
                os.remove(self.last_checkpoint_file)  # the run finished: the best checkpoint is what remains
            self._write_status(epochs_done=len(self.train_loss_dict), finished=True)
        return result

    @property
    def last_checkpoint_file(self):
        """Where the state after the latest finished epoch is kept while training runs (for ``--resume``)."""
        root = self.saved_model_file[:-4] if self.saved_model_file.endswith(".pth") else self.saved_model_file
        return root + "-last.pth"

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        # Epoch epoch_idx - 1 is complete here (trained, evaluated, best model saved, early-stopping counters
        # updated): its state is what a resumed run continues from.
        resumed_rng = getattr(self, "_resumed_rng", None)
        if resumed_rng is not None:
            # the state the interrupted run had at this point, so the resumed run draws the same batches and views
            own = resumed_rng[self.config["local_rank"]] if len(resumed_rng) > 1 else resumed_rng[0]
            set_rng_state(own, train_data)
            self._resumed_rng = None
        if getattr(self, "_write_last_checkpoint", False) and epoch_idx > self.start_epoch:
            states = [rng_state(train_data)]
            if not self.config["single_spec"]:  # each process draws its own views: keep every rank's state
                states = [None] * torch.distributed.get_world_size()
                torch.distributed.all_gather_object(states, rng_state(train_data))
            if is_main_process(self.config):
                state = dict(
                    self._checkpoint_state(epoch_idx - 1),
                    kind="last",
                    best_model_file=self.saved_model_file,
                    rng=states,
                )
                atomic_torch_save(state, self.last_checkpoint_file)
                self._write_status(epochs_done=epoch_idx, finished=False)
        self._epoch_in_progress = epoch_idx
        return super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)

    def _write_status(self, epochs_done, finished):
        """The run's state for a supervisor (bench/run_models.py) that must know where to resume without reading
        the log: written to ``status_file`` when that key is set, after every finished epoch and at the end."""
        path = self.config["status_file"]
        if not path or not is_main_process(self.config):
            return
        status = {
            "format": STATUS_FORMAT,
            "model": self.config["model"],
            "dataset": self.config["dataset"],
            "best_model_file": os.path.abspath(self.saved_model_file),
            "last_checkpoint_file": None if finished else os.path.abspath(self.last_checkpoint_file),
            "epochs_done": epochs_done,
            "finished": finished,
        }
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with atomic_open(path, suffix=".tmp") as f:
            f.write(json.dumps(status, indent=1).encode())

    def _valid_epoch(self, valid_data, show_progress=False):
        # RecBole's TensorBoard log has each loss term (Loss/Train0, 1, ...) but only the valid score; add every metric
        valid_score, valid_result = super()._valid_epoch(valid_data, show_progress)
        self._latest_valid_result = valid_result
        if is_main_process(self.config):
            for metric, value in valid_result.items():
                self.tensorboard.add_scalar(f"Valid/{metric}", float(value), getattr(self, "_epoch_in_progress", 0))
        return valid_score, valid_result

    def stage_writer(self, stage):
        """A TensorBoard writer for a stage run before the main training (SRMA's complement pre-training, BT4SRec's
        pre-training): a run folder of its own inside this run's (``<run>/<stage>``), so its curves and the main
        training's never share a tag and a step."""
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(os.path.join(self.tensorboard.log_dir, stage))

    def log_test_result(self, test_result, step):
        """The test metrics in TensorBoard (``Test/<metric>`` at ``step``, the best epoch)."""
        if test_result and is_main_process(self.config):
            for metric, value in test_result.items():
                self.tensorboard.add_scalar(f"Test/{metric}", float(value), step)
            self.tensorboard.flush()

    def _load_checkpoint_for_model(self, path):
        checkpoint = load_checkpoint(path, map_location=self.device)
        if checkpoint.get("model", "").lower() != str(self.config["model"]).lower():
            raise CheckpointError(
                f"checkpoint {path} holds a {checkpoint.get('model')} model, not {self.config['model']}"
            )
        load_model_state(self.model, checkpoint["state_dict"], path)
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        return checkpoint

    def resume_checkpoint(self, resume_file):
        resume_file = str(resume_file)
        checkpoint = self._load_checkpoint_for_model(resume_file)
        # a "last" checkpoint continues the run that wrote it, whose best model stays in its own file
        last = checkpoint.get("kind") == "last"
        self.saved_model_file = checkpoint.get("best_model_file", resume_file) if last else resume_file
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.best_valid_result = checkpoint.get("best_valid_result")  # absent from checkpoints of older versions
        # set when the next epoch starts (RecBole's fit draws nothing before): absent from best-model checkpoints
        # and from those of older versions, which resume with the seed's state instead
        self._resumed_rng = checkpoint.get("rng") if last else None
        try:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        except (KeyError, ValueError, TypeError) as err:
            raise CheckpointError(
                f"the optimiser state in {resume_file} does not match this run's optimiser(s) ({err}); the checkpoint "
                "was written with other training settings (learner, or MCLRec's meta_schedule): resume with those"
            ) from None
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    def _full_sort_batch_eval(self, batched_data):
        interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(batched_data)
        if self.config["exclude_history_items"]:
            # every earlier item of the user (quick_start.attach_histories) is out of the ranking
            history = getattr(self, "_eval_history", None)
            if history is None:
                raise ConfigError(
                    "exclude_history_items: this evaluation loader carries no user histories; build the loaders "
                    "with recbole_srma.quick_start.split_loaders"
                )
            mask_history(scores, interaction[self.config["USER_ID_FIELD"]], history)
        return interaction, scores, positive_u, positive_i

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not eval_data:
            return None
        self._eval_history = getattr(eval_data._dataset, "history_items", None)
        if load_best_model:
            checkpoint_file = model_file or self.saved_model_file
            self._load_checkpoint_for_model(checkpoint_file)
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)


class Trainer(SafeCheckpointMixin, RecBoleTrainer):
    """RecBole's Trainer with safe checkpoints; the trainer of every plugin model without its own.

    A model that needs a training loop of its own, or stages before its training, gets a subclass in
    :mod:`recbole_srma.model_trainers`, named in ``registry.TRAINERS``; a stage goes in ``run_stages``, which ``fit``
    runs first. A model that refreshes some state of its own at the start of every epoch (CoSeRec's item
    similarity) defines ``on_train_epoch_start(epoch_idx)``.
    """

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self.run_stages(train_data, valid_data, show_progress)
        return super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)

    def run_stages(self, train_data, valid_data=None, show_progress=False):
        """The stages that come before the main training, once per model (none here)."""

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        hook = getattr(self._plain_model, "on_train_epoch_start", None)
        if hook is not None:
            hook(epoch_idx)
        return super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)

    @property
    def _plain_model(self):
        return getattr(self.model, "module", self.model)  # unwrapped from DistributedDataParallel


_wrapped = {}


def with_safe_checkpoints(trainer_class):
    """A subclass of one of RecBole's special trainers (e.g. for S3Rec) that writes plugin checkpoints."""
    if issubclass(trainer_class, SafeCheckpointMixin):
        return trainer_class
    if trainer_class not in _wrapped:
        _wrapped[trainer_class] = type(trainer_class.__name__, (SafeCheckpointMixin, trainer_class), {})
    return _wrapped[trainer_class]
