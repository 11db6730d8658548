"""``python -m kernels.bench --dry-run`` keeps working (CPU: Triton's interpreter, 2 tiny shapes, ~3 s)."""

import json
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported, see the kernel module

import pytest  # noqa: E402

from kernels import bench  # noqa: E402


def test_bench_dry_run(tmp_path):
    pytest.importorskip("triton")
    assert bench.main(["--out", str(tmp_path), "--dry-run"]) == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    rows = report["rows"]
    assert report["dry_run"] and report["copy_bandwidth_gbps"] > 0
    impls = {r["impl"] for r in rows}
    assert {"triton", "eager", "sdpa_math"} <= impls
    for r in rows:
        assert r["status"] in ("ok", "skipped"), r
        if r["status"] == "ok":
            assert r["ms"] > 0 and r["max_abs_err"] < 5e-3
        else:
            assert r["reason"], r
    csv_lines = (tmp_path / "bench.csv").read_text().splitlines()
    assert len(csv_lines) == len(rows) + 1


def test_bench_refuses_without_gpu(capsys):
    if torch.cuda.is_available():
        pytest.skip("only meaningful without CUDA")
    assert bench.main(["--out", "unused"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
