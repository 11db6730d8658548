"""Hungarian matching of predicted moments to ground-truth moments (as DETR / QD-DETR).

The cost of assigning prediction ``q`` to target ``t`` is::

    cost_span * L1(cxw_q, cxw_t) + cost_giou * (-gIoU(xx_q, xx_t)) + cost_class * (-p_fg(q))

with ``p_fg = softmax(pred_logits)[..., 0]`` (class index 0 is foreground). Each sample is solved on
its own with ``scipy.optimize.linear_sum_assignment``.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from coreba.config import LossConfig
from coreba.ops.span_ops import generalized_temporal_iou, span_cxw_to_xx

FOREGROUND = 0  # class index of "matched to a ground-truth moment"


class HungarianMatcher(nn.Module):
    """One-to-one assignment between the ``Q`` predictions and the ``n_i`` targets of each sample."""

    def __init__(self, cost_span: float = 10.0, cost_giou: float = 1.0, cost_class: float = 4.0) -> None:
        super().__init__()
        if cost_span == 0 and cost_giou == 0 and cost_class == 0:
            raise ValueError("HungarianMatcher: all matching costs are 0")
        self.cost_span = cost_span
        self.cost_giou = cost_giou
        self.cost_class = cost_class

    def cost_matrices(self, outputs: dict[str, Tensor], targets: dict) -> list[Tensor]:
        """Per-sample cost matrices, ``(Q, n_i)`` each, on the CPU (see :meth:`forward` for the keys)."""
        logits, spans = outputs["pred_logits"], outputs["pred_spans"]  # (B, Q, 2), (B, Q, 2) cxw
        batch, num_queries = logits.shape[:2]
        tgt_list = [t["spans"].to(device=spans.device, dtype=spans.dtype) for t in targets["span_labels"]]
        sizes = [len(t) for t in tgt_list]
        if len(sizes) != batch:
            raise ValueError(f"HungarianMatcher: {len(sizes)} span_labels for a batch of {batch}")

        # Batched over the whole batch (one big matrix), then split per sample: fewer small kernels.
        out_prob = logits.flatten(0, 1).float().softmax(-1)[:, FOREGROUND]  # (B*Q,)
        out_spans = spans.flatten(0, 1).float()  # (B*Q, 2)
        tgt_spans = torch.cat(tgt_list).float().reshape(-1, 2)  # (T, 2)

        cost_span = torch.cdist(out_spans, tgt_spans, p=1)  # (B*Q, T)
        cost_giou = -generalized_temporal_iou(span_cxw_to_xx(out_spans), span_cxw_to_xx(tgt_spans))
        # All targets are foreground, so the class cost only depends on the prediction.
        cost_class = -out_prob[:, None].expand_as(cost_span)
        cost = self.cost_span * cost_span + self.cost_giou * cost_giou + self.cost_class * cost_class
        cost = cost.view(batch, num_queries, -1).cpu()
        return [c[i] for i, c in enumerate(cost.split(sizes, dim=-1))]

    @torch.no_grad()
    def forward(self, outputs: dict[str, Tensor], targets: dict) -> list[tuple[Tensor, Tensor]]:
        """Match predictions to targets.

        Args:
            outputs: ``pred_logits`` ``(B, Q, 2)``; ``pred_spans`` ``(B, Q, 2)`` normalised
                ``[center, width]``.
            targets: ``span_labels``: a list of ``B`` dicts, each with ``spans`` ``(n_i, 2)`` normalised
                ``[center, width]`` (``n_i`` may be 0).

        Returns:
            ``B`` pairs ``(pred_idx, tgt_idx)`` of int64 CPU tensors of length ``min(Q, n_i)``:
            prediction ``pred_idx[k]`` is matched to target ``tgt_idx[k]``.
        """
        indices = []
        for c in self.cost_matrices(outputs, targets):
            if c.numel() == 0:  # no targets (or no queries): nothing to match
                indices.append((torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64)))
                continue
            rows, cols = linear_sum_assignment(c.numpy())
            indices.append((torch.from_numpy(rows).long(), torch.from_numpy(cols).long()))
        return indices


def build_matcher(cfg: LossConfig) -> HungarianMatcher:
    """The matcher with the costs of ``cfg`` (``cost_span``, ``cost_giou``, ``cost_class``)."""
    return HungarianMatcher(cost_span=cfg.cost_span, cost_giou=cfg.cost_giou, cost_class=cfg.cost_class)
