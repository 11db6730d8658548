"""The one multi-head attention module used by every block of the model.

Why not ``nn.MultiheadAttention``: its fused fast path does not export with dynamic shapes, it hides
the projections the DAB-DETR decoder needs to build (content and position concatenated per head), and
its boolean mask convention (True = ignore) is the opposite of the rest of this code base.

Masks are bool, True = valid key. A masked score is filled with the most negative FINITE value of the
working dtype (never ``-inf``), so an engine that turns masks into additive biases cannot produce NaN;
valid inputs never create a fully masked row (see :mod:`coreba.model.validation`).

Backends (``attention_backend``):

* ``"math"``: explicit softmax(QK^T / sqrt(d)) V. Always used for export; training-safe.
* ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention`` (flash / efficient / cuDNN kernels).
* ``"triton"``: the fused balanced cross-attention kernel of :mod:`kernels.balanced_attention`, only for
  attentions whose last ``num_always_valid`` keys are the Balance Tokens (the VT-block); inference only.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coreba.config import ATTENTION_BACKENDS


def masked_fill_value(dtype: torch.dtype) -> float:
    """The most negative finite value of ``dtype``: exp() of it is 0, and it is never NaN-prone."""
    return torch.finfo(dtype).min


def math_attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor, dropout_p: float = 0.0) -> Tensor:
    """softmax(q k^T / sqrt(d_qk)) v with a key mask.

    q: (B, H, Lq, Dqk); k: (B, H, Lk, Dqk); v: (B, H, Lk, Dv); key_mask: (B, Lk) bool, True = valid.
    Returns (B, H, Lq, Dv).
    """
    scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))  # (B, H, Lq, Lk)
    scores = scores.masked_fill(~key_mask[:, None, None, :], masked_fill_value(scores.dtype))
    weights = scores.softmax(dim=-1)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p, training=True)
    return torch.matmul(weights, v)


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor, dropout_p: float = 0.0) -> Tensor:
    """The same function through PyTorch's fused SDPA kernels (bool mask: True = attend)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :], dropout_p=dropout_p)


def triton_usable(device: torch.device) -> str | None:
    """None when the Triton kernel can run on ``device``, else the reason it cannot."""
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return (f"the Triton attention backend needs a CUDA device (got {device.type}); on the CPU it runs only "
                "under Triton's interpreter (TRITON_INTERPRET=1)")
    from kernels.balanced_attention import triton_available

    if not triton_available(device):
        return f"the Triton attention backend cannot run on {device}: the `triton` package is missing or unusable"
    return None


class MultiHeadAttention(nn.Module):
    """Multi-head attention with explicit projections and a switchable attention core.

    ``num_always_valid`` marks attentions whose last keys are the always-valid Balance Tokens (the
    VT-block): only those can run on the fused Triton kernel; every other attention treats a "triton"
    backend as "sdpa".
    ``project_inputs=False`` leaves q/k/v as given (the DAB-DETR decoder projects them itself and may
    give q/k a larger per-head dim than v, content and position concatenated).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, backend: str = "sdpa",
                 project_inputs: bool = True, num_always_valid: int | None = None) -> None:
        super().__init__()
        assert dim % num_heads == 0, f"dim {dim} not divisible by num_heads {num_heads}"
        self.dim, self.num_heads, self.dropout = dim, num_heads, dropout
        self.num_always_valid = num_always_valid
        if project_inputs:
            self.q_proj, self.k_proj, self.v_proj = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        else:
            self.q_proj = self.k_proj = self.v_proj = nn.Identity()
        self.out_proj = nn.Linear(dim, dim)
        self.backend = backend
        self._reset_parameters(project_inputs)

    def _reset_parameters(self, project_inputs: bool) -> None:
        """As QD-DETR's attentions start: ``nn.MultiheadAttention`` (q/k/v packed in one (3D, D) matrix, xavier
        over that packed shape, zero biases) and DAB-DETR's projection-free one (zero output bias); QD-DETR's
        ``Transformer`` then applies xavier to every matrix, the output projection included."""
        if project_inputs:
            packed = torch.empty(3 * self.dim, self.dim)
            nn.init.xavier_uniform_(packed)
            with torch.no_grad():
                for proj, part in zip((self.q_proj, self.k_proj, self.v_proj), packed.chunk(3)):
                    proj.weight.copy_(part)
                    proj.bias.zero_()
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, name: str) -> None:
        if name not in ATTENTION_BACKENDS:
            raise ValueError(f"unknown attention backend {name!r}; choose from {ATTENTION_BACKENDS}")
        self._backend = name

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_mask: Tensor) -> Tensor:
        """query (B, Lq, D); key, value (B, Lk, D); key_mask (B, Lk) bool. Returns (B, Lq, D)."""
        return self.attend(self.q_proj(query), self.k_proj(key), self.v_proj(value), key_mask)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor) -> Tensor:
        """Attention over already-projected q (B, Lq, H*Dqk), k (B, Lk, H*Dqk), v (B, Lk, H*Dv)."""
        B, Lq, _ = q.shape
        Lk = k.shape[1]
        H = self.num_heads
        q = q.view(B, Lq, H, -1).transpose(1, 2)  # (B, H, Lq, Dqk)
        k = k.view(B, Lk, H, -1).transpose(1, 2)  # (B, H, Lk, Dqk)
        v = v.view(B, Lk, H, -1).transpose(1, 2)  # (B, H, Lk, Dv)
        dropout_p = self.dropout if self.training else 0.0
        out = self._core(q, k, v, key_mask, dropout_p)  # (B, H, Lq, Dv)
        return self.out_proj(out.transpose(1, 2).reshape(B, Lq, -1))

    def _core(self, q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor, dropout_p: float) -> Tensor:
        backend = self._backend
        if backend == "triton" and self.num_always_valid is None:
            backend = "sdpa"  # only the VT-block runs on the fused kernel
        if backend == "math":
            return math_attention(q, k, v, key_mask, dropout_p)
        if backend == "sdpa":
            return sdpa_attention(q, k, v, key_mask, dropout_p)
        return self._triton_core(q, k, v, key_mask)

    def _triton_core(self, q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor) -> Tensor:
        if self.training and torch.is_grad_enabled():
            raise RuntimeError("the Triton attention backend is forward-only (inference); train with "
                               "attention_backend='math' or 'sdpa', or call model.eval()")
        reason = triton_usable(q.device)
        if reason is not None:
            raise RuntimeError(reason)
        from kernels.balanced_attention import balanced_cross_attention

        num_text = k.shape[2] - self.num_always_valid
        # Views, not copies: the kernel reads text and balance keys from their own (strided) tensors.
        return balanced_cross_attention(q, k[:, :, :num_text], v[:, :, :num_text], key_mask[:, :num_text],
                                        k[:, :, num_text:], v[:, :, num_text:])
