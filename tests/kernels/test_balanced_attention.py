"""The fused balanced cross-attention kernel against a float64 PyTorch reference.

On a CPU-only machine the kernel runs through Triton's interpreter (``TRITON_INTERPRET=1``, set below
before triton is imported); every interpreted launch costs ~0.1-2 s, so each case is one launch and
the cases are chosen to cover the kernel's branches: Lq not a multiple of BLOCK_M, several text / balance
key blocks, Lt = 1, Lb = 0, broadcast balance keys, (almost) fully padded text, strided views, a head
dim that is not a power of two, and batch chunking. With CUDA the same cases run compiled (plus bf16).
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import kernels.balanced_attention as ba  # noqa: E402
from kernels.balanced_attention import (  # noqa: E402
    balanced_cross_attention,
    balanced_cross_attention_reference,
    triton_available,
)

DEVICES = ["cuda"] if torch.cuda.is_available() else ["cpu"]
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}

needs_kernel = pytest.mark.skipif(
    not all(triton_available(d) for d in DEVICES),
    reason="the kernel needs triton with CUDA, or triton's interpreter (TRITON_INTERPRET=1) on the CPU",
)


def _rand(*shape: int, dtype: torch.dtype, device: str, gen: torch.Generator) -> torch.Tensor:
    """Random non-zero values (normal, nudged away from 0) in the requested dtype."""
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    x = x + 0.1 * torch.sign(x)
    return x.to(dtype=dtype, device=device)


def _inputs(B, H, Lq, Lt, Lb, Dh, dtype, device, seed=0, bal_shared=False):
    gen = torch.Generator().manual_seed(seed)
    q = _rand(B, H, Lq, Dh, dtype=dtype, device=device, gen=gen)
    kt = _rand(B, H, Lt, Dh, dtype=dtype, device=device, gen=gen)
    vt = _rand(B, H, Lt, Dh, dtype=dtype, device=device, gen=gen)
    lead = (H,) if bal_shared else (B, H)
    kb = _rand(*lead, Lb, Dh, dtype=dtype, device=device, gen=gen)
    vb = _rand(*lead, Lb, Dh, dtype=dtype, device=device, gen=gen)
    mask = torch.rand(B, Lt, generator=gen) > 0.4
    mask[:, 0] = True
    return q, kt, vt, mask.to(device), kb, vb


def _check(q, kt, vt, mask, kb, vb, scale=None, out=None):
    """Run the kernel into a NaN-poisoned output, compare with the float64 reference."""
    if out is None:
        out = torch.full(q.shape, float("nan"), dtype=q.dtype, device=q.device)
    else:
        out.fill_(float("nan"))
    res = balanced_cross_attention(q, kt, vt, mask, kb, vb, scale, out=out)
    assert res is out
    assert res.dtype == q.dtype and res.shape == q.shape
    assert not torch.isnan(res).any(), "some output elements were never written"
    f64 = [None if t is None else t.double() for t in (q, kt, vt, kb, vb)]
    ref = balanced_cross_attention_reference(f64[0], f64[1], f64[2], mask, f64[3], f64[4], scale)
    err = (res.double() - ref).abs().max().item()
    assert err <= TOL[q.dtype], f"max abs error {err:.3g} > {TOL[q.dtype]}"
    return res, ref


# ---------------------------------------------------------------------------------------------------------
# Kernel vs reference (one launch per case on the interpreter)

CASES = {
    # name: (B, H, Lq, Lt, Lb, Dh, dtype, bal_shared)
    "fp32_ragged_lq": (2, 2, 37, 11, 7, 32, torch.float32, False),
    "fp16_multi_text_blocks": (2, 2, 70, 40, 7, 64, torch.float16, False),
    "lt1": (2, 2, 5, 1, 7, 32, torch.float32, False),
    "shared_bal_multi_blocks": (2, 3, 33, 9, 70, 32, torch.float32, True),
    "dh24_padded": (1, 2, 17, 6, 3, 24, torch.float32, False),
}


@needs_kernel
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(case, device):
    B, H, Lq, Lt, Lb, Dh, dtype, shared = CASES[case]
    q, kt, vt, mask, kb, vb = _inputs(B, H, Lq, Lt, Lb, Dh, dtype, device, bal_shared=shared)
    scale = 0.3 if shared else None  # a non-default scale once
    _check(q, kt, vt, mask, kb, vb, scale)


@needs_kernel
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_no_balance_tokens(dtype, device):
    """Lb = 0, as None (fp32) and as zero-size (B, H, 0, Dh) views (fp16)."""
    q, kt, vt, mask, kb, vb = _inputs(2, 2, 19, 13, 0, 64, dtype, device)
    if dtype == torch.float32:
        kb = vb = None
    _check(q, kt, vt, mask, kb, vb)


@needs_kernel
@pytest.mark.parametrize("device", DEVICES)
def test_padded_text_keeps_balance_tokens(device):
    """Sample 0 has a single valid text token (the last); sample 1 none: only balance keys remain."""
    q, kt, vt, mask, kb, vb = _inputs(2, 2, 21, 12, 7, 32, torch.float32, device)
    mask[:] = False
    mask[0, -1] = True
    res, ref = _check(q, kt, vt, mask, kb, vb)
    # sample 1 attends over the balance tokens only
    only_bal = balanced_cross_attention_reference(q[1:].double(), kb[1:].double(), vb[1:].double(),
                                                  torch.ones(1, 7, dtype=torch.bool, device=device))
    assert (res[1:].double() - only_bal).abs().max().item() <= 1e-5


@needs_kernel
@pytest.mark.parametrize("device", DEVICES)
def test_no_valid_key_gives_zero(device):
    """Lb = 0 and a sample without valid text: documented to output 0 (no NaN)."""
    q, kt, vt, mask, _, _ = _inputs(2, 2, 9, 5, 0, 32, torch.float32, device)
    mask[1] = False
    res, ref = _check(q, kt, vt, mask, None, None)
    assert torch.count_nonzero(res[1]) == 0 and torch.count_nonzero(ref[1]) == 0
    assert torch.count_nonzero(res[0]) > 0


@needs_kernel
@pytest.mark.parametrize("device", DEVICES)
def test_strided_views(device):
    """Text / balance keys sliced from one (B, H, Lt+Lb, Dh) tensor, transposed q and out, strided mask."""
    B, H, Lq, Lt, Lb, Dh = 2, 2, 23, 10, 7, 32
    gen = torch.Generator().manual_seed(1)
    q = _rand(B, Lq, H, Dh, dtype=torch.float32, device=device, gen=gen).transpose(1, 2)
    k = _rand(B, Lt + Lb, H, Dh, dtype=torch.float32, device=device, gen=gen).transpose(1, 2)
    v = _rand(B, H, Lt + Lb, Dh, dtype=torch.float32, device=device, gen=gen)
    wide_mask = torch.rand(B, 2 * Lt, generator=gen).to(device) > 0.5
    mask = wide_mask[:, ::2]
    mask[:, 3] = True
    out = torch.empty(B, Lq, H, Dh, device=device).transpose(1, 2)
    kt, kb, vt, vb = k[:, :, :Lt], k[:, :, Lt:], v[:, :, :Lt], v[:, :, Lt:]
    assert not (q.is_contiguous() or kt.is_contiguous() or mask.is_contiguous() or out.is_contiguous())
    ptrs = [t.data_ptr() for t in (q, kt, vt, kb, vb)]
    _check(q, kt, vt, mask, kb, vb, out=out)
    assert [t.data_ptr() for t in (q, kt, vt, kb, vb)] == ptrs


@needs_kernel
@pytest.mark.parametrize("device", DEVICES)
def test_batch_chunking(device, monkeypatch):
    """More (batch, head) pairs than grid.y allows are launched in batch chunks (limit lowered here)."""
    monkeypatch.setattr(ba, "_MAX_GRID_Y", 2)
    q, kt, vt, mask, kb, vb = _inputs(3, 1, 20, 6, 7, 32, torch.float32, device, bal_shared=True)
    _check(q, kt, vt, mask, kb, vb)


@pytest.mark.parametrize("device", DEVICES)
def test_bf16(device):
    if device != "cuda":
        pytest.skip("bf16 tl.dot cannot be checked by Triton's CPU interpreter (numpy has no bfloat16)")
    q, kt, vt, mask, kb, vb = _inputs(4, 8, 75, 32, 7, 32, torch.bfloat16, device, bal_shared=True)
    _check(q, kt, vt, mask, kb, vb)


# ---------------------------------------------------------------------------------------------------------
# Host-side logic (no launch)


def test_bf16_without_a_bf16_dot_still_matches_float64(device=DEVICES[0]):
    """bf16 on the interpreter (no bf16 dot there) takes the reference path: the result must still be
    written in full (NaN-poisoned output) and match the float64 reference at the bf16 tolerance."""
    q, kt, vt, mask, kb, vb = _inputs(2, 2, 9, 5, 3, 32, torch.bfloat16, device)
    _check(q, kt, vt, mask, kb, vb)


def test_without_a_kernel_the_result_still_matches_float64(monkeypatch):
    """Where the kernel cannot run (no triton / no CUDA), the wrapper's fallback is checked like the kernel."""
    monkeypatch.setattr(ba, "triton_available", lambda device: False)
    q, kt, vt, mask, kb, vb = _inputs(2, 2, 7, 5, 3, 16, torch.float32, "cpu", bal_shared=True)
    _check(q, kt, vt, mask, kb, vb, scale=0.2)


# ---------------------------------------------------------------------------------------------------------
# Autotuning: pruning and the key (no launch: the GPU config set is built with TRITON_INTERPRET=0)


def _gpu_configs(monkeypatch) -> list:
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # _configs() reads it at each call
    return ba._configs()


def _blocks(configs) -> set[tuple[int, int]]:
    return {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in configs}


@pytest.mark.parametrize(
    ("lq", "lt", "expected"),
    [
        (75, 32, {(16, 16), (32, 16), (32, 32), (64, 16), (64, 32), (128, 32)}),  # the model's full shape
        (5, 1, {(16, 16)}),  # one clip block, one text block
        (17, 17, {(16, 16), (32, 16), (32, 32)}),  # just past a power of two: rounded up, not down
        (1200, 64, {(16, 16), (32, 16), (32, 32), (64, 16), (64, 32), (64, 64), (128, 32), (128, 64)}),
    ],
    ids=["model", "tiny", "just_past_pow2", "long_video"],
)
def test_prune_configs_on_known_shapes(monkeypatch, lq, lt, expected):
    configs = _gpu_configs(monkeypatch)
    assert len(configs) == 8 and len(_blocks(configs)) == 8
    kept = ba._prune_configs(configs, {"LQ": lq, "LT": lt, "LB": 7})
    assert _blocks(kept) == expected


def test_prune_configs_keeps_the_smallest_when_nothing_fits(monkeypatch):
    big = [c for c in _gpu_configs(monkeypatch) if c.kwargs["BLOCK_M"] >= 64 and c.kwargs["BLOCK_N"] >= 32]
    assert _blocks(ba._prune_configs(big, {"LQ": 5, "LT": 3, "LB": 7})) == {(64, 32)}


def test_gpu_configs_are_valid_tilings(monkeypatch):
    for c in _gpu_configs(monkeypatch):
        bm, bn = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]
        assert bm >= 16 and bn >= 16 and bm & (bm - 1) == 0 and bn & (bn - 1) == 0, c  # tl.dot needs >= 16
        assert c.num_stages == 1 and c.num_warps in (1, 2, 4, 8), c


def test_batch_bucket():
    assert [ba.batch_bucket(b, 8) for b in (1, 2, 3, 4, 5, 1000, 1024, 1025)] == [8, 16, 32, 32, 64, 8192, 8192,
                                                                                   16384]


@pytest.mark.skipif(not triton_available("cpu") and not torch.cuda.is_available(), reason="needs triton")
def test_autotune_key_separates_batch_sizes(monkeypatch):
    """The wrapper's real launch arguments, read through the real autotuner's key: B=1 and B=1024 must be
    tuned separately, B=1000 and B=1024 share a tuning, and each batch chunk gets its own bucket."""
    autotuner = ba._kernel(ba._interpreting())
    assert tuple(autotuner.keys) == ba.AUTOTUNE_KEY
    launches: list[dict] = []

    class Recorder:
        def __getitem__(self, grid):
            def launch(*args, **meta):
                launches.append({**dict(zip(autotuner.arg_names, args)), **meta})
            return launch

    monkeypatch.setattr(ba, "_kernel", lambda interpret: Recorder())

    def key_at(batch: int) -> tuple:
        launches.clear()
        q, kt, vt, mask, kb, vb = _inputs(batch, 8, 3, 2, 2, 16, torch.float32, DEVICES[0], bal_shared=True)
        balanced_cross_attention(q, kt, vt, mask, kb, vb)
        assert len(launches) == 1
        return tuple(launches[0][k] for k in autotuner.keys)

    assert key_at(1) != key_at(1024)
    assert key_at(1000) == key_at(1024) and key_at(3) == key_at(4) != key_at(5)
    monkeypatch.setattr(ba, "_MAX_GRID_Y", 8 * 3)  # 3 samples per launch: chunks of 3 and 1
    launches.clear()
    q, kt, vt, mask, kb, vb = _inputs(4, 8, 3, 2, 2, 16, torch.float32, DEVICES[0], bal_shared=True)
    balanced_cross_attention(q, kt, vt, mask, kb, vb)
    assert [launch["BH_BUCKET"] for launch in launches] == [32, 8]


def test_reference_against_a_loop():
    """The reference itself, against per-sample softmax over the valid keys only."""
    q, kt, vt, mask, kb, vb = _inputs(2, 2, 4, 6, 3, 16, torch.float64, "cpu", bal_shared=True)
    ref = balanced_cross_attention_reference(q, kt, vt, mask, kb, vb)
    for b in range(2):
        keys = torch.cat([kt[b][:, mask[b]], kb], dim=1)
        values = torch.cat([vt[b][:, mask[b]], vb], dim=1)
        w = (q[b] @ keys.transpose(-1, -2) / 4.0).softmax(-1)
        torch.testing.assert_close(ref[b], w @ values)


def _valid_args():
    return list(_inputs(2, 4, 8, 5, 3, 32, torch.float32, "cpu"))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: a.__setitem__(0, a[0][0]), r"q must have shape \(B, H, Lq, Dh\) \(4 dims\), got 3 dims"),
        (lambda a: a.__setitem__(1, a[1][:, :2]), "k_text has 2 heads but q has 4"),
        (lambda a: a.__setitem__(4, a[4][:, :3]), "k_bal has 3 heads but q has 4"),
        (lambda a: a.__setitem__(3, a[3][:, :4]), r"text_mask must have shape \(B, Lt\) = \(2, 5\)"),
        (lambda a: a.__setitem__(3, a[3].float()), "text_mask must be torch.bool"),
        (lambda a: a.__setitem__(2, a[2].half()), "v_text dtype torch.float16 does not match q's torch.float32"),
        (lambda a: a.__setitem__(5, a[5].half()), "v_bal dtype torch.float16 does not match"),
        (lambda a: a.__setitem__(5, None), "k_bal and v_bal must both be tensors or both be None"),
        (lambda a: a.__setitem__(1, a[1][..., :16]), "k_text head dim 16 does not match q's 32"),
        (lambda a: a.__setitem__(slice(1, 4), [a[1][:, :, :0], a[2][:, :, :0], a[3][:, :0]]),
         r"need at least one text token \(Lt >= 1\)"),
    ],
    ids=["rank", "heads", "bal_heads", "mask_shape", "mask_dtype", "dtype", "bal_dtype", "bal_none",
         "head_dim", "empty_text"],
)
def test_wrapper_errors(mutate, message):
    args = _valid_args()
    mutate(args)
    with pytest.raises(ValueError, match=message):
        balanced_cross_attention(*args)


def test_wrapper_rejects_float64_and_bad_out():
    args = _valid_args()
    with pytest.raises(ValueError, match="q dtype must be one of float32, float16, bfloat16"):
        balanced_cross_attention(*[a.double() if a.is_floating_point() else a for a in args])
    with pytest.raises(ValueError, match="out must have q's shape"):
        balanced_cross_attention(*args, out=torch.empty(2, 4, 8, 31))
    with pytest.raises(ValueError, match="out must be contiguous in its last dim"):
        balanced_cross_attention(*args, out=torch.empty(2, 4, 32, 8).transpose(-1, -2))
