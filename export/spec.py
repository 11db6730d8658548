"""What an exported COREBA graph looks like: names, dynamic axes, opset and tolerances.

The names and their order are the contract between the exporter, every engine, the parity harness and
the serving repository (``config.pbtxt``); change them here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

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

DEFAULT_OPSET = 18
MAX_EXPORT_BATCH = 4096  # the upper bound the exporter is told for the dynamic batch axis

# Example shapes traced at export: B > 1 (a batch of 1 would let the exporter specialise B to 1) and
# lengths that differ per sample, so no length is mistaken for a constant.
EXPORT_VIDEO_LENS: tuple[int, ...] = (60, 23, 41)
EXPORT_TEXT_LENS: tuple[int, ...] = (17, 5, 9)


@dataclass(frozen=True)
class Tolerance:
    """Max absolute error allowed per output against eager PyTorch (fp32)."""

    pred_logits: float
    pred_spans: float
    saliency_scores: float

    def of(self, name: str) -> float:
        return getattr(self, name)


FP32_TOLERANCE = Tolerance(pred_logits=1e-4, pred_spans=1e-4, saliency_scores=1e-4)
# fp16 graphs: the bound is 1e-2 on spans, saliency and the moment scores (foreground probabilities);
# the raw logits, which only matter through the softmax, get 5e-2.
FP16_TOLERANCE = Tolerance(pred_logits=5e-2, pred_spans=1e-2, saliency_scores=1e-2)
FP16_SCORE_TOLERANCE = 1e-2
