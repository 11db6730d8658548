"""What an exported COREBA graph looks like: names, dynamic axes, opset and tolerances.

The tensor names and axes are the model's I/O contract, defined once in :mod:`coreba.interface` and
re-exported here for the exporter's modules.
"""

from __future__ import annotations

from dataclasses import dataclass

from coreba.interface import (  # noqa: F401 (re-exported)
    ANSWER_AXES,
    ANSWER_NAMES,
    DURATION,
    END_TO_END_INPUT_AXES,
    END_TO_END_INPUT_NAMES,
    INPUT_AXES,
    INPUT_NAMES,
    OUTPUT_AXES,
    OUTPUT_NAMES,
)
from coreba.postprocess import DEFAULT_TOP_K  # noqa: F401 (re-exported: the end-to-end graph's default K)

DEFAULT_OPSET = 18
# The opsets an export is produced at AND passes every check (checker, strict shape inference, ONNX Runtime
# parity). The dynamo exporter writes opset 18 and converts to the asked one (onnxscript's converter, else
# onnx's C API); below 17 and above 28 the conversion fails and the exporter silently keeps 18. Measured with
# torch 2.13, onnxscript 0.7.2, onnx 1.23.2 (newest opset 28) and onnxruntime 1.32: the tiny test config at
# every opset 7..29, the default config at 17 and 28. export_onnx also verifies the written opset, so another
# library version cannot fake it. (TensorRT's parser has its own range: export/tensorrt_ops.py.)
MIN_OPSET, MAX_OPSET = 17, 28
SUPPORTED_OPSETS = range(MIN_OPSET, MAX_OPSET + 1)
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


@dataclass(frozen=True)
class AnswerTolerance:
    """Max absolute error allowed on the end-to-end graph's answer against eager PyTorch + ``postprocess``.

    ``times``: on start/end in seconds, or, when ``times_per_duration``, as a fraction of the video's duration
    (fp16: the spans' tolerance carried over to seconds). ``num_clips`` must be equal.
    """

    times: float
    scores: float
    saliency: float
    times_per_duration: bool = False


# fp32: the bounds (1e-4 s, 1e-5 on scores); saliency as the raw graph's saliency_scores (it passes through)
FP32_ANSWER_TOLERANCE = AnswerTolerance(times=1e-4, scores=1e-5, saliency=1e-4)
FP16_ANSWER_TOLERANCE = AnswerTolerance(times=FP16_TOLERANCE.pred_spans, scores=FP16_SCORE_TOLERANCE,
                                        saliency=FP16_TOLERANCE.saliency_scores, times_per_duration=True)
