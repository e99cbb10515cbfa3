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
"""

from __future__ import annotations

import math
import numbers
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["info_nce", "SIMILARITIES"]

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
        temperature: positive finite number dividing every similarity.
        similarity: ``"dot"`` (dot product) or ``"cos"`` (cosine similarity; a zero vector has cosine 0 with all).
        false_negative_mask: optional bool ``[B, B]``; ``True`` at ``(i, j)``, ``i != j``, removes sequences i and j
            from each other's negatives in all four blocks (z1-z1, z1-z2, z2-z1, z2-z2). The diagonal is ignored
            (a sequence's own views are never negatives: one is the anchor, the other the positive). The mask is used
            as given (pass a symmetric one for a symmetric relation).

    Raises:
        ValueError: on non-2-D or mismatched shapes, B = 0, an unknown ``similarity``, a temperature that is not a
            positive finite number, or a mask that is not a bool ``[B, B]`` tensor.

    Half-precision inputs are computed in float32; the result has the computation dtype.
    """
    if not isinstance(z1, torch.Tensor) or not isinstance(z2, torch.Tensor):
        raise ValueError("z1 and z2 must be tensors")
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must both be [B, D] with the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if z1.shape[0] == 0:
        raise ValueError("info_nce needs at least one sequence (B >= 1)")
    if not (z1.is_floating_point() and z2.is_floating_point()):
        raise ValueError(f"z1 and z2 must be floating tensors, got {z1.dtype} and {z2.dtype}")
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, numbers.Real)
        or not math.isfinite(float(temperature))
        or float(temperature) <= 0
    ):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    B = z1.shape[0]
    if false_negative_mask is not None:
        if not isinstance(false_negative_mask, torch.Tensor) or false_negative_mask.dtype != torch.bool:
            raise ValueError("false_negative_mask must be a bool tensor [B, B]")
        if false_negative_mask.shape != (B, B):
            raise ValueError(f"false_negative_mask must have shape ({B}, {B}), got {tuple(false_negative_mask.shape)}")

    dtype = torch.promote_types(z1.dtype, z2.dtype)
    if dtype in (torch.float16, torch.bfloat16):
        dtype = torch.float32
    h = torch.cat([z1.to(dtype), z2.to(dtype)], dim=0)  # [2B, D]
    if similarity == "cos":
        h = F.normalize(h, dim=1)
    logits = (h @ h.T) / float(temperature)  # [2B, 2B]

    device = logits.device
    idx = torch.arange(2 * B, device=device)
    excluded = torch.eye(2 * B, dtype=torch.bool, device=device)  # an anchor is not its own negative
    if false_negative_mask is not None:
        fn = false_negative_mask.to(device) & ~torch.eye(B, dtype=torch.bool, device=device)
        excluded = excluded | fn.repeat(2, 2)
    logits = logits.masked_fill(excluded, float("-inf"))
    target = (idx + B) % (2 * B)  # the positive: the other view of the same sequence (never excluded)
    return F.cross_entropy(logits, target, reduction="mean")
