"""Temporal non-maximum suppression, with the semantics of Moment-DETR's and QD-DETR's ``temporal_nms``.

What those do (``utils/temporal_nms.py`` of jayleicn/moment_detr, which QD-DETR ships unchanged), and so what
this does, in NumPy: sort the moments by score, highest first (ties keep their input order, as Python's stable
``sorted(..., reverse=True)``); walk down the list and keep a moment unless its IoU with a moment already kept is
**greater than** ``iou_threshold`` (a moment at exactly the threshold is kept); stop after ``max_kept``. Their
IoU divides the intersection by the hull of the two spans (``max(end) - min(start)``), which equals the union
whenever the spans overlap and gives 0 when they do not (or when both are the same single point); so does
:func:`hull_iou`.

Used where moments of overlapping windows of one long video are pooled (:mod:`coreba.windows`): the same moment
seen by two windows comes back twice, and the lower-scored copy must go. Short videos are never suppressed
(QD-DETR's inference applies no NMS).
"""

from __future__ import annotations

import math

import numpy as np

from coreba.model.validation import InputError


def check_iou_threshold(iou_threshold: float) -> float:
    """A number in [0, 1]: 1 keeps every moment (no IoU exceeds 1), 0 drops any that overlaps a kept one."""
    if isinstance(iou_threshold, (bool, np.bool_)) or not isinstance(iou_threshold, (int, float, np.number)):
        raise InputError(f"iou_threshold must be a number in [0, 1], got {iou_threshold!r}")
    if not (math.isfinite(iou_threshold) and 0.0 <= iou_threshold <= 1.0):
        raise InputError(f"iou_threshold must be a number in [0, 1], got {iou_threshold!r}")
    return float(iou_threshold)


def hull_iou(span: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """IoU of one ``[start, end]`` span with each of ``spans`` (N, 2), the union taken as the hull of the two."""
    inter = np.clip(np.minimum(span[1], spans[:, 1]) - np.maximum(span[0], spans[:, 0]), 0.0, None)
    hull = np.maximum(span[1], spans[:, 1]) - np.minimum(span[0], spans[:, 0])
    return np.divide(inter, hull, out=np.zeros_like(inter), where=hull > 0)


def temporal_nms(moments: np.ndarray, iou_threshold: float, max_kept: int | None = None) -> np.ndarray:
    """``moments`` (N, 3) ``[start, end, score]`` -> the kept ones (K, 3), sorted by score, highest first."""
    moments = np.asarray(moments, dtype=np.float64).reshape(-1, 3)
    iou_threshold = check_iou_threshold(iou_threshold)
    order = np.argsort(-moments[:, 2], kind="stable")
    suppressed = np.zeros(len(moments), dtype=bool)
    kept: list[int] = []
    for i in order:
        if suppressed[i]:
            continue
        kept.append(int(i))
        if max_kept is not None and len(kept) == max_kept:
            break
        suppressed |= hull_iou(moments[i, :2], moments[:, :2]) > iou_threshold
    return moments[kept]
