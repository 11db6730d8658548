"""Long videos as sliding windows: where the windows lie, what each one feeds the model, how their answers merge.

The model sees at most ``max_video_len`` clips (75 = 150 s). A longer video is cut into windows of exactly that
many clips, ``stride`` clips apart (overlapping when ``stride`` < window); the last window is aligned to the
video's end, so every window is a full-length video to the model. Each window is a video of its own:

* features: the video's clips, with the last :data:`NUM_TEF` columns (QD-DETR's temporal-endpoint features,
  part of every coreba model's input) rewritten for the window, ``[j / W, (j + 1) / W]``, exactly what a
  standalone video of W clips carries. The model never saw endpoint features of a clip deep inside a longer
  video, so the video-wide ones would be out of distribution;
* time: the window starts at ``start * clip_length`` s and ends ``window * clip_length`` s later, except the last
  window, which ends at the video's ``duration`` (so a partial last clip is measured as the short video path
  measures it: the model's normalised spans are scaled by the window's own length).

Merging one query's windows (:class:`WindowMerge`): each window's top k moments (exact times clamped to the
window) are shifted to the video's seconds and pooled; duplicates of one moment seen by overlapping windows are
removed by temporal NMS (:func:`coreba.ops.temporal_nms.temporal_nms`, Moment-DETR's rule); the top k are kept
and written with the caller's post-processing mode. Why a window's top k and not all its ``num_queries``
moments: the served end-to-end graph returns only its top K per row, and every path pooling the same is what
keeps one answer (the serving client's equals the Predictor's). The top 1 is the same either way (the best
moment of all survives NMS), and with the default config (10 moment queries, top 10) every moment is pooled.
Saliency: a clip covered by several windows gets the **mean** of their scores (every window that saw the clip has
a say; no window's border effects dominate), so the answer has one score per clip of the whole video.

A video that fits one window is not windowed at all: it is answered exactly as before (no feature rewrite, no
NMS). NumPy only, so the serving client uses it without the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from coreba.data.qvhighlights import NUM_TEF, temporal_endpoint_features
from coreba.model.validation import InputError
from coreba.ops.temporal_nms import check_iou_threshold, temporal_nms
from coreba.postprocess import (
    QVHIGHLIGHTS_MAX_SECONDS,
    PostprocessMode,
    QueryResult,
    finish_saliency,
    qvhighlights_moment,
)

# Chosen from benchmarks/long_video.py on the demo checkpoint (README, "Long videos"): the window overlap, as a
# fraction of the window, and the NMS threshold for moments seen by two windows.
DEFAULT_STRIDE_FRACTION = 0.5
DEFAULT_NMS_IOU = 0.5


def default_stride(window: int) -> int:
    """Half a window (rounded down, at least 1 clip): every moment shorter than half a window lies whole in one."""
    return max(1, int(window * DEFAULT_STRIDE_FRACTION))


def check_stride(stride: int, window: int) -> int:
    """An integer number of clips in 1..window (0 or less never moves; more than a window skips clips)."""
    if isinstance(stride, (bool, np.bool_)) or not isinstance(stride, (int, np.integer)):
        raise InputError(f"stride must be an integer number of clips in 1..{window}, got {stride!r}")
    if not 1 <= stride <= window:
        raise InputError(f"stride must be in 1..{window} clips (the window is {window} clips), got {stride}")
    return int(stride)


@dataclass(frozen=True)
class Window:
    """Clips ``[start, start + num_clips)`` of a video, lasting ``[start_s, end_s]`` seconds of it. ``whole``: the
    window is the video itself (no rewrite, no merge)."""

    start: int
    num_clips: int
    start_s: float
    end_s: float
    whole: bool

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def plan_windows(num_clips: int, duration: float, window: int, stride: int, clip_length: float) -> list[Window]:
    """The windows of a video of ``num_clips`` clips and ``duration`` seconds (see the module docstring)."""
    if num_clips < 1:
        raise InputError(f"a video needs at least one clip, got {num_clips}")
    if num_clips <= window:
        return [Window(0, num_clips, 0.0, float(duration), whole=True)]
    stride = check_stride(stride, window)
    last = num_clips - window
    starts = [*range(0, last, stride), last]
    if duration <= last * clip_length:
        raise InputError(f"duration {duration:g} s ends before clip {last} starts ({last * clip_length:g} s): a video "
                         f"of {num_clips} clips of {clip_length:g} s needs a duration > {last * clip_length:g} s")
    windows = []
    for start in starts:
        end_s = duration if start == last else min((start + window) * clip_length, duration)
        windows.append(Window(start, window, start * clip_length, float(end_s), whole=False))
    return windows


def write_window(dst: np.ndarray, video: np.ndarray, window: Window) -> None:
    """Write the window's features into ``dst[:num_clips]`` (one copy), its own endpoint features last."""
    dst[: window.num_clips] = video[window.start: window.start + window.num_clips]
    if not window.whole:
        dst[: window.num_clips, -NUM_TEF:] = temporal_endpoint_features(window.num_clips)


def window_features(video: np.ndarray, window: Window) -> np.ndarray:
    """(num_clips, D) float32: the video itself when the window is whole (no copy for float32), else a copy."""
    if window.whole:
        return np.asarray(video, dtype=np.float32)
    out = np.empty((window.num_clips, video.shape[1]), dtype=np.float32)
    write_window(out, video, window)
    return out


class WindowMerge:
    """One query's answer over a long video, built window by window (memory: one score sum per clip and the
    windows' moments, never the windows' features)."""

    def __init__(self, num_clips: int, duration: float, clip_length: float) -> None:
        self.duration, self.clip_length = float(duration), clip_length
        self.saliency_sum = np.zeros(num_clips, dtype=np.float64)
        self.saliency_count = np.zeros(num_clips, dtype=np.int64)
        self.moments: list[np.ndarray] = []

    def add(self, window: Window, result: QueryResult) -> None:
        """A window's answer in ``mode="exact"``, times in the window's seconds, its top k moments."""
        moments = np.asarray(result.moments, dtype=np.float64).reshape(-1, 3)
        self.moments.append(moments + np.array([window.start_s, window.start_s, 0.0]))
        saliency = np.asarray(result.saliency, dtype=np.float64)
        if len(saliency) != window.num_clips:
            raise ValueError(f"a window of {window.num_clips} clips came back with {len(saliency)} saliency scores")
        self.saliency_sum[window.start: window.start + window.num_clips] += saliency
        self.saliency_count[window.start: window.start + window.num_clips] += 1

    def finish(self, top_k: int, iou_threshold: float, mode: PostprocessMode) -> QueryResult:
        """Pooled, NMS'd, top ``top_k`` moments and per-clip mean saliency, written with ``mode``. In
        ``"qvhighlights"`` mode the clamp is to [0, max(150 s, duration)]: QD-DETR's 150 s is QVHighlights'
        video length, not a long video's."""
        assert (self.saliency_count > 0).all(), "the windows of a video cover every clip"
        kept = temporal_nms(np.concatenate(self.moments), iou_threshold, max_kept=top_k)
        if mode == "exact":
            moments = [[float(s), float(e), float(p)] for s, e, p in kept]
        else:
            limit = max(QVHIGHLIGHTS_MAX_SECONDS, self.duration)
            moments = [qvhighlights_moment(s, e, p, self.clip_length, limit) for s, e, p in kept]
        return QueryResult(moments=moments, saliency=finish_saliency(self.saliency_sum / self.saliency_count, mode))


def check_window_options(stride: int | None, iou_threshold: float, window: int) -> tuple[int, float]:
    """The stride (default :func:`default_stride`) and NMS threshold, checked; :class:`InputError` names a bad one."""
    stride = default_stride(window) if stride is None else check_stride(stride, window)
    return stride, check_iou_threshold(iou_threshold)


def num_windows(num_clips: int, window: int, stride: int) -> int:
    """How many windows :func:`plan_windows` cuts (for sizing and benchmarks)."""
    return 1 if num_clips <= window else math.ceil((num_clips - window) / stride) + 1
