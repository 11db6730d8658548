"""Benchmark the fused balanced cross-attention kernel against PyTorch on COREBA's real shapes.

    python -m kernels.bench --out DIR                      # a CUDA GPU; ~2-3 min on an H100 (never run yet)
    python -m kernels.bench --out DIR --time-budget 55     # what scripts/gpu_check.sh runs: the most telling first
    python -m kernels.bench --out DIR --dry-run            # 2 tiny shapes; on a CPU through Triton's interpreter

Why these baselines: the model's VT-block can run on PyTorch's SDPA (whichever of the flash / efficient /
cuDNN / math backends accepts a boolean key mask) or on the eager math path (matmul, masked_fill,
softmax, matmul). All of them get the model's layout: q, k, v are ``(B, L, H, Dh).transpose(1, 2)`` views
whose keys are ``[text || balance]``; the kernel reads the text and balance parts as slices of the same
tensors (no copy), SDPA / eager get the whole keys and a ``(B, 1, 1, Lt + Lb)`` mask built beforehand.

Every backend's result (the kernel's, each SDPA backend's, eager's) is checked against the reference at
the dtype's tolerance (``CHECK_TOL``: 1e-4 for fp32 rows) before it is timed; a miss is a failed row and
the exit code is 1. Times are medians of
``triton.testing.do_bench`` (CUDA events). The achieved bandwidth counts q, k, v, the text mask and the
output once each; it is compared with the device's copy bandwidth measured in the same run
(``Tensor.copy_`` of a large buffer, read + write). Writes ``bench.csv`` and ``bench.json`` to --out, again
after every shape (a run cut short keeps what it measured). Shapes go from the most telling (the model's
full text length, B = 1, 32, 256, 1024, each dtype) to the least; ``--time-budget`` stops starting new
shapes after that many seconds and lists the rest as skipped.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

H, DH = 8, 32
TEXT_SHAPES = ((1, 7), (32, 7))  # (Lt, Lb): Lt + Lb in {8, 39}
BATCHES = (1, 32, 256, 1024)
LONG_VIDEOS = (300, 1200)  # Lq of long videos, at B = 32
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
CHECK_TOL = {torch.float16: 5e-3, torch.bfloat16: 3e-2, torch.float32: 1e-4}


@dataclass(frozen=True)
class Shape:
    B: int
    Lq: int
    Lt: int
    Lb: int
    dtype: str
    H: int = H
    Dh: int = DH


@dataclass
class Row:
    dtype: str
    B: int
    H: int
    Lq: int
    Lt: int
    Lb: int
    Dh: int
    impl: str
    status: str  # ok | skipped | failed
    reason: str = ""
    ms: float = math.nan
    gbps: float = math.nan
    pct_copy_bw: float = math.nan
    max_abs_err: float = math.nan
    speedup_vs_eager: float = math.nan


def _shapes(dry_run: bool) -> list[Shape]:
    """The shapes, most telling first: the model's full text (Lt 32) at every batch and dtype, then long
    videos, then a one-token query."""
    if dry_run:
        return [Shape(B=2, Lq=20, Lt=5, Lb=3, dtype="fp32", H=2), Shape(B=1, Lq=75, Lt=32, Lb=7, dtype="fp16")]
    (full_lt, full_lb), others = TEXT_SHAPES[-1], TEXT_SHAPES[:-1]
    shapes = [Shape(B=B, Lq=75, Lt=full_lt, Lb=full_lb, dtype=d) for d in DTYPES for B in BATCHES]
    shapes += [Shape(B=32, Lq=Lq, Lt=full_lt, Lb=full_lb, dtype=d) for Lq in LONG_VIDEOS[::-1] for d in DTYPES]
    shapes += [Shape(B=B, Lq=75, Lt=Lt, Lb=Lb, dtype=d) for Lt, Lb in others for d in DTYPES for B in BATCHES]
    return shapes


# %%
# Timing


def _timer(device: torch.device, dry_run: bool) -> Callable[[Callable[[], object]], float]:
    """Median milliseconds of fn(): do_bench (CUDA events) on a GPU, a few perf_counter runs on the CPU."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return lambda fn: float(do_bench(fn, warmup=10, rep=40, return_mode="median"))

    def cpu_time(fn: Callable[[], object]) -> float:
        fn()
        times = []
        for _ in range(2 if dry_run else 5):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    return cpu_time


def copy_bandwidth_gbps(device: torch.device, timer: Callable[[Callable[[], object]], float], nbytes: int) -> float:
    """Read + write bandwidth of a large ``copy_``: the practical ceiling for a memory-bound kernel."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = timer(lambda: dst.copy_(src))
    return 2 * nbytes / (ms * 1e-3) / 1e9


# %%
# Inputs and implementations


def make_inputs(s: Shape, device: torch.device, seed: int = 0) -> dict[str, Tensor]:
    """The model's layout: (B, L, H, Dh) projections viewed as (B, H, L, Dh); keys are [text || balance]."""
    g = torch.Generator(device=device).manual_seed(seed)
    dtype = DTYPES[s.dtype]
    Lk = s.Lt + s.Lb
    q = torch.randn(s.B, s.Lq, s.H, s.Dh, device=device, dtype=dtype, generator=g).transpose(1, 2)
    k = torch.randn(s.B, Lk, s.H, s.Dh, device=device, dtype=dtype, generator=g).transpose(1, 2)
    v = torch.randn(s.B, Lk, s.H, s.Dh, device=device, dtype=dtype, generator=g).transpose(1, 2)
    lengths = torch.randint(1, s.Lt + 1, (s.B,), device=device, generator=g)
    text_mask = torch.arange(s.Lt, device=device)[None] < lengths[:, None]
    key_mask = torch.cat([text_mask, text_mask.new_ones(s.B, s.Lb)], dim=1)
    return {"q": q, "k": k, "v": v, "text_mask": text_mask, "attn_mask": key_mask[:, None, None, :]}


def moved_bytes(s: Shape) -> int:
    """Bytes the kernel must move at least: q, k, v, text mask read once, output written once."""
    es = torch.empty(0, dtype=DTYPES[s.dtype]).element_size()
    qo = 2 * s.B * s.H * s.Lq * s.Dh * es
    kv = 2 * s.B * s.H * (s.Lt + s.Lb) * s.Dh * es
    return qo + kv + s.B * s.Lt


def eager_attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor) -> Tensor:
    """The model's eager "math" path: explicit scores, finite masked fill, softmax, matmul."""
    scores = torch.matmul(q, k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    scores = scores.masked_fill(~attn_mask, torch.finfo(scores.dtype).min)
    return torch.matmul(scores.softmax(dim=-1), v)


def _sdpa_backends() -> dict[str, object]:
    from torch.nn.attention import SDPBackend

    names = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION",
             "math": "MATH"}
    return {name: getattr(SDPBackend, attr) for name, attr in names.items() if hasattr(SDPBackend, attr)}


def _try_sdpa(backend: object, x: dict[str, Tensor]) -> tuple[Tensor | None, str]:
    """One SDPA call restricted to ``backend``: (output, "") or (None, PyTorch's reason for refusing)."""
    from torch.nn.attention import sdpa_kernel

    with warnings.catch_warnings(record=True) as caught, sdpa_kernel(backend):
        warnings.simplefilter("always")
        try:
            out = F.scaled_dot_product_attention(x["q"], x["k"], x["v"], attn_mask=x["attn_mask"])
        except RuntimeError as err:
            reasons = [str(w.message).strip() for w in caught] + [str(err).strip()]
            return None, " | ".join(r.replace("\n", " ") for r in reasons if r)[:400]
    return out, ""


# %%
# The benchmark


def bench_shape(s: Shape, device: torch.device, timer, copy_gbps: float) -> list[Row]:
    from kernels.balanced_attention import balanced_cross_attention, balanced_cross_attention_reference

    x = make_inputs(s, device)
    q, k, v, tm = x["q"], x["k"], x["v"], x["text_mask"]
    Lt = s.Lt
    kernel_args = (q, k[:, :, :Lt], v[:, :, :Lt], tm, k[:, :, Lt:], v[:, :, Lt:])
    ref = balanced_cross_attention_reference(*(t.float() if t.is_floating_point() else t for t in kernel_args))
    nbytes = moved_bytes(s)
    base = {f: getattr(s, f) for f in ("dtype", "B", "H", "Lq", "Lt", "Lb", "Dh")}

    tolerance = CHECK_TOL[DTYPES[s.dtype]]

    def timed(impl: str, fn: Callable[[], Tensor]) -> Row:
        """Check ``fn``'s output against the reference at the dtype's tolerance, then time it; every backend."""
        err = (fn().float() - ref).abs().max().item()
        if not err <= tolerance:  # also catches NaN
            return Row(**base, impl=impl, status="failed", max_abs_err=err,
                       reason=f"max abs error {err:.3g} > {tolerance:g} ({s.dtype} tolerance) vs the reference")
        ms = timer(fn)
        gbps = nbytes / (ms * 1e-3) / 1e9
        return Row(**base, impl=impl, status="ok", ms=ms, gbps=gbps, pct_copy_bw=100 * gbps / copy_gbps,
                   max_abs_err=err)

    rows = [timed("triton", lambda: balanced_cross_attention(*kernel_args))]
    for name, backend in _sdpa_backends().items():
        out, reason = _try_sdpa(backend, x)
        if out is None:
            rows.append(Row(**base, impl=f"sdpa_{name}", status="skipped", reason=reason))
            continue
        from torch.nn.attention import sdpa_kernel

        with sdpa_kernel(backend):
            rows.append(timed(f"sdpa_{name}", lambda: F.scaled_dot_product_attention(
                x["q"], x["k"], x["v"], attn_mask=x["attn_mask"])))
    rows.append(timed("eager", lambda: eager_attention(q, k, v, x["attn_mask"])))
    eager_ms = rows[-1].ms
    for r in rows:
        r.speedup_vs_eager = eager_ms / r.ms if r.status == "ok" else math.nan
    return rows


def _print_table(rows: list[Row]) -> None:
    """One line per shape: the kernel, the fastest SDPA backend and eager."""
    print(f"{'dtype':5} {'B':>5} {'Lq':>5} {'Lt+Lb':>6} | {'triton ms':>9} {'GB/s':>7} {'%copy':>6} | "
          f"{'best sdpa':>16} {'ms':>8} | {'eager ms':>8} | {'vs sdpa':>7}")
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        groups.setdefault((r.dtype, r.B, r.Lq, r.Lt, r.Lb), []).append(r)
    for (dtype, B, Lq, Lt, Lb), rs in groups.items():
        by = {r.impl: r for r in rs}
        if "eager" not in by:  # not measured: skipped for the time budget
            print(f"{dtype:5} {B:5d} {Lq:5d} {f'{Lt}+{Lb}':>6} | skipped: {by['triton'].reason}")
            continue
        tri, eager = by["triton"], by["eager"]
        sdpa = [r for r in rs if r.impl.startswith("sdpa_") and r.status == "ok"]
        best = min(sdpa, key=lambda r: r.ms) if sdpa else None
        tri_txt = (f"{tri.ms:9.4f} {tri.gbps:7.1f} {tri.pct_copy_bw:5.1f}%" if tri.status == "ok"
                   else f"{tri.status.upper():>25}")
        best_txt = f"{best.impl:>16} {best.ms:8.4f}" if best else f"{'none':>16} {'-':>8}"
        ratio = best.ms / tri.ms if best and tri.status == "ok" else math.nan
        print(f"{dtype:5} {B:5d} {Lq:5d} {f'{Lt}+{Lb}':>6} | {tri_txt} | {best_txt} | {eager.ms:8.4f} | "
              f"{ratio:6.2f}x")


def _json_value(v: object) -> object:
    """NaN (not measured) becomes null: strict JSON has no NaN."""
    return None if isinstance(v, float) and math.isnan(v) else v


def write_results(out: Path, rows: list[Row], device_name: str, dry_run: bool, copy_gbps: float,
                  elapsed: float) -> None:
    """bench.csv and bench.json (every row so far, the device and the library versions)."""
    import triton

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "bench.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[fl.name for fl in fields(Row)])
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    meta = {
        "device": device_name,
        "dry_run": dry_run,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "copy_bandwidth_gbps": copy_gbps,
        "elapsed_s": elapsed,
        "notes": ("ms: median; gbps: bytes of q, k, v, text mask and output moved once / time; "
                  "pct_copy_bw: gbps / copy_bandwidth_gbps; SDPA and eager get the concatenated keys and "
                  "a prebuilt (B, 1, 1, Lt+Lb) mask, the kernel slices of the same tensors"),
        "rows": [{k: _json_value(v) for k, v in asdict(r).items()} for r in rows],
    }
    (out / "bench.json").write_text(json.dumps(meta, indent=2, allow_nan=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for bench.csv and bench.json")
    parser.add_argument("--dry-run", action="store_true",
                        help="two tiny shapes, to check this script (on a CPU: through Triton's interpreter)")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="seconds after which no new shape starts; the rest are listed as skipped (default: none)")
    args = parser.parse_args(argv)

    if torch.cuda.is_available():
        device = torch.device("cuda")
    elif args.dry_run:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the kernel is first jitted
        device = torch.device("cpu")
    else:
        print("kernels.bench needs a CUDA GPU and found none; `--dry-run` checks the script on the CPU "
              "with Triton's interpreter.", file=sys.stderr)
        return 2

    from kernels.balanced_attention import triton_available

    if not triton_available(device):
        print(f"the Triton kernel cannot run on {device} (is triton installed? on a CPU set TRITON_INTERPRET=1)",
              file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    timer = _timer(device, args.dry_run)
    copy_gbps = copy_bandwidth_gbps(device, timer, (64 if args.dry_run else 1024) << 20)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (triton interpreter)"
    print(f"device: {device_name}; copy bandwidth {copy_gbps:.1f} GB/s")

    rows: list[Row] = []
    for s in _shapes(args.dry_run):
        elapsed = time.perf_counter() - t0
        if args.time_budget is not None and elapsed > args.time_budget:
            base = {f: getattr(s, f) for f in ("dtype", "B", "H", "Lq", "Lt", "Lb", "Dh")}
            rows.append(Row(**base, impl="triton", status="skipped",
                            reason=f"time budget ({args.time_budget:.0f} s, --time-budget) spent"))
            continue
        rows += bench_shape(s, device, timer, copy_gbps)
        write_results(args.out, rows, device_name, args.dry_run, copy_gbps, time.perf_counter() - t0)
    elapsed = time.perf_counter() - t0

    _print_table(rows)
    write_results(args.out, rows, device_name, args.dry_run, copy_gbps, elapsed)
    print(f"wrote {args.out / 'bench.csv'} and {args.out / 'bench.json'} ({elapsed:.1f} s)")
    failed = [r for r in rows if r.status == "failed"]
    for r in failed:
        print(f"FAILED: {r.impl} {r.dtype} B={r.B} Lq={r.Lq} Lt={r.Lt} Lb={r.Lb}: {r.reason}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
