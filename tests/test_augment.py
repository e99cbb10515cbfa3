"""Exact semantics of the sequence augmentations (recbole_srma.model.augment)."""

import math
import pickle
from collections import Counter
from itertools import permutations

import pytest
import torch

from recbole_srma.errors import ConfigError
from recbole_srma.model import augment
from recbole_srma.model.augment import SequenceAugmenter, crop, identity, mask, reorder, segment_mask

N_ITEMS = 500
MASK = N_ITEMS  # the mask token: one past the last real item id


def make_batch(B=64, L=20, seed=0, min_len=1):
    """Right-padded batch with DISTINCT items per row (so positions can be traced), lengths in [min_len, L]."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, L + 1, (B,), generator=g)
    lengths[0] = 1  # always include a length-1 row and a full row
    lengths[1] = L
    seq = torch.zeros(B, L, dtype=torch.long)
    for b in range(B):
        items = torch.randperm(N_ITEMS - 1, generator=g)[: lengths[b]] + 1
        seq[b, : lengths[b]] = items
    return seq, lengths


def repeated_row(B, L, n):
    """B identical rows 1..n padded to L."""
    seq = torch.zeros(B, L, dtype=torch.long)
    seq[:, :n] = torch.arange(1, n + 1)
    return seq, torch.full((B,), n, dtype=torch.long)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


OPS = {
    "crop": lambda s, l, g=None: crop(s, l, 0.6, generator=g),
    "mask": lambda s, l, g=None: mask(s, l, 0.3, MASK, generator=g),
    "reorder": lambda s, l, g=None: reorder(s, l, 0.6, generator=g),
    "segment_mask": lambda s, l, g=None: segment_mask(s, l, 0.3, MASK, generator=g),
    "identity": lambda s, l, g=None: identity(s, l, generator=g),
}


# ---------------------------------------------------------------------------------------------------------- generic
@pytest.mark.parametrize("name", list(OPS))
def test_shapes_dtypes_and_inputs_untouched(name):
    seq, lengths = make_batch()
    seq_c, len_c = seq.clone(), lengths.clone()
    out, out_len = OPS[name](seq, lengths, gen(1))
    assert out.shape == seq.shape and out.dtype == torch.long
    assert out_len.shape == lengths.shape and out_len.dtype == lengths.dtype
    assert torch.equal(seq, seq_c) and torch.equal(lengths, len_c)
    for o in (out, out_len):
        for i in (seq, lengths):
            assert o.untyped_storage().data_ptr() != i.untyped_storage().data_ptr()
    # Writing to the outputs must not reach the inputs.
    out.fill_(7)
    out_len.fill_(3)
    assert torch.equal(seq, seq_c) and torch.equal(lengths, len_c)


@pytest.mark.parametrize("name", list(OPS))
def test_inputs_that_are_views_are_not_mutated(name):
    # Sequences handed over as views of a larger stored tensor (as a dataloader slice would be).
    store, store_len = make_batch(B=80)
    store_c, store_len_c = store.clone(), store_len.clone()
    seq, lengths = store[10:74], store_len[10:74]
    out, out_len = OPS[name](seq, lengths, gen(2))
    out.add_(1)
    out_len.add_(1)
    assert torch.equal(store, store_c) and torch.equal(store_len, store_len_c)


@pytest.mark.parametrize("name", ["crop", "mask", "reorder", "segment_mask"])
def test_length_one_rows_unchanged_and_padding_zero(name):
    seq, lengths = make_batch(B=200, seed=3)
    lengths[::3] = 1
    seq[::3, 1:] = 0
    out, out_len = OPS[name](seq, lengths, gen(4))
    ones = lengths == 1
    assert torch.equal(out[ones], seq[ones]) and torch.equal(out_len[ones], lengths[ones])
    pos = torch.arange(seq.shape[1])
    assert (out[pos >= out_len.unsqueeze(1)] == 0).all()
    if name != "crop":
        assert torch.equal(out_len, lengths)


@pytest.mark.parametrize("name", ["crop", "mask", "reorder", "segment_mask"])
def test_generator_reproducible_and_seed_sensitive(name):
    seq, lengths = make_batch(B=64, L=50, min_len=20)
    a = OPS[name](seq, lengths, gen(5))
    b = OPS[name](seq, lengths, gen(5))
    c = OPS[name](seq, lengths, gen(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    torch.manual_seed(9)
    d = OPS[name](seq, lengths, None)
    torch.manual_seed(9)
    e = OPS[name](seq, lengths, None)
    assert torch.equal(d[0], e[0])


@pytest.mark.parametrize("name", ["crop", "mask", "reorder", "segment_mask"])
def test_views_differ_from_input_on_long_sequences(name):
    seq, lengths = make_batch(B=32, L=50, min_len=30)
    out, _ = OPS[name](seq, lengths, gen(7))
    differs = (out != seq).any(dim=1)
    assert differs.float().mean() > 0.9


# ---------------------------------------------------------------------------------------------------------- crop
@pytest.mark.parametrize("eta", [0.0, 0.2, 0.5, 0.6, 0.9])
def test_crop_exact(eta):
    seq, lengths = make_batch(B=128, L=25, seed=11)
    out, out_len = crop(seq, lengths, eta, generator=gen(12))
    for b in range(seq.shape[0]):
        ln = int(lengths[b])
        n = max(1, math.floor(eta * ln))
        assert int(out_len[b]) == n
        row = seq[b, :ln].tolist()
        kept = out[b, :n].tolist()
        assert any(row[s : s + n] == kept for s in range(0, ln - n + 1)), (b, row, kept)
        assert (out[b, n:] == 0).all()


def test_crop_start_uniform_per_row():
    L, n_items, eta = 20, 20, 0.5  # n = 10, starts 0..10
    B = 2200
    seq, lengths = repeated_row(B, L, n_items)
    out, out_len = crop(seq, lengths, eta, generator=gen(13))
    assert (out_len == 10).all()
    starts = Counter((out[:, 0] - 1).tolist())
    assert set(starts) == set(range(11))  # every start in [0, len - n] occurs, nothing else
    expected = B / 11
    assert all(0.75 * expected < c < 1.25 * expected for c in starts.values()), starts


def test_crop_eta_one_is_identity():
    seq, lengths = make_batch()
    out, out_len = crop(seq, lengths, 1.0, generator=gen())
    assert torch.equal(out, seq) and torch.equal(out_len, lengths)


# ---------------------------------------------------------------------------------------------------------- mask
@pytest.mark.parametrize("gamma", [0.1, 0.3, 0.5, 0.7, 1.0])
def test_mask_exact(gamma):
    seq, lengths = make_batch(B=128, L=25, seed=21)
    out, out_len = mask(seq, lengths, gamma, MASK, generator=gen(22))
    assert torch.equal(out_len, lengths)
    for b in range(seq.shape[0]):
        ln = int(lengths[b])
        changed = (out[b] != seq[b]).nonzero().flatten().tolist()
        assert len(changed) == math.floor(gamma * ln)
        assert all(p < ln for p in changed)
        assert (out[b, changed] == MASK).all()
    assert ((out == MASK).sum(dim=1) == torch.floor(lengths.double() * gamma).long()).all()


@pytest.mark.parametrize("gamma", [0.0, 0.2, 0.3, 0.5, 1.0])
def test_segment_mask_exact(gamma):
    seq, lengths = make_batch(B=128, L=25, seed=24)
    out, out_len = segment_mask(seq, lengths, gamma, MASK, generator=gen(25))
    assert torch.equal(out_len, lengths)
    for b in range(seq.shape[0]):
        ln = int(lengths[b])
        n = math.floor(gamma * ln)
        changed = (out[b] != seq[b]).nonzero().flatten().tolist()
        assert len(changed) == n and all(p < ln for p in changed)
        if n:  # one contiguous window of masked items
            assert changed == list(range(changed[0], changed[0] + n))
            assert (out[b, changed] == MASK).all()


def test_segment_mask_start_is_uniform():
    B, L, n, gamma = 4000, 12, 10, 0.3  # windows of 3 items: starts 0..7 equally likely
    seq, lengths = repeated_row(B, L, n)
    out, _ = segment_mask(seq, lengths, gamma, MASK, generator=gen(26))
    starts = (out == MASK).int().argmax(dim=1)
    freq = torch.bincount(starts, minlength=8).double() / B
    assert torch.allclose(freq, torch.full((8,), 1 / 8, dtype=torch.float64), atol=0.025), freq


def test_mask_positions_uniform():
    B, L, n, gamma = 3000, 12, 10, 0.3  # k = 3 of 10 real positions
    seq, lengths = repeated_row(B, L, n)
    out, _ = mask(seq, lengths, gamma, MASK, generator=gen(23))
    freq = (out == MASK).double().mean(dim=0)
    assert torch.allclose(freq[:n], torch.full((n,), 0.3, dtype=torch.float64), atol=0.04), freq
    assert (freq[n:] == 0).all()


def test_mask_gamma_zero_is_identity():
    seq, lengths = make_batch()
    out, out_len = mask(seq, lengths, 0.0, MASK, generator=gen())
    assert torch.equal(out, seq) and torch.equal(out_len, lengths)


def test_mask_bad_token():
    # checked where every masking operator gets its token from
    for operators in (("mask",), ("segment_mask",)):
        with pytest.raises(ValueError, match="mask_token"):
            SequenceAugmenter.from_rates(operators=operators, mask_token=0)
        with pytest.raises(ValueError, match="mask_token"):
            SequenceAugmenter.from_rates(operators=operators, mask_token=3.5)


# ---------------------------------------------------------------------------------------------------------- reorder
@pytest.mark.parametrize("beta", [0.2, 0.5, 0.6, 1.0])
def test_reorder_exact(beta):
    seq, lengths = make_batch(B=128, L=25, seed=31)
    out, out_len = reorder(seq, lengths, beta, generator=gen(32))
    assert torch.equal(out_len, lengths)
    n_changed_rows = 0
    for b in range(seq.shape[0]):
        ln = int(lengths[b])
        n = math.floor(beta * ln)
        row, new = seq[b].tolist(), out[b].tolist()
        assert sorted(row) == sorted(new)  # multiset preserved (padding included)
        ok = [
            s
            for s in range(0, ln - n + 1)
            if new[:s] == row[:s] and new[s + n :] == row[s + n :] and sorted(new[s : s + n]) == sorted(row[s : s + n])
        ]
        assert ok, (b, row, new)
        changed = [p for p in range(len(row)) if row[p] != new[p]]
        if changed:  # the changed positions fit in one window of size n
            assert max(changed) - min(changed) + 1 <= n
            n_changed_rows += 1
    assert n_changed_rows > 0


def test_reorder_permutation_uniform():
    B = 3000
    seq, lengths = repeated_row(B, 3, 3)
    out, _ = reorder(seq, lengths, 1.0, generator=gen(33))
    counts = Counter(tuple(r) for r in out.tolist())
    assert set(counts) == set(permutations([1, 2, 3]))
    assert all(400 < c < 600 for c in counts.values()), counts


def test_reorder_window_start_uniform():
    # len 10, beta 0.2 -> window of 2 at start 0..8; swapping it moves exactly the pair (s, s+1) when it swaps.
    B = 4000
    seq, lengths = repeated_row(B, 10, 10)
    out, _ = reorder(seq, lengths, 0.2, generator=gen(34))
    changed = out != seq
    swapped = changed.any(dim=1)
    starts = Counter(changed[swapped].float().argmax(dim=1).tolist())
    assert set(starts) == set(range(9))
    assert (changed.sum(dim=1)[swapped] == 2).all()


def test_reorder_beta_zero_is_identity():
    seq, lengths = make_batch()
    out, out_len = reorder(seq, lengths, 0.0, generator=gen())
    assert torch.equal(out, seq) and torch.equal(out_len, lengths)


# ---------------------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.5", None, True])
def test_invalid_rates_raise_config_error(bad, tmp_path):
    # checked once, when the Config is built; the operators and from_rates take the rates as given
    from tiny import tiny_config

    from recbole_srma.config import Config
    from recbole_srma.model.cl4srec import CL4SRec

    settings = Config(model="CL4SRec", config_dict=tiny_config(tmp_path)).final_config_dict
    for key in ("crop_eta", "mask_gamma", "reorder_beta"):
        with pytest.raises(ConfigError, match=rf"{key}.*\[0, 1\]"):
            CL4SRec.check_config({**settings, key: bad})  # what the Config runs, on the value as given


def test_bad_shapes_raise():
    seq, lengths = make_batch(B=4)
    with pytest.raises(ValueError):
        crop(seq[0], lengths, 0.5)
    with pytest.raises(ValueError):
        crop(seq, lengths[:3], 0.5)


def test_from_rates_validation():
    with pytest.raises(ConfigError, match="unknown"):
        SequenceAugmenter.from_rates(mask_token=MASK, operators=("crop", "shuffle"))
    with pytest.raises(ConfigError, match="mask_token"):
        SequenceAugmenter.from_rates(operators=("mask",))
    with pytest.raises(ConfigError, match="mask_token"):
        SequenceAugmenter.from_rates(operators=("segment_mask",))
    with pytest.raises(ConfigError, match="identity"):
        SequenceAugmenter.from_rates(operators=())
    with pytest.raises(ConfigError, match="repeat"):
        SequenceAugmenter.from_rates(operators=("crop", "crop"))
    aug = SequenceAugmenter.from_rates(operators=("crop", "reorder"))  # no mask_token needed without "mask"
    assert aug.names == ("crop", "reorder")


# ---------------------------------------------------------------------------------------------------------- views
def tagged_ops(n):
    """Operators that write their tag (1..n) in every real position and return length = tag."""

    def make(tag):
        def op(s, l, g=None):
            pos = torch.arange(s.shape[1])
            return torch.where(pos < l.unsqueeze(1), torch.full_like(s, tag), s), torch.full_like(l, tag)

        return op

    return {f"op{t}": make(t) for t in range(1, n + 1)}


@pytest.mark.parametrize("n_ops,n_views", [(3, 2), (4, 3), (2, 2), (3, 3)])
def test_views_use_distinct_operators_uniformly(n_ops, n_views):
    B = 3000
    seq, lengths = make_batch(B=B, L=8, seed=41)
    seq_c, len_c = seq.clone(), lengths.clone()
    views = SequenceAugmenter(tagged_ops(n_ops)).views(seq, lengths, n_views=n_views, generator=gen(42))
    assert len(views) == n_views
    assert torch.equal(seq, seq_c) and torch.equal(lengths, len_c)
    tags = torch.stack([v[1] for v in views], dim=1)  # [B, n_views]
    for v, (s, _) in enumerate(views):  # the whole row came from the operator named by its length tag
        assert (s[:, 0] == tags[:, v]).all()
        assert s.untyped_storage().data_ptr() != seq.untyped_storage().data_ptr()
    assert all(len(set(r)) == n_views for r in tags.tolist())
    counts = Counter(tuple(r) for r in tags.tolist())
    n_tuples = math.perm(n_ops, n_views)
    assert len(counts) == n_tuples
    expected = B / n_tuples
    assert all(0.7 * expected < c < 1.3 * expected for c in counts.values()), counts


def test_views_fewer_operators_than_views_draw_with_replacement():
    seq, lengths = make_batch(B=64, L=40, min_len=30, seed=43)
    seq_c = seq.clone()
    aug = SequenceAugmenter({"crop": OPS["crop"]})
    (s1, l1), (s2, l2) = aug.views(seq, lengths, generator=gen(44))
    assert torch.equal(seq, seq_c)
    # one operator, two views: both are crops, independently drawn (not the same tensor, and different rows)
    assert s1.untyped_storage().data_ptr() != s2.untyped_storage().data_ptr()
    assert (s1 != s2).any(dim=1).float().mean() > 0.5
    assert torch.equal(l1, torch.floor(lengths.double() * 0.6).long().clamp_min(1))
    # 2 operators, 3 views: every view is one of the two ops, and both ops occur in every view position
    tags = torch.stack([v[1] for v in SequenceAugmenter(tagged_ops(2)).views(seq, lengths, 3, gen(45))], 1)
    for v in range(3):
        assert set(tags[:, v].tolist()) == {1, 2}


def test_views_from_rates_reproducible_and_input_safe():
    seq, lengths = make_batch(B=64, L=30, seed=46)
    seq_c, len_c = seq.clone(), lengths.clone()
    aug = SequenceAugmenter.from_rates(crop_eta=0.6, mask_gamma=0.3, reorder_beta=0.6, mask_token=MASK)
    assert aug.names == ("crop", "mask", "reorder")
    a = aug.views(seq, lengths, generator=gen(47))
    b = aug.views(seq, lengths, generator=gen(47))
    assert torch.equal(seq, seq_c) and torch.equal(lengths, len_c)
    for (sa, la), (sb, lb) in zip(a, b):
        assert torch.equal(sa, sb) and torch.equal(la, lb)
        assert sa.untyped_storage().data_ptr() != seq.untyped_storage().data_ptr()
        assert la.untyped_storage().data_ptr() != lengths.untyped_storage().data_ptr()
    assert not torch.equal(a[0][0], a[1][0])
    pickle.loads(pickle.dumps(aug))  # operators are picklable (no lambdas)


@pytest.mark.parametrize(
    "aug",
    [SequenceAugmenter.identity(), SequenceAugmenter.from_rates(operators=("identity",))],
    ids=["identity()", "from_rates-identity"],
)
def test_no_augmentation(aug):
    seq, lengths = make_batch()
    views = aug.views(seq, lengths, n_views=2, generator=gen())
    for s, l in views:
        assert torch.equal(s, seq) and torch.equal(l, lengths)
        assert s.untyped_storage().data_ptr() != seq.untyped_storage().data_ptr()
        assert l.untyped_storage().data_ptr() != lengths.untyped_storage().data_ptr()
    assert views[0][0].untyped_storage().data_ptr() != views[1][0].untyped_storage().data_ptr()


def test_views_bad_arguments():
    seq, lengths = make_batch(B=4)
    with pytest.raises(ValueError, match="n_views"):
        SequenceAugmenter.identity().views(seq, lengths, n_views=0)
    with pytest.raises(ConfigError):
        SequenceAugmenter({})
    with pytest.raises(ValueError, match="shapes"):
        SequenceAugmenter({"bad": lambda s, l, g: (s[:, :2].clone(), l.clone())}).views(seq, lengths)


def test_registry_lists_operators():
    assert set(augment.OPERATOR_NAMES) >= {"crop", "mask", "reorder", "identity"}
    assert repr(SequenceAugmenter.from_rates(operators=("crop",)).operators["crop"]) == "crop(eta=0.6)"


# ------------------------------------------------------------------------------------------- insert / substitute
def similar(items):
    """A test similarity: item i's most similar item is N_ITEMS + 1000 + i (recognisable), padding stays 0."""
    return torch.where(items > 0, items + N_ITEMS + 1000, items)


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.4, 1.0])
def test_substitute_exact(rate):
    seq, lengths = make_batch(seed=5)
    original = seq.clone()
    out, out_len = augment.substitute(seq, lengths, rate, similar, generator=gen(2))
    assert torch.equal(seq, original) and torch.equal(out_len, lengths)
    for b in range(len(seq)):
        n = int(lengths[b])
        k = max(1, math.floor(rate * n))
        changed = (out[b, :n] != seq[b, :n]).nonzero().flatten()
        assert len(changed) == k
        assert torch.equal(out[b, changed], similar(seq[b, changed]))  # the similar item, at its own place
        assert (out[b, n:] == 0).all()


@pytest.mark.parametrize("rate", [0.0, 0.4, 1.0])
def test_insert_exact_and_keeps_the_most_recent_items(rate):
    L = 20
    seq, lengths = make_batch(L=L, seed=6)
    original = seq.clone()
    out, out_len = augment.insert(seq, lengths, rate, similar, generator=gen(3))
    assert torch.equal(seq, original)
    for b in range(len(seq)):
        n = int(lengths[b])
        k = max(1, math.floor(rate * n))
        assert int(out_len[b]) == min(n + k, L)
        row = out[b, : out_len[b]].tolist()
        assert (out[b, out_len[b]:] == 0).all()
        # rebuild the full inserted sequence: original items in order, each inserted item right before its source
        originals = [x for x in row if x <= N_ITEMS]
        full_tail = seq[b, :n].tolist()[-len(originals):]
        assert originals == full_tail  # order kept; when too long, the oldest are dropped
        for i, x in enumerate(row):
            if x > N_ITEMS:
                assert i + 1 < len(row) and similar(torch.tensor(row[i + 1])).item() == x
        if n + k <= L:
            assert len(originals) == n and sum(x > N_ITEMS for x in row) == k


def test_insert_and_substitute_produce_valid_ids_with_a_real_similarity_table():
    table = torch.arange(N_ITEMS + 1)
    table[1:] = torch.randint(1, N_ITEMS, (N_ITEMS,), generator=gen(4))
    lookup = lambda items: table[items]  # noqa: E731
    seq, lengths = make_batch(seed=7)
    for op in (augment.insert, augment.substitute):
        out, out_len = op(seq, lengths, 0.5, lookup, generator=gen(1))
        real = torch.arange(seq.size(1))[None, :] < out_len[:, None]
        assert ((out >= 1) & (out < N_ITEMS))[real].all() and (out[~real] == 0).all()
        assert ((out_len >= 1) & (out_len <= seq.size(1))).all()


def test_similarity_operators_need_a_lookup():
    with pytest.raises(ConfigError, match="similarity"):
        SequenceAugmenter.from_rates(operators=("insert",))


def test_short_sequences_use_only_the_short_operators():
    marks = {name: 1000 * (i + 1) for i, name in enumerate(("a", "b", "c"))}

    def tagger(name):
        return lambda s, l, g=None: (torch.where(s > 0, s + marks[name], s), l.clone())

    aug = SequenceAugmenter({n: tagger(n) for n in marks}, distinct=False, short_threshold=4, short_operators=("c",))
    seq, lengths = make_batch(B=200, seed=8)
    torch.manual_seed(0)
    views = aug.views(seq, lengths, n_views=2)
    short = lengths <= 4
    used = Counter()
    for out, _ in views:
        tag = (out[:, 0] - seq[:, 0]).tolist()
        assert all(t == marks["c"] for t, s in zip(tag, short.tolist()) if s)
        used.update(t for t, s in zip(tag, short.tolist()) if not s)
    assert set(used) == set(marks.values())  # long rows draw from every operator
    # independent draws: some long rows get the same operator in both views
    same = (views[0][0][:, 0] == views[1][0][:, 0]) & ~short
    assert same.any()
