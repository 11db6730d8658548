"""Turn raw model outputs into the user's answer. The ONE implementation: ``coreba.predict``, the
``Predictor`` of every engine and the serving ensemble's post-processing model all call :func:`postprocess`.

Per query (QD-DETR's inference): score = softmax(logits)[..., 0] (foreground); (cx, w) -> (start, end)
times the video's duration; windows clamped to [0, duration]; sorted by score, the top k kept (no NMS);
saliency is the score of each valid clip. Works on numpy arrays so engines need not share a framework.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_TOP_K = 10


@dataclass
class QueryResult:
    """One query's answer: moments [[start_s, end_s, score], ...] sorted by score, and per-clip saliency."""

    moments: list[list[float]]
    saliency: list[float]

    def to_submission(self, **meta) -> dict:
        """The standard QVHighlights submission line (``qid``, ``query``, ``vid`` passed as ``meta``)."""
        return {**meta, "pred_relevant_windows": self.moments, "pred_saliency_scores": self.saliency}


def foreground_probability(logits: np.ndarray) -> np.ndarray:
    """softmax(logits)[..., 0], computed stably. logits (..., 2) -> (...)."""
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp[..., 0] / exp.sum(axis=-1)


def spans_to_windows(spans: np.ndarray, durations: np.ndarray) -> np.ndarray:
    """Normalised (cx, w) spans (B, Q, 2) -> [start, end] seconds (B, Q, 2), clamped to [0, duration]."""
    spans = spans.astype(np.float64)
    half = spans[..., 1] / 2
    windows = np.stack([spans[..., 0] - half, spans[..., 0] + half], axis=-1) * durations[:, None, None]
    return np.clip(windows, 0.0, durations[:, None, None])


def postprocess(pred_logits: np.ndarray, pred_spans: np.ndarray, saliency_scores: np.ndarray,
                video_mask: np.ndarray, durations: Sequence[float] | np.ndarray | None = None,
                clip_length: float = 2.0, top_k: int = DEFAULT_TOP_K) -> list[QueryResult]:
    """pred_logits (B, Q, 2), pred_spans (B, Q, 2), saliency_scores (B, Lv), video_mask (B, Lv) bool.

    ``durations`` (B,) seconds; where None, a video lasts its number of valid clips times ``clip_length``.
    """
    pred_logits, pred_spans = np.asarray(pred_logits), np.asarray(pred_spans)
    saliency_scores, video_mask = np.asarray(saliency_scores), np.asarray(video_mask).astype(bool)
    num_clips = video_mask.sum(axis=1)
    if durations is None:
        durations = num_clips * clip_length
    durations = np.asarray(durations, dtype=np.float64).reshape(-1)
    if durations.shape[0] != pred_logits.shape[0]:
        raise ValueError(f"got {durations.shape[0]} durations for a batch of {pred_logits.shape[0]}")
    if not (np.isfinite(durations).all() and (durations > 0).all()):
        raise ValueError(f"durations must be finite and positive (seconds), got {durations.tolist()}")
    scores = foreground_probability(pred_logits)  # (B, Q)
    windows = spans_to_windows(pred_spans, durations)  # (B, Q, 2)
    results = []
    for b in range(pred_logits.shape[0]):
        order = np.argsort(-scores[b], kind="stable")[:top_k]
        moments = [[float(windows[b, q, 0]), float(windows[b, q, 1]), float(scores[b, q])] for q in order]
        saliency = saliency_scores[b][video_mask[b]].astype(np.float64).tolist()
        results.append(QueryResult(moments=moments, saliency=saliency))
    return results
