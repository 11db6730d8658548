"""scripts/gpu_check.sh cannot rot: its dry run (the same steps on the CPU, Triton's interpreter, tiny
shapes) runs here, with a carried wheel, and its import check and time budget are pinned down.

The real run needs a CUDA GPU and has never run on one yet (see RESULTS.md); this proves that every step
starts, writes its results where the summary looks for them, and that the summary is printed last.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
PROBE = "coreba_wheel_probe"


def _probe_wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel, standing in for a package carried to the GPU machine."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{PROBE}-0.1-py3-none-any.whl"
    info = f"{PROBE}-0.1.dist-info"
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr(f"{PROBE}.py", "CARRIED = True\n")
        whl.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {PROBE}\nVersion: 0.1\n")
        whl.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: coreba-tests\nRoot-Is-Purelib: true\n"
                                      "Tag: py3-none-any\n")
        whl.writestr(f"{info}/RECORD", f"{PROBE}.py,,\n{info}/METADATA,,\n{info}/WHEEL,,\n{info}/RECORD,,\n")
    return path


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable, **env}
    full_env.pop("TRITON_INTERPRET", None)  # the script sets it itself for a dry run
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=full_env, timeout=600)


def _steps(log: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r"^@@step\t(\w+)\t(\w+)\t", log, re.MULTILINE)}


def test_dry_run_runs_every_step_and_prints_the_summary_last(tmp_path):
    _probe_wheel(tmp_path / "whl")  # the run must install it and the preflight must import it
    result = _run(tmp_path, "--dry-run", WHEELS=str(tmp_path / "whl"), GPU_CHECK_REQUIRE=PROBE)
    out = tmp_path / "out"
    log = (out / "gpu_check.log").read_text()
    assert result.returncode == 0, log[-4000:]
    assert _steps(log) == {"preflight": "ok", "tests": "ok", "kernel": "ok", "latency": "ok"}, log[-4000:]

    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["gpu_check.log", "kernel/bench.csv", "kernel/bench.json", "latency/latency.png",
                     "latency/results.csv", "latency/results.json", "preflight.json", "summary.txt"]  # <= 8 return
    preflight = json.loads((out / "preflight.json").read_text())
    assert preflight["dry_run"] and PROBE in preflight["modules"] and not preflight["missing"]
    bench = json.loads((out / "kernel" / "bench.json").read_text())
    assert {r["impl"] for r in bench["rows"] if r["status"] == "ok"} >= {"triton", "eager"}
    latency = {r["engine"]: r for r in json.loads((out / "latency" / "results.json").read_text())["rows"]}
    assert latency["eager-math"]["status"] == "ok" and latency["ort-cpu"]["status"] == "ok"

    summary = (out / "summary.txt").read_text().strip()
    assert summary.startswith("== gpu_check summary: cpu (dry run)")
    assert result.stdout.rstrip().endswith(summary)  # the short table comes last
    for step in ("preflight", "tests", "kernel", "latency"):
        assert re.search(rf"^{step}\s+ok\s+\d+", summary, re.MULTILINE), summary
    assert "eager-math" in summary and "kernel vs SDPA" in summary


def test_a_missing_module_stops_the_run_before_any_step(tmp_path):
    result = _run(tmp_path, "--dry-run", GPU_CHECK_REQUIRE="coreba_no_such_module")
    log = (tmp_path / "out" / "gpu_check.log").read_text()
    assert result.returncode == 2
    assert "MISSING: coreba_no_such_module" in log and "ModuleNotFoundError" in log
    assert _steps(log) == {"preflight": "FAILED"}  # nothing else ran
    assert "preflight  FAILED" in result.stdout


def test_preflight_without_cuda_refuses_the_real_run(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the real run is allowed")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "preflight", str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2 and "sees no CUDA device" in result.stderr


def _value(text: str, name: str) -> int:
    return int(re.search(rf"\b{name}=(\d+)", text).group(1))


def test_timeouts_fit_the_eight_minutes():
    """Every step's timeout, and each benchmark's own limits inside its step, add up to well under 8 min."""
    text = SCRIPT.read_text()
    steps = {name: _value(text, name) for name in ("T_PREFLIGHT", "T_TESTS", "T_KERNEL", "T_LATENCY")}
    assert sum(steps.values()) <= 420 < 480, steps
    kernel_budget = float(re.search(r"KERNEL=\(--time-budget (\d+)\)", text).group(1))
    assert kernel_budget + 15 <= steps["T_KERNEL"]  # the last shape started in time still finishes
    limit = float(re.search(r"--time-limit (\d+)", text).group(1))
    engine = float(re.search(r"--engine-budget (\d+)", text).group(1))
    assert limit + engine + 20 <= steps["T_LATENCY"]  # the last engine started in time still finishes
