"""Training losses: Hungarian matching and the DETR-style set criterion (QD-DETR's losses)."""

from coreba.losses.criterion import SetCriterion, build_criterion
from coreba.losses.matcher import HungarianMatcher, build_matcher

__all__ = ["HungarianMatcher", "SetCriterion", "build_criterion", "build_matcher"]
