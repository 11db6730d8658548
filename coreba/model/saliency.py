"""Saliency encoder and clip saliency scores, eqs. (6)-(7), as QD-DETR computes them.

A learned saliency token t_s (with its own learned position) is appended to F_fine; two post-norm
self-attention layers encode [F_fine || t_s]; the score of clip i is <P1 F^_i, P2 t^_s> / sqrt(d).
The paper writes eq. (7) with vectors w_f, w_s and a 1/d factor; QD-DETR's released code, which the
paper says it adopts, uses two d x d projections and 1/sqrt(d), and that is what is built here.

QD-DETR places its token first, [t_s || F_fine]; attention does not depend on the order, so the token is
appended here. The token and its position start as QD-DETR's do, ``torch.randn`` (std 1); the two
projections keep PyTorch's default init (they are outside QD-DETR's xavier-initialised ``Transformer``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from coreba.config import CorebaConfig
from coreba.model.layers import AttentionLayer


class SaliencyEncoder(nn.Module):
    def __init__(self, cfg: CorebaConfig) -> None:
        super().__init__()
        d = cfg.hidden_dim
        self.token = nn.Parameter(torch.randn(d))
        self.token_pos = nn.Parameter(torch.randn(d))
        self.layers = nn.ModuleList(
            AttentionLayer(d, cfg.num_heads, cfg.ffn_dim, cfg.dropout, cfg.activation)
            for _ in range(cfg.num_saliency_layers))
        self.proj_clip, self.proj_token = nn.Linear(d, d), nn.Linear(d, d)
        self.scale = 1.0 / math.sqrt(d)

    def forward(self, f_fine: Tensor, video_mask: Tensor, video_pos: Tensor) -> tuple[Tensor, Tensor]:
        """f_fine (B, Lv, D) -> (memory (B, Lv, D) for the decoder, saliency scores (B, Lv))."""
        B, Lv, D = f_fine.shape
        x = torch.cat([f_fine, self.token.expand(B, 1, D)], dim=1)  # (B, Lv+1, D)
        pos = torch.cat([video_pos, self.token_pos.expand(B, 1, D)], dim=1)
        mask = torch.cat([video_mask, video_mask.new_ones(B, 1)], dim=1)
        for layer in self.layers:
            x = layer(x, x, mask, pos=pos, key_pos=pos)
        memory, token = x[:, :Lv], x[:, Lv]
        scores = (self.proj_clip(memory) * self.proj_token(token)[:, None]).sum(-1) * self.scale  # (B, Lv)
        return memory, scores
