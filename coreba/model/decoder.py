"""DAB-DETR-style moment decoder, as QD-DETR adapts DAB-DETR to 1-D spans.

Each of the Q = 10 queries carries an anchor (cx, w) kept in logit space. Per layer:

1. ``sine`` = sine embedding of (cx, w), d/2 features each (QD-DETR hard-codes 128 each, i.e. d = 256); the
   positional query is MLP(sine).
2. The sine embedding is scaled by ``query_scale(content)`` (identity in the first layer) and by the
   width modulation w_ref / w (DAB-DETR's modulated attention), w_ref predicted from the content.
3. Self-attention over the queries (content + position), then cross-attention over the saliency-encoder
   memory with content and position concatenated PER HEAD (so q/k have 2*Dh per head), then the FFN.
   Only the first layer adds the positional query to the cross-attention content (DAB-DETR).
4. Two heads, as QD-DETR's released code has them (``bbox_embed`` in its decoder, ``span_embed`` in its model):

   * prediction: spans_l = sigmoid(span_head(LN(out_l)) + logit(ref_l)), class logits = class_head(LN(out_l));
   * refinement: ref_{l+1} = sigmoid(refine_head(out_l) + logit(anchor_l)) on the UN-normalised output;
     the next layer's anchor is ref_{l+1} DETACHED, while layer l+1's prediction adds logit(ref_{l+1}) NOT
     detached (so the span loss of layer l+1 reaches refine_head and layer l). ref_0 = anchor_0 =
     sigmoid(anchors), not detached either.

   The last layer's refinement feeds nothing and is not computed (QD-DETR computes and drops it).

Initialisation (QD-DETR's): every matrix of the layers and of ``query_scale``, ``ref_point_head``,
``refine_head`` and ``ref_width_head`` is xavier-uniform; ``refine_head``'s last bias is zero (DAB-DETR
zero-initialises that layer, QD-DETR's xavier pass then re-draws its weight); ``anchors``, ``class_head``
and ``span_head`` keep PyTorch's defaults (``span_head`` is NOT zero-initialised).

Outputs per layer: class logits (B, Q, 2; index 0 = foreground) and spans (B, Q, 2; normalised cx, w).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from coreba.config import CorebaConfig
from coreba.model.attention import MultiHeadAttention
from coreba.model.layers import MLP, FeedForward, inverse_sigmoid, sine_embedding, xavier_weights_


def span_sine_embedding(spans: Tensor, dim: int) -> Tensor:
    """spans (B, Q, 2) normalised (cx, w) -> (B, Q, dim): [sine(cx) || sine(w)], as DAB-DETR (scale 2*pi)."""
    scaled = spans * (2 * torch.pi)
    return torch.cat([sine_embedding(scaled[..., 0], dim // 2), sine_embedding(scaled[..., 1], dim // 2)], -1)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: CorebaConfig, is_first: bool) -> None:
        super().__init__()
        d, h = cfg.hidden_dim, cfg.num_heads
        self.num_heads, self.is_first = h, is_first
        # self-attention projections (content and position separately, as DAB-DETR)
        self.sa_q_content, self.sa_q_pos = nn.Linear(d, d), nn.Linear(d, d)
        self.sa_k_content, self.sa_k_pos = nn.Linear(d, d), nn.Linear(d, d)
        self.sa_v = nn.Linear(d, d)
        self.self_attn = MultiHeadAttention(d, h, cfg.dropout, project_inputs=False)
        # cross-attention projections
        self.ca_q_content, self.ca_k_content, self.ca_v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.ca_k_pos, self.ca_q_sine = nn.Linear(d, d), nn.Linear(d, d)
        self.ca_q_pos = nn.Linear(d, d) if is_first else None
        self.cross_attn = MultiHeadAttention(d, h, cfg.dropout, project_inputs=False)
        self.ffn = FeedForward(d, cfg.ffn_dim, cfg.dropout, cfg.activation)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop1, self.drop2, self.drop3 = nn.Dropout(cfg.dropout), nn.Dropout(cfg.dropout), nn.Dropout(cfg.dropout)
        xavier_weights_(self)

    def _per_head_cat(self, a: Tensor, b: Tensor) -> Tensor:
        """(B, L, H*Dh) and (B, L, H*Dh) -> (B, L, H*2Dh), each head's content next to its position."""
        B, L, _ = a.shape
        return torch.cat([a.view(B, L, self.num_heads, -1), b.view(B, L, self.num_heads, -1)], -1).view(B, L, -1)

    def forward(self, tgt: Tensor, memory: Tensor, memory_mask: Tensor, memory_pos: Tensor,
                query_pos: Tensor, query_sine: Tensor) -> Tensor:
        """tgt (B, Q, D); memory (B, Lv, D); memory_mask (B, Lv); query_pos, query_sine (B, Q, D)."""
        q = self.sa_q_content(tgt) + self.sa_q_pos(query_pos)
        k = self.sa_k_content(tgt) + self.sa_k_pos(query_pos)
        all_queries = tgt.new_ones(tgt.shape[:2], dtype=torch.bool)
        tgt = self.norm1(tgt + self.drop1(self.self_attn.attend(q, k, self.sa_v(tgt), all_queries)))

        q = self.ca_q_content(tgt)
        k = self.ca_k_content(memory)
        k_pos = self.ca_k_pos(memory_pos)
        if self.ca_q_pos is not None:
            q = q + self.ca_q_pos(query_pos)
            k = k + k_pos
        q = self._per_head_cat(q, self.ca_q_sine(query_sine))  # (B, Q, H*2Dh)
        k = self._per_head_cat(k, k_pos)  # (B, Lv, H*2Dh)
        tgt = self.norm2(tgt + self.drop2(self.cross_attn.attend(q, k, self.ca_v(memory), memory_mask)))
        return self.norm3(tgt + self.drop3(self.ffn(tgt)))


class MomentDecoder(nn.Module):
    def __init__(self, cfg: CorebaConfig) -> None:
        super().__init__()
        d = cfg.hidden_dim
        self.anchors = nn.Embedding(cfg.num_queries, 2)  # (cx, w) in logit space
        self.layers = nn.ModuleList(DecoderLayer(cfg, is_first=i == 0) for i in range(cfg.num_decoder_layers))
        self.norm = nn.LayerNorm(d)
        self.ref_point_head = MLP(d, d, d, 2)
        self.query_scale = MLP(d, d, d, 2)
        self.ref_width_head = MLP(d, d, 1, 2)
        self.refine_head = MLP(d, d, 2, 3)  # QD-DETR's bbox_embed: anchor refinement
        for head in (self.ref_point_head, self.query_scale, self.ref_width_head, self.refine_head):
            xavier_weights_(head)
        nn.init.zeros_(self.refine_head.layers[-1].bias)
        self.class_head = nn.Linear(d, 2)  # QD-DETR's class_embed
        self.span_head = MLP(d, d, 2, 3)  # QD-DETR's span_embed: predictions

    def forward(self, memory: Tensor, memory_mask: Tensor, memory_pos: Tensor) -> list[dict[str, Tensor]]:
        """Returns one {"pred_logits": (B, Q, 2), "pred_spans": (B, Q, 2)} per layer, last layer last."""
        B, _, D = memory.shape
        tgt = memory.new_zeros(B, self.anchors.num_embeddings, D)
        anchor = self.anchors.weight.sigmoid().to(memory.dtype).expand(B, -1, -1)  # (B, Q, 2)
        reference = anchor  # what this layer's predictions are relative to (not detached)
        outputs = []
        for i, layer in enumerate(self.layers):
            sine = span_sine_embedding(anchor, D)  # (B, Q, D)
            query_pos = self.ref_point_head(sine)
            query_sine = sine if i == 0 else sine * self.query_scale(tgt)
            ref_width = self.ref_width_head(tgt).sigmoid()  # (B, Q, 1)
            query_sine = query_sine * (ref_width / anchor[..., 1:2])
            tgt = layer(tgt, memory, memory_mask, memory_pos, query_pos, query_sine)
            hidden = self.norm(tgt)
            spans = (self.span_head(hidden) + inverse_sigmoid(reference)).sigmoid()
            outputs.append({"pred_logits": self.class_head(hidden), "pred_spans": spans})
            if i < len(self.layers) - 1:
                reference = (self.refine_head(tgt) + inverse_sigmoid(anchor)).sigmoid()
                anchor = reference.detach()
        return outputs
