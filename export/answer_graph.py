"""``coreba.postprocess.postprocess`` (its default "exact" mode) as a small torch module, so that the exported
graph returns the user's answer and a served query needs no Python step after the engine.

It mirrors the numpy implementation line by line, in float32 (the numpy one computes in float64; the
difference is float32 rounding, within the parity harness's 1e-4 s on times and 1e-5 on scores):

* score = softmax(logits)[..., 0]                                (Softmax)
* (cx, w) -> (cx - w/2, cx + w/2) * duration, clamped to [0, duration]   (arithmetic, Max, Min)
* the top k by score, descending                                 (TopK, GatherElements). ONNX's TopK
  breaks ties by the lower index first, as numpy's stable argsort of -score does; ONNX Runtime follows
  the spec (tested). TensorRT does not promise an order among exactly equal scores.
* saliency of the valid clips packed to the front in clip order, zeros after (the layout of
  :mod:`coreba.answer`): a one-hot (Lv x Lv) matrix product built from the mask's running count, so a mask
  with holes gives what the numpy code gives, exactly (each slot is one product with 1.0 plus zeros).
* num_clips = the number of valid clips, int32.

Only standard ONNX ops that TensorRT's parser accepts (``export.tensorrt_ops``): the running count is a
float CumSum because TensorRT's CumSum takes floats only. It always runs in float32: an fp16 graph casts the
model's outputs to float32 before this head, so times of long videos keep their precision.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class AnswerGraph(nn.Module):
    """Raw outputs + mask + duration -> (moments (B, K, 3), saliency (B, Lv), num_clips (B, 1) int32)."""

    def __init__(self, top_k: int) -> None:
        super().__init__()
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.top_k = top_k

    def forward(self, pred_logits: Tensor, pred_spans: Tensor, saliency_scores: Tensor, video_mask: Tensor,
                duration: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        scores = pred_logits.float().softmax(-1)[..., 0]  # (B, Q)
        spans = pred_spans.float()
        half = spans[..., 1] / 2
        seconds = duration.float()[:, None]  # (B, 1)
        start = torch.minimum(torch.clamp((spans[..., 0] - half) * seconds, min=0.0), seconds)  # (B, Q)
        end = torch.minimum(torch.clamp((spans[..., 0] + half) * seconds, min=0.0), seconds)
        top_scores, order = torch.topk(scores, self.top_k, dim=-1, largest=True, sorted=True)  # (B, K)
        moments = torch.stack([start.gather(1, order), end.gather(1, order), top_scores], dim=-1)  # (B, K, 3)

        valid = video_mask.to(torch.bool)
        saliency = torch.where(valid, saliency_scores.float(), torch.zeros_like(saliency_scores, dtype=torch.float))
        slot = valid.float().cumsum(1) - 1  # (B, Lv): where each valid clip goes
        slots = torch.arange(valid.shape[1], device=valid.device, dtype=torch.float)  # (Lv,)
        to_slot = (slot[:, :, None] == slots[None, None, :]) & valid[:, :, None]  # (B, Lv clip, Lv slot)
        packed = torch.matmul(saliency[:, None, :], to_slot.float())[:, 0]  # (B, Lv)
        num_clips = valid.float().sum(1, keepdim=True).to(torch.int32)  # (B, 1)
        return moments, packed, num_clips
