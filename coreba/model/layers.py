"""Building blocks shared by the encoder, the saliency encoder and the decoder.

Every transformer layer here is post-norm (attention, residual, LayerNorm, FFN, residual, LayerNorm), as
QD-DETR's layers are, with a PReLU feed-forward network (QD-DETR's ``activation="prelu"``).

Initialisation follows QD-DETR: its ``Transformer`` (T2V encoder, saliency encoder, decoder and the decoder's
heads) re-initialises every parameter of more than one dimension with ``xavier_uniform_`` after building, so
every weight matrix of a transformer layer here starts the same way (:func:`xavier_weights_`); the input MLPs,
the class and span heads and the saliency projections sit outside QD-DETR's ``Transformer`` and keep PyTorch's
defaults.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from coreba.model.attention import MultiHeadAttention


def xavier_weights_(module: nn.Module) -> None:
    """``xavier_uniform_`` on every parameter of ``module`` with more than one dimension (QD-DETR's init)."""
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


def make_activation(name: str) -> nn.Module:
    return {"prelu": nn.PReLU, "relu": nn.ReLU, "gelu": nn.GELU}[name]()


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float, activation: str) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), make_activation(activation), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class AttentionLayer(nn.Module):
    """A post-norm transformer layer: ``x = LN(x + attn(x + pos, key + key_pos, key)); x = LN(x + FFN(x))``.

    Used as a cross-attention block (VT, TV) or, with ``key is query``, as a self-attention block.

    ``t2v_residual=True`` is QD-DETR's T2V layer: the FFN reads the normalised sum but its residual adds to
    the UN-normalised one, ``h = x + attn(...); out = LN2(h + FFN(LN1(h)))`` (its self-attention layers are
    the standard form above).
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float, activation: str,
                 backend: str = "sdpa", num_always_valid: int | None = None, t2v_residual: bool = False) -> None:
        super().__init__()
        self.t2v_residual = t2v_residual
        self.attn = MultiHeadAttention(dim, num_heads, dropout, backend, num_always_valid=num_always_valid)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim, dropout, activation)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)
        xavier_weights_(self.ffn)  # the attention initialises its own projections (see MultiHeadAttention)

    def forward(self, x: Tensor, key: Tensor, key_mask: Tensor, pos: Tensor | None = None,
                key_pos: Tensor | None = None) -> Tensor:
        """x (B, Lq, D) queries; key (B, Lk, D) keys = values; key_mask (B, Lk) bool; positions added to q/k."""
        q = x if pos is None else x + pos
        k = key if key_pos is None else key + key_pos
        h = x + self.dropout1(self.attn(q, k, key, key_mask))
        x = self.norm1(h)
        return self.norm2((h if self.t2v_residual else x) + self.dropout2(self.ffn(x)))


class InputProjection(nn.Module):
    """QD-DETR's input MLP: ``num_layers`` blocks of LayerNorm, dropout, Linear, ReLU (none after the last).

    The paper says 3 blocks (its "3-layer MLPs"); QD-DETR's ``n_input_proj`` defaults to 2.
    """

    def __init__(self, in_dim: int, dim: int, dropout: float, num_layers: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers += [nn.LayerNorm(in_dim if i == 0 else dim), nn.Dropout(dropout),
                       nn.Linear(in_dim if i == 0 else dim, dim)]
            if i < num_layers - 1:
                layers.append(nn.ReLU(inplace=True))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TextPositionEmbedding(nn.Module):
    """QD-DETR's text positions (``use_txt_pos``): ``dropout(LayerNorm(text + P[0..Lt)))`` with P learned.

    The result is a POSITION: QD-DETR adds it to the text keys of its T2V layers (the values stay the plain
    text), and it depends on the text too, because QD-DETR puts the text inside the LayerNorm.
    """

    def __init__(self, max_len: int, dim: int, dropout: float) -> None:
        super().__init__()
        self.embedding = nn.Embedding(max_len, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, text: Tensor) -> Tensor:
        """text (B, Lt, D) -> (B, Lt, D)."""
        positions = torch.arange(text.shape[1], device=text.device)
        return self.dropout(self.norm(text + self.embedding(positions).to(text.dtype)))


class MLP(nn.Module):
    """A plain MLP (ReLU between layers), as DETR's box head."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


def sine_embedding(x: Tensor, num_feats: int, temperature: float = 10000.0) -> Tensor:
    """Sine/cosine features of scalar positions: x (...,) -> (..., num_feats), interleaved sin/cos pairs."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=x.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    pos = x[..., None].float() / dim_t  # (..., num_feats)
    return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2).to(x.dtype)


def video_position_embedding(video_mask: Tensor, dim: int) -> Tensor:
    """QD-DETR's normalised sine embedding of clip positions.

    Positions are the running count of valid clips divided by the sample's number of valid clips and
    scaled to (0, 2*pi]: a function of the sample's own mask only, so padding or batch-mates never change it.
    video_mask (B, Lv) bool -> (B, Lv, dim) float32.
    """
    x = video_mask.cumsum(1, dtype=torch.float32)
    x = x / (x[:, -1:] + 1e-6) * (2 * math.pi)
    return sine_embedding(x, dim)


def inverse_sigmoid(x: Tensor, eps: float = 1e-3) -> Tensor:
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))
