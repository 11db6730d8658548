"""Input checks shared by the model, the Predictor and the serving models.

Every engine sees inputs that passed these checks, which is what makes "no NaN from any engine" hold:
each sample has at least one valid clip and one valid token, so no attention row is fully masked.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from coreba.config import CorebaConfig

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class InputError(ValueError):
    """An input the model cannot answer; the message names the input and the problem."""


def _check_mask(name: str, mask: Tensor, shape: tuple[int, int], feats_name: str) -> None:
    if mask.dtype != torch.bool:
        raise InputError(f"{name} must be bool (True = valid), got {mask.dtype}")
    if tuple(mask.shape) != shape:
        raise InputError(f"{name} has shape {tuple(mask.shape)} but {feats_name} implies {shape}")


def check_masks_not_empty(video_mask, text_mask) -> None:
    """Each sample needs a valid clip and a valid token (bool masks, torch or numpy, (B, L))."""
    for mask, what in ((video_mask, "no valid clip in video_mask"),
                       (text_mask, "an empty query (no valid token in text_mask)")):
        empty = np.flatnonzero(~np.asarray(mask, dtype=bool).any(axis=1))
        if empty.size:
            raise InputError(f"sample(s) {empty.tolist()} have {what}")


def validate_inputs(cfg: CorebaConfig, video_feats: Tensor, video_mask: Tensor, text_feats: Tensor,
                    text_mask: Tensor) -> None:
    """Raise :class:`InputError` naming the first problem found (shapes, dtypes, lengths, NaN, empties)."""
    for name, x, dim in (("video_feats", video_feats, cfg.video_dim), ("text_feats", text_feats, cfg.text_dim)):
        if not isinstance(x, Tensor):
            raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 3:
            raise InputError(f"{name} must have shape (B, L, {dim}), got rank {x.dim()} shape {tuple(x.shape)}")
        if x.shape[-1] != dim:
            raise InputError(f"{name} has feature dim {x.shape[-1]}, the model expects {dim}")
        if x.dtype not in FLOAT_DTYPES:
            raise InputError(f"{name} must be a float tensor, got {x.dtype}")
        if x.shape[1] == 0:
            raise InputError(f"{name} is empty (length 0): at least one {'clip' if name[0] == 'v' else 'token'} "
                             "is needed")
    B, Lv, _ = video_feats.shape
    if text_feats.shape[0] != B:
        raise InputError(f"batch sizes differ: video_feats has {B}, text_feats has {text_feats.shape[0]}")
    Lt = text_feats.shape[1]
    if Lv > cfg.max_video_len:
        raise InputError(f"video has {Lv} clips, more than the supported maximum {cfg.max_video_len} "
                         f"({cfg.max_video_len * cfg.clip_length:g} s)")
    if Lt > cfg.max_text_len:
        raise InputError(f"query has {Lt} tokens, more than the supported maximum {cfg.max_text_len}")
    _check_mask("video_mask", video_mask, (B, Lv), "video_feats")
    _check_mask("text_mask", text_mask, (B, Lt), "text_feats")
    check_masks_not_empty(video_mask, text_mask)
    for name, x in (("video_feats", video_feats), ("text_feats", text_feats)):
        if not bool(torch.isfinite(x).all()):
            raise InputError(f"{name} contains NaN or Inf values")
