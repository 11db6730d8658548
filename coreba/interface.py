"""The model's I/O contract: tensor names, their dynamic axes, and random inputs that satisfy it.

The names and their order bind the eager model, every engine, the exporter (``export.spec`` re-exports them),
the parity harness and the serving repository; change them here and nowhere else.
"""

from __future__ import annotations

import numpy as np

from coreba.config import CorebaConfig

INPUT_NAMES: tuple[str, ...] = ("video_feats", "video_mask", "text_feats", "text_mask")
OUTPUT_NAMES: tuple[str, ...] = ("pred_logits", "pred_spans", "saliency_scores")

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
