"""Sequence augmentations for contrastive sequential recommendation (one place for all of them).

Conventions (RecBole): ``item_seq`` is a LongTensor ``[B, L]``, left-aligned (the real items of row ``b`` sit at
positions ``0 .. len_b - 1``, zeros after), ``item_seq_len`` is a LongTensor ``[B]`` with ``1 <= len_b <= L`` (a
precondition: it is not checked, as that would force a device synchronisation). ``mask_token`` is a dedicated item id
(``n_items``, one past the last real item id). Rates follow the CL4SRec paper (Xie et al., ICDE 2022): ``eta`` crop,
``gamma`` mask, ``beta`` reorder; each lies in ``[0, 1]``: the operators assume it, the hyper-parameters are checked
once, when the Config is built (``HPARAMS`` of each model, :mod:`recbole_srma.hparams`). ``floor`` below is the floor
of the float64 product ``rate * len`` (the same value Python's ``math.floor(rate * len)`` gives).

Exact definitions, applied to every row independently (``len`` is the row's length):

* ``crop``: keep ``n = max(1, floor(eta * len))`` contiguous items starting at a start drawn uniformly from
  ``[0, len - n]``; they are moved to the front, every later position is 0, and the new length is ``n``.
* ``mask``: exactly ``k = floor(gamma * len)`` distinct real positions, chosen uniformly at random, are replaced by
  ``mask_token``; the length is unchanged and padding is untouched.
* ``reorder``: a contiguous window of ``n = floor(beta * len)`` items, starting at a start drawn uniformly from
  ``[0, len - n]``, is permuted uniformly at random; every position outside the window is unchanged, and so is the
  length.
* ``segment_mask``: a contiguous window of ``n = floor(gamma * len)`` items, starting at a start drawn uniformly from
  ``[0, len - n]``, is replaced by ``mask_token``; the length is unchanged (the segment masking of Barlow Twins
  sequence models).
* ``identity``: returns copies of its inputs (the "no augmentation" operator used by ablations).
* ``substitute`` (CoSeRec): ``k = max(1, floor(rate * len))`` distinct uniformly chosen real positions get the most
  similar item of the item they hold (``lookup``, e.g. item-based CF); the length is unchanged.
* ``insert`` (CoSeRec): before each of ``k = max(1, floor(rate * len))`` distinct uniformly chosen real positions, the
  most similar item of the item there is inserted; the length grows by ``k``, and when it passes ``L`` the oldest
  items are dropped (the most recent ``L`` are kept, as CoSeRec's data pipeline does).

``lookup`` maps a LongTensor of item ids to the most similar item of each (same shape; padding 0 maps to 0).

Hence a length-1 row is unchanged by all of them (for rates < 1; ``crop`` always keeps at least one item), and
``gamma = 0``, ``beta = 0`` and ``eta = 1`` are identities.

Every operator is batched and vectorised (no Python loop over rows), runs on the tensors' device, draws its randomness
from an optional ``torch.Generator`` (``None``: the global RNG; a generator must live on the tensors' device), NEVER
writes to its inputs, and returns fresh tensors that share no storage with them (a known bug in public code mutates the
stored training sequences through tensor views).

:class:`DataAugmentation` composes operators into contrastive views; :meth:`DataAugmentation.from_config` builds it
from a model's config (every model's one way to get its operators). To add an operator: write a function
``op(item_seq, item_seq_len, <its parameters>, generator=None) -> (seq, seq_len)`` with the guarantees above, add one
entry to ``_BUILDERS``, a keyword for its rate in :meth:`DataAugmentation.from_rates` and ``RATE_KEYS``, and its rate
to the ``HPARAMS`` of the models that offer it.
"""

from __future__ import annotations

import numbers
from typing import Callable, Mapping, Optional, Sequence, Tuple

import torch

from recbole_srma.errors import ConfigError

__all__ = [
    "crop",
    "mask",
    "segment_mask",
    "reorder",
    "identity",
    "substitute",
    "insert",
    "Operator",
    "DataAugmentation",
    "SequenceAugmenter",
    "OPERATOR_NAMES",
]

SeqPair = Tuple[torch.Tensor, torch.Tensor]
OperatorFn = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Generator]], SeqPair]


# --------------------------------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------------------------------
def _check_seq(item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> None:
    if not isinstance(item_seq, torch.Tensor) or item_seq.dim() != 2:
        raise ValueError(f"item_seq must be a 2-D tensor [B, L], got {getattr(item_seq, 'shape', type(item_seq))}")
    if not isinstance(item_seq_len, torch.Tensor) or item_seq_len.dim() != 1:
        raise ValueError(
            f"item_seq_len must be a 1-D tensor [B], got {getattr(item_seq_len, 'shape', type(item_seq_len))}"
        )
    if item_seq_len.shape[0] != item_seq.shape[0]:
        raise ValueError(
            f"item_seq has {item_seq.shape[0]} rows but item_seq_len has {item_seq_len.shape[0]} entries"
        )
    if item_seq.is_floating_point() or item_seq_len.is_floating_point():
        raise ValueError("item_seq and item_seq_len must be integer tensors")


def _floor_rate(rate: float, item_seq_len: torch.Tensor) -> torch.Tensor:
    """floor(rate * len) per row, computed in float64 (same value as Python's math.floor(rate * len))."""
    return torch.floor(item_seq_len.to(torch.float64) * rate).to(torch.long)


def _uniform_start(n: torch.Tensor, lengths: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """A start drawn uniformly from [0, len - n] per row (long [B])."""
    u = torch.rand(lengths.shape[0], generator=generator, device=lengths.device, dtype=torch.float64)
    span = (lengths - n + 1).clamp_min(1)
    start = torch.floor(u * span.to(torch.float64)).to(torch.long)
    return torch.minimum(start, span - 1)  # guards the (measure-zero) rounding case u * span == span


# --------------------------------------------------------------------------------------------------------------------
# operators
# --------------------------------------------------------------------------------------------------------------------
def crop(
    item_seq: torch.Tensor, item_seq_len: torch.Tensor, eta: float, generator: Optional[torch.Generator] = None
) -> SeqPair:
    """Keep ``max(1, floor(eta * len))`` contiguous items from a uniform start, moved to the front (rest 0)."""
    _check_seq(item_seq, item_seq_len)
    lengths = item_seq_len.to(torch.long)
    n = _floor_rate(eta, lengths).clamp_min(1)
    start = _uniform_start(n, lengths, generator)
    L = item_seq.shape[1]
    pos = torch.arange(L, device=item_seq.device).unsqueeze(0)  # [1, L]
    src = (start.unsqueeze(1) + pos).clamp_max(L - 1)  # [B, L]
    gathered = torch.gather(item_seq, 1, src)
    seq = torch.where(pos < n.unsqueeze(1), gathered, torch.zeros_like(gathered))
    return seq, n.to(item_seq_len.dtype)


def mask(
    item_seq: torch.Tensor,
    item_seq_len: torch.Tensor,
    gamma: float,
    mask_token: int,
    generator: Optional[torch.Generator] = None,
) -> SeqPair:
    """Replace exactly ``floor(gamma * len)`` distinct uniformly chosen real positions by ``mask_token``."""
    _check_seq(item_seq, item_seq_len)
    chosen = _random_positions(item_seq, item_seq_len.to(torch.long), _floor_rate(gamma, item_seq_len), generator)
    seq = torch.where(chosen, torch.full_like(item_seq, int(mask_token)), item_seq)
    return seq, item_seq_len.clone()


def segment_mask(
    item_seq: torch.Tensor,
    item_seq_len: torch.Tensor,
    gamma: float,
    mask_token: int,
    generator: Optional[torch.Generator] = None,
) -> SeqPair:
    """Replace a contiguous window of ``floor(gamma * len)`` items at a uniform start by ``mask_token``."""
    _check_seq(item_seq, item_seq_len)
    lengths = item_seq_len.to(torch.long)
    n = _floor_rate(gamma, lengths)
    start = _uniform_start(n, lengths, generator)
    pos = torch.arange(item_seq.shape[1], device=item_seq.device).unsqueeze(0)
    window = (pos >= start.unsqueeze(1)) & (pos < (start + n).unsqueeze(1))
    seq = torch.where(window, torch.full_like(item_seq, int(mask_token)), item_seq)
    return seq, item_seq_len.clone()


def _random_positions(item_seq, lengths, k, generator):
    """Bool ``[B, L]``: exactly ``k`` (per row) distinct real positions, chosen uniformly."""
    B, L = item_seq.shape
    pos = torch.arange(L, device=item_seq.device).unsqueeze(0)
    # Random keys in [0, 1) for real positions, 2 for padding: the k smallest keys are k distinct real positions,
    # chosen uniformly.
    keys = torch.rand(B, L, generator=generator, device=item_seq.device, dtype=torch.float64)
    keys = torch.where(pos < lengths.unsqueeze(1), keys, torch.full_like(keys, 2.0))
    ranks = keys.argsort(dim=1).argsort(dim=1)
    return ranks < k.unsqueeze(1)


def reorder(
    item_seq: torch.Tensor, item_seq_len: torch.Tensor, beta: float, generator: Optional[torch.Generator] = None
) -> SeqPair:
    """Uniformly permute a contiguous window of ``floor(beta * len)`` items at a uniform start; rest unchanged."""
    _check_seq(item_seq, item_seq_len)
    B, L = item_seq.shape
    lengths = item_seq_len.to(torch.long)
    n = _floor_rate(beta, lengths)
    start = _uniform_start(n, lengths, generator)
    pos = torch.arange(L, device=item_seq.device).unsqueeze(0)
    in_window = (pos >= start.unsqueeze(1)) & (pos < (start + n).unsqueeze(1))
    # Sort keys: a position outside the window keeps its own index; window positions get start + U[0, 1), so they sort
    # together (between start - 1 and start + n >= start + 1) in a uniformly random order.
    u = torch.rand(B, L, generator=generator, device=item_seq.device, dtype=torch.float64)
    keys = torch.where(in_window, start.unsqueeze(1).to(torch.float64) + u, pos.to(torch.float64).expand(B, L))
    perm = keys.argsort(dim=1)
    seq = torch.gather(item_seq, 1, perm)
    return seq, item_seq_len.clone()


def identity(
    item_seq: torch.Tensor, item_seq_len: torch.Tensor, generator: Optional[torch.Generator] = None
) -> SeqPair:
    """No augmentation: copies of the inputs (never the inputs themselves)."""
    _check_seq(item_seq, item_seq_len)
    return item_seq.clone(), item_seq_len.clone()


def substitute(
    item_seq: torch.Tensor,
    item_seq_len: torch.Tensor,
    rate: float,
    lookup: Callable[[torch.Tensor], torch.Tensor],
    generator: Optional[torch.Generator] = None,
) -> SeqPair:
    """Replace ``max(1, floor(rate * len))`` distinct random real items by their most similar item."""
    _check_seq(item_seq, item_seq_len)
    lengths = item_seq_len.to(torch.long)
    chosen = _random_positions(item_seq, lengths, _floor_rate(rate, lengths).clamp_min(1), generator)
    return torch.where(chosen, lookup(item_seq), item_seq), item_seq_len.clone()


def insert(
    item_seq: torch.Tensor,
    item_seq_len: torch.Tensor,
    rate: float,
    lookup: Callable[[torch.Tensor], torch.Tensor],
    generator: Optional[torch.Generator] = None,
) -> SeqPair:
    """Insert the most similar item before ``max(1, floor(rate * len))`` distinct random real positions; keep the
    most recent ``L`` items."""
    _check_seq(item_seq, item_seq_len)
    B, L = item_seq.shape
    lengths = item_seq_len.to(torch.long)
    k = _floor_rate(rate, lengths).clamp_min(1).minimum(lengths)
    chosen = _random_positions(item_seq, lengths, k, generator)
    pos = torch.arange(L, device=item_seq.device).unsqueeze(0)
    real = pos < lengths.unsqueeze(1)
    shift = chosen.long().cumsum(dim=1)  # inserted items up to and including position j
    dump = 2 * L  # padding positions are written to a column that is dropped
    grown = torch.zeros(B, 2 * L + 1, dtype=item_seq.dtype, device=item_seq.device)
    grown.scatter_(1, torch.where(real, pos + shift, dump), item_seq)
    grown.scatter_(1, torch.where(chosen, pos + shift - 1, dump), lookup(item_seq))
    new_len = lengths + k
    drop = (new_len - L).clamp_min(0)  # oldest items beyond the maximum length
    seq = grown.gather(1, (pos + drop.unsqueeze(1)).clamp_max(dump))
    kept = new_len.clamp_max(L)
    seq = torch.where(pos < kept.unsqueeze(1), seq, torch.zeros_like(seq))
    return seq, kept.to(item_seq_len.dtype)


class Operator:
    """An augmentation function with its parameters bound: ``op(item_seq, item_seq_len, generator=None)``.

    Picklable (unlike a lambda) and with a readable repr, e.g. ``crop(eta=0.6)``.
    """

    def __init__(self, fn: Callable[..., SeqPair], **params):
        self.fn = fn
        self.params = params

    def __call__(
        self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, generator: Optional[torch.Generator] = None
    ) -> SeqPair:
        return self.fn(item_seq, item_seq_len, generator=generator, **self.params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{getattr(self.fn, '__name__', repr(self.fn))}({args})"


# name -> builder(params) -> Operator, where params holds every keyword of DataAugmentation.from_rates.
_BUILDERS: dict[str, Callable[[dict], Operator]] = {
    "crop": lambda p: Operator(crop, eta=p["crop_eta"]),
    "mask": lambda p: Operator(mask, gamma=p["mask_gamma"], mask_token=p["mask_token"]),
    "segment_mask": lambda p: Operator(segment_mask, gamma=p["segment_mask_gamma"], mask_token=p["mask_token"]),
    "reorder": lambda p: Operator(reorder, beta=p["reorder_beta"]),
    "identity": lambda p: Operator(identity),
    "substitute": lambda p: Operator(substitute, rate=p["substitute_rate"], lookup=p["lookup"]),
    "insert": lambda p: Operator(insert, rate=p["insert_rate"], lookup=p["lookup"]),
}
OPERATOR_NAMES: Tuple[str, ...] = tuple(_BUILDERS)
#: The config keys of the operators' rates.
RATE_KEYS = ("crop_eta", "mask_gamma", "reorder_beta", "insert_rate", "substitute_rate", "segment_mask_gamma")


def _shares_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


# --------------------------------------------------------------------------------------------------------------------
# composition
# --------------------------------------------------------------------------------------------------------------------
class DataAugmentation:
    """Data augmentation: draws contrastive views of a batch of sequences from a set of named operators.

    ``operators`` maps a name to a callable ``op(item_seq, item_seq_len, generator) -> (seq, seq_len)`` (called with the
    generator as third positional argument) that obeys the module's guarantees (fresh outputs, inputs untouched).

    ``distinct`` (default): the views of a row use distinct operators when there are enough of them (CL4SRec);
    ``False``: each view draws its operator independently (CoSeRec). ``short_threshold`` / ``short_operators``:
    rows of length ``<= short_threshold`` draw from ``short_operators`` only (CoSeRec's rule for short sequences);
    ``short_threshold=None`` applies every operator to every row.
    """

    def __init__(
        self,
        operators: Mapping[str, OperatorFn],
        distinct: bool = True,
        short_threshold: Optional[int] = None,
        short_operators: Sequence[str] = (),
    ):
        if not isinstance(operators, Mapping) or len(operators) == 0:
            raise ConfigError(
                "DataAugmentation needs at least one operator; for no augmentation use DataAugmentation.identity() "
                "or operators=('identity',)"
            )
        for name, op in operators.items():
            if not callable(op):
                raise ConfigError(f"augmentation operator {name!r} is not callable: {op!r}")
        self.operators: dict[str, OperatorFn] = dict(operators)
        self.names: Tuple[str, ...] = tuple(self.operators)
        self.distinct = bool(distinct)
        self.short_threshold = short_threshold
        if short_threshold is not None:
            unknown = [n for n in short_operators if n not in self.operators]
            if not short_operators or unknown:
                raise ConfigError(
                    f"short-sequence operators must be a non-empty subset of the operators {list(self.names)}, "
                    f"got {list(short_operators)}"
                )
        self.short_names: Tuple[str, ...] = tuple(short_operators) if short_threshold is not None else ()

    def __repr__(self) -> str:
        return f"DataAugmentation({self.operators!r})"

    @classmethod
    def from_rates(
        cls,
        crop_eta: float = 0.6,
        mask_gamma: float = 0.3,
        reorder_beta: float = 0.6,
        mask_token: Optional[int] = None,
        operators: Sequence[str] = ("crop", "mask", "reorder"),
        insert_rate: float = 0.4,
        substitute_rate: float = 0.1,
        lookup: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        segment_mask_gamma: float = 0.3,
        **options,
    ) -> "DataAugmentation":
        """Build from rates; ``operators`` picks (and orders) names from ``OPERATOR_NAMES``.

        Rates are used as given (in [0, 1]: checked when the Config is built); ``mask_token`` (checked here, the one
        place every masking operator gets it from) is required only when ``"mask"`` or ``"segment_mask"`` is
        selected, ``lookup`` (item -> most similar item) only
        for ``"insert"`` / ``"substitute"``. ``operators=("identity",)`` gives no augmentation. ``options`` go to
        the constructor (``distinct``, ``short_threshold``, ``short_operators``).
        """
        params = {
            "crop_eta": crop_eta,
            "mask_gamma": mask_gamma,
            "reorder_beta": reorder_beta,
            "insert_rate": insert_rate,
            "substitute_rate": substitute_rate,
            "segment_mask_gamma": segment_mask_gamma,
            "mask_token": mask_token,
            "lookup": lookup,
        }
        if isinstance(operators, str):
            operators = (operators,)
        names = tuple(operators)
        if not names:
            raise ConfigError(
                f"augmentation operators must name at least one of {list(OPERATOR_NAMES)}; "
                "use ['identity'] for no augmentation"
            )
        unknown = [n for n in names if n not in _BUILDERS]
        if unknown:
            raise ConfigError(f"unknown augmentation operator(s) {unknown}; choose from {list(OPERATOR_NAMES)}")
        if len(set(names)) != len(names):
            raise ConfigError(f"augmentation operators must not repeat, got {list(names)}")
        masking = [n for n in names if n in ("mask", "segment_mask")]
        if masking and (
            isinstance(mask_token, bool) or not isinstance(mask_token, numbers.Integral) or mask_token < 1
        ):
            raise ConfigError(
                f"the {masking} operator(s) need mask_token, a positive integer item id (n_items), got {mask_token!r}"
            )
        needs_lookup = [n for n in names if n in ("insert", "substitute")]
        if needs_lookup and not callable(lookup):
            raise ConfigError(f"the {needs_lookup} operator(s) need an item-similarity lookup (CoSeRec builds one)")
        return cls({n: _BUILDERS[n](params) for n in names}, **options)

    @classmethod
    def from_config(cls, config, mask_token, lookup=None, operators_key="augmentations", **options):
        """The operators a model's config names (``config[operators_key]``), with its rates (``RATE_KEYS``: those
        the config sets; the others keep :meth:`from_rates`' defaults and go unused). ``options`` as in
        :meth:`from_rates`."""
        rates = {key: config[key] for key in RATE_KEYS if key in config and config[key] is not None}
        return cls.from_rates(mask_token=mask_token, lookup=lookup, operators=config[operators_key], **rates, **options)

    @classmethod
    def identity(cls) -> "DataAugmentation":
        """No augmentation: every view is a copy of the input."""
        return cls({"identity": Operator(identity)})

    def _choose(self, B, pool, n_views, generator, device):
        """``[B, n_views]`` operator indices (into ``self.names``) drawn from ``pool``."""
        pool_index = torch.tensor([self.names.index(n) for n in pool], device=device)
        if self.distinct and len(pool) >= n_views:
            keys = torch.rand(B, len(pool), generator=generator, device=device)
            picks = keys.argsort(dim=1)[:, :n_views]  # distinct per row
        else:
            picks = torch.randint(0, len(pool), (B, n_views), generator=generator, device=device)
        return pool_index[picks]

    def views(
        self,
        item_seq: torch.Tensor,
        item_seq_len: torch.Tensor,
        n_views: int = 2,
        generator: Optional[torch.Generator] = None,
    ) -> list[SeqPair]:
        """Return ``n_views`` augmented copies ``[(seq, seq_len), ...]`` of the batch.

        For every row independently, the operators of its views are drawn uniformly at random from its pool (all
        operators, or the short-sequence ones): distinct operators (a uniformly random ordered n_views-subset) when
        ``distinct`` and the pool has at least ``n_views``, otherwise independently per view. When every view must
        use a different operator, each operator runs once on the whole batch and rows pick their result with
        ``torch.where``; otherwise each operator runs once per view, so two views of a row made by the same (random)
        operator are still independent draws.
        """
        if isinstance(n_views, bool) or not isinstance(n_views, numbers.Integral) or n_views < 1:
            raise ValueError(f"n_views must be a positive int, got {n_views!r}")
        _check_seq(item_seq, item_seq_len)
        B = item_seq.shape[0]
        device = item_seq.device
        choice = self._choose(B, self.names, n_views, generator, device)
        if self.short_names:
            short_choice = self._choose(B, self.short_names, n_views, generator, device)
            short = (item_seq_len <= self.short_threshold).unsqueeze(1)
            choice = torch.where(short, short_choice, choice)
        always_distinct = self.distinct and len(self.names) >= n_views and (
            not self.short_names or len(self.short_names) >= n_views
        )

        def run_all() -> list[SeqPair]:
            out = []
            for name in self.names:
                seq, seq_len = self.operators[name](item_seq, item_seq_len, generator)
                if seq.shape != item_seq.shape or seq_len.shape != item_seq_len.shape:
                    raise ValueError(
                        f"augmentation operator {name!r} returned shapes {tuple(seq.shape)}, {tuple(seq_len.shape)}; "
                        f"expected {tuple(item_seq.shape)}, {tuple(item_seq_len.shape)}"
                    )
                out.append((seq, seq_len))
            return out

        shared = run_all() if always_distinct else None
        views: list[SeqPair] = []
        for v in range(n_views):
            results = shared if shared is not None else run_all()
            seq, seq_len = results[0]
            for o in range(1, len(self.names)):
                pick = choice[:, v] == o
                seq = torch.where(pick.unsqueeze(1), results[o][0], seq)
                seq_len = torch.where(pick, results[o][1], seq_len)
            # Defensive: with a single operator the result is returned as is; never hand back the inputs' storage,
            # nor the same tensor for two views.
            if _shares_storage(seq, item_seq) or any(_shares_storage(seq, s) for s, _ in views):
                seq = seq.clone()
            if _shares_storage(seq_len, item_seq_len) or any(_shares_storage(seq_len, s) for _, s in views):
                seq_len = seq_len.clone()
            views.append((seq, seq_len))
        return views


#: The former name of :class:`DataAugmentation` ("augmenter" also names MCLRec's learnable model augmenters).
SequenceAugmenter = DataAugmentation
