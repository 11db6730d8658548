"""The training losses of COREBA, which are QD-DETR's (paper Sec. III-E).

DETR-style: each loss is one method returning a dict of named, *unweighted* losses; ``self.loss_map``
names them; the weights live in :class:`~coreba.config.LossConfig` and are applied only by
:meth:`SetCriterion.weighted_total`, so logging sees the raw values.

Loss names (``_aux{i}`` is appended for decoder layer ``i``'s auxiliary outputs, span/label losses only):

==============================  ==================  ==================================================
name                            weight              what
==============================  ==================  ==================================================
``loss_span``                   ``span_weight``      L1 on matched ``[center, width]``
``loss_giou``                   ``giou_weight``      ``1 - gIoU`` on matched ``[start, end]``
``loss_label``                  ``label_weight``     foreground/background cross-entropy, all queries
``loss_saliency_margin``        ``margin_weight``    hinge on (high, low) clip pairs
``loss_saliency_contrastive``   ``contrastive_weight``  rank-aware contrastive loss
``loss_saliency_neg``           ``negative_weight``  unpaired (video, other query) scores pushed to 0
==============================  ==================  ==================================================

Inputs (see :meth:`SetCriterion.forward`):

* ``outputs``: ``pred_logits`` ``(B, Q, 2)``; ``pred_spans`` ``(B, Q, 2)`` normalised ``[center, width]``
  (after the sigmoid); ``saliency_scores`` ``(B, Lv)``; ``saliency_scores_neg`` ``(B, Lv)`` (optional:
  the negative-pair pass); ``video_mask`` ``(B, Lv)`` bool, True = valid clip; ``aux_outputs`` (optional):
  a list of dicts with ``pred_logits`` and ``pred_spans``.
* ``targets``: ``span_labels``: list of ``B`` dicts with ``spans`` ``(n_i, 2)`` normalised
  ``[center, width]``;
  ``saliency_pos_labels``, ``saliency_neg_labels``: ``(B, P)`` long clip indices of the (high, low) pairs;
  ``saliency_all_labels``: ``(B, Lv)`` float, the summed annotator score of each clip (0..max_rank).
  A saliency loss whose inputs are absent is skipped.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coreba.config import LossConfig
from coreba.losses.matcher import FOREGROUND, HungarianMatcher, build_matcher
from coreba.ops.span_ops import generalized_temporal_iou, span_cxw_to_xx

BACKGROUND = 1
# Masked clip logits: large and negative, but finite, so no -inf - -inf = NaN (and fp16-safe).
MASKED_LOGIT = -1e4

Indices = list[tuple[Tensor, Tensor]]
LossFn = Callable[[dict, dict, Indices, float], dict[str, Tensor]]
_AUX_SUFFIX = re.compile(r"_aux\d+$")


class SetCriterion(nn.Module):
    """Moment retrieval (set prediction) and highlight detection losses.

    Args:
        matcher: the Hungarian matcher (see :func:`~coreba.losses.matcher.build_matcher`).
        cfg: loss weights, margin, temperature, ``max_rank`` and ``aux_loss``.
        losses: which entries of ``loss_map`` to compute (default: all).
    """

    def __init__(self, matcher: HungarianMatcher, cfg: LossConfig,
                 losses: tuple[str, ...] | None = None) -> None:
        super().__init__()
        self.matcher = matcher
        self.cfg = cfg
        self.loss_map: dict[str, LossFn] = {
            "spans": self.loss_spans,
            "labels": self.loss_labels,
            "saliency_margin": self.loss_saliency_margin,
            "saliency_contrastive": self.loss_saliency_contrastive,
            "saliency_neg": self.loss_saliency_neg,
        }
        self.losses = tuple(self.loss_map) if losses is None else tuple(losses)
        unknown = sorted(set(self.losses) - set(self.loss_map))
        if unknown:
            raise ValueError(f"SetCriterion: unknown loss(es) {unknown}; known: {sorted(self.loss_map)}")
        self.weight_dict: dict[str, float] = {
            "loss_span": cfg.span_weight,
            "loss_giou": cfg.giou_weight,
            "loss_label": cfg.label_weight,
            "loss_saliency_margin": cfg.margin_weight,
            "loss_saliency_contrastive": cfg.contrastive_weight,
            "loss_saliency_neg": cfg.negative_weight,
        }
        # Class weights of the cross-entropy: background is down-weighted (most queries are background).
        class_weight = torch.ones(2)
        class_weight[BACKGROUND] = cfg.background_weight
        self.register_buffer("class_weight", class_weight, persistent=False)

    # ------------------------------------------------------------------ moment retrieval
    def loss_spans(self, outputs: dict, targets: dict, indices: Indices,
                   num_spans: float) -> dict[str, Tensor]:
        """``loss_span`` (L1 on ``[center, width]``) and ``loss_giou`` (``1 - gIoU``) of matched pairs.

        Both are summed over matched pairs and divided by ``num_spans``, the number of target spans in
        the batch; L1 is averaged over its two coordinates, as QD-DETR's ``l1_loss(...).mean()``.
        """
        pred = outputs["pred_spans"]  # (B, Q, 2)
        batch_idx, pred_idx = _prediction_index(indices)
        src = pred[batch_idx.to(pred.device), pred_idx.to(pred.device)]  # (T, 2)
        tgt = torch.cat([t["spans"][j] for t, (_, j) in zip(targets["span_labels"], indices, strict=True)])
        tgt = tgt.to(device=pred.device, dtype=pred.dtype).reshape(-1, 2)
        loss_span = F.l1_loss(src, tgt, reduction="none").mean(-1).sum() / num_spans
        # diag of the pairwise matrix: T (targets in the batch) is small, so O(T^2) costs nothing.
        giou = torch.diag(generalized_temporal_iou(span_cxw_to_xx(src), span_cxw_to_xx(tgt)))
        loss_giou = (1 - giou).sum() / num_spans
        return {"loss_span": loss_span, "loss_giou": loss_giou}

    def loss_labels(self, outputs: dict, targets: dict, indices: Indices,
                    num_spans: float) -> dict[str, Tensor]:
        """``loss_label``: cross-entropy of every query, foreground (0) if matched else background (1).

        Class weights ``[1, background_weight]``; averaged over all ``B * Q`` queries (QD-DETR's
        ``reduction="none"`` then ``.mean()``, not PyTorch's weight-normalised mean).
        """
        logits = outputs["pred_logits"]  # (B, Q, 2)
        target_classes = torch.full(logits.shape[:2], BACKGROUND, dtype=torch.int64, device=logits.device)
        batch_idx, pred_idx = _prediction_index(indices)
        target_classes[batch_idx.to(logits.device), pred_idx.to(logits.device)] = FOREGROUND
        weight = self.class_weight.to(device=logits.device, dtype=logits.dtype)
        loss = F.cross_entropy(logits.transpose(1, 2), target_classes, weight=weight, reduction="none")
        return {"loss_label": loss.mean()}

    # ------------------------------------------------------------------ highlight detection
    def loss_saliency_margin(self, outputs: dict, targets: dict, indices: Indices,
                             num_spans: float) -> dict[str, Tensor]:
        """``loss_saliency_margin``: ``mean(max(0, margin + s[low] - s[high])) * 2`` over ``(B, P)`` pairs.

        The factor 2 is QD-DETR's. Skipped when ``saliency_pos_labels`` is absent.
        """
        if "saliency_pos_labels" not in targets:
            return {}
        scores = outputs["saliency_scores"]  # (B, Lv)
        pos = targets["saliency_pos_labels"].to(scores.device).long()  # (B, P)
        neg = targets["saliency_neg_labels"].to(scores.device).long()
        pos_scores, neg_scores = scores.gather(1, pos), scores.gather(1, neg)
        loss = (self.cfg.saliency_margin + neg_scores - pos_scores).clamp(min=0).mean() * 2
        return {"loss_saliency_margin": loss}

    def loss_saliency_contrastive(self, outputs: dict, targets: dict, indices: Indices,
                                  num_spans: float) -> dict[str, Tensor]:
        """``loss_saliency_contrastive``: QD-DETR's rank-aware contrastive loss.

        A sample's candidates are its valid clips, plus its valid clips under the negative (unpaired)
        query when ``saliency_scores_neg`` is given, labelled 0. For each rank ``r`` in
        ``1..max_rank-1``, positives are candidates with label ``>= r`` (skipped if the batch has
        none); the loss is minus the mean log-softmax (temperature ``tau``) of the positives, counted
        only for samples with a positive (0 for the others), averaged over the whole batch, summed over
        ``r`` and divided by ``max_rank``. Skipped when ``saliency_all_labels`` is absent.
        """
        if "saliency_all_labels" not in targets:
            return {}
        # float32: exp/log of score/tau is not safe in half precision.
        scores = outputs["saliency_scores"].float()  # (B, Lv)
        valid = outputs["video_mask"].bool()
        labels = targets["saliency_all_labels"].to(scores.device).float()
        if outputs.get("saliency_scores_neg") is not None:
            scores = torch.cat([scores, outputs["saliency_scores_neg"].float()], dim=1)  # (B, 2Lv)
            labels = torch.cat([labels, torch.zeros_like(labels)], dim=1)
            valid = torch.cat([valid, valid], dim=1)
        logits = (scores / self.cfg.contrastive_tau).masked_fill(~valid, MASKED_LOGIT)
        logits = logits - logits.max(dim=1, keepdim=True).values.detach()  # stabilise exp
        log_prob = logits - logits.exp().sum(dim=1, keepdim=True).log()  # (B, C)

        loss = scores.new_zeros(())
        # A rank without positives in the batch adds exactly 0 below, which is QD-DETR's "skip"
        # without a host sync per rank.
        for rank in range(1, self.cfg.max_rank):
            pos = (labels >= rank) & valid  # padded clips are never positives
            num_pos = pos.sum(dim=1)  # (B,)
            # where(), not a product: a masked log-prob times 0 must not leak into the sum or gradient.
            mean_log_prob = torch.where(pos, log_prob, 0).sum(dim=1) / num_pos.clamp(min=1)
            loss = loss + (-mean_log_prob).mean()  # samples without positives add 0
        return {"loss_saliency_contrastive": loss / self.cfg.max_rank}

    def loss_saliency_neg(self, outputs: dict, targets: dict, indices: Indices,
                          num_spans: float) -> dict[str, Tensor]:
        """``loss_saliency_neg``: ``-log(1 - sigmoid(s_neg))`` summed over valid clips, batch-averaged.

        Computed as ``softplus(s_neg)`` (the same value, without log(0)). Skipped when
        ``saliency_scores_neg`` is absent.
        """
        if outputs.get("saliency_scores_neg") is None:
            return {}
        neg = outputs["saliency_scores_neg"].float()  # (B, Lv)
        valid = outputs["video_mask"].bool()
        loss = torch.where(valid, F.softplus(neg), 0).sum(dim=1).mean()
        return {"loss_saliency_neg": loss}

    # ------------------------------------------------------------------ driver
    def get_loss(self, name: str, outputs: dict, targets: dict, indices: Indices,
                 num_spans: float) -> dict[str, Tensor]:
        return self.loss_map[name](outputs, targets, indices, num_spans)

    def forward(self, outputs: dict, targets: dict) -> dict[str, Tensor]:
        """All losses, unweighted, plus ``loss_total`` (their weighted sum, see :meth:`weighted_total`).

        Matching is rerun for each entry of ``outputs["aux_outputs"]`` (when ``cfg.aux_loss``), whose
        span and label losses get the suffix ``_aux{i}``.
        """
        indices = self.matcher(outputs, targets)
        # Normalise by the number of targets (>= 1 so a batch without moments gives 0, not NaN).
        num_spans = float(max(sum(len(t["spans"]) for t in targets["span_labels"]), 1))

        losses: dict[str, Tensor] = {}
        for name in self.losses:
            losses.update(self.get_loss(name, outputs, targets, indices, num_spans))

        if self.cfg.aux_loss:
            for i, aux in enumerate(outputs.get("aux_outputs") or []):
                aux_indices = self.matcher(aux, targets)
                for name in ("spans", "labels"):  # saliency comes from the encoder: not repeated
                    if name in self.losses:
                        aux_losses = self.get_loss(name, aux, targets, aux_indices, num_spans)
                        losses.update({f"{k}_aux{i}": v for k, v in aux_losses.items()})

        losses["loss_total"] = self.weighted_total(losses)
        return losses

    def weight_of(self, name: str) -> float:
        """The weight of loss ``name`` (an ``_aux{i}`` suffix is ignored)."""
        return self.weight_dict[_AUX_SUFFIX.sub("", name)]

    def weighted_total(self, loss_dict: dict[str, Tensor]) -> Tensor:
        """``sum(weight * loss)`` over the named losses of ``loss_dict`` (``loss_total`` is ignored)."""
        terms = [self.weight_of(k) * v.float() for k, v in loss_dict.items() if k != "loss_total"]
        return torch.stack(terms).sum() if terms else torch.zeros(())


def _prediction_index(indices: Indices) -> tuple[Tensor, Tensor]:
    """Flatten per-sample matches into ``(batch_idx, pred_idx)``, both ``(T,)`` int64."""
    batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    pred_idx = torch.cat([src for src, _ in indices])
    return batch_idx, pred_idx


def build_criterion(cfg: LossConfig) -> SetCriterion:
    """:class:`SetCriterion` with :func:`~coreba.losses.matcher.build_matcher` ``(cfg)``."""
    return SetCriterion(build_matcher(cfg), cfg)
