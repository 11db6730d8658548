"""What an exported COREBA graph looks like: names, dynamic axes, opset and tolerances.

The tensor names and axes are the model's I/O contract, defined once in :mod:`coreba.interface` and
re-exported here for the exporter's modules.
"""

from __future__ import annotations

from dataclasses import dataclass

from coreba.interface import INPUT_AXES, INPUT_NAMES, OUTPUT_AXES, OUTPUT_NAMES  # noqa: F401 (re-exported)

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
