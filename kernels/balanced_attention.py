"""
Balanced cross-attention: one fused Triton kernel
=================================================

Goal
----
In COREBA's VT-block every video clip (a query) attends over the sentence's text tokens *followed by*
``Lb`` learnable Balance Tokens. The text tokens are padded (a boolean mask says which are real); the
Balance Tokens are always valid. The plain PyTorch route

1. concatenates ``[k_text || k_bal]`` and ``[v_text || v_bal]`` (expanding the balance tokens over the
   batch),
2. builds a ``(B, 1, 1, Lt + Lb)`` mask,
3. materialises the ``(B, H, Lq, Lt + Lb)`` score matrix, soft-maxes it and multiplies by ``V``,

which costs several launches and round trips through memory for tensors that are only a few KB per
sample. This module does the whole thing in **one launch**: each program loads a block of queries once,
streams the text keys (masked by ``text_mask``) and then the balance keys (only masked past ``Lb``)
*from their own tensors*, and keeps a running max / sum in fp32 (the "online softmax" of
FlashAttention), so neither the scores, the concatenated keys nor an expanded mask ever exist in memory.

What you will find here
-----------------------
* ``_balanced_attn_fwd``: the kernel (grid ``(cdiv(Lq, BLOCK_M), B * H)``).
* ``_configs`` / ``_prune_configs`` / ``AUTOTUNE_KEY``: the autotuning search space (a single fixed config
  under ``TRITON_INTERPRET=1``), its pruning, and its key (which includes a batch bucket).
* ``launch_arguments``: the arguments of one launch, shared with the ahead-of-time compiler
  (``python -m kernels.aot``, which compiles every config for sm_80/sm_90 without a GPU).
* ``balanced_cross_attention_reference``: the same function in plain PyTorch (tests and fallback).
* ``balanced_cross_attention``: the host wrapper (checks, allocates, builds the grid, launches).
* ``triton_available``: whether the kernel can run on a device.

Conventions and decisions
-------------------------
* Forward only: this is an inference kernel, no autograd formula is registered. Train with the
  ``math`` / ``sdpa`` attention backends.
* Masked keys get a large negative *finite* score (``_MASK_VALUE``), never ``-inf``: ``-inf - (-inf)``
  would be NaN in the running-max update. Their probability is additionally forced to exactly 0.
* A query row with **no valid key at all** (``Lb == 0`` and a sample without any valid text token; the
  model never produces it) is defined to output **0**, in the kernel and in the reference alike. This
  keeps the wrapper free of a host synchronisation (no ``text_mask.any()`` check) and of NaN.
* fp32, fp16 and bf16 inputs; the accumulation (scores, softmax statistics, ``P @ V``) is fp32. fp32
  dots use ``input_precision="ieee"`` (no TF32) so fp32 results match the reference to ~1e-6.
* ``Dh`` is padded to the next power of two (>= 16) with masked loads, so any head dim <= 256 works.
* The kernel is jitted and wrapped in the autotuner on first use (``_kernel``), not by decorators at
  import: the module then imports (and its reference runs) without Triton, and the config set follows
  ``TRITON_INTERPRET`` as it is at the first launch.
* CPU / interpreter: ``TRITON_INTERPRET=1`` must be set before ``triton`` is first imported (its own
  ``tl.*`` helpers are jitted at import time and cannot be called from an interpreted kernel otherwise).
  The interpreter's ``tl.dot`` multiplies bf16 bit patterns as integers, so bf16 inputs take the
  reference path under the interpreter.
"""

# %%
# Imports
# -------
# Triton is optional (``pip install coreba[gpu]``): without it only the PyTorch reference is usable and
# ``balanced_cross_attention`` falls back to it. The tiny ``tl`` stand-in only lets the kernel's
# ``tl.constexpr`` annotations evaluate at import; the kernel is never compiled without Triton.

import functools
import math
import os
import types
from typing import Any

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only on installs without triton
    triton = None
    tl = types.SimpleNamespace(constexpr=None)

__all__ = [
    "balanced_cross_attention",
    "balanced_cross_attention_reference",
    "triton_available",
]

_MASK_VALUE = -1.0e30  # finite "minus infinity" for masked scores (fp32 in the kernel)
_LOG2E = math.log2(math.e)  # the kernel uses exp2: softmax(s) == softmax2(s * log2(e))
_MAX_GRID_Y = 65535  # CUDA's limit on grid.y; larger B*H are launched in batch chunks
_MAX_HEAD_DIM = 256  # beyond this a (BLOCK_M, Dh) fp32 accumulator no longer fits in registers
_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _interpreting() -> bool:
    """True when Triton runs kernels through its CPU interpreter (same parsing as Triton's knob)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def triton_available(device: torch.device | str) -> bool:
    """Whether the Triton kernel can run on ``device``.

    True on CUDA when triton is importable, and on the CPU when Triton's interpreter is on
    (``TRITON_INTERPRET=1``, which must be set before triton is first imported).
    """
    if triton is None:
        return False
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available()
    return device.type == "cpu" and _interpreting()


# %%
# The kernel
# ----------
# One program owns ``BLOCK_M`` query rows of one (batch, head) pair. It keeps three fp32 running
# quantities per row: ``m_i`` (max score so far), ``l_i`` (sum of exp(score - m_i)) and ``acc``
# (sum of exp(score - m_i) * v). When a new block of keys raises the max to ``m_new``, the old
# quantities are rescaled by ``alpha = exp(m_i - m_new)``; at the end ``out = acc / l_i``.
#
# Scores are in base 2 (``qk_scale`` already includes log2(e)) so that ``exp2`` can be used.
#
# Keys come from two places, streamed one after the other:
#
# * text keys ``[0, Lt)`` in blocks of ``BLOCK_N``, valid where ``text_mask`` is True;
# * balance keys ``[0, Lb)`` in blocks of ``BLOCK_B`` (a small power of two fitted to ``Lb``, chosen by
#   the host), all valid: only the padding of the last block is masked.
#
# The online-softmax update is written out in both loops rather than factored into a ``@triton.jit``
# helper: the kernel is jitted on first use (see ``_kernel``), and a helper jitted at import would not
# be callable from it.
#
# Masked keys get ``MASK_VALUE`` (finite) as score and probability exactly 0. While no valid key has
# been seen, ``m_i`` stays ``MASK_VALUE`` and ``alpha == exp2(0) == 1`` applied to zeros: no NaN, and a
# row that never sees a valid key ends with ``acc == 0`` and ``l_i == 0`` and is written as 0.


def _balanced_attn_fwd(
    # -- pointers
    Q, K_text, V_text, Mask, K_bal, V_bal, Out,
    # -- scalars and sizes
    qk_scale,  # softmax scale * log2(e)
    H, LQ, LT, LB,
    BH_BUCKET,  # autotuning key only (B * H rows of the grid, to a power of two); the kernel never reads it
    # -- strides, in elements (the Dh stride is 1 for every tensor: the wrapper guarantees it)
    stride_qb, stride_qh, stride_qm,
    stride_ktb, stride_kth, stride_ktn,
    stride_vtb, stride_vth, stride_vtn,
    stride_mb, stride_mn,
    stride_kbb, stride_kbh, stride_kbn,  # stride_kbb == 0 when the balance keys are shared by the batch
    stride_vbb, stride_vbh, stride_vbn,
    stride_ob, stride_oh, stride_om,
    # -- compile-time meta-parameters
    HEAD_DIM: tl.constexpr,  # true head dim
    BLOCK_D: tl.constexpr,  # HEAD_DIM padded to a power of two >= 16
    BLOCK_B: tl.constexpr,  # balance keys per step
    MASK_VALUE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,  # "ieee" for fp32 inputs (no TF32), "tf32" (unused) otherwise
    BLOCK_M: tl.constexpr,  # query rows per program (autotuned)
    BLOCK_N: tl.constexpr,  # text keys per step (autotuned)
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    # int64 batch / head offsets: B * H * L * Dh can exceed 2**31 elements for large batches.
    off_b = (pid_bh // H).to(tl.int64)
    off_h = (pid_bh % H).to(tl.int64)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    dim_ok = offs_d < HEAD_DIM

    # -- the query block, loaded once: (BLOCK_M, BLOCK_D). Rows past LQ re-read row LQ - 1 instead of being
    # masked: their results are never stored, and the row mask is then only needed by the final store. A
    # mask needed at both ends of the kernel is a predicate held across the key loops: Triton 3.6's ptxas
    # spilled it to local memory, and 5 of the 36 configs spilled before this (python -m kernels.aot, RESULTS.md).
    rows = tl.minimum(offs_m, LQ - 1)
    q_ptrs = Q + off_b * stride_qb + off_h * stride_qh + rows[:, None] * stride_qm + offs_d[None, :]
    q = tl.load(q_ptrs, mask=dim_ok[None, :], other=0.0)

    m_i = tl.full([BLOCK_M], MASK_VALUE, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    # -- text keys, masked by text_mask
    kt_base = K_text + off_b * stride_ktb + off_h * stride_kth
    vt_base = V_text + off_b * stride_vtb + off_h * stride_vth
    mask_base = Mask + off_b * stride_mb
    for start_n in range(0, LT, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        in_range = offs_n < LT
        valid = tl.load(mask_base + offs_n * stride_mn, mask=in_range, other=0) != 0
        # K is loaded transposed, (BLOCK_D, BLOCK_N), so that q @ k is a plain dot.
        k = tl.load(kt_base + offs_n[None, :] * stride_ktn + offs_d[:, None],
                    mask=in_range[None, :] & dim_ok[:, None], other=0.0)
        v = tl.load(vt_base + offs_n[:, None] * stride_vtn + offs_d[None, :],
                    mask=in_range[:, None] & dim_ok[None, :], other=0.0)
        s = tl.dot(q, k, input_precision=DOT_PRECISION) * qk_scale
        s = tl.where(valid[None, :], s, MASK_VALUE)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.where(valid[None, :], tl.exp2(s - m_new[:, None]), 0.0)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PRECISION)
        m_i = m_new

    # -- balance keys, always valid (only the padding past LB is masked)
    kb_base = K_bal + off_b * stride_kbb + off_h * stride_kbh
    vb_base = V_bal + off_b * stride_vbb + off_h * stride_vbh
    for start_n in range(0, LB, BLOCK_B):
        offs_n = start_n + tl.arange(0, BLOCK_B)
        valid = offs_n < LB
        k = tl.load(kb_base + offs_n[None, :] * stride_kbn + offs_d[:, None],
                    mask=valid[None, :] & dim_ok[:, None], other=0.0)
        v = tl.load(vb_base + offs_n[:, None] * stride_vbn + offs_d[None, :],
                    mask=valid[:, None] & dim_ok[None, :], other=0.0)
        s = tl.dot(q, k, input_precision=DOT_PRECISION) * qk_scale
        s = tl.where(valid[None, :], s, MASK_VALUE)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.where(valid[None, :], tl.exp2(s - m_new[:, None]), 0.0)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PRECISION)
        m_i = m_new

    # -- normalise and store; a row without any valid key has acc == 0 and is written as 0
    l_safe = tl.where(l_i > 0.0, l_i, 1.0)
    out = acc / l_safe[:, None]
    o_ptrs = Out + off_b * stride_ob + off_h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :]
    row_ok = offs_m < LQ
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None] & dim_ok[None, :])


# %%
# Autotuning
# ----------
# The real shapes are tiny (Lt + Lb <= ~40 keys, Dh 32, Lq 75 .. 1200), so the search space is small:
# query blocks of 16..128 rows, text-key blocks of 16..64, 1..8 warps. Configs whose blocks are larger
# than the (power-of-two rounded) problem are pruned before benchmarking. Under the interpreter
# autotuning would multiply the (slow, ~1 s) launches, so a single fixed config is used there.
#
# The key holds the batch: how many programs a launch has (cdiv(Lq, BLOCK_M) * B * H) decides between
# small blocks (more programs to fill the SMs at B=1) and large ones (less per-program overhead at
# B=1024), so a config tuned at one batch must not be reused at a very different one. ``BH_BUCKET`` is
# B * H rounded up to a power of two: one tuning per doubling of the batch, not one per batch size, and it
# is excluded from specialisation (``do_not_specialize``) so that it never causes a recompile.

AUTOTUNE_KEY = ("LQ", "LT", "LB", "HEAD_DIM", "BH_BUCKET")


def _configs() -> list[Any]:
    """The autotuning configs: one fixed config under ``TRITON_INTERPRET=1``, a small set otherwise."""
    if _interpreting():
        return [triton.Config({"BLOCK_M": 32, "BLOCK_N": 16}, num_warps=4, num_stages=1)]
    shapes = [  # (BLOCK_M, BLOCK_N, num_warps); the key loops are 1-3 steps long: no software pipelining
        (16, 16, 1), (32, 16, 2), (32, 32, 2), (64, 16, 4),
        (64, 32, 4), (64, 64, 4), (128, 32, 4), (128, 64, 8),
    ]
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=1) for bm, bn, w in shapes]


def _next_power_of_2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _prune_configs(configs: list[Any], named_args: dict[str, Any], **kwargs: Any) -> list[Any]:
    """Drop configs whose blocks exceed the problem (they only waste work); always keep one."""
    max_m = max(16, _next_power_of_2(named_args["LQ"]))
    max_n = max(16, _next_power_of_2(named_args["LT"]))
    kept = [c for c in configs if c.kwargs["BLOCK_M"] <= max_m and c.kwargs["BLOCK_N"] <= max_n]
    return kept or [min(configs, key=lambda c: (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]))]


def batch_bucket(batch: int, heads: int) -> int:
    """The autotuning key's batch term: B * H (the grid's second axis) rounded up to a power of two."""
    return _next_power_of_2(batch * heads)


@functools.cache
def _jitted(interpret: bool) -> Any:
    """``_balanced_attn_fwd`` under ``triton.jit`` (the ahead-of-time compiler, kernels/aot.py, uses it bare)."""
    del interpret  # only the cache key: triton.jit reads TRITON_INTERPRET itself
    return triton.jit(_balanced_attn_fwd, do_not_specialize=["BH_BUCKET"])


@functools.cache
def _kernel(interpret: bool) -> Any:
    """``_balanced_attn_fwd`` jitted and autotuned, built on first use, once per interpreter mode.

    Built here rather than with decorators so that the module imports without Triton; ``triton.jit``
    and ``_configs`` both read ``TRITON_INTERPRET`` now.
    """
    return triton.autotune(
        configs=_configs(),
        key=list(AUTOTUNE_KEY),
        prune_configs_by={"early_config_prune": _prune_configs},
    )(_jitted(interpret))


# %%
# Reference
# ---------
# The same function in plain PyTorch: concatenation, masked softmax, matmul. Computed in fp32 (fp64
# when given fp64, which the tests use as ground truth) and cast back to ``q``'s dtype.


def _broadcast_balance(t: Tensor | None, batch: int) -> Tensor | None:
    """(H, Lb, Dh) or (1 | B, H, Lb, Dh) -> a (B, H, Lb, Dh) view (stride 0 over the batch, no copy)."""
    if t is None:
        return None
    if t.dim() == 3:
        t = t.unsqueeze(0)
    return t.expand(batch, -1, -1, -1)


def balanced_cross_attention_reference(
    q: Tensor,
    k_text: Tensor,
    v_text: Tensor,
    text_mask: Tensor,
    k_bal: Tensor | None = None,
    v_bal: Tensor | None = None,
    scale: float | None = None,
) -> Tensor:
    """softmax(q [k_text || k_bal]^T * scale, masked) [v_text || v_bal], in plain PyTorch.

    Same arguments and result as :func:`balanced_cross_attention` (rows with no valid key give 0).
    """
    B, _, _, Dh = q.shape
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    scale = Dh ** -0.5 if scale is None else scale
    keys, values, mask = k_text, v_text, text_mask
    k_bal, v_bal = _broadcast_balance(k_bal, B), _broadcast_balance(v_bal, B)
    if k_bal is not None and k_bal.shape[2] > 0:
        keys = torch.cat([k_text, k_bal.to(k_text.dtype)], dim=2)
        values = torch.cat([v_text, v_bal.to(v_text.dtype)], dim=2)
        mask = torch.cat([text_mask, text_mask.new_ones(B, k_bal.shape[2])], dim=1)
    scores = torch.matmul(q.to(work), keys.to(work).transpose(-2, -1)) * scale
    valid = mask[:, None, None, :]
    scores = scores.masked_fill(~valid, torch.finfo(work).min)
    # A row with no valid key softmaxes to uniform weights; multiplying by the mask makes it 0.
    weights = scores.softmax(dim=-1) * valid
    return torch.matmul(weights, values.to(work)).to(q.dtype)


# %%
# Host wrapper
# ------------
# Checks (clear ``ValueError`` messages), allocates, builds the grid and launches. Strides are passed
# through, so views (e.g. ``k[:, :, :Lt]`` and ``k[:, :, Lt:]`` of one ``(B, H, Lt + Lb, Dh)`` tensor,
# or ``(B, L, H, Dh).transpose(1, 2)``) are read in place; only a tensor whose last dim is not
# contiguous is copied.


def _shape(t: Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def _check_inputs(
    q: Tensor,
    k_text: Tensor,
    v_text: Tensor,
    text_mask: Tensor,
    k_bal: Tensor | None,
    v_bal: Tensor | None,
    out: Tensor | None,
) -> None:
    """Raise ValueError naming the first argument that does not match the documented contract."""
    tensors = {"q": q, "k_text": k_text, "v_text": v_text, "text_mask": text_mask}
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if q.dim() != 4:
        raise ValueError(f"q must have shape (B, H, Lq, Dh) (4 dims), got {q.dim()} dims {_shape(q)}")
    B, H, _, Dh = q.shape
    for name, t in (("k_text", k_text), ("v_text", v_text)):
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape (B, H, Lt, Dh) (4 dims), got {t.dim()} dims {_shape(t)}")
        if t.shape[0] != B:
            raise ValueError(f"{name} batch size {t.shape[0]} does not match q's {B}")
        if t.shape[1] != H:
            raise ValueError(f"{name} has {t.shape[1]} heads but q has {H}")
        if t.shape[3] != Dh:
            raise ValueError(f"{name} head dim {t.shape[3]} does not match q's {Dh}")
    if k_text.shape != v_text.shape:
        raise ValueError(f"k_text {_shape(k_text)} and v_text {_shape(v_text)} must have the same shape")
    Lt = k_text.shape[2]
    if Lt < 1:
        raise ValueError("need at least one text token (Lt >= 1); pad and mask instead")
    if text_mask.dtype != torch.bool:
        raise ValueError(f"text_mask must be torch.bool (True = valid token), got {text_mask.dtype}")
    if tuple(text_mask.shape) != (B, Lt):
        raise ValueError(f"text_mask must have shape (B, Lt) = ({B}, {Lt}), got {_shape(text_mask)}")

    if (k_bal is None) != (v_bal is None):
        raise ValueError("k_bal and v_bal must both be tensors or both be None")
    if k_bal is not None:
        for name, t in (("k_bal", k_bal), ("v_bal", v_bal)):
            if t.dim() not in (3, 4):
                raise ValueError(f"{name} must have shape (B, H, Lb, Dh) or (H, Lb, Dh), got {_shape(t)}")
            if t.dim() == 4 and t.shape[0] not in (1, B):
                raise ValueError(f"{name} batch size {t.shape[0]} must be 1 or q's {B}")
            if t.shape[-3] != H:
                raise ValueError(f"{name} has {t.shape[-3]} heads but q has {H}")
            if t.shape[-1] != Dh:
                raise ValueError(f"{name} head dim {t.shape[-1]} does not match q's {Dh}")
        if k_bal.shape[-2] != v_bal.shape[-2]:
            raise ValueError(f"k_bal has {k_bal.shape[-2]} balance tokens but v_bal has {v_bal.shape[-2]}")
        tensors.update(k_bal=k_bal, v_bal=v_bal)

    if q.dtype not in _SUPPORTED_DTYPES:
        raise ValueError(f"q dtype must be one of float32, float16, bfloat16; got {q.dtype}")
    for name, t in tensors.items():
        if name != "text_mask" and t.dtype != q.dtype:
            raise ValueError(f"{name} dtype {t.dtype} does not match q's {q.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but q is on {q.device}")
    if Dh < 1 or Dh > _MAX_HEAD_DIM:
        raise ValueError(f"head dim must be in [1, {_MAX_HEAD_DIM}], got {Dh}")

    if out is not None:
        if tuple(out.shape) != tuple(q.shape):
            raise ValueError(f"out must have q's shape {_shape(q)}, got {_shape(out)}")
        if out.dtype != q.dtype:
            raise ValueError(f"out dtype {out.dtype} does not match q's {q.dtype}")
        if out.device != q.device:
            raise ValueError(f"out is on {out.device} but q is on {q.device}")
        if out.stride(-1) != 1 and Dh > 1:
            raise ValueError(f"out must be contiguous in its last dim (stride 1), got strides {out.stride()}")


def _unit_last_stride(t: Tensor) -> Tensor:
    """The kernel assumes stride 1 over Dh; any other stride pattern is passed through as is."""
    return t if t.stride(-1) == 1 else t.contiguous()


def launch_arguments(
    q: Tensor, k_text: Tensor, v_text: Tensor, mask: Tensor, k_bal: Tensor, v_bal: Tensor, out: Tensor,
    scale: float, Lb: int,
) -> tuple[list[Any], dict[str, Any]]:
    """The kernel's positional arguments and compile-time meta-parameters for one launch (one batch chunk).

    ``mask`` is the text mask viewed as uint8; ``k_bal``/``v_bal`` are (B, H, Lb, Dh) views (any tensor
    when ``Lb == 0``). Shared by the launch and by the ahead-of-time compiler (kernels/aot.py), so that
    the compiled specialisation is the one a real launch gets.
    """
    B, H, Lq, Dh = q.shape
    Lt = k_text.shape[2]
    stride_kb = k_bal.stride()[:3] if Lb else (0, 0, 0)
    stride_vb = v_bal.stride()[:3] if Lb else (0, 0, 0)
    args = [
        q, k_text, v_text, mask, k_bal, v_bal, out,
        scale * _LOG2E, H, Lq, Lt, Lb, batch_bucket(B, H),
        *q.stride()[:3],
        *k_text.stride()[:3],
        *v_text.stride()[:3],
        *mask.stride(),
        *stride_kb,
        *stride_vb,
        *out.stride()[:3],
    ]
    meta = {
        "HEAD_DIM": Dh,
        "BLOCK_D": max(16, _next_power_of_2(Dh)),
        "BLOCK_B": min(64, max(16, _next_power_of_2(max(Lb, 1)))),
        "MASK_VALUE": _MASK_VALUE,
        "DOT_PRECISION": "ieee" if q.dtype == torch.float32 else "tf32",
    }
    return args, meta


def balanced_cross_attention(
    q: Tensor,
    k_text: Tensor,
    v_text: Tensor,
    text_mask: Tensor,
    k_bal: Tensor | None = None,
    v_bal: Tensor | None = None,
    scale: float | None = None,
    *,
    out: Tensor | None = None,
) -> Tensor:
    """Fused softmax(q [k_text || k_bal]^T * scale) [v_text || v_bal] with a text-key mask. Inference only.

    q: (B, H, Lq, Dh). k_text, v_text: (B, H, Lt, Dh), Lt >= 1. text_mask: (B, Lt) bool, True = valid.
    k_bal, v_bal: (B, H, Lb, Dh), or (H, Lb, Dh) shared by the batch, or None (Lb = 0); always valid.
    scale: defaults to 1 / sqrt(Dh). out: optional (B, H, Lq, Dh) destination (any strides with a
    contiguous last dim), returned. fp32 / fp16 / bf16; returns q's dtype.

    A query row with no valid key (only possible with Lb = 0) is 0. One kernel launch (one per
    65535 (batch, head) pairs); falls back to :func:`balanced_cross_attention_reference` where
    :func:`triton_available` is False, and for bf16 under Triton's interpreter (no bf16 dot there).
    """
    _check_inputs(q, k_text, v_text, text_mask, k_bal, v_bal, out)
    B, H, Lq, Dh = q.shape
    k_bal, v_bal = _broadcast_balance(k_bal, B), _broadcast_balance(v_bal, B)
    Lb = 0 if k_bal is None else k_bal.shape[2]
    scale = Dh ** -0.5 if scale is None else float(scale)
    if out is None:
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out

    interpret = _interpreting()
    if not triton_available(q.device) or (interpret and q.dtype == torch.bfloat16):
        out.copy_(balanced_cross_attention_reference(q, k_text, v_text, text_mask, k_bal, v_bal, scale))
        return out

    q, k_text, v_text = _unit_last_stride(q), _unit_last_stride(k_text), _unit_last_stride(v_text)
    mask = text_mask.view(torch.uint8)  # same storage and strides; avoids i1 pointers
    if Lb == 0:  # any valid pointer will do: the balance loop runs zero times
        k_bal, v_bal = k_text, v_text
    else:
        k_bal, v_bal = _unit_last_stride(k_bal), _unit_last_stride(v_bal)

    kernel = _kernel(interpret)
    batch_per_launch = max(1, _MAX_GRID_Y // H)
    for b0 in range(0, B, batch_per_launch):
        b1 = min(B, b0 + batch_per_launch)
        args, meta = launch_arguments(q[b0:b1], k_text[b0:b1], v_text[b0:b1], mask[b0:b1],
                                      k_bal[b0:b1], v_bal[b0:b1], out[b0:b1], scale, Lb)

        def grid(meta: dict[str, Any], rows: int = (b1 - b0) * H) -> tuple[int, int]:
            return (triton.cdiv(Lq, meta["BLOCK_M"]), rows)

        kernel[grid](*args, **meta)
    return out
