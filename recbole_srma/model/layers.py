"""Layers that model augmentations and auxiliary encoders are built from (shared across models).

- :class:`LayerDropStack`: K extra feed-forward blocks after the encoder, any of which can be skipped per row
  (SRMA's layer dropping).
- :func:`sample_kept_layers`: which blocks each view keeps (exactly K - M of K).
- :class:`GRUEncoder` and :func:`build_complement_encoder`: sequence encoders for SRMA's encoder complementing.
- :class:`LearnableAugmenter`: MCLRec's model augmenter, an MLP on a sequence representation.
- :class:`Projector`: the Barlow Twins projector MLP (BT4SRec).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_srma.model.encoder import FeedForward, SASRecBackbone


class LayerDropStack(nn.Module):
    """K position-wise feed-forward blocks (residual + LayerNorm, as in the encoder) applied after the encoder.

    They act on the sequence representation ``[N, H]``: the blocks are position-wise, so applying them to the
    last position's hidden state equals applying them to every position and then taking the last one.
    ``keep`` (bool ``[N, K]``) says which blocks each row goes through; ``None`` runs all of them (evaluation, and
    the next-item loss, which must see the same stack as evaluation).
    """

    def __init__(self, n_layers, hidden_size, inner_size, dropout_prob, hidden_act, layer_norm_eps):
        super().__init__()
        self.layers = nn.ModuleList(
            [FeedForward(hidden_size, inner_size, dropout_prob, hidden_act, layer_norm_eps) for _ in range(n_layers)]
        )

    def __len__(self):
        return len(self.layers)

    def forward(self, hidden, keep=None):
        for k, layer in enumerate(self.layers):
            out = layer(hidden)
            hidden = out if keep is None else torch.where(keep[:, k : k + 1], out, hidden)
        return hidden


def sample_kept_layers(n_views, n_layers, n_dropped, shared=False, device=None, generator=None):
    """Bool ``[n_views, n_layers]``: each view keeps exactly ``n_layers - n_dropped`` blocks chosen at random.

    ``shared=True`` draws one pattern for all views (what SRMA's official code does in its batched pass).
    """
    rows = 1 if shared else n_views
    ranks = torch.rand(rows, n_layers, device=device, generator=generator).argsort(dim=1).argsort(dim=1)
    keep = ranks >= n_dropped
    return keep.expand(n_views, n_layers) if shared else keep


class GRUEncoder(nn.Module):
    """GRU4Rec-style sequence encoder (embedding, dropout, one GRU layer, dense) returning the last real state."""

    def __init__(self, n_items, hidden_size, dropout_prob=0.3, initializer_range=0.02):
        super().__init__()
        self.item_embedding = nn.Embedding(n_items + 1, hidden_size, padding_idx=0)  # + mask token
        self.dropout = nn.Dropout(dropout_prob)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True)
        self.dense = nn.Linear(hidden_size, hidden_size)
        nn.init.normal_(self.item_embedding.weight, std=initializer_range)

    def item_table(self, n_items):
        """The first ``n_items`` rows of the item table (as ``SASRecBackbone.item_table``, no item dropout)."""
        return self.item_embedding.weight[:n_items]

    def encode(self, item_seq):
        """The state after every position, ``[B, L, H]`` (causal: position t reads items 0 .. t)."""
        output, _ = self.gru(self.dropout(self.item_embedding(item_seq)))
        return self.dense(output)

    def forward(self, item_seq, item_seq_len):
        output = self.encode(item_seq)
        index = (item_seq_len - 1).view(-1, 1, 1).expand(-1, 1, output.size(-1))
        return output.gather(1, index).squeeze(1)


COMPLEMENT_TYPES = ("transformer", "gru", "same")


def build_complement_encoder(kind, config, n_items, max_seq_length):
    """A complementary encoder whose output has the main encoder's hidden size.

    ``transformer``: the backbone with one block (the paper's choice); ``gru``: :class:`GRUEncoder` (the paper's
    other choice); ``same``: the main encoder's architecture (what the official code uses).
    """
    if kind == "transformer":
        return SASRecBackbone.from_config(config, n_items, max_seq_length, n_layers=1)
    if kind == "same":
        return SASRecBackbone.from_config(config, n_items, max_seq_length)
    if kind == "gru":
        return GRUEncoder(n_items, config["hidden_size"], initializer_range=config["initializer_range"])
    raise ValueError(f"unknown complement encoder type {kind!r}; choose from {COMPLEMENT_TYPES}")


class LearnableAugmenter(nn.Module):
    """MCLRec's learnable model augmenter: an MLP ``H -> inner_1 -> ... -> H`` with GELU after every layer but the
    last and an L2-normalised output (the official code's "Extractor", there fixed to 64-32-16-64).

    ``inner_ratios`` give the inner widths as fractions of ``hidden_size`` (``[0.5, 0.25]``: 64-32-16-64 at hidden
    size 64, 128-64-32-128 at 128); each width is at least 1. PyTorch's default ``nn.Linear`` initialisation, as in
    the official code (the augmenters there live outside the model and escape its initialiser).
    """

    def __init__(self, hidden_size, inner_ratios=(0.5, 0.25)):
        super().__init__()
        sizes = [hidden_size, *[max(1, round(hidden_size * r)) for r in inner_ratios], hidden_size]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    @property
    def sizes(self):
        return [self.layers[0].in_features] + [layer.out_features for layer in self.layers]

    def forward(self, hidden):
        for layer in self.layers[:-1]:
            hidden = F.gelu(layer(hidden))
        return F.normalize(self.layers[-1](hidden), dim=-1)


class Projector(nn.Sequential):
    """Barlow Twins projector (Zbontar et al. 2021): ``Linear -> BatchNorm1d -> ReLU`` for every size but the last,
    then a final ``Linear``; linear layers without bias, as in the paper. ``sizes`` are the output widths
    (``[256, 64]``: ``H -> 256 -> 64``); an empty list is the identity (the loss then sees the encoder's output).
    BatchNorm needs at least 2 rows in training.
    """

    def __init__(self, hidden_size, sizes):
        layers = []
        widths = [hidden_size, *sizes]
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(a, b, bias=False))
            if i < len(sizes) - 1:
                layers += [nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
        super().__init__(*layers)
        self.out_features = widths[-1]
