"""Span (1-D box) math in pure torch.

Two formats are used throughout coreba:

* ``cxw``: ``(..., 2)`` as ``[center, width]``, what the moment decoder predicts (normalised to 0..1).
* ``xx``:  ``(..., 2)`` as ``[start, end]`` with ``start <= end``, what IoU is defined on.

Every function is differentiable and works on any float dtype and device.
"""

from __future__ import annotations

import torch
from torch import Tensor


def span_cxw_to_xx(spans: Tensor) -> Tensor:
    """``(..., 2)`` ``[center, width]`` -> ``(..., 2)`` ``[start, end]``."""
    center, width = spans.unbind(-1)
    return torch.stack([center - 0.5 * width, center + 0.5 * width], dim=-1)


def span_xx_to_cxw(spans: Tensor) -> Tensor:
    """``(..., 2)`` ``[start, end]`` -> ``(..., 2)`` ``[center, width]``."""
    start, end = spans.unbind(-1)
    return torch.stack([0.5 * (start + end), end - start], dim=-1)


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    # Zero-width spans give 0/0; a tiny floor keeps the result (and its gradient) finite.
    return num / den.clamp(min=torch.finfo(den.dtype).eps)


def temporal_iou(spans1: Tensor, spans2: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise IoU of two sets of spans in ``[start, end]`` format.

    Args:
        spans1: ``(N, 2)`` ``[start, end]``.
        spans2: ``(M, 2)`` ``[start, end]``.

    Returns:
        ``(iou, union)``, both ``(N, M)``; ``iou[i, j]`` is the IoU of ``spans1[i]`` and ``spans2[j]``.
    """
    length1 = spans1[:, 1] - spans1[:, 0]  # (N,)
    length2 = spans2[:, 1] - spans2[:, 0]  # (M,)
    left = torch.max(spans1[:, None, 0], spans2[None, :, 0])  # (N, M)
    right = torch.min(spans1[:, None, 1], spans2[None, :, 1])  # (N, M)
    inter = (right - left).clamp(min=0)
    union = length1[:, None] + length2[None, :] - inter
    return _safe_div(inter, union), union


def generalized_temporal_iou(spans1: Tensor, spans2: Tensor) -> Tensor:
    """Pairwise generalised IoU (Rezatofighi et al., 2019) of spans in ``[start, end]`` format.

    ``giou = iou - (enclosing - union) / enclosing``, in ``[-1, 1]``; unlike IoU it still has a gradient
    when the spans do not overlap.

    Args:
        spans1: ``(N, 2)`` ``[start, end]``.
        spans2: ``(M, 2)`` ``[start, end]``.

    Returns:
        ``(N, M)`` generalised IoU.
    """
    iou, union = temporal_iou(spans1, spans2)
    left = torch.min(spans1[:, None, 0], spans2[None, :, 0])
    right = torch.max(spans1[:, None, 1], spans2[None, :, 1])
    enclosing = (right - left).clamp(min=0)
    return iou - _safe_div(enclosing - union, enclosing)
