"""SRMA: Liu et al., "Improving Contrastive Learning with Model Augmentation", 2022 (arXiv:2203.15508).

CL4SRec's data augmentation (two views per sequence from crop / mask / reorder) plus three model augmentations:

- neuron masking: dropout with probability ``neuron_mask_p`` in the feed-forward blocks (the encoder's and the
  layer-dropping blocks); ``neuron_mask_scope: all`` applies it to every dropout of the encoder as well;
- layer dropping: ``layer_drop_K`` extra feed-forward blocks after the encoder; in training each view skips
  ``layer_drop_M`` < K of them, drawn at random independently per view (``layer_drop_shared: True`` draws one
  pattern for both views, as the official code does); the next-item loss and evaluation run all K;
- encoder complementing: a separately pre-trained encoder (``complement_type``: a 1-layer Transformer or a GRU, as
  in the paper, or ``same`` architecture as the main encoder, as in the official code), frozen, whose embedding of
  view 1's sequence, scaled by ``complement_gamma``, is added to view 1's representation before the InfoNCE.
  :class:`~recbole_srma.model_trainers.SRMATrainer` pre-trains it on next-item prediction over the same training
  split before SRMA's training starts (or loads ``complement_checkpoint``), cached by dataset, data and encoder
  settings; it is never used at inference.

With ``train_objective: every_position`` ``L_rec`` covers every position of the user's whole training sequence,
through all K layer-dropping blocks (they are position-wise), the views are views of that sequence (each keeping
K - M blocks), and the complement encoder is pre-trained on the same objective.

Loss: ``L_rec + cl_lambda * InfoNCE(z1, z2)``. Every published ablation is one config away (docs/models.md).

Deviations:
- From the paper: full-softmax next-item loss (the package's protocol, as for every model). The paper does not say
  whether the complement encodes the original sequence or the augmented view; here it encodes view 1's sequence, so
  the term complements exactly the branch it is added to.
- From the official code: layer-dropping patterns are drawn per view (the official batched pass shares one pattern
  between the two views; ``layer_drop_shared`` reproduces it); the complement encoder is frozen and in eval mode
  (the official code leaves it in train mode with gradients flowing into it) and the run pre-trains it itself (the
  official code expects a file and only uses it with a flag its README omits). The official code's variant, extra
  InfoNCE terms between each view and the complement's embedding of the original sequence weighted by ``gamma``
  instead of adding the embedding, is ``complement_mode: contrast_original`` (formerly ``official``).
  Representations are the last position's hidden state (the official code contrasts the flattened whole-sequence
  output).
"""

import torch

from recbole_srma import hparams
from recbole_srma.errors import ConfigError
from recbole_srma.model.cl4srec import CL4SRec
from recbole_srma.model.layers import (
    COMPLEMENT_TYPES,
    LayerDropStack,
    build_complement_encoder,
    sample_kept_layers,
)
from recbole_srma.model.losses import info_nce
from recbole_srma.model.recommender import NextItemRecommender, padded_every_position


class SRMA(CL4SRec):
    HPARAMS = {
        **CL4SRec.HPARAMS,
        "neuron_mask_p": hparams.rate,
        "neuron_mask_scope": hparams.one_of("ffn", "all"),
        "layer_drop_K": hparams.non_negative_int,
        "layer_drop_M": hparams.non_negative_int,
        "layer_drop_shared": hparams.boolean,
        "complement_type": hparams.one_of("none", *COMPLEMENT_TYPES),
        "complement_gamma": hparams.non_negative,
        "complement_mode": hparams.one_of("add", "contrast_original"),
        "complement_checkpoint": hparams.optional(hparams.string),
        "complement_epochs": hparams.positive_int,
    }

    @classmethod
    def check_config(cls, config):
        super().check_config(config)
        K, M = config["layer_drop_K"], config["layer_drop_M"]
        if K > 0 and M >= K:
            raise ConfigError(
                f"SRMA: layer dropping needs layer_drop_M < layer_drop_K (got M={M}, K={K}): each view must keep at "
                "least one of the K extra layers. Lower layer_drop_M, or set layer_drop_K=0 to turn it off."
            )
        if K == 0 and M > 0:
            raise ConfigError(f"SRMA: layer_drop_M={M} drops layers but layer_drop_K=0 adds none; set both, or M=0.")

    @classmethod
    def pretraining_note(cls, config):
        """Said at the start of a run: the complement pre-training runs first, on its own epoch budget."""
        if config["complement_type"] == "none" or config["complement_checkpoint"]:
            return None
        return (
            f"SRMA first pre-trains its {config['complement_type']} complement encoder for up to "
            f"complement_epochs={config['complement_epochs']} epochs (early stopping as for any model; --epochs does "
            f"not limit it), unless {config['checkpoint_dir']}/srma_complement/ already holds one for these data and "
            "settings. --complement_epochs=N sets that budget; --complement_type=none turns the complement off"
        )

    def __init__(self, config, dataset):
        p = config["neuron_mask_p"]
        overrides = {"ffn_dropout_prob": p}
        if config["neuron_mask_scope"] == "all":
            overrides.update(hidden_dropout_prob=p, attn_dropout_prob=p)
        super().__init__(config, dataset, **overrides)
        self.layer_drop_M = config["layer_drop_M"]
        self.layer_drop_shared = config["layer_drop_shared"]
        self.layer_drop = LayerDropStack(
            config["layer_drop_K"],
            config["hidden_size"],
            config["inner_size"],
            p,
            config["hidden_act"],
            config["layer_norm_eps"],
        )
        self.layer_drop.apply(self.backbone._init_weights)

        self.complement_type = config["complement_type"]
        self.complement_gamma = config["complement_gamma"]
        self.complement_mode = config["complement_mode"]
        self.complement = None
        if self.complement_type != "none":
            self.complement = build_complement_encoder(
                self.complement_type, config, self.n_items, self.max_seq_length
            )
            self.complement.requires_grad_(False)
            self.complement.eval()
        # A buffer, so checkpoints record whether the complement holds pre-trained weights (SRMATrainer gives them).
        self.register_buffer("complement_ready", torch.tensor(False))

    def train(self, mode=True):
        super().train(mode)
        if self.complement is not None:
            self.complement.eval()  # frozen: no dropout, whatever mode the rest is in
        return self

    def forward(self, item_seq, item_seq_len):
        return self.layer_drop(self.backbone(item_seq, item_seq_len))

    def encode_stacked(self, item_seq, item_seq_len, with_original=True):
        """``[original; view 1; view 2]`` (or the two views alone) through the encoder, then the layer-dropping
        stack: the original rows run all K blocks (as in evaluation), each view keeps K - M of them."""
        hidden = self.backbone(item_seq, item_seq_len)
        if not len(self.layer_drop):
            return hidden
        K = len(self.layer_drop)
        keep = sample_kept_layers(2, K, self.layer_drop_M, shared=self.layer_drop_shared, device=hidden.device)
        if with_original:
            keep = torch.cat([torch.ones(1, K, dtype=torch.bool, device=hidden.device), keep])
        return self.layer_drop(hidden, keep.repeat_interleave(item_seq.size(0) // len(keep), dim=0))

    def every_position(self, item_seq, item_seq_len, pos_items):
        # the layer-dropping blocks are position-wise: all K of them at every position, as in evaluation
        hidden, targets = super().every_position(item_seq, item_seq_len, pos_items)
        return self.layer_drop(hidden), targets

    def _complement_embedding(self, item_seq, item_seq_len):
        if not bool(self.complement_ready):
            raise RuntimeError(
                "SRMA's complementary encoder has no pre-trained weights: train with SRMATrainer "
                "(registry.get_trainer picks it; it pre-trains the encoder first or loads complement_checkpoint)."
            )
        with torch.no_grad():
            return self.complement(item_seq, item_seq_len)

    def calculate_loss(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        next_item, z1, z2, (seq1, len1) = self.next_item_and_views(
            item_seq, item_seq_len, interaction[self.POS_ITEM_ID]
        )
        rec_loss = self.rec_loss(*next_item)
        cl_args = {"temperature": self.tau, "similarity": self.sim}
        if self.complement is None or self.complement_gamma == 0:
            cl_loss = info_nce(z1, z2, **cl_args)
        elif self.complement_mode == "add":
            z1 = z1 + self.complement_gamma * self._complement_embedding(seq1, len1)
            cl_loss = info_nce(z1, z2, **cl_args)
        else:  # contrast_original: extra terms against the complement's embedding of the original sequence
            c = self._complement_embedding(item_seq, item_seq_len)
            cl_loss = info_nce(z1, z2, **cl_args) + self.complement_gamma * (
                info_nce(z1, c, **cl_args) + info_nce(z2, c, **cl_args)
            )
        return rec_loss, self.cl_lambda * cl_loss


class ComplementPretrainer(NextItemRecommender):
    """Next-item prediction with a complement encoder, scored against its own item table: what SRMATrainer trains
    before SRMA's main training."""

    def __init__(self, config, dataset, encoder):
        super().__init__(config, dataset)
        self.encoder = encoder
        self.train_objective = config["train_objective"] or "prefixes"

    def forward(self, item_seq, item_seq_len):
        return self.encoder(item_seq, item_seq_len)

    def calculate_loss(self, interaction):
        if self.train_objective != "every_position":
            return super().calculate_loss(interaction)
        # the main run's objective: the next-item loss at every real position (the padded computation)
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        targets = interaction[self.POS_ITEM_ID]
        return self.rec_loss(*padded_every_position(self.encoder.encode, item_seq, item_seq_len, targets))

    def item_weights(self):
        return self.encoder.item_table(self.n_items)
