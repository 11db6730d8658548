"""Pure tensor operations shared by the losses, post-processing and evaluation."""

from coreba.ops.span_ops import generalized_temporal_iou, span_cxw_to_xx, span_xx_to_cxw, temporal_iou

__all__ = ["generalized_temporal_iou", "span_cxw_to_xx", "span_xx_to_cxw", "temporal_iou"]
