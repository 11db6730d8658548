"""Compile the balanced-attention kernel ahead of time for NVIDIA GPUs, on a machine without one.

    python -m kernels.aot --arch 80,90                  # every config the model can get, fp32/fp16/bf16
    python -m kernels.aot --arch 90 --dtypes bf16 --json out.json

Why: no GPU may be at hand, yet a kernel that does not compile for sm_80/sm_90, that spills registers or
asks for more shared memory than the chip has, should fail CI, not the first GPU run. Triton compiles
for any NVIDIA target without a device (``triton.compile(ASTSource(...), target=GPUTarget("cuda", 90,
32))``), with the ``ptxas`` that ships inside the triton wheel.

What is compiled: every autotuning config that ``_prune_configs`` can keep for the model's shapes (clips
1..``--max-clips``, tokens 1..``--max-tokens``; the pruner itself is asked, shape by shape), in every dtype,
for every arch, at the model's full shape (``--clips`` x ``--tokens``, H heads of Dh, Lb Balance Tokens).
The kernel's arguments come from the same ``launch_arguments`` the real launch uses, on CPU tensors in the
model's layout, and are specialised the way Triton's JIT specialises a launch (integers equal to 1 become
constants, multiples of 16 and 16-byte-aligned pointers get divisibility hints): the binary is the one
a launch at that shape would build. Other shapes (a text length that is not a multiple of 16, say) get
their own specialisation at run time, which is not compiled here.

What is reported, per (arch, dtype, config): registers per thread, stack frame and local memory of the
cubin Triton built (``cuobjdump -res-usage``), spill stores and loads (``ptxas -v`` run again on Triton's
PTX with Triton's own ptxas and flags; its register count must equal the cubin's), and the shared memory Triton
launches the kernel with (``metadata.shared``). A config spills, or exceeds the chip, and this exits 1.

``TRITON_INTERPRET=1`` makes ``triton.jit`` build interpreter objects that cannot be compiled; ``main``
therefore drops that variable before triton is imported, and :func:`run_in_subprocess` runs this module
in a clean process (what the tests do, since their process runs kernels through the interpreter).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

ARCHS = (80, 90)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_POINTER_TYPES = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.uint8: "*u8"}
# Per-block shared memory a kernel may ask for (opt-in maximum), and registers per thread: the CUDA
# programming guide's table of compute-capability limits.
MAX_SHARED_BYTES = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}
MAX_REGISTERS = 255


@dataclass(frozen=True)
class ModelShapes:
    """What the model gives the kernel (defaults: the paper's config and the long-video benchmark)."""

    heads: int = 8
    head_dim: int = 32
    balance_tokens: int = 7
    clips: int = 75  # the compiled shape: the model's max_video_len ...
    tokens: int = 32  # ... and max_text_len
    max_clips: int = 1200  # the range whose pruned configs count as reachable (long videos included)
    max_tokens: int = 32


@dataclass
class Report:
    """One compiled (arch, dtype, config): resources and the verdict."""

    arch: int
    dtype: str
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    first_kept_at: str  # the first (Lq, Lt) at which the pruner keeps this config
    registers: int = -1  # per thread, from the cubin
    stack_bytes: int = -1  # per thread, from the cubin (spills live there)
    local_bytes: int = -1
    spill_store_bytes: int = -1  # from ptxas -v
    spill_load_bytes: int = -1
    ptxas_registers: int = -1  # ptxas -v's count: must equal the cubin's
    shared_bytes: int = -1  # dynamic shared memory of the launch (metadata.shared)
    compile_s: float = 0.0
    error: str = ""

    @property
    def threads(self) -> int:
        return 32 * self.num_warps

    def problems(self) -> list[str]:
        """Why this config is not fit to run (empty when it is)."""
        if self.error:
            return [f"compile failed: {self.error}"]
        out = []
        if self.spill_store_bytes > 0 or self.spill_load_bytes > 0:
            out.append(f"spills ({self.spill_store_bytes} B stores, {self.spill_load_bytes} B loads)")
        if self.stack_bytes > 0 or self.local_bytes > 0:
            out.append(f"uses local memory (stack {self.stack_bytes} B, local {self.local_bytes} B)")
        if self.registers > MAX_REGISTERS:
            out.append(f"{self.registers} registers > {MAX_REGISTERS}")
        if self.ptxas_registers != self.registers:
            out.append(f"ptxas -v counts {self.ptxas_registers} registers, the cubin {self.registers}: the spill "
                       "figures are not those of Triton's binary")
        limit = MAX_SHARED_BYTES.get(self.arch)
        if limit is not None and self.shared_bytes > limit:
            out.append(f"{self.shared_bytes} B shared memory > sm_{self.arch}'s {limit} B")
        return out


# %%
# The configs the model can get


def reachable_configs(shapes: ModelShapes) -> list[tuple[Any, tuple[int, int]]]:
    """Every GPU autotuning config ``_prune_configs`` keeps for some model shape, with the first such shape."""
    from kernels import balanced_attention as ba

    configs = ba._configs()
    first: dict[int, tuple[int, int]] = {}
    for lq in range(1, shapes.max_clips + 1):
        for lt in range(1, shapes.max_tokens + 1):
            for c in ba._prune_configs(configs, {"LQ": lq, "LT": lt, "LB": shapes.balance_tokens}):
                first.setdefault(id(c), (lq, lt))
    return [(c, first[id(c)]) for c in configs if id(c) in first]


# %%
# The kernel's arguments and their specialisation


def model_layout_arguments(shapes: ModelShapes, dtype: torch.dtype) -> tuple[list[Any], dict[str, Any]]:
    """``launch_arguments`` for CPU tensors laid out as the model's VT-block passes them.

    q, k, v are (B, L, H, Dh) projections viewed as (B, H, L, Dh); text and balance keys are slices of one
    key tensor; the text mask is a slice of the (B, Lt + Lb) key mask (see ``MultiHeadAttention``).
    """
    from kernels.balanced_attention import launch_arguments

    B, H, Dh, Lq, Lt, Lb = 2, shapes.heads, shapes.head_dim, shapes.clips, shapes.tokens, shapes.balance_tokens
    q = torch.zeros(B, Lq, H, Dh, dtype=dtype).transpose(1, 2)
    k = torch.zeros(B, Lt + Lb, H, Dh, dtype=dtype).transpose(1, 2)
    v = torch.zeros(B, Lt + Lb, H, Dh, dtype=dtype).transpose(1, 2)
    key_mask = torch.ones(B, Lt + Lb, dtype=torch.bool)
    out = torch.empty(B, H, Lq, Dh, dtype=dtype)
    return launch_arguments(q, k[:, :, :Lt], v[:, :, :Lt], key_mask[:, :Lt].view(torch.uint8),
                            k[:, :, Lt:], v[:, :, Lt:], out, Dh ** -0.5, Lb)


def specialize(value: Any, specialize_ints: bool = True) -> tuple[str, Any]:
    """(type, hint) as Triton's JIT specialises a launch argument: hint "D" = divisible by 16 (an aligned
    pointer), ("constexpr", 1) for an integer 1, None for floats and unspecialised integers."""
    if isinstance(value, torch.Tensor):
        return _POINTER_TYPES[value.dtype], "D" if value.data_ptr() % 16 == 0 else ""
    if isinstance(value, bool):
        return "i1", None
    if isinstance(value, int):
        kind = "i32" if -(2**31) <= value < 2**31 else "i64"
        if not specialize_ints:
            return kind, None
        if value == 1:
            return "constexpr", 1
        return kind, "D" if value % 16 == 0 else ""
    if isinstance(value, float):
        return "fp32", None
    raise TypeError(f"no Triton type for a launch argument of type {type(value).__name__}")


def ast_source(fn: Any, args: list[Any], meta: dict[str, Any], config: Any) -> Any:
    """The ``ASTSource`` a launch with these arguments would compile (signature, constants, hints)."""
    from triton.compiler import ASTSource

    constexprs: dict[str, Any] = {**meta, **config.kwargs}
    signature: dict[str, str] = {}
    attrs: dict[tuple[int, ...], list[list[Any]]] = {}
    runtime_names = [p.name for p in fn.params if not p.is_constexpr]
    assert len(runtime_names) == len(args), f"{len(args)} arguments for {len(runtime_names)} parameters"
    values = dict(zip(runtime_names, args))
    for index, param in enumerate(fn.params):
        name = param.name
        if param.is_constexpr:
            signature[name] = "constexpr"
            continue
        kind, hint = specialize(values[name], specialize_ints=name not in ("BH_BUCKET",))
        signature[name] = kind
        if kind == "constexpr":
            constexprs[name] = hint
        elif hint == "D":
            attrs[(index,)] = [["tt.divisibility", 16]]
    # constants keyed by (parameter index,), the form every Triton 3.x ASTSource accepts
    by_index = {(fn.arg_names.index(name),): value for name, value in constexprs.items()}
    return ASTSource(fn=fn, signature=signature, constexprs=by_index, attrs=attrs)


# %%
# Resources of a compiled kernel


def _nvidia_tool(name: str, arch: int) -> str:
    """Triton's own ptxas for ``arch`` (the one that built the cubin), else the wheel's copy of ``name``."""
    import triton

    if name == "ptxas":
        try:
            from triton.backends.nvidia.compiler import get_ptxas

            return get_ptxas(arch).path
        except (ImportError, AttributeError, TypeError):
            pass
    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    if not path.is_file():
        raise FileNotFoundError(f"{name} not found at {path}: this triton wheel does not bundle the CUDA tools")
    return str(path)


def _number(pattern: str, text: str, default: int = 0) -> int:
    match = re.search(pattern, text)
    return int(match.group(1)) if match else default


def measure_resources(kernel: Any, arch: int, report: Report) -> None:
    """Fill ``report`` from the cubin (cuobjdump -res-usage) and a ``ptxas -v`` run on the same PTX."""
    ptx, cubin = kernel.asm["ptx"], kernel.asm["cubin"]
    target = re.search(r"^\s*\.target\s+(\w+)", ptx, re.MULTILINE)
    if target is None:
        raise RuntimeError("the PTX names no .target")
    with tempfile.TemporaryDirectory(prefix="coreba_aot_") as tmp:
        ptx_path, cubin_path = Path(tmp, "k.ptx"), Path(tmp, "k.cubin")
        ptx_path.write_text(ptx)
        cubin_path.write_bytes(cubin)
        usage = subprocess.run([_nvidia_tool("cuobjdump", arch), "-res-usage", str(cubin_path)],
                               capture_output=True, text=True, check=True).stdout
        ptxas = _nvidia_tool("ptxas", arch)
        base = [ptxas, "-v", "-lineinfo", f"--gpu-name={target.group(1)}", str(ptx_path), "-o", str(Path(tmp, "o"))]
        cubin_registers = _number(r"REG:(\d+)", usage, -1)
        # Triton's own ptxas flags vary by version (3.9 adds --regAllocOptLevel=2, 3.6 does not): the rerun
        # whose register count equals the cubin's is the one that reproduces Triton's binary.
        log = ""
        for extra in ([], ["--regAllocOptLevel=2"]):
            run = subprocess.run(base[:1] + extra + base[1:], capture_output=True, text=True)
            if run.returncode != 0:
                continue
            log = run.stdout + run.stderr
            if _number(r"Used (\d+) registers", log, -1) == cubin_registers:
                break
        if not log:
            raise RuntimeError(f"ptxas -v failed: {(run.stderr or run.stdout).strip()[:300]}")
    report.registers = _number(r"REG:(\d+)", usage, -1)
    report.stack_bytes = _number(r"STACK:(\d+)", usage, -1)
    report.local_bytes = _number(r"LOCAL:(\d+)", usage, -1)
    report.ptxas_registers = _number(r"Used (\d+) registers", log, -1)
    report.spill_store_bytes = _number(r"(\d+) bytes spill stores", log, -1)
    report.spill_load_bytes = _number(r"(\d+) bytes spill loads", log, -1)
    report.shared_bytes = int(kernel.metadata.shared)


def compile_all(archs: tuple[int, ...], dtypes: tuple[str, ...], shapes: ModelShapes,
                maxnreg: int | None = None) -> list[Report]:
    """Compile every reachable config for every arch and dtype; a failure is recorded, not raised.

    ``maxnreg`` caps the registers per thread (ptxas spills what does not fit): a way to see how close a
    config is to spilling, and what the tests use to prove that a spill is caught.
    """
    import triton
    from triton.backends.compiler import GPUTarget

    from kernels import balanced_attention as ba

    fn = ba._jitted(False)
    reports = []
    for arch in archs:
        for dtype in dtypes:
            args, meta = model_layout_arguments(shapes, DTYPES[dtype])
            for config, (lq, lt) in reachable_configs(shapes):
                report = Report(arch, dtype, config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"], config.num_warps,
                                config.num_stages, f"Lq={lq} Lt={lt}")
                t0 = time.perf_counter()
                try:
                    options = {"num_warps": config.num_warps, "num_stages": config.num_stages}
                    if maxnreg is not None:
                        options["maxnreg"] = maxnreg
                    kernel = triton.compile(ast_source(fn, args, meta, config), target=GPUTarget("cuda", arch, 32),
                                            options=options)
                    measure_resources(kernel, arch, report)
                except Exception as err:  # one broken config must not hide the others
                    report.error = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300] if str(err) else ''}"
                report.compile_s = round(time.perf_counter() - t0, 2)
                reports.append(report)
    return reports


# %%
# Report and command line


def markdown_table(reports: list[Report]) -> str:
    lines = ["| arch | dtype | BLOCK_M x BLOCK_N | warps | regs/thread | spill st/ld (B) | stack (B) | smem (B) | "
             "verdict |", "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in reports:
        verdict = "; ".join(r.problems()) or "ok"
        lines.append(f"| sm_{r.arch} | {r.dtype} | {r.block_m} x {r.block_n} | {r.num_warps} | {r.registers} | "
                     f"{r.spill_store_bytes}/{r.spill_load_bytes} | {r.stack_bytes} | {r.shared_bytes:,} | {verdict} |")
    return "\n".join(lines)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", type=_ints, default=ARCHS, help="compute capabilities x10, e.g. 80,90 (default)")
    p.add_argument("--dtypes", type=lambda s: tuple(x for x in s.split(",") if x), default=tuple(DTYPES),
                   help="fp32,fp16,bf16 (default: all three)")
    defaults = ModelShapes()
    for field in ("heads", "head_dim", "balance_tokens", "clips", "tokens", "max_clips", "max_tokens"):
        p.add_argument(f"--{field.replace('_', '-')}", type=int, default=getattr(defaults, field),
                       help=f"default {getattr(defaults, field)}")
    p.add_argument("--maxnreg", type=int, help="cap registers per thread (default: none; ptxas spills the rest)")
    p.add_argument("--json", type=Path, help="write every record here")
    args = p.parse_args(argv)
    unknown = set(args.dtypes) - set(DTYPES)
    if unknown:
        p.error(f"unknown dtype(s) {sorted(unknown)}; choose from {list(DTYPES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if "triton" not in sys.modules:
        os.environ.pop("TRITON_INTERPRET", None)  # see the module docstring
    try:
        import triton
    except ImportError:
        print("kernels.aot needs the `triton` package (pip install triton)", file=sys.stderr)
        return 2
    from kernels.balanced_attention import _interpreting

    if _interpreting():
        print("triton was imported with TRITON_INTERPRET=1, whose kernels cannot be compiled: run "
              "`python -m kernels.aot` in a process without it", file=sys.stderr)
        return 2
    shapes = ModelShapes(**{f: getattr(args, f) for f in ModelShapes.__dataclass_fields__})
    t0 = time.perf_counter()
    reports = compile_all(tuple(args.arch), tuple(args.dtypes), shapes, args.maxnreg)
    elapsed = time.perf_counter() - t0
    print(f"triton {triton.__version__}: {len(reports)} compiles in {elapsed:.1f} s, kernel at Lq={shapes.clips} "
          f"Lt={shapes.tokens} Lb={shapes.balance_tokens} H={shapes.heads} Dh={shapes.head_dim}; configs the pruner "
          f"keeps for Lq 1..{shapes.max_clips}, Lt 1..{shapes.max_tokens}")
    print(markdown_table(reports))
    bad = [r for r in reports if r.problems()]
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"triton": triton.__version__, "shapes": asdict(shapes),
                                         "elapsed_s": round(elapsed, 1),
                                         "reports": [{**asdict(r), "problems": r.problems()} for r in reports]},
                                        indent=2))
    for r in bad:
        print(f"NOT FIT: sm_{r.arch} {r.dtype} {r.block_m}x{r.block_n} w{r.num_warps}: {'; '.join(r.problems())}",
              file=sys.stderr)
    return 1 if bad else 0


def run_in_subprocess(argv: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m kernels.aot ARGV`` in a process without ``TRITON_INTERPRET`` (see the module docstring)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.run([sys.executable, "-m", "kernels.aot", *argv], capture_output=True, text=True, env=env,
                          cwd=root, timeout=timeout)


if __name__ == "__main__":
    sys.exit(main())
