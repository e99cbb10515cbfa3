"""info_nce against a naive float64 reference, plus stability and invariance (recbole_srma.model.losses)."""

import math

import pytest
import torch
import torch.nn.functional as F

from recbole_srma.model.losses import full_softmax_cross_entropy, info_nce, margin_regulariser


def naive_info_nce(z1, z2, temperature, similarity, fn_mask=None):
    """Explicit-loop float64 NT-Xent: mean over the 2B anchors of logsumexp(positive + negatives) - positive."""
    z1 = z1.detach().double().tolist()
    z2 = z2.detach().double().tolist()
    B = len(z1)
    h = z1 + z2

    def sim(a, b):
        dot = sum(x * y for x, y in zip(h[a], h[b]))
        if similarity == "cos":
            na = math.sqrt(sum(x * x for x in h[a]))
            nb = math.sqrt(sum(x * x for x in h[b]))
            dot = dot / (na * nb)
        return dot / temperature

    total = 0.0
    for a in range(2 * B):
        p = a + B if a < B else a - B
        terms = [sim(a, p)]
        for j in range(2 * B):
            if j == a or j == p:
                continue
            if fn_mask is not None and (a % B) != (j % B) and bool(fn_mask[a % B][j % B]):
                continue
            terms.append(sim(a, j))
        m = max(terms)
        lse = m + math.log(sum(math.exp(t - m) for t in terms))
        total += lse - terms[0]
    return total / (2 * B)


def random_fn_mask(B, seed):
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, max(1, B // 2), (B,), generator=g)  # shared targets -> false negatives
    return targets.unsqueeze(0) == targets.unsqueeze(1)  # symmetric, True diagonal (ignored)


@pytest.mark.parametrize("B,D", [(1, 3), (2, 4), (5, 8), (9, 3)])
@pytest.mark.parametrize("temperature", [0.07, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("similarity", ["dot", "cos"])
@pytest.mark.parametrize("use_mask", [False, True])
def test_matches_naive_reference(B, D, temperature, similarity, use_mask):
    g = torch.Generator().manual_seed(B * 100 + D)
    z1 = torch.randn(B, D, generator=g)
    z2 = torch.randn(B, D, generator=g)
    fn = random_fn_mask(B, B + D) if use_mask else None
    got = info_nce(z1, z2, temperature=temperature, similarity=similarity, false_negative_mask=fn)
    assert got.dim() == 0 and got.dtype == torch.float32
    want = naive_info_nce(z1, z2, temperature, similarity, None if fn is None else fn.tolist())
    assert got.item() == pytest.approx(want, rel=1e-5, abs=1e-5)


def test_asymmetric_mask_matches_reference():
    g = torch.Generator().manual_seed(3)
    B = 6
    z1, z2 = torch.randn(B, 4, generator=g), torch.randn(B, 4, generator=g)
    fn = torch.rand(B, B, generator=g) < 0.4
    got = info_nce(z1, z2, temperature=0.3, false_negative_mask=fn)
    assert got.item() == pytest.approx(naive_info_nce(z1, z2, 0.3, "dot", fn.tolist()), rel=1e-5)


def test_mask_changes_loss_and_diagonal_is_ignored():
    g = torch.Generator().manual_seed(4)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    plain = info_nce(z1, z2)
    eye = torch.eye(6, dtype=torch.bool)
    assert info_nce(z1, z2, false_negative_mask=eye).item() == pytest.approx(plain.item(), rel=1e-6)
    some = eye.clone()
    some[0, 1] = some[1, 0] = True
    assert info_nce(z1, z2, false_negative_mask=some).item() != pytest.approx(plain.item(), rel=1e-4)
    # every pair masked: only the positive remains, loss exactly 0
    assert info_nce(z1, z2, false_negative_mask=torch.ones(6, 6, dtype=torch.bool)).item() == 0.0


@pytest.mark.parametrize("similarity", ["dot", "cos"])
def test_large_logits_finite_and_exact(similarity):
    g = torch.Generator().manual_seed(5)
    B, D = 8, 16
    z1 = torch.nn.functional.normalize(torch.randn(B, D, generator=g), dim=1)
    z2 = torch.nn.functional.normalize(z1 + 0.3 * torch.randn(B, D, generator=g), dim=1)
    if similarity == "dot":
        z1, z2, temperature = z1 * 100.0, z2 * 100.0, 1.0  # logits ~ 1e4
    else:
        temperature = 1e-4  # cosine / 1e-4 -> logits ~ 1e4
    z1.requires_grad_(True)
    z2.requires_grad_(True)
    loss = info_nce(z1, z2, temperature=temperature, similarity=similarity)
    want = naive_info_nce(z1, z2, temperature, similarity)
    assert want > 1.0  # the regime where a naive exp would overflow and the loss is far from 0
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(want, rel=1e-3)
    loss.backward()
    assert torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()
    assert z1.grad.abs().sum() > 0


def test_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(6)
    z1 = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    fn = random_fn_mask(4, 1)
    for sim in ("dot", "cos"):
        assert torch.autograd.gradcheck(
            lambda a, b: info_nce(a, b, temperature=0.5, similarity=sim, false_negative_mask=fn), (z1, z2)
        )


@pytest.mark.parametrize("similarity", ["dot", "cos"])
def test_permutation_invariant(similarity):
    g = torch.Generator().manual_seed(7)
    B = 10
    z1, z2 = torch.randn(B, 6, generator=g), torch.randn(B, 6, generator=g)
    fn = torch.rand(B, B, generator=g) < 0.3
    perm = torch.randperm(B, generator=g)
    a = info_nce(z1, z2, 0.2, similarity, fn)
    b = info_nce(z1[perm], z2[perm], 0.2, similarity, fn[perm][:, perm])
    assert b.item() == pytest.approx(a.item(), rel=1e-5)
    # ...but not to permuting one view only (that breaks the positives)
    c = info_nce(z1, z2[perm], 0.2, similarity, fn)
    assert c.item() != pytest.approx(a.item(), rel=1e-3)


def test_views_are_symmetric():
    g = torch.Generator().manual_seed(8)
    z1, z2 = torch.randn(7, 4, generator=g), torch.randn(7, 4, generator=g)
    assert info_nce(z1, z2, 0.5).item() == pytest.approx(info_nce(z2, z1, 0.5).item(), rel=1e-6)


@pytest.mark.parametrize("similarity", ["dot", "cos"])
def test_batch_of_one_is_zero_not_nan(similarity):
    z1 = torch.randn(1, 4, requires_grad=True)
    z2 = torch.randn(1, 4, requires_grad=True)
    loss = info_nce(z1, z2, 0.1, similarity)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()


def test_perfect_alignment_gives_near_zero_loss():
    B = 6
    z = 10.0 * torch.eye(B, 8)  # orthogonal, far-apart negatives: positive logit 100, negatives 0
    assert info_nce(z, z.clone()).item() < 1e-6
    assert info_nce(z, z.clone(), temperature=0.01, similarity="cos").item() < 1e-6
    # misaligned views are penalised
    assert info_nce(z, z.roll(1, dims=0)).item() > 50.0


def test_uniform_similarities_give_log_of_candidates():
    B = 5
    z = torch.zeros(B, 3)  # all logits equal: loss = log(2B - 1)
    assert info_nce(z, z).item() == pytest.approx(math.log(2 * B - 1), rel=1e-6)


def test_inputs_unchanged():
    g = torch.Generator().manual_seed(9)
    z1, z2 = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    fn = torch.rand(5, 5, generator=g) < 0.5
    c1, c2, cf = z1.clone(), z2.clone(), fn.clone()
    info_nce(z1, z2, 0.5, "cos", fn)
    assert torch.equal(z1, c1) and torch.equal(z2, c2) and torch.equal(fn, cf)


def test_invalid_arguments():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="shape"):
        info_nce(z, torch.randn(4, 2))
    with pytest.raises(ValueError, match="shape"):
        info_nce(z, torch.randn(3, 3))
    with pytest.raises(ValueError, match="shape"):
        info_nce(z[0], z[0])
    with pytest.raises(ValueError, match="false_negative_mask"):
        info_nce(z, z, false_negative_mask=torch.zeros(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="false_negative_mask"):
        info_nce(z, z, false_negative_mask=torch.zeros(4, 4))
    with pytest.raises(ValueError, match="B >= 1"):
        info_nce(torch.zeros(0, 3), torch.zeros(0, 3))


# --- MCLRec's margin regulariser R ------------------------------------------------------------------------------------


def naive_margin_regulariser(z1, z2, temperature, similarity):
    """Explicit loops: mean_a relu(p_a - m_a) + mean_{a,j} relu(max(p_a, m_a) - n_aj), m_a the hardest negative."""
    h = z1.detach().double().tolist() + z2.detach().double().tolist()
    B = len(h) // 2

    def sim(a, b):
        dot = sum(x * y for x, y in zip(h[a], h[b]))
        if similarity == "cos":
            dot /= math.sqrt(sum(x * x for x in h[a])) * math.sqrt(sum(x * x for x in h[b]))
        return dot / temperature

    first, second, count = 0.0, 0.0, 0
    for a in range(2 * B):
        p = a + B if a < B else a - B
        negatives = [sim(a, j) for j in range(2 * B) if j not in (a, p)]
        hardest = max(negatives)
        first += max(0.0, sim(a, p) - hardest)
        for n in negatives:
            second += max(0.0, max(sim(a, p), hardest) - n)
            count += 1
    return first / (2 * B) + second / count


def test_margin_regulariser_by_hand():
    # B = 2, D = 1: h = [1, 2 | 3, 0]; dot logits s(a, b) = h_a * h_b.
    # anchor 0: positive s(0,2) = 3, negatives s(0,1) = 2, s(0,3) = 0 -> hardest 2; terms 1 | (3-2) + (3-0) = 4
    # anchor 1: positive s(1,3) = 0, negatives s(1,0) = 2, s(1,2) = 6 -> hardest 6; terms 0 | (6-2) + (6-6) = 4
    # anchor 2: positive s(2,0) = 3, negatives s(2,1) = 6, s(2,3) = 0 -> hardest 6; terms 0 | (6-6) + (6-0) = 6
    # anchor 3: positive s(3,1) = 0, negatives s(3,0) = 0, s(3,2) = 0 -> hardest 0; terms 0 | 0 + 0 = 0
    # R = (1 + 0 + 0 + 0) / 4 + (4 + 4 + 6 + 0) / 8 = 0.25 + 1.75 = 2.0
    z1 = torch.tensor([[1.0], [2.0]])
    z2 = torch.tensor([[3.0], [0.0]])
    assert margin_regulariser(z1, z2).item() == pytest.approx(2.0)
    assert margin_regulariser(z1, z2, temperature=2.0).item() == pytest.approx(1.0)  # every logit halved


@pytest.mark.parametrize("B,D", [(2, 3), (5, 8), (9, 4)])
@pytest.mark.parametrize("temperature", [0.5, 1.0])
@pytest.mark.parametrize("similarity", ["dot", "cos"])
def test_margin_regulariser_matches_naive_reference(B, D, temperature, similarity):
    g = torch.Generator().manual_seed(B * 10 + D)
    z1, z2 = torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)
    got = margin_regulariser(z1, z2, temperature=temperature, similarity=similarity)
    assert got.item() == pytest.approx(naive_margin_regulariser(z1, z2, temperature, similarity), rel=1e-5, abs=1e-6)


def test_margin_regulariser_batch_of_one_and_gradient():
    z1, z2 = torch.randn(1, 4, requires_grad=True), torch.randn(1, 4)
    r = margin_regulariser(z1, z2)
    assert r.item() == 0.0
    r.backward()
    assert torch.equal(z1.grad, torch.zeros_like(z1))
    z1 = torch.randn(6, 4, requires_grad=True)
    margin_regulariser(z1, torch.randn(6, 4)).backward()
    assert z1.grad.abs().sum() > 0


@pytest.mark.parametrize("model", ["CL4SRec", "DuoRec", "MCLRec"])
def test_similarity_and_temperature_are_checked_once_at_start(tmp_path, model):
    """The losses take them as given; the Config refuses what info_nce and margin_regulariser cannot use."""
    from tiny import tiny_config

    from recbole_srma.config import Config
    from recbole_srma.errors import ConfigError

    for sim in ("euclid", "l2"):
        with pytest.raises(ValueError, match="similarity"):
            Config(model=model, config_dict=tiny_config(tmp_path, sim=sim))
    for t in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="temperature"):
            Config(model=model, config_dict=tiny_config(tmp_path, tau=t))


@pytest.mark.parametrize("chunk_rows", [1, 7, 64, 1000])
def test_chunked_full_softmax_has_cross_entropys_loss_and_gradients(chunk_rows):
    torch.manual_seed(0)
    hidden = torch.randn(50, 8, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(30, 8, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 30, (50,))
    expected = F.cross_entropy(hidden @ weights.t(), targets)
    loss = full_softmax_cross_entropy(hidden, weights, targets, chunk_rows)
    torch.testing.assert_close(loss, expected)
    for got, want in zip(torch.autograd.grad(3 * loss, (hidden, weights)),
                         torch.autograd.grad(3 * expected, (hidden, weights))):
        torch.testing.assert_close(got, want)
    # a gradient through a function of the weights (item dropout, a slice of the table) reaches its source
    table = torch.randn(31, 8, requires_grad=True)
    full_softmax_cross_entropy(hidden.detach().float(), table[:30] * 2, targets, chunk_rows).backward()
    assert table.grad[:30].abs().sum() > 0 and table.grad[30].abs().sum() == 0


def test_chunked_full_softmax_is_finite_for_large_scores():
    hidden, weights = torch.full((4, 2), 100.0), torch.tensor([[100.0, 100.0], [-100.0, 0.0]])
    loss = full_softmax_cross_entropy(hidden, weights, torch.tensor([0, 1, 0, 1]), chunk_rows=3)
    torch.testing.assert_close(loss, torch.tensor(15000.0))  # half the rows lose 2e4 + 1e4, half lose ~0
