"""The cross-modal encoder: Coarse-to-Fine Cross-modal interaction (CFC) inside the Recurrent Alignment
Mechanism (RAM), and the QD-DETR-style cross-attention encoder used by the paper's baseline rows.

Paper, Sec. III-B/C (F'_v video (B, Lv, D); F~_t balanced text (B, Lt+Lb, D)):

    F_vt  = VT(F'_v, F~_t)                                   eq. (2)
    F_tv  = TV(F~_t, F'_v)                                   eq. (3)
    F~_vt = F'_v + (SA(F_vt) + F_vt) / 2                     eq. (4)
    F~_tv = F~_t + (SA(F_tv) + F_tv) / 2
    F_fine = VT(F~_vt, F~_tv)   (the same VT weights)        eq. (5)
    RAM (Alg. 1), N_r turns: F'_v <- F'_v + F_fine;  F~_t <- F~_t + F~_tv

Choices where the paper is silent (following QD-DETR):

* Every CFC block is a standard post-norm transformer layer (attention, residual, LN, FFN, residual, LN):
  the paper gives no layer detail beyond "a single cross-attention layer".
* The sine position of each clip is added to the video side of every attention (queries of VT and of
  the video SA call, keys of TV), as QD-DETR adds it to its T2V queries; text has no position.
* The SA block is called twice with its own mask each time (video, then balanced text); it never
  attends across modalities.
* Ablations: without a TV-block F_tv := F~_t; without SA, SA(F) := F (so eq. 4 reduces to
  F'_v + F_vt); "separate" SA uses one block per modality; unshared VT uses a second block for eq. (5).
  ``stacked`` (MOD_N) runs the same algorithm with N independent modules instead of N turns of one.
* The QD-DETR encoder is ``num_qd_layers`` chained T2V cross-attention layers (video queries over the
  balanced text); inside RAM it contributes F_fine and leaves the text unchanged. It is QD-DETR's
  ``t2v_encoder`` exactly: cross-attention only (no self-attention), PReLU FFN, QD-DETR's T2V residual (the
  FFN's residual adds to the sum before the first LayerNorm, see :class:`~coreba.model.layers.AttentionLayer`),
  clip positions on the queries and, with ``text_position_embedding`` (QD-DETR's ``use_txt_pos``), text
  positions on the keys (zero for Balance Tokens). One difference, on purpose: QD-DETR repeats its
  query-by-key mask head-major where PyTorch expects batch-major, which makes a sample's output depend on its
  batch-mates when clips are padded; that bug is not carried over (masks are per sample here).
"""

from __future__ import annotations

from torch import Tensor, nn

from coreba.config import CorebaConfig
from coreba.model.layers import AttentionLayer


def _layer(cfg: CorebaConfig, num_always_valid: int | None = None, t2v_residual: bool = False) -> AttentionLayer:
    return AttentionLayer(cfg.hidden_dim, cfg.num_heads, cfg.ffn_dim, cfg.dropout, cfg.activation,
                          backend="sdpa", num_always_valid=num_always_valid, t2v_residual=t2v_residual)


class CFCModule(nn.Module):
    """One Coarse-to-Fine Cross-modal interaction module, eqs. (2)-(5). Returns (F_fine, F~_tv)."""

    def __init__(self, cfg: CorebaConfig) -> None:
        super().__init__()
        nb = cfg.num_balance_tokens
        # A shared block is registered once (None below), so checkpoints and ONNX hold its weights once.
        self.vt = _layer(cfg, num_always_valid=nb)
        self.vt_fine = None if cfg.share_vt_block else _layer(cfg, num_always_valid=nb)
        self.tv = _layer(cfg) if cfg.use_tv_block else None
        self.sa_video = None if cfg.self_attention == "none" else _layer(cfg)
        self.sa_text = _layer(cfg) if cfg.self_attention == "separate" else None

    def vt_blocks(self) -> list[AttentionLayer]:
        return [self.vt] if self.vt_fine is None else [self.vt, self.vt_fine]

    def forward(self, video: Tensor, video_mask: Tensor, video_pos: Tensor, text: Tensor,
                text_mask: Tensor, text_pos: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """video (B, Lv, D), video_mask (B, Lv), video_pos (B, Lv, D); text (B, Lt+Lb, D) balanced, text_mask.

        ``text_pos`` is always None here (the config allows text positions only for the QD-DETR encoder)."""
        f_vt = self.vt(video, text, text_mask, pos=video_pos)  # eq. (2), (B, Lv, D)
        f_tv = text if self.tv is None else self.tv(text, video, video_mask, key_pos=video_pos)  # eq. (3)
        if self.sa_video is None:
            f_vt_tilde, f_tv_tilde = video + f_vt, text + f_tv
        else:  # eq. (4)
            f_vt_s = self.sa_video(f_vt, f_vt, video_mask, pos=video_pos, key_pos=video_pos)
            f_tv_s = (self.sa_text or self.sa_video)(f_tv, f_tv, text_mask)
            f_vt_tilde = video + (f_vt_s + f_vt) / 2
            f_tv_tilde = text + (f_tv_s + f_tv) / 2
        f_fine = (self.vt_fine or self.vt)(f_vt_tilde, f_tv_tilde, text_mask, pos=video_pos)  # eq. (5)
        return f_fine, f_tv_tilde


class QDCrossEncoder(nn.Module):
    """QD-DETR's T2V encoder: chained cross-attention layers, video queries over (balanced) text."""

    def __init__(self, cfg: CorebaConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_layer(cfg, num_always_valid=cfg.num_balance_tokens, t2v_residual=True)
                                    for _ in range(cfg.num_qd_layers))

    def vt_blocks(self) -> list[AttentionLayer]:
        return list(self.layers)

    def forward(self, video: Tensor, video_mask: Tensor, video_pos: Tensor, text: Tensor,
                text_mask: Tensor, text_pos: Tensor | None = None) -> tuple[Tensor, None]:
        for layer in self.layers:
            video = layer(video, text, text_mask, pos=video_pos, key_pos=text_pos)
        return video, None


class RecurrentAlignment(nn.Module):
    """Algorithm 1: N_r turns through one module (shared weights), or N_r modules (``stacked``, MOD_N)."""

    def __init__(self, cfg: CorebaConfig) -> None:
        super().__init__()
        make = CFCModule if cfg.encoder_type == "cfc" else QDCrossEncoder
        num_modules = 1 if cfg.recurrent_mode == "recurrent" else cfg.num_recurrent
        self.blocks = nn.ModuleList(make(cfg) for _ in range(num_modules))
        self.num_turns = cfg.num_recurrent

    def vt_blocks(self) -> list[AttentionLayer]:
        """The blocks whose attention is the balanced cross-attention (candidates for the Triton kernel)."""
        return [vt for block in self.blocks for vt in block.vt_blocks()]

    def forward(self, video: Tensor, video_mask: Tensor, video_pos: Tensor, text: Tensor,
                text_mask: Tensor, text_pos: Tensor | None = None) -> Tensor:
        f_fine = video
        for turn in range(self.num_turns):  # a Python loop: export unrolls it, weights stay shared
            block = self.blocks[turn % len(self.blocks)]
            f_fine, f_tv_tilde = block(video, video_mask, video_pos, text, text_mask, text_pos)
            if turn == self.num_turns - 1:
                break  # the last turn's residual updates feed nothing
            video = video + f_fine
            if f_tv_tilde is not None:
                text = text + f_tv_tilde
        return f_fine


def build_encoder(cfg: CorebaConfig) -> RecurrentAlignment:
    return RecurrentAlignment(cfg)


__all__ = ["CFCModule", "QDCrossEncoder", "RecurrentAlignment", "build_encoder"]
