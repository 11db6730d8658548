"""The Python half of scripts/gpu_check.sh: the import check that runs first, and the table printed last.

    python scripts/gpu_check.py preflight OUT [--dry-run] [--require MODULE ...]
    python scripts/gpu_check.py summary OUT

``preflight`` imports every module the run needs and exits 2 naming each one that does not import (so
a bare machine says what is missing before any step fails), checks that CUDA works (unless --dry-run),
lists the optional engines that are absent (and will be skipped, with the reason, by the benchmark), and
writes OUT/preflight.json. ``summary`` reads what the steps left in OUT (the ``@@step`` lines of
gpu_check.log, the kernel benchmark's bench.json, the latency benchmark's results.json), whatever exists of
it, and prints a short table; it never fails on missing files, since a step that was cut short must still
be reported.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

# module -> why the run needs it. The project's own modules are imported too: a syntax error or a broken
# import in one of them is found here, before any step starts.
REQUIRED = {
    "torch": "every step", "triton": "the kernel and its tests", "numpy": "every step", "scipy": "coreba",
    "onnx": "the ONNX engines of the latency benchmark", "onnxscript": "the ONNX export (dynamo)",
    "onnxruntime": "the ONNX Runtime engines", "safetensors": "checkpoints", "tqdm": "coreba",
    "pytest": "the kernel tests", "matplotlib": "the latency plot", "sympy": "the FLOP count",
    "coreba": "the model", "kernels.balanced_attention": "the kernel", "kernels.bench": "the kernel benchmark",
    "kernels.aot": "the ahead-of-time compile test", "export.onnx_export": "the ONNX export",
    "benchmarks.latency": "the latency benchmark",
}
# engine families that need more than the bare machine: absent ones are skipped by the benchmark
OPTIONAL = {"tensorrt": "TensorRT engines", "tritonclient": "the served model (client)",
            "onnxruntime (CUDA provider)": "ONNX Runtime on the GPU"}


def _version(module: str) -> str | None:
    top = module.split(".")[0]
    for dist in (top, top.replace("_", "-")):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def preflight(out: Path, dry_run: bool, extra: list[str]) -> int:
    report: dict = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "dry_run": dry_run,
                    "python": platform.python_version(), "executable": sys.executable,
                    "triton_interpret": os.environ.get("TRITON_INTERPRET"), "modules": {}, "missing": {},
                    "optional_absent": {}}
    for module in [*REQUIRED, *extra]:
        try:
            importlib.import_module(module)
            report["modules"][module] = _version(module) or "ok"
        except Exception as err:  # ImportError, or a broken module: either way the run cannot use it
            report["missing"][module] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    for module in ("tensorrt", "tritonclient"):
        try:
            importlib.import_module(module)
        except Exception as err:
            report["optional_absent"][module] = f"{OPTIONAL[module]} will be skipped ({type(err).__name__})"
    try:
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            report["optional_absent"]["onnxruntime (CUDA provider)"] = (
                f"{OPTIONAL['onnxruntime (CUDA provider)']} will be skipped (a CPU build of onnxruntime)")
    except Exception:
        pass  # already listed as missing
    if "torch" in report["modules"]:
        import torch

        report["torch_cuda"] = torch.version.cuda
        report["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            report["gpu"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                             "memory_gib": round(props.total_memory / 2**30, 1),
                             "multiprocessors": props.multi_processor_count}
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        report["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as err:
        report["nvidia_smi"] = f"unavailable ({type(err).__name__})"
    out.mkdir(parents=True, exist_ok=True)
    (out / "preflight.json").write_text(json.dumps(report, indent=2))

    print(f"python {report['python']} ({sys.executable}); " + ", ".join(
        f"{m} {v}" for m, v in report["modules"].items() if "." not in m and m not in ("coreba",)))
    print(f"GPU: {report.get('gpu') or 'none'}; nvidia-smi: {report['nvidia_smi']}")
    for module, why in report["optional_absent"].items():
        print(f"absent (optional): {module}: {why}")
    if report["missing"]:
        for module, error in report["missing"].items():
            print(f"MISSING: {module} (needed by {REQUIRED.get(module, 'this run')}): {error}", file=sys.stderr)
        print("preflight failed: carry the missing packages as wheels (scripts/gpu_wheels.sh) or fix the "
              "imports above; nothing else was run", file=sys.stderr)
        return 2
    if not dry_run and not report.get("cuda_available"):
        print(f"preflight failed: torch {report['modules'].get('torch')} sees no CUDA device "
              f"(torch CUDA build {report.get('torch_cuda')}); use --dry-run on a CPU", file=sys.stderr)
        return 2
    return 0


# ------------------------------------------------------------------------------------------------ summary


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def summary(out: Path) -> int:
    lines = []
    pre = _load(out / "preflight.json") or {}
    gpu = pre.get("gpu", {}).get("name") or ("cpu (dry run)" if pre.get("dry_run") else "?")
    lines.append(f"== gpu_check summary: {gpu}; torch {pre.get('modules', {}).get('torch')}, "
                 f"triton {pre.get('modules', {}).get('triton')} ==")
    lines.append(f"{'step':<10} {'status':<8} {'seconds':>7}  note")
    log = out / "gpu_check.log"
    for row in log.read_text(errors="replace").splitlines() if log.is_file() else []:
        if row.startswith("@@step\t"):
            step, status, seconds, note = (row.split("\t")[1:] + ["", "", "", ""])[:4]
            lines.append(f"{step:<10} {status:<8} {seconds:>7}  {note}")
    bench = _load(out / "kernel" / "bench.json")
    if bench:
        lines.append(f"kernel vs SDPA (ms, median; copy bandwidth {bench.get('copy_bandwidth_gbps', 0):.0f} GB/s):")
        lines.append(f"  {'dtype':<5} {'B':>5} {'Lq':>5} {'Lt':>3} {'triton':>8} {'%copy':>6} {'best sdpa':>18} "
                     f"{'eager':>8}")
        groups: dict[tuple, dict[str, dict]] = {}
        for r in bench.get("rows", []):
            groups.setdefault((r["dtype"], r["B"], r["Lq"], r["Lt"]), {})[r["impl"]] = r
        for (dtype, B, Lq, Lt), by in list(groups.items())[:16]:
            tri = by.get("triton", {})
            where = f"  {dtype:<5} {B:>5} {Lq:>5} {Lt:>3}"
            if tri.get("status") != "ok":
                lines.append(f"{where} {tri.get('status', '?').upper():>8}  {tri.get('reason', '')[:60]}")
                continue
            sdpa = [r for k, r in by.items() if k.startswith("sdpa_") and r["status"] == "ok"]
            best = min(sdpa, key=lambda r: r["ms"]) if sdpa else None
            best_txt = f"{best['impl'][5:]} {_ms(best['ms'])}" if best else "none"
            pct = tri.get("pct_copy_bw")
            lines.append(f"{where} {_ms(tri['ms']):>8} {'-' if pct is None else f'{pct:.0f}%':>6} "
                         f"{best_txt:>18} {_ms(by.get('eager', {}).get('ms')):>8}")
    latency = _load(out / "latency" / "results.json")
    if latency:
        rows = latency.get("rows", [])
        lines.append("end to end (median ms by batch at the base length; parity checked before timing):")
        base = min((r["num_clips"] for r in rows if r.get("num_clips")), default=None)
        batches = sorted({r["batch"] for r in rows if r.get("batch") and r["num_clips"] == base})
        lines.append(f"  {'engine':<30} " + " ".join(f"{'B' + str(b):>8}" for b in batches))
        for engine in dict.fromkeys(r["engine"] for r in rows):
            mine = [r for r in rows if r["engine"] == engine]
            timed = {r["batch"]: r["median_ms"] for r in mine if r["status"] == "ok" and r["num_clips"] == base}
            if timed:
                lines.append(f"  {engine:<30} " + " ".join(f"{_ms(timed.get(b)):>8}" for b in batches))
            else:
                first = mine[0]
                lines.append(f"  {engine:<30} {first['status'].upper()}: {first.get('reason', '')[:70]}")
    text = "\n".join(lines)
    print(text)
    (out / "summary.txt").write_text(text + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pre = sub.add_parser("preflight")
    pre.add_argument("out", type=Path)
    pre.add_argument("--dry-run", action="store_true")
    pre.add_argument("--require", nargs="*", default=[], help="more modules that must import")
    summ = sub.add_parser("summary")
    summ.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "preflight":
        return preflight(args.out, args.dry_run, args.require)
    return summary(args.out)


if __name__ == "__main__":
    sys.exit(main())
