"""MCLRec: Qin et al., "Meta-optimized Contrastive Learning for Sequential Recommendation", SIGIR 2023
(arXiv:2304.07763).

Two data-augmented views of every training sequence (CL4SRec's operators, two distinct ones per sequence, with the
official rates: crop keeps 0.5, mask 0.5, reorder 0.8) are encoded into ``h1``, ``h2`` (the last real position's
hidden state). Two learnable augmenters ``g1``, ``g2`` (MLPs, :class:`~recbole_srma.model.layers.LearnableAugmenter`)
make two model-augmented views ``g1(h1)``, ``g2(h2)``. With ``sim`` and ``tau`` from the config in every term::

    L_cl1 = InfoNCE(h1, h2)
    L_cl2 = InfoNCE(h1, g2(h2)) + InfoNCE(h2, g1(h1)) + InfoNCE(g1(h1), g2(h2))
    R     = R(h1, g2(h2)) + R(h2, g1(h1)) + R(g1(h1), g2(h2))        (losses.margin_regulariser)

    encoder phase, augmenters frozen:   L_rec + cl_lambda * L_cl1 + cl2_beta * (L_cl2 + reg_gamma * R)
    augmenter phase, encoder frozen:    L_cl2 + reg_gamma * R

:class:`~recbole_srma.model_trainers.MetaTrainer` runs the phases with two optimisers (the augmenters' learning rate is
``augmenter_learning_rate``, the paper's l'), in the order ``meta_schedule`` names for every batch: ``alternate``
(the paper: encoder, then augmenters), ``encoder_augmenter_encoder`` (the official code's three steps; formerly
``official``), or ``joint``
(the paper's MCLRec-J: one optimiser over everything on the encoder-phase objective). The two views of a batch are
drawn once and shared by its phases, as in the official code (its data loader draws them); the encoder runs again
in every phase, with new dropout masks. ``calculate_loss`` is the encoder-phase objective, returned as the terms
``LOSS_TERMS``.

With ``train_objective: every_position`` (CL4SRec's docstring) ``L_rec`` covers every position of the user's whole
training sequence and ``h1``, ``h2`` are views of that sequence; the meta-learning terms are unchanged.

The paper's ablations are one config each (``properties/ablation/MCLRec-*.yaml``, docs/models.md): w/o L_cl1
(``cl_lambda: 0``), w/o L_cl2 (``use_cl2: False``), w/o R (``reg_gamma: 0``), one shared augmenter
(``shared_augmenter: True``), MCLRec-J (``meta_schedule: joint``).

Deviations:
- From the paper: the next-item loss is a full softmax over all items (the package's protocol; the paper's too).
- From the official code (QinHsiu/MCLRec):
  - ``tau`` and ``sim`` apply everywhere; the code hard-codes temperature 1 and the dot product in L_cl2, and the
    dot product in R, whatever the config says (the defaults, 1 and dot, give the same numbers);
  - the augmenters' widths follow ``hidden_size`` (``augmenter_ratios``); the code hard-codes 64-32-16-64 and cannot
    run at another hidden size;
  - the augmenters belong to the model, so checkpoints hold them (and both optimisers); the code keeps them in its
    trainer and saves neither, so its checkpoints cannot resume meta-training;
  - the augmenter phase encodes the views without gradient and leaves out L_rec and L_cl1, which do not depend on
    the augmenters (the code backpropagates them into the encoder and discards those gradients): the same update
    for less work. In the encoder phase "frozen" means not stepped (the code switches ``requires_grad`` off): the same
    update, and it keeps every parameter in the graph for RecBole's distributed gradient sync;
  - the default schedule is the paper's alternation; the code's three steps per batch are ``meta_schedule:
    encoder_augmenter_encoder``. ``reg_gamma`` is the code's constant factor 0.1 on R, made a setting.
"""

import torch
import torch.nn as nn

from recbole_srma import hparams
from recbole_srma.errors import ConfigError
from recbole_srma.model.cl4srec import CL4SRec
from recbole_srma.model.layers import LearnableAugmenter
from recbole_srma.model.losses import info_nce, margin_regulariser

# meta_schedule -> the phases run on every batch (MetaTrainer steps one optimiser per phase); None: one joint step
META_SCHEDULES = {
    "alternate": ("encoder", "augmenter"),
    "encoder_augmenter_encoder": ("encoder", "augmenter", "encoder"),
    "joint": None,
}


class MCLRec(CL4SRec):
    HPARAMS = {
        **CL4SRec.HPARAMS,
        "cl2_beta": hparams.non_negative,
        "reg_gamma": hparams.non_negative,
        "use_cl2": hparams.boolean,
        "shared_augmenter": hparams.boolean,
        "augmenter_ratios": hparams.list_of(hparams.positive),
        "augmenter_learning_rate": hparams.optional(hparams.positive),
        "meta_schedule": hparams.one_of(*META_SCHEDULES),
    }

    # What calculate_loss / encoder_loss and augmenter_loss return, in order (the trainer logs them by these names).
    LOSS_TERMS = ("rec", "cl_lambda*L_cl1", "cl2_beta*L_cl2", "cl2_beta*reg_gamma*R")
    AUGMENTER_LOSS_TERMS = ("L_cl2", "reg_gamma*R")

    @classmethod
    def check_config(cls, config):
        super().check_config(config)
        if not config["use_cl2"] and config["reg_gamma"] == 0:
            raise ConfigError(
                "MCLRec: use_cl2 False with reg_gamma 0 leaves the learnable augmenters out of every loss; that is "
                "CL4SRec with MCLRec's augmentation rates (run --model=CL4SRec), or keep one of the two terms"
            )

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.cl2_beta = config["cl2_beta"]
        self.reg_gamma = config["reg_gamma"]
        self.use_cl2 = config["use_cl2"]
        n_augmenters = 1 if config["shared_augmenter"] else 2
        self.learnable_augmenters = nn.ModuleList(
            LearnableAugmenter(config["hidden_size"], config["augmenter_ratios"]) for _ in range(n_augmenters)
        )

    # --- what the meta-trainer needs -----------------------------------------------------------------------------

    def augmenter_parameters(self):
        return list(self.learnable_augmenters.parameters())

    def encoder_parameters(self):
        """Every parameter but the augmenters' (the backbone; the encoder phase's optimiser)."""
        augmenter = {id(p) for p in self.learnable_augmenters.parameters()}
        return [p for p in self.parameters() if id(p) not in augmenter]

    def draw_views(self, interaction):
        """The two data-augmented views of a batch, ``[(seq1, len1), (seq2, len2)]``."""
        return self.data_augmentation.views(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], n_views=2)

    # --- losses ------------------------------------------------------------------------------------------------------

    def meta_terms(self, h1, h2):
        """Unweighted ``(L_cl2, R)`` of the views' representations (a zero tensor for a term switched off)."""
        g1 = self.learnable_augmenters[0](h1)
        g2 = self.learnable_augmenters[-1](h2)  # the same augmenter when shared
        pairs = ((h1, g2), (h2, g1), (g1, g2))
        args = {"temperature": self.tau, "similarity": self.sim}
        zero = h1.new_zeros(())
        cl2 = sum(info_nce(a, b, **args) for a, b in pairs) if self.use_cl2 else zero
        reg = sum(margin_regulariser(a, b, **args) for a, b in pairs) if self.reg_gamma else zero
        return cl2, reg

    def encoder_loss(self, interaction, views=None):
        """The encoder phase's (and the joint) objective as its weighted terms, ``LOSS_TERMS``."""
        next_item, h1, h2, _ = self.next_item_and_views(
            interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], interaction[self.POS_ITEM_ID], views
        )
        rec_loss = self.rec_loss(*next_item)
        cl1 = info_nce(h1, h2, temperature=self.tau, similarity=self.sim)
        cl2, reg = self.meta_terms(h1, h2)
        return rec_loss, self.cl_lambda * cl1, self.cl2_beta * cl2, self.cl2_beta * self.reg_gamma * reg

    def augmenter_loss(self, interaction, views):
        """The augmenter phase's objective as its weighted terms, ``AUGMENTER_LOSS_TERMS``; the encoder gets no
        gradient (its representations are computed without one)."""
        with torch.no_grad():
            hidden = self.forward(torch.cat([seq for seq, _ in views]), torch.cat([n for _, n in views]))
        h1, h2 = hidden.chunk(2)
        cl2, reg = self.meta_terms(h1, h2)
        return cl2, self.reg_gamma * reg

    def calculate_loss(self, interaction):
        return self.encoder_loss(interaction)
