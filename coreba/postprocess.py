"""Turn raw model outputs into the user's answer. The ONE implementation: ``coreba.predict`` and the
``Predictor`` of every engine call :func:`postprocess`; the served model runs the end-to-end graph, whose
post-processing head (``export/answer_graph.py``) computes the "exact" mode inside the engine and is checked
against :func:`postprocess` by the parity harness (``export.validate.check_answer_parity``); the load test's
baseline (``serving.baseline``, the two-step path of before) calls it in its post-processing model.

Per query (QD-DETR's inference): score = softmax(logits)[..., 0] (foreground); (cx, w) -> (start, end)
times the video's duration; sorted by score, the top k kept (no NMS); saliency is the score of each valid
clip. Then one of two documented modes (``mode``) says how the times and scores are written:

* ``"exact"`` (the default; ``Predictor`` and serving): windows clamped to [0, duration], times and scores
  kept at full precision. For applications, where a moment's exact edges matter.
* ``"qvhighlights"`` (submission files of ``coreba.predict``, and the evaluation during training): QD-DETR's
  evaluation rule (its ``PostProcessorDETR`` with ``clip_ts`` and ``round_multiple``), so metrics compare
  with QD-DETR's and the leaderboard's. Each [start, end, score] is first written to 4 decimals (as QD-DETR
  writes its predictions), then both ends are clamped to [0, 150] s (QVHighlights' video length, not the
  duration) and rounded to the nearest multiple of the clip length (2 s; halves to even, as ``torch.round``),
  and the score kept to 4 decimals; saliency goes through float16, as QD-DETR's submission stores it. The
  order is the one of the unrounded scores, as QD-DETR sorts before rounding. Computed in float64 (QD-DETR:
  float32), which can only matter for a time within ~1e-6 s of a rounding boundary.

Works on numpy arrays so engines need not share a framework.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

DEFAULT_TOP_K = 10
PostprocessMode = Literal["exact", "qvhighlights"]
POSTPROCESS_MODES: tuple[str, ...] = ("exact", "qvhighlights")
QVHIGHLIGHTS_MAX_SECONDS = 150.0  # QD-DETR's PostProcessorDETR(max_ts_val=150): every QVHighlights video's length
SUBMISSION_DECIMALS = 4  # QD-DETR writes starts, ends and scores with f"{x:.4f}"


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
    """Normalised (cx, w) spans (B, Q, 2) -> [start, end] seconds (B, Q, 2), not clamped."""
    spans = spans.astype(np.float64)
    half = spans[..., 1] / 2
    return np.stack([spans[..., 0] - half, spans[..., 0] + half], axis=-1) * durations[:, None, None]


def _decimals(x: float) -> float:
    return float(f"{x:.{SUBMISSION_DECIMALS}f}")  # Python's correctly rounded formatting, as QD-DETR


def qvhighlights_moment(start: float, end: float, score: float, clip_length: float) -> list[float]:
    """One [start, end, score] under QD-DETR's QVHighlights rule (see the module docstring)."""
    ends = np.clip([_decimals(start), _decimals(end)], 0.0, QVHIGHLIGHTS_MAX_SECONDS)
    start, end = (np.round(ends / clip_length) * clip_length).tolist()
    return [start, end, _decimals(score)]


def postprocess(pred_logits: np.ndarray, pred_spans: np.ndarray, saliency_scores: np.ndarray,
                video_mask: np.ndarray, durations: Sequence[float] | np.ndarray | None = None,
                clip_length: float = 2.0, top_k: int = DEFAULT_TOP_K,
                mode: PostprocessMode = "exact") -> list[QueryResult]:
    """pred_logits (B, Q, 2), pred_spans (B, Q, 2), saliency_scores (B, Lv), video_mask (B, Lv) bool.

    ``durations`` (B,) seconds; where None, a video lasts its number of valid clips times ``clip_length``.
    ``mode``: "exact" or "qvhighlights" (QD-DETR's submission rule), see the module docstring.
    """
    if mode not in POSTPROCESS_MODES:
        raise ValueError(f"unknown post-processing mode {mode!r}; choose from {POSTPROCESS_MODES}")
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
        saliency = saliency_scores[b][video_mask[b]]
        if mode == "exact":
            clamped = np.clip(windows[b], 0.0, durations[b])
            moments = [[float(clamped[q, 0]), float(clamped[q, 1]), float(scores[b, q])] for q in order]
        else:
            moments = [qvhighlights_moment(windows[b, q, 0], windows[b, q, 1], scores[b, q], clip_length)
                       for q in order]
            saliency = saliency.astype(np.float16)
        results.append(QueryResult(moments=moments, saliency=saliency.astype(np.float64).tolist()))
    return results
