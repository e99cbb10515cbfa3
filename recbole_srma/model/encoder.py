"""The transformer sequence encoder of every plugin model: RecBole's SASRec architecture, with a fast path.

``SASRecBackbone`` is RecBole's SASRec encoder (Kang & McAuley 2018, as implemented in RecBole 1.2.1: post-LayerNorm
Transformer blocks with a fully connected feed-forward layer, learned position embeddings, causal attention that
ignores padding). Its parameter names match RecBole's ``SASRec`` (``item_embedding``, ``position_embedding``,
``trm_encoder.layer.<i>.multi_head_attention.query`` ...), so SASRec weights copy straight in, and with the same
weights it produces the same scores (tests/test_backbone.py).

Differences from RecBole's SASRec, none of which changes a score:
- the item table has one extra row, the mask token (id ``n_items``) used by masking augmentations; it is never
  scored (``SequentialBackboneRecommender.item_weights`` drops it);
- attention uses ``torch.nn.functional.scaled_dot_product_attention`` with a boolean mask instead of adding
  -10000 to masked logits (identical after softmax in float32).

Two computations of the same function, switched by the model-level ``fast_path`` setting:

- the padded path (``encode``, ``forward`` with ``fast_path: False``) computes every position of the ``[B, L]``
  batch, as RecBole does. It stays as the reference the fast path is tested against (tests/test_fast_path.py,
  tests/test_real_data.py: same scores, losses, gradients and metrics) and as the fallback for a device where the
  fast path's two host synchronisations per batch would cost more than the padding (unmeasured: no GPU numbers yet,
  docs/performance.md);
- the fast path (``fast_path: True``, the default; its speed is measured in docs/performance.md) computes it with
  less work:

  - padding removal: embeddings, projections, feed-forward blocks, LayerNorms and dropouts run on the real tokens
    only; tokens are packed into ``[N, H]`` and scattered into a ``[B, L_max, .]`` layout, ``L_max`` the longest
    sequence of the batch, only for the attention products;
  - the last block computes its query, attention output and feed-forward block for the last real position only,
    the only one a next-item model reads (keys and values still come from every real position);
  - cheaper dropout masks: ``uniform >= p`` instead of ``bernoulli_`` (the same Bernoulli(1 - p) keep mask), and
    attention computed explicitly so its dropout uses that mask too (``scaled_dot_product_attention`` with dropout
    falls back to a slow kernel on CPU).

``layer_type: ligr`` swaps RecBole's blocks for eSASRec's LiGR blocks (:class:`LiGRLayer`: pre-LayerNorm, gated
residuals, SwiGLU feed-forward) and adds a LayerNorm after the last; both paths compute them (same tests).
``layer_type: sasrec_original`` (:class:`QueryNormLayer`), ``weight_init: xavier_normal``, ``position_order:
from_end`` and ``item_dropout_prob`` are RecTools' SASRec encoder, the transformer benchmark's
(properties/encoder/rectools-sasrec.yaml); the defaults keep RecBole's.

With ``bidirectional=True`` (BERT4Rec) every position attends to every real position, padding still excluded.
Outputs of the two paths are equal up to float rounding; in training their random masks are drawn differently,
from the same distribution. Sequences must be left-aligned (RecBole's layout: item ids at positions
``0 .. len - 1``, zeros after), which every augmentation keeps.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_srma import compat

ACTIVATIONS = {
    "gelu": F.gelu,
    "relu": F.relu,
    "swish": F.silu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose fast mode draws its keep mask as ``uniform >= p`` (same distribution, cheaper on CPU)."""

    fast = False

    def forward(self, x):
        if self.p == 0.0:
            return x
        if not self.fast or not self.training:
            return super().forward(x)
        if self.p == 1.0:
            return x * 0.0
        return x * (torch.rand_like(x) >= self.p).to(x.dtype).mul_(1.0 / (1.0 - self.p))


def set_fast_dropout(module, enabled):
    """Switch every :class:`Dropout` inside ``module`` to (or from) the fast mask."""
    for sub in module.modules():
        if isinstance(sub, Dropout):
            sub.fast = bool(enabled)
    return module


class PackedLayout:
    """Where the real tokens of a left-aligned batch sit, shared by every block of one fast-path pass.

    ``index``: flat positions (into ``B * L_max``) of the N real tokens, sequence by sequence; ``lengths``: ``[B]``;
    ``last``: the row of
    each sequence's last token in the packed ``[N, .]`` tensor; ``keys``: additive ``[B, 1, 1, L_max]`` mask that
    excludes padding keys; ``attention``: the additive mask of every real query, ``[B, 1, L_max, L_max]`` causal
    (padding keys excluded), or ``keys`` itself when ``bidirectional``.
    """

    def __init__(self, item_seq, item_seq_len, bidirectional=False):
        self.batch = item_seq.size(0)
        lengths = item_seq_len.to(torch.long).clamp(1, item_seq.size(1))
        self.max_len = int(lengths.max())
        positions = torch.arange(self.max_len, device=item_seq.device)
        valid = positions[None, :] < lengths[:, None]  # [B, L_max]
        self.index = valid.flatten().nonzero().squeeze(1)
        self.items = item_seq[:, : self.max_len].flatten()[self.index]
        self.lengths = lengths
        self.last = lengths.cumsum(0) - 1
        neg_inf = torch.finfo(torch.float32).min
        zero = torch.zeros((), device=item_seq.device)
        self.keys = torch.where(valid, zero, neg_inf)[:, None, None, :]
        if bidirectional:
            self.attention = self.keys
        else:
            causal = torch.ones(self.max_len, self.max_len, dtype=torch.bool, device=item_seq.device).tril()
            self.attention = torch.where(causal, self.keys, neg_inf)

    def scatter(self, packed):
        """``[N, D]`` -> ``[B, L_max, D]``, zeros at padding."""
        out = packed.new_zeros(self.batch * self.max_len, packed.size(-1))
        return out.index_copy(0, self.index, packed).view(self.batch, self.max_len, -1)

    def gather(self, padded):
        """``[B, L_max, D]`` -> ``[N, D]``."""
        return padded.reshape(self.batch * self.max_len, -1).index_select(0, self.index)


class MultiHeadAttention(nn.Module):
    """SASRec's attention sub-layer: ``LayerNorm(dropout(attention) + input)``; with ``post_norm=False`` (the pre-norm
    layers add their own residual) just ``dropout(attention)``. ``query_input`` (same shape as ``hidden``), when
    given, is what the queries are projected from; keys and values always come from ``hidden``."""

    def __init__(self, n_heads, hidden_size, attn_dropout_prob, hidden_dropout_prob, layer_norm_eps, post_norm=True):
        super().__init__()
        self.post_norm = post_norm
        self.n_heads = n_heads
        self.head_size = hidden_size // n_heads
        self.attn_dropout_prob = attn_dropout_prob
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.dense = nn.Linear(hidden_size, hidden_size)
        if post_norm:
            self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.out_dropout = Dropout(hidden_dropout_prob)
        self.attn_dropout = Dropout(attn_dropout_prob)  # the fast path's; the padded path uses SDPA's dropout

    def _output(self, context, residual):
        out = self.out_dropout(self.dense(context))
        return self.LayerNorm(out + residual) if self.post_norm else out

    def _heads(self, x):
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_heads, self.head_size).transpose(1, 2)

    def forward(self, hidden, attention_mask, query_input=None):
        query_input = hidden if query_input is None else query_input
        q, k, v = self._heads(self.query(query_input)), self._heads(self.key(hidden)), self._heads(self.value(hidden))
        context = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attention_mask, dropout_p=self.attn_dropout_prob if self.training else 0.0
        )
        context = context.transpose(1, 2).reshape(hidden.shape)
        return self._output(context, hidden)

    def _attend(self, q, k, v, additive_mask):
        """Explicit scaled dot-product attention over ``[B, heads, ., d]`` with an additive mask."""
        scores = torch.matmul(q, k.transpose(-1, -2)).mul_(1.0 / math.sqrt(self.head_size)) + additive_mask
        return torch.matmul(self.attn_dropout(scores.softmax(dim=-1)), v)

    def _split(self, padded, parts):
        """``[B, L, parts * H]`` -> ``parts`` tensors ``[B, heads, L, d]``."""
        batch, length, _ = padded.shape
        x = padded.view(batch, length, parts, self.n_heads, self.head_size).permute(2, 0, 3, 1, 4)
        return x.unbind(0)

    def forward_packed(self, hidden, layout, query_input=None):
        """Every real position: ``[N, H]`` -> ``[N, H]``."""
        if query_input is None:
            weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])
            bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
            q, k, v = self._split(layout.scatter(F.linear(hidden, weight, bias)), 3)
        else:
            k, v = self._key_values(hidden, layout)
            q = self._split(layout.scatter(self.query(query_input)), 1)[0]
        context = self._attend(q, k, v, layout.attention)  # [B, heads, L, d]
        context = layout.gather(context.transpose(1, 2))
        return self._output(context, hidden)

    def _key_values(self, hidden, layout):
        weight = torch.cat([self.key.weight, self.value.weight])
        bias = torch.cat([self.key.bias, self.value.bias])
        return self._split(layout.scatter(F.linear(hidden, weight, bias)), 2)

    def forward_last(self, hidden, layout, query_input=None):
        """The last real position of each sequence only: ``[N, H]`` -> ``[B, H]``."""
        last = (hidden if query_input is None else query_input).index_select(0, layout.last)
        k, v = self._key_values(hidden, layout)
        q = self._split(self.query(last)[:, None, :], 1)[0]  # [B, heads, 1, d]
        context = self._attend(q, k, v, layout.keys).reshape(last.shape)
        return self._output(context, last)


class FeedForward(nn.Module):
    """Position-wise feed-forward block with residual and LayerNorm; its dropout is SRMA's neuron masking. With
    ``post_norm=False`` (a pre-norm layer adds the residual) just ``dropout(W_2 act(W_1 x))``."""

    def __init__(self, hidden_size, inner_size, hidden_dropout_prob, hidden_act, layer_norm_eps, post_norm=True):
        super().__init__()
        self.post_norm = post_norm
        self.dense_1 = nn.Linear(hidden_size, inner_size)
        self.act = ACTIVATIONS[hidden_act]
        self.dense_2 = nn.Linear(inner_size, hidden_size)
        if post_norm:
            self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = Dropout(hidden_dropout_prob)

    def forward(self, hidden):
        inner = self.dense_1(hidden)
        # inputs of varying shape (the packed tokens, the layer-dropping stack): compat.gelu's workaround
        inner = compat.gelu(inner) if self.act is F.gelu else self.act(inner)
        out = self.dropout(self.dense_2(inner))
        return self.LayerNorm(out + hidden) if self.post_norm else out


class TransformerLayer(nn.Module):
    def __init__(
        self,
        n_heads,
        hidden_size,
        inner_size,
        hidden_dropout_prob,
        attn_dropout_prob,
        hidden_act,
        eps,
        ffn_dropout_prob,
    ):
        super().__init__()
        self.multi_head_attention = MultiHeadAttention(
            n_heads, hidden_size, attn_dropout_prob, hidden_dropout_prob, eps
        )
        self.feed_forward = FeedForward(hidden_size, inner_size, ffn_dropout_prob, hidden_act, eps)

    def forward(self, hidden, attention_mask):
        return self.feed_forward(self.multi_head_attention(hidden, attention_mask))

    def forward_packed(self, hidden, layout, last_only=False):
        attention = self.multi_head_attention
        hidden = attention.forward_last(hidden, layout) if last_only else attention.forward_packed(hidden, layout)
        return self.feed_forward(hidden)


class SwiGLU(nn.Module):
    """LiGR's feed-forward block: ``dropout(W_3 (silu(W_1 x) * W_2 x))``, inner size ``inner_size``; no residual."""

    def __init__(self, hidden_size, inner_size, dropout_prob):
        super().__init__()
        self.gate = nn.Linear(hidden_size, inner_size)
        self.up = nn.Linear(hidden_size, inner_size)
        self.down = nn.Linear(inner_size, hidden_size)
        self.dropout = Dropout(dropout_prob)

    def forward(self, hidden):
        return self.dropout(self.down(F.silu(self.gate(hidden)) * self.up(hidden)))


class LiGRLayer(nn.Module):
    """A pre-norm block with gated residuals (LiGR, Borisyuk et al. 2025, as eSASRec uses it):
    ``x = x + sigmoid(G_1 n) * attention(n)`` with ``n = LayerNorm_1(x)``, then
    ``x = x + sigmoid(G_2 m) * SwiGLU(m)`` with ``m = LayerNorm_2(x)``. The gates read the normalised input (the
    LiGR paper leaves open which); the encoder adds a final LayerNorm after the last block."""

    def __init__(
        self, n_heads, hidden_size, inner_size, hidden_dropout_prob, attn_dropout_prob, hidden_act, eps,
        ffn_dropout_prob,
    ):
        del hidden_act  # SwiGLU's activation is fixed (SiLU)
        super().__init__()
        self.attention_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.multi_head_attention = MultiHeadAttention(
            n_heads, hidden_size, attn_dropout_prob, hidden_dropout_prob, eps, post_norm=False
        )
        self.attention_gate = nn.Linear(hidden_size, hidden_size)
        self.feed_forward_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.feed_forward = SwiGLU(hidden_size, inner_size, ffn_dropout_prob)
        self.feed_forward_gate = nn.Linear(hidden_size, hidden_size)

    def _feed_forward(self, hidden):
        normed = self.feed_forward_norm(hidden)
        return hidden + torch.sigmoid(self.feed_forward_gate(normed)) * self.feed_forward(normed)

    def forward(self, hidden, attention_mask):
        normed = self.attention_norm(hidden)
        attended = self.multi_head_attention(normed, attention_mask)
        return self._feed_forward(hidden + torch.sigmoid(self.attention_gate(normed)) * attended)

    def forward_packed(self, hidden, layout, last_only=False):
        normed = self.attention_norm(hidden)
        if last_only:
            hidden, gate_input = hidden.index_select(0, layout.last), normed.index_select(0, layout.last)
            attended = self.multi_head_attention.forward_last(normed, layout)
        else:
            gate_input, attended = normed, self.multi_head_attention.forward_packed(normed, layout)
        return self._feed_forward(hidden + torch.sigmoid(self.attention_gate(gate_input)) * attended)


class QueryNormLayer(nn.Module):
    """The block of the SASRec authors' code (Kang & McAuley's TensorFlow, the PyTorch ports, RecTools' SASRec, which
    the transformer benchmark runs): only the query is normalised before attention, and both residuals start from
    the normalised input: ``x = n + attention(query=n, keys=values=x)`` with ``n = LayerNorm_1(x)``, then
    ``x = m + FFN(m)`` with ``m = LayerNorm_2(x)``. The encoder adds a final LayerNorm and leaves out the LayerNorm
    of the embeddings (the authors' arrangement). Dropout sits where RecBole's block has it (on the attention
    probabilities and on each sub-layer's output), not where RecTools has it (attention probabilities, the
    feed-forward's inner activation and its output)."""

    def __init__(
        self, n_heads, hidden_size, inner_size, hidden_dropout_prob, attn_dropout_prob, hidden_act, eps,
        ffn_dropout_prob,
    ):
        super().__init__()
        self.attention_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.multi_head_attention = MultiHeadAttention(
            n_heads, hidden_size, attn_dropout_prob, hidden_dropout_prob, eps, post_norm=False
        )
        self.feed_forward_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.feed_forward = FeedForward(hidden_size, inner_size, ffn_dropout_prob, hidden_act, eps, post_norm=False)

    def _feed_forward(self, hidden):
        normed = self.feed_forward_norm(hidden)
        return normed + self.feed_forward(normed)

    def forward(self, hidden, attention_mask):
        normed = self.attention_norm(hidden)
        return self._feed_forward(normed + self.multi_head_attention(hidden, attention_mask, query_input=normed))

    def forward_packed(self, hidden, layout, last_only=False):
        normed = self.attention_norm(hidden)
        if last_only:
            attended = self.multi_head_attention.forward_last(hidden, layout, query_input=normed)
            normed = normed.index_select(0, layout.last)
        else:
            attended = self.multi_head_attention.forward_packed(hidden, layout, query_input=normed)
        return self._feed_forward(normed + attended)


#: ``sasrec``: RecBole's SASRec block (post-LayerNorm, GELU feed-forward); ``ligr``: :class:`LiGRLayer`;
#: ``sasrec_original``: :class:`QueryNormLayer`, the block of the SASRec authors' code.
LAYER_TYPES = {"sasrec": TransformerLayer, "ligr": LiGRLayer, "sasrec_original": QueryNormLayer}
#: layer types whose blocks leave their output unnormalised: the encoder adds a LayerNorm after the last block
PRE_NORM_LAYER_TYPES = ("ligr", "sasrec_original")
#: ``normal``: RecBole's N(0, initializer_range) for every Linear and Embedding weight, zero biases;
#: ``xavier_normal``: Xavier-normal for every weight matrix and embedding table (the SASRec authors' code, RecTools)
WEIGHT_INITS = ("normal", "xavier_normal")
#: ``from_start``: position 0 is a sequence's first item (RecBole); ``from_end``: its last item (RecTools' inverse
#: positions: the item the next-item prediction reads always has position 0)
POSITION_ORDERS = ("from_start", "from_end")


def position_ids(item_seq_len, max_len, order):
    """``[B, max_len]`` position-embedding rows of a left-aligned batch (padding positions get row 0, never read)."""
    positions = torch.arange(max_len, device=item_seq_len.device)[None, :].expand(item_seq_len.size(0), -1)
    if order == "from_start":
        return positions
    return (item_seq_len.to(torch.long)[:, None] - 1 - positions).clamp(min=0)


class TransformerEncoder(nn.Module):
    def __init__(self, n_layers, layer_type="sasrec", **layer_kwargs):
        super().__init__()
        self.layer = nn.ModuleList([LAYER_TYPES[layer_type](**layer_kwargs) for _ in range(n_layers)])

    def forward(self, hidden, attention_mask):
        for layer in self.layer:
            hidden = layer(hidden, attention_mask)
        return hidden


class SASRecBackbone(nn.Module):
    """Item + position embeddings, then causal (or bidirectional) Transformer blocks; ``forward`` returns the last
    real position."""

    def __init__(
        self,
        n_items,
        max_seq_length,
        hidden_size=64,
        n_layers=2,
        n_heads=2,
        inner_size=256,
        hidden_dropout_prob=0.5,
        attn_dropout_prob=0.5,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        initializer_range=0.02,
        ffn_dropout_prob=None,
        fast_path=True,
        bidirectional=False,
        layer_type="sasrec",
        weight_init="normal",
        position_order="from_start",
        item_dropout_prob=0.0,
    ):
        super().__init__()
        self.n_items = n_items
        self.bidirectional = bool(bidirectional)
        self.initializer_range = initializer_range
        self.position_order = position_order
        # +1 row: the mask token (id n_items) of masking augmentations.
        self.item_embedding = nn.Embedding(n_items + 1, hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(max_seq_length, hidden_size)
        self.trm_encoder = TransformerEncoder(
            n_layers,
            layer_type=layer_type,
            n_heads=n_heads,
            hidden_size=hidden_size,
            inner_size=inner_size,
            hidden_dropout_prob=hidden_dropout_prob,
            attn_dropout_prob=attn_dropout_prob,
            hidden_act=hidden_act,
            eps=layer_norm_eps,
            # a separate rate for the feed-forward blocks: SRMA's neuron masking; by default the same as elsewhere
            ffn_dropout_prob=hidden_dropout_prob if ffn_dropout_prob is None else ffn_dropout_prob,
        )
        # the SASRec authors' block normalises its own query; their embeddings go in unnormalised
        embedding_norm = layer_type != "sasrec_original"
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps) if embedding_norm else nn.Identity()
        self.dropout = Dropout(hidden_dropout_prob)
        # RecTools drops out the item table itself: the embedded inputs and, in the loss, the scored items
        self.item_dropout = Dropout(item_dropout_prob)
        # pre-norm blocks leave their output unnormalised: one LayerNorm after the last (SASRec's blocks end in one)
        pre_norm = layer_type in PRE_NORM_LAYER_TYPES
        self.output_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps) if pre_norm else nn.Identity()
        self.apply(self._init_weights)
        if weight_init == "xavier_normal":
            for parameter in self.parameters():
                if parameter.dim() > 1:
                    nn.init.xavier_normal_(parameter)
        self.set_fast_path(fast_path)

    def set_fast_path(self, enabled):
        """Switch this encoder between the fast path and the padded reference path (module docstring); a model
        switches all of its encoders and dropouts at once with ``SequentialBackboneRecommender.set_fast_path``."""
        self.fast_path = bool(enabled)
        set_fast_dropout(self, enabled)
        return self

    CONFIG_KEYS = (
        "hidden_size",
        "n_layers",
        "n_heads",
        "inner_size",
        "hidden_dropout_prob",
        "attn_dropout_prob",
        "hidden_act",
        "layer_norm_eps",
        "initializer_range",
        "fast_path",
        "layer_type",
        "weight_init",
        "position_order",
        "item_dropout_prob",
    )
    #: keys added after the first checkpoints and caches were written, with the value that reproduces them
    ADDED_KEY_DEFAULTS = {
        "layer_type": "sasrec",
        "weight_init": "normal",
        "position_order": "from_start",
        "item_dropout_prob": 0.0,
    }

    @classmethod
    def from_config(cls, config, n_items, max_seq_length, **overrides):
        """Built from the backbone keys of ``config``; ``overrides`` replace any of them (or set ffn_dropout_prob)."""
        kwargs = {key: config[key] for key in cls.CONFIG_KEYS if config[key] is not None}
        kwargs.update(overrides)
        return cls(n_items, max_seq_length, **kwargs)

    def _init_weights(self, module):
        # RecBole's SASRec initialisation (normal for Linear and Embedding, padding row included).
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=self.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    def item_table(self, n_items):
        """The first ``n_items`` rows of the item table as the loss scores them (``item_dropout_prob`` in training)."""
        return self.item_dropout(self.item_embedding.weight[:n_items])

    def attention_mask(self, item_seq):
        """Boolean [B, 1, L, L] (or [B, 1, 1, L] when bidirectional): query t may attend to key s when s is not
        padding and, unless bidirectional, s <= t."""
        keys = (item_seq != 0)[:, None, None, :]
        if self.bidirectional:
            return keys
        length = item_seq.size(1)
        return keys & torch.ones(length, length, dtype=torch.bool, device=item_seq.device).tril()

    def encode(self, item_seq):
        """Hidden states of every position, [B, L, H]."""
        positions = position_ids((item_seq != 0).sum(1), item_seq.size(1), self.position_order)
        hidden = self.item_dropout(self.item_embedding(item_seq)) + self.position_embedding(positions)
        hidden = self.dropout(self.LayerNorm(hidden))
        return self.output_norm(self.trm_encoder(hidden, self.attention_mask(item_seq)))

    def forward(self, item_seq, item_seq_len):
        """Hidden state at the last real position of each sequence, [B, H]."""
        if self.fast_path:
            return self.forward_packed(item_seq, item_seq_len)
        hidden = self.encode(item_seq)
        index = (item_seq_len - 1).view(-1, 1, 1).expand(-1, 1, hidden.size(-1))
        return hidden.gather(1, index).squeeze(1)

    def _embed_packed(self, item_seq, item_seq_len):
        layout = PackedLayout(item_seq, item_seq_len, self.bidirectional)
        positions = position_ids(layout.lengths, layout.max_len, self.position_order).flatten()[layout.index]
        hidden = self.item_dropout(self.item_embedding(layout.items)) + self.position_embedding(positions)
        return self.dropout(self.LayerNorm(hidden)), layout

    def encode_packed(self, item_seq, item_seq_len):
        """Hidden states of every real position on the fast path: ``[N, H]`` (sequence by sequence, as
        ``item_seq[valid]`` orders them) and the :class:`PackedLayout`."""
        hidden, layout = self._embed_packed(item_seq, item_seq_len)
        for layer in self.trm_encoder.layer:
            hidden = layer.forward_packed(hidden, layout)
        return self.output_norm(hidden), layout

    def forward_packed(self, item_seq, item_seq_len):
        """``forward`` computed on the real tokens only (the fast path)."""
        hidden, layout = self._embed_packed(item_seq, item_seq_len)
        layers = self.trm_encoder.layer
        for i, layer in enumerate(layers):
            hidden = layer.forward_packed(hidden, layout, last_only=i == len(layers) - 1)
        return self.output_norm(hidden)
