"""The model's I/O contract: tensor names, their dynamic axes, and random inputs that satisfy it.

The names and their order bind the eager model, every engine, the exporter (``export.spec`` re-exports them),
the parity harness and the serving repository; change them here and nowhere else.
"""

from __future__ import annotations

import numpy as np

from coreba.config import CorebaConfig

INPUT_NAMES: tuple[str, ...] = ("video_feats", "video_mask", "text_feats", "text_mask")
OUTPUT_NAMES: tuple[str, ...] = ("pred_logits", "pred_spans", "saliency_scores")

# The end-to-end graph: the same model with the post-processing inside. One more input, the video's duration
# (B,) float32 seconds, and the user's answer out (layout: coreba.answer): moments (B, K, 3) [start_s, end_s,
# score] sorted by score, saliency (B, Lv) of the valid clips packed to the front, num_clips (B, 1) int32.
DURATION = "duration"
END_TO_END_INPUT_NAMES: tuple[str, ...] = (*INPUT_NAMES, DURATION)
ANSWER_NAMES: tuple[str, ...] = ("moments", "saliency", "num_clips")

# axis index -> symbolic name; the same vocabulary as the docstrings (B, Lv, Lt)
INPUT_AXES: dict[str, dict[int, str]] = {
    "video_feats": {0: "batch", 1: "num_clips"},
    "video_mask": {0: "batch", 1: "num_clips"},
    "text_feats": {0: "batch", 1: "num_tokens"},
    "text_mask": {0: "batch", 1: "num_tokens"},
}
OUTPUT_AXES: dict[str, dict[int, str]] = {
    "pred_logits": {0: "batch"},
    "pred_spans": {0: "batch"},
    "saliency_scores": {0: "batch", 1: "num_clips"},
}
END_TO_END_INPUT_AXES: dict[str, dict[int, str]] = {**INPUT_AXES, DURATION: {0: "batch"}}
ANSWER_AXES: dict[str, dict[int, str]] = {
    "moments": {0: "batch"},
    "saliency": {0: "batch", 1: "num_clips"},
    "num_clips": {0: "batch"},
}


def make_feeds(cfg: CorebaConfig, video_lens: tuple[int, ...], text_lens: tuple[int, ...],
               seed: int = 0) -> dict[str, np.ndarray]:
    """Random non-zero features (padding holds noise too: engines must ignore it) and bool masks."""
    rng = np.random.default_rng(seed)
    B, Lv, Lt = len(video_lens), max(video_lens), max(text_lens)
    return {
        "video_feats": rng.standard_normal((B, Lv, cfg.video_dim), dtype=np.float32),
        "video_mask": np.arange(Lv)[None] < np.asarray(video_lens)[:, None],
        "text_feats": rng.standard_normal((B, Lt, cfg.text_dim), dtype=np.float32),
        "text_mask": np.arange(Lt)[None] < np.asarray(text_lens)[:, None],
    }


def make_durations(cfg: CorebaConfig, video_lens: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """(B,) float32 seconds: each video's valid clips times the clip length, less up to half a clip (a video
    rarely ends on a clip boundary), so the times differ from a multiple of the clip length."""
    rng = np.random.default_rng(seed)
    lens = np.asarray(video_lens, dtype=np.float64)
    return (lens * cfg.clip_length - rng.uniform(0, cfg.clip_length / 2, lens.shape)).astype(np.float32)
