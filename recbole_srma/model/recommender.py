"""The base classes of plugin models: next-item scoring over an item table, and the shared transformer encoder.

:class:`NextItemRecommender` is what every plugin model computes the same way: a sequence representation scored
against the item table, the next-item loss (full softmax by default, the protocol's, docs/datasets.md; sampled
softmax or gBCE) and full-sort scoring. :class:`SequentialBackboneRecommender` adds the shared encoder
(:class:`~recbole_srma.model.encoder.SASRecBackbone`), the mask token, the hyper-parameter table checked at start
and the model-level ``fast_path`` switch. A model file subclasses it and adds what its paper adds.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender

from recbole_srma import hparams
from recbole_srma.errors import ConfigError
from recbole_srma.model.encoder import (
    ACTIVATIONS,
    LAYER_TYPES,
    POSITION_ORDERS,
    WEIGHT_INITS,
    Dropout,
    SASRecBackbone,
)
from recbole_srma.model.losses import full_softmax_cross_entropy


def _heads_divide_hidden(config):
    if config["hidden_size"] % config["n_heads"]:
        raise ValueError(f"hidden_size ({config['hidden_size']}) must be a multiple of n_heads ({config['n_heads']})")


#: ``prefixes``: RecBole's training samples (every prefix of a training sequence, the loss at its last position);
#: ``every_position``: one sample per user, the loss at every position of its training sequence (quick_start keeps
#: the last prefix of each user, which holds the whole sequence: :func:`recbole_srma.quick_start.split_loaders`).
TRAIN_OBJECTIVES = ("prefixes", "every_position")
NEXT_ITEM_LOSSES = ("full_softmax", "sampled_softmax", "gbce")
#: where the uniform negatives of ``sampled_softmax`` / ``gbce`` come from: a draw of ``n_negatives`` for every
#: position (the transformer benchmark's recipe), or one draw per batch that every position shares (one matrix
#: product instead of a gather of ``[N, n_negatives, H]`` embeddings: cheaper on a CPU, more correlated noise).
NEGATIVE_SAMPLING = ("per_position", "per_batch")

#: ``softmax_chunk_rows: ~`` on a CPU (docs/performance.md, "The full softmax a block of rows at a time": 64 and 128
#: rows were the fastest of 32-256)
CPU_SOFTMAX_CHUNK_ROWS = 64

#: the keys of the next-item objective (properties/backbone.yaml)
OBJECTIVE_KEYS = ("train_objective", "next_item_loss", "n_negatives", "negative_sampling", "gbce_t")

BACKBONE_HPARAMS = {
    "hidden_size": hparams.positive_int,
    "n_layers": hparams.positive_int,
    "n_heads": hparams.positive_int,
    "inner_size": hparams.positive_int,
    "hidden_dropout_prob": hparams.rate,
    "attn_dropout_prob": hparams.rate,
    "hidden_act": hparams.one_of(*ACTIVATIONS),
    "layer_norm_eps": hparams.positive,
    "initializer_range": hparams.positive,
    "fast_path": hparams.boolean,
    "layer_type": hparams.one_of(*LAYER_TYPES),
    "weight_init": hparams.one_of(*WEIGHT_INITS),
    "position_order": hparams.one_of(*POSITION_ORDERS),
    "item_dropout_prob": hparams.rate,
    "loss_type": hparams.one_of("CE"),
    "train_objective": hparams.one_of(*TRAIN_OBJECTIVES),
    "next_item_loss": hparams.one_of(*NEXT_ITEM_LOSSES),
    "n_negatives": hparams.positive_int,
    "negative_sampling": hparams.one_of(*NEGATIVE_SAMPLING),
    "gbce_t": hparams.rate,
    "softmax_chunk_rows": hparams.optional(hparams.non_negative_int),
}


def next_item_targets(item_seq, item_seq_len, pos_items):
    """``[B, L]``: the target of every position, the next item of the sequence (the sample's target at its last real
    position; whatever after it, which no loss reads)."""
    targets = torch.cat([item_seq[:, 1:], item_seq[:, :1]], dim=1)
    return targets.scatter(1, (item_seq_len - 1).unsqueeze(1), pos_items.unsqueeze(1))


def padded_every_position(encode, item_seq, item_seq_len, pos_items):
    """``(hidden [N, H], targets [N])`` of every real position from ``encode(item_seq) -> [B, L, H]`` (any encoder's
    padded computation), sequence by sequence."""
    real = torch.arange(item_seq.size(1), device=item_seq.device)[None, :] < item_seq_len[:, None]
    return encode(item_seq)[real], next_item_targets(item_seq, item_seq_len, pos_items)[real]


class NextItemRecommender(SequentialRecommender):
    """``forward(item_seq, item_seq_len) -> [B, H]`` scored against ``item_weights()`` (``[n_items, H]``): the
    next-item loss (``next_item_loss``: full softmax, the protocol's, or sampled softmax) and full-sort scoring.
    Subclasses define ``forward`` and ``item_weights``."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.loss_fct = nn.CrossEntropyLoss()
        self.next_item_loss = config["next_item_loss"] or "full_softmax"
        self.n_negatives = config["n_negatives"]
        self.negative_sampling = config["negative_sampling"] or "per_position"
        self.gbce_t = config["gbce_t"] if config["gbce_t"] is not None else 0.75
        self.softmax_chunk_rows = config["softmax_chunk_rows"]
        if self.softmax_chunk_rows is None:
            # a CPU's cache holds a block of 64 rows' scores; a GPU's memory bandwidth makes one pass the faster
            self.softmax_chunk_rows = CPU_SOFTMAX_CHUNK_ROWS if str(config["device"] or "cpu") == "cpu" else 0

    def item_weights(self):
        raise NotImplementedError

    def rec_loss(self, seq_output, pos_items):
        """The next-item loss of representations ``[N, H]`` and their targets ``[N]`` (every model's ``L_rec``).

        ``full_softmax``: cross-entropy over all items. ``sampled_softmax``: cross-entropy of the target against
        ``n_negatives`` uniform draws from the item ids 1 .. n_items - 1 (``negative_sampling``: per position or
        one draw per batch), a draw equal to the row's target being left out. ``gbce``: gSASRec's generalised binary
        cross-entropy (Petrov & Macdonald, RecSys 2023) on the same negatives, the positive's probability raised to
        ``beta = alpha * (t * (1 - 1 / alpha) + 1 / alpha)``, ``alpha = n_negatives / (n_items - 2)`` the sampling
        rate and ``t = gbce_t`` (0: plain BCE, 1: fully calibrated).
        """
        weights = self.item_weights()
        if self.next_item_loss == "full_softmax":
            return full_softmax_cross_entropy(seq_output, weights, pos_items, self.softmax_chunk_rows)
        positive = (seq_output * weights[pos_items]).sum(-1, keepdim=True)
        if self.negative_sampling == "per_batch":
            negatives = torch.randint(1, self.n_items, (self.n_negatives,), device=pos_items.device)
            negative = seq_output @ weights[negatives].t()
            collision = negatives[None, :] == pos_items[:, None]
        else:
            negatives = torch.randint(1, self.n_items, (len(pos_items), self.n_negatives), device=pos_items.device)
            negative = torch.einsum("nh,nkh->nk", seq_output, weights[negatives])
            collision = negatives == pos_items[:, None]
        if self.next_item_loss == "sampled_softmax":
            logits = torch.cat([positive, negative.masked_fill(collision, float("-inf"))], dim=1)
            return self.loss_fct(logits, torch.zeros_like(pos_items))
        alpha = self.n_negatives / max(self.n_items - 2, 1)
        beta = alpha * (self.gbce_t * (1.0 - 1.0 / alpha) + 1.0 / alpha)
        # log(sigmoid(s) ** beta) = beta * logsigmoid(s); a colliding negative adds nothing
        negative_term = F.softplus(negative).masked_fill(collision, 0.0).sum(-1)
        return (-beta * F.logsigmoid(positive.squeeze(1)) + negative_term).mean()

    def calculate_loss(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return self.rec_loss(seq_output, interaction[self.POS_ITEM_ID])

    def predict(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return (seq_output * self.item_weights()[interaction[self.ITEM_ID]]).sum(dim=-1)

    def full_sort_predict(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return seq_output @ self.item_weights().t()


class SequentialBackboneRecommender(NextItemRecommender):
    """Base class of plugin models: the shared encoder ``self.backbone``, scored by :class:`NextItemRecommender`.

    A subclass adds its self-supervised term by overriding ``calculate_loss`` (returning a tuple of weighted terms,
    which RecBole sums and logs one by one), lists its hyper-parameters in ``HPARAMS`` (checked once, when the
    Config is built), and names its trainer in ``registry.TRAINERS`` when it needs a training stage of its own.
    """

    uses_plugin_backbone = True
    HPARAMS = BACKBONE_HPARAMS
    #: Whether the model's loss is defined for ``train_objective: every_position`` (the base class's, the
    #: next-item loss alone, is; a subclass with a term of its own says so once that term is).
    EVERY_POSITION = True

    def __init__(self, config, dataset, **backbone_overrides):
        super().__init__(config, dataset)
        self.mask_token = self.n_items
        self.backbone = SASRecBackbone.from_config(config, self.n_items, self.max_seq_length, **backbone_overrides)
        self.fast_path = self.backbone.fast_path
        self.train_objective = config["train_objective"] or "prefixes"

    @classmethod
    def check_config(cls, config):
        """Raise ConfigError naming the first missing or invalid hyper-parameter (run by the plugin's Config)."""
        hparams.check_hyper_parameters(cls.__name__, cls.HPARAMS, config)
        try:
            _heads_divide_hidden(config)
        except ValueError as err:
            raise ConfigError(f"{cls.__name__}: {err}") from None
        if config["train_objective"] == "every_position" and not cls.EVERY_POSITION:
            raise ConfigError(
                f"{cls.__name__}: train_objective 'every_position' is not available for this model yet (its "
                "self-supervised term is defined on prefix samples); use train_objective: prefixes"
            )

    def set_fast_path(self, enabled):
        """The one switch between the fast path and the padded reference path (encoder.py's docstring): every
        encoder of the model (SRMA's complement included) and every dropout (SRMA's extra blocks included)."""
        self.fast_path = bool(enabled)
        for module in self.modules():
            if isinstance(module, SASRecBackbone):
                module.fast_path = self.fast_path
            elif isinstance(module, Dropout):
                module.fast = self.fast_path
        return self

    def train(self, mode=True):
        super().train(mode)
        # modules a subclass adds after this class's __init__ (SRMA's blocks) follow the model's setting too
        return self.set_fast_path(self.fast_path) if mode else self

    def forward(self, item_seq, item_seq_len):
        return self.backbone(item_seq, item_seq_len)

    def every_position(self, item_seq, item_seq_len, pos_items):
        """The hidden state of every real position, ``[N, H]`` (sequence by sequence, as ``item_seq[real]`` orders
        them), and its target, ``[N]``: the next item of the sequence, the sample's target at the last position."""
        if not self.backbone.fast_path:
            return padded_every_position(self.backbone.encode, item_seq, item_seq_len, pos_items)
        targets = next_item_targets(item_seq, item_seq_len, pos_items)
        hidden, layout = self.backbone.encode_packed(item_seq, item_seq_len)
        return hidden, targets[:, : layout.max_len].flatten()[layout.index]

    def next_item_and_extra(self, interaction, extra=()):
        """The next-item loss's ``(hidden, targets)`` for the configured ``train_objective``, the representation of
        each sample's whole sequence (its last position) and those of ``extra`` sequences (``[(seq, len), ...]``,
        each as long as the batch: views, partners), in as few encoder calls as the objective allows (one for
        prefixes; for every position, one for the sequence and one for the extras)."""
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        pos_items = interaction[self.POS_ITEM_ID]
        extra = list(extra)
        if self.train_objective != "every_position":
            hidden = self.forward(
                torch.cat([item_seq] + [s for s, _ in extra]), torch.cat([item_seq_len] + [n for _, n in extra])
            ).chunk(1 + len(extra))
            return (hidden[0], pos_items), hidden[0], list(hidden[1:])
        hidden, targets = self.every_position(item_seq, item_seq_len, pos_items)
        last = hidden[item_seq_len.clamp(1, item_seq.size(1)).cumsum(0) - 1]
        others = []
        if extra:
            others = self.forward(torch.cat([s for s, _ in extra]), torch.cat([n for _, n in extra])).chunk(len(extra))
        return (hidden, targets), last, list(others)

    def calculate_loss(self, interaction):
        if self.train_objective == "prefixes":
            return super().calculate_loss(interaction)
        hidden, targets = self.every_position(
            interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], interaction[self.POS_ITEM_ID]
        )
        return self.rec_loss(hidden, targets)

    def item_weights(self):
        """Embeddings of the scorable items (padding row 0 included, as RecBole scores it; mask token excluded)."""
        return self.backbone.item_table(self.n_items)
