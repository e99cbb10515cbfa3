"""The base classes of plugin models: next-item scoring over an item table, and the shared transformer encoder.

:class:`NextItemRecommender` is what every plugin model computes the same way: a sequence representation scored
against the item table, the full-softmax cross-entropy next-item loss (the protocol's, docs/datasets.md) and
full-sort scoring. :class:`SequentialBackboneRecommender` adds the shared encoder
(:class:`~recbole_srma.model.encoder.SASRecBackbone`), the mask token, the hyper-parameter table checked at start
and the model-level ``fast_path`` switch. A model file subclasses it and adds what its paper adds.
"""

import torch.nn as nn
from recbole.model.abstract_recommender import SequentialRecommender

from recbole_srma import hparams
from recbole_srma.errors import ConfigError
from recbole_srma.model.encoder import ACTIVATIONS, Dropout, SASRecBackbone


def _heads_divide_hidden(config):
    if config["hidden_size"] % config["n_heads"]:
        raise ValueError(f"hidden_size ({config['hidden_size']}) must be a multiple of n_heads ({config['n_heads']})")


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
    "loss_type": hparams.one_of("CE"),
}


class NextItemRecommender(SequentialRecommender):
    """``forward(item_seq, item_seq_len) -> [B, H]`` scored against ``item_weights()`` (``[n_items, H]``): the
    full-softmax CE next-item loss and full-sort scoring. Subclasses define ``forward`` and ``item_weights``."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.loss_fct = nn.CrossEntropyLoss()

    def item_weights(self):
        raise NotImplementedError

    def rec_loss(self, seq_output, pos_items):
        """Full-softmax cross-entropy over all items (the protocol's next-item loss for every model)."""
        return self.loss_fct(seq_output @ self.item_weights().t(), pos_items)

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

    def __init__(self, config, dataset, **backbone_overrides):
        super().__init__(config, dataset)
        self.mask_token = self.n_items
        self.backbone = SASRecBackbone.from_config(config, self.n_items, self.max_seq_length, **backbone_overrides)
        self.fast_path = self.backbone.fast_path

    @classmethod
    def check_config(cls, config):
        """Raise ConfigError naming the first missing or invalid hyper-parameter (run by the plugin's Config)."""
        hparams.check_hyper_parameters(cls.__name__, cls.HPARAMS, config)
        try:
            _heads_divide_hidden(config)
        except ValueError as err:
            raise ConfigError(f"{cls.__name__}: {err}") from None

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

    def item_weights(self):
        """Embeddings of the scorable items (padding row 0 included, as RecBole scores it; mask token excluded)."""
        return self.backbone.item_embedding.weight[: self.n_items]
