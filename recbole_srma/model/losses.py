"""Losses for contrastive sequential recommendation (one place for all of them).

``info_nce`` is the NT-Xent loss used by CL4SRec (Xie et al., ICDE 2022) and DuoRec (Qiu et al., WSDM 2022). Given two
views ``z1, z2`` ``[B, D]`` of the same B sequences, stack them into 2B representations ``h = [z1; z2]``. With
``s(a, b) = sim(h_a, h_b) / temperature`` (``sim`` the dot product or the cosine), the loss of anchor ``a`` whose
positive is ``p(a)`` (``a + B`` for ``a < B``, ``a - B`` otherwise) is::

    l(a) = -log( exp s(a, p(a)) / sum_{j in N(a) + {p(a)}} exp s(a, j) )

where the negatives ``N(a)`` are the other 2B - 2 representations (both views, excluding ``a`` itself and ``p(a)``),
minus those of sequences marked as false negatives of ``a``'s sequence. The loss is the mean of ``l(a)`` over the 2B
anchors. It is computed with ``cross_entropy`` over logits whose excluded entries are ``-inf`` (a log-sum-exp), so it
stays finite and accurate for logits of order 1e4 in float32. With B = 1 (or every negative masked) each anchor has only
its positive and the loss is exactly 0, with a zero gradient.

``margin_regulariser`` is MCLRec's contrastive regulariser over the same logits (its docstring has the formula).

``full_softmax_cross_entropy`` is the next-item loss over every item, ``mean_n -log softmax(h_n W^T)[t_n]``, computed
a block of rows at a time (forward and backward) so that the ``[N, n_items]`` scores are never held whole: the same
loss and gradients as ``cross_entropy(h @ W.T, t)`` up to float rounding, less memory traffic, one more matrix product.

``barlow_twins`` is the Barlow Twins loss (Zbontar et al., ICML 2021) used by BT4SRec: no negatives, a
cross-correlation matrix between two batch-standardised views.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

__all__ = [
    "full_softmax_cross_entropy",
    "info_nce",
    "margin_regulariser",
    "barlow_twins",
    "cross_correlation",
    "SIMILARITIES",
]

SIMILARITIES = ("dot", "cos")


def info_nce(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 1.0,
    similarity: str = "dot",
    false_negative_mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """NT-Xent / InfoNCE over the 2B representations of two views; returns a scalar tensor.

    Args:
        z1, z2: ``[B, D]`` floating tensors, row ``i`` of each being a view of sequence ``i`` (B >= 1).
        temperature: positive finite number dividing every similarity (a model's ``tau``, checked at start).
        similarity: ``"dot"`` (dot product) or ``"cos"`` (cosine similarity; a zero vector has cosine 0 with all).
        false_negative_mask: optional bool ``[B, B]``; ``True`` at ``(i, j)``, ``i != j``, removes sequences i and j
            from each other's negatives in all four blocks (z1-z1, z1-z2, z2-z1, z2-z2). The diagonal is ignored
            (a sequence's own views are never negatives: one is the anchor, the other the positive). The mask is used
            as given (pass a symmetric one for a symmetric relation).

    Raises:
        ValueError: on non-2-D or mismatched shapes, B = 0, or a mask that is not a bool ``[B, B]`` tensor.

    Half-precision inputs are computed in float32; the result has the computation dtype.
    """
    logits = _pair_logits(z1, z2, temperature, similarity)
    B = z1.shape[0]
    if false_negative_mask is not None:
        if not isinstance(false_negative_mask, torch.Tensor) or false_negative_mask.dtype != torch.bool:
            raise ValueError("false_negative_mask must be a bool tensor [B, B]")
        if false_negative_mask.shape != (B, B):
            raise ValueError(f"false_negative_mask must have shape ({B}, {B}), got {tuple(false_negative_mask.shape)}")

    device = logits.device
    excluded = torch.eye(2 * B, dtype=torch.bool, device=device)  # an anchor is not its own negative
    if false_negative_mask is not None:
        fn = false_negative_mask.to(device) & ~torch.eye(B, dtype=torch.bool, device=device)
        excluded = excluded | fn.repeat(2, 2)
    logits = logits.masked_fill(excluded, float("-inf"))
    return F.cross_entropy(logits, _positive_index(B, device), reduction="mean")


def full_softmax_cross_entropy(
    hidden: torch.Tensor, weights: torch.Tensor, targets: torch.Tensor, chunk_rows: int = 0
) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weights.T`` (``[N, H] x [V, H]``) against ``targets`` (``[N]`` ids < V).

    ``chunk_rows`` > 0 computes it ``chunk_rows`` rows at a time and recomputes each block's scores in the backward
    pass (:class:`_ChunkedFullSoftmax`); 0 is one ``cross_entropy`` call over the whole score matrix.
    """
    if chunk_rows <= 0:
        return F.cross_entropy(hidden @ weights.t(), targets)
    return _ChunkedFullSoftmax.apply(hidden, weights, targets, chunk_rows)


class _ChunkedFullSoftmax(torch.autograd.Function):
    # Why: on a CPU the full softmax of a training step is memory-bound, not compute-bound; a [chunk, V] block stays
    # in cache through its log-sum-exp and its gradient, where the whole [N, V] matrix is written and read several
    # times (docs/performance.md measures it). Only the N log-sum-exps are kept for the backward pass.

    @staticmethod
    def forward(ctx, hidden, weights, targets, chunk_rows):
        n = hidden.size(0)
        log_norm = hidden.new_empty(n)
        total = hidden.new_zeros(())
        for start in range(0, n, chunk_rows):
            rows = slice(start, start + chunk_rows)
            scores = hidden[rows] @ weights.t()
            log_norm[rows] = torch.logsumexp(scores, dim=1)
            total += (log_norm[rows] - scores.gather(1, targets[rows, None]).squeeze(1)).sum()
        ctx.save_for_backward(hidden, weights, targets, log_norm)
        ctx.chunk_rows = chunk_rows
        return total / max(n, 1)

    @staticmethod
    def backward(ctx, grad_loss):
        hidden, weights, targets, log_norm = ctx.saved_tensors
        n = hidden.size(0)
        grad_hidden = torch.empty_like(hidden)
        grad_weights = torch.zeros_like(weights)
        scale = grad_loss / max(n, 1)
        for start in range(0, n, ctx.chunk_rows):
            rows = slice(start, start + ctx.chunk_rows)
            block = hidden[rows]
            # d loss / d scores = (softmax - one_hot(target)) / N, built in place in the recomputed scores
            grad_scores = (block @ weights.t()).sub_(log_norm[rows, None]).exp_()
            grad_scores[torch.arange(block.size(0), device=block.device), targets[rows]] -= 1.0
            grad_scores.mul_(scale)
            grad_hidden[rows] = grad_scores @ weights
            grad_weights.addmm_(grad_scores.t(), block)
        return grad_hidden, grad_weights, None, None


def margin_regulariser(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 1.0, similarity: str = "dot"
) -> torch.Tensor:
    """MCLRec's contrastive regulariser R (Qin et al., SIGIR 2023) over the same 2B anchors as :func:`info_nce`.

    With ``p_a`` the anchor's positive logit, ``n_aj`` its 2B - 2 negative logits and ``m_a = max_j n_aj`` its
    hardest negative (logits as in :func:`info_nce`)::

        R = mean_a max(0, p_a - m_a) + mean_{a, j} max(0, max(p_a, m_a) - n_aj)

    The first term penalises a positive scored above the hardest negative, the second every negative scored below
    ``max(p_a, m_a)``: in MCLRec's meta step it keeps the learnable augmenters from making contrastive pairs that
    are too easy. With B = 1 there are no negatives and R is 0 (with a zero gradient). Arguments and errors as for
    :func:`info_nce` (no false-negative mask).
    """
    logits = _pair_logits(z1, z2, temperature, similarity)
    B = z1.shape[0]
    if B == 1:
        return logits.sum() * 0.0
    device = logits.device
    positive_index = _positive_index(B, device)
    positive = logits.gather(1, positive_index[:, None]).squeeze(1)  # [2B]
    # masks over the full [2B, 2B] logits: cheaper than gathering the negatives with a boolean index
    not_negative = torch.eye(2 * B, dtype=torch.bool, device=device)
    not_negative[torch.arange(2 * B, device=device), positive_index] = True
    hardest = logits.masked_fill(not_negative, float("-inf")).max(dim=1).values
    upper = torch.maximum(positive, hardest)
    below_upper = (upper[:, None] - logits).clamp_min(0).masked_fill(not_negative, 0.0)
    return (positive - hardest).clamp_min(0).mean() + below_upper.sum() / (2 * B * (2 * B - 2))


def _positive_index(B, device):
    """The positive of each of the 2B anchors: the other view of the same sequence."""
    return (torch.arange(2 * B, device=device) + B) % (2 * B)


def _pair_logits(z1, z2, temperature, similarity):
    """Checked inputs -> ``[2B, 2B]`` similarities of ``[z1; z2]`` divided by the temperature (float32 or wider)."""
    if not isinstance(z1, torch.Tensor) or not isinstance(z2, torch.Tensor):
        raise ValueError("z1 and z2 must be tensors")
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must both be [B, D] with the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if z1.shape[0] == 0:
        raise ValueError("a contrastive loss needs at least one sequence (B >= 1)")
    if not (z1.is_floating_point() and z2.is_floating_point()):
        raise ValueError(f"z1 and z2 must be floating tensors, got {z1.dtype} and {z2.dtype}")
    # checked once, when the Config is built (hparams.temperature, the models' "sim" check): internal callers only
    assert similarity in SIMILARITIES and temperature > 0, (similarity, temperature)
    dtype = torch.promote_types(z1.dtype, z2.dtype)
    if dtype in (torch.float16, torch.bfloat16):
        dtype = torch.float32
    h = torch.cat([z1.to(dtype), z2.to(dtype)], dim=0)  # [2B, D]
    if similarity == "cos":
        h = F.normalize(h, dim=1)
    return (h @ h.T) / float(temperature)


def cross_correlation(z1: torch.Tensor, z2: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``C = Z1^T Z2 / B`` (``[D, D]``) of the views after per-dimension batch standardisation.

    Each dimension of each view is centred and divided by ``sqrt(var + eps)`` over the batch (biased variance, as
    ``BatchNorm1d`` without affine parameters in training, which the Barlow Twins paper uses), so ``C_ij`` is the
    correlation of dimension i of view 1 with dimension j of view 2. Needs B >= 2 (a single row has no variance).
    Half-precision inputs are computed in float32.
    """
    if not isinstance(z1, torch.Tensor) or not isinstance(z2, torch.Tensor) or z1.dim() != 2 or z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must both be [B, D] tensors of the same shape, got {getattr(z1, 'shape', z1)} "
                         f"and {getattr(z2, 'shape', z2)}")
    if z1.shape[0] < 2:
        raise ValueError(f"batch standardisation needs at least 2 rows, got {z1.shape[0]}")
    dtype = torch.promote_types(torch.promote_types(z1.dtype, z2.dtype), torch.float32)
    z1, z2 = z1.to(dtype), z2.to(dtype)

    def standardise(z):
        return (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, unbiased=False) + eps)

    return standardise(z1).T @ standardise(z2) / z1.shape[0]


def barlow_twins(z1: torch.Tensor, z2: torch.Tensor, lambda_off: float, eps: float = 1e-5) -> torch.Tensor:
    """Barlow Twins loss ``sum_i (1 - C_ii)^2 + lambda_off * sum_{i != j} C_ij^2``, C from :func:`cross_correlation`.

    The first term (invariance) makes each dimension agree across the two views; the second (redundancy reduction)
    decorrelates different dimensions. It does not depend on the order of the batch's rows, and it is 0 for two
    identical views whose standardised dimensions are uncorrelated. For fewer than 2 rows it raises ValueError:
    callers skip such batches (BT4SRec does).
    """
    assert lambda_off >= 0, lambda_off  # checked when the Config is built (BT4SRec.HPARAMS)
    c = cross_correlation(z1, z2, eps)
    diagonal = torch.diagonal(c)
    on_diagonal = (1.0 - diagonal).pow(2).sum()
    off_diagonal = c.pow(2).sum() - diagonal.pow(2).sum()
    return on_diagonal + float(lambda_off) * off_diagonal
