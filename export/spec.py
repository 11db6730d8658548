"""What an exported COREBA graph looks like: names, dynamic axes, opset and tolerances.

The tensor names and axes are the model's I/O contract, defined once in :mod:`coreba.interface` and
re-exported here for the exporter's modules.
"""

from __future__ import annotations

from dataclasses import dataclass

from coreba.interface import INPUT_AXES, INPUT_NAMES, OUTPUT_AXES, OUTPUT_NAMES  # noqa: F401 (re-exported)

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

# bf16 / int8 engines: accepted by the accuracy gate (export.accuracy: QVHighlights metrics within 1 point of fp32),
# not by output errors. Their per-output check is only a sanity bound, a fraction of the output's range that a
# working engine stays far inside (bf16 ~1 %, int8 ~3 % measured on the demo model) and a broken one does not.
REDUCED_PRECISIONS = ("bf16", "int8")
REDUCED_PRECISION_SANITY = 0.1
