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
        if r["impl"] in ("triton", "eager", "sdpa_math"):  # these run on any device: never skipped
            assert r["status"] == "ok", r
        assert r["status"] in ("ok", "skipped"), r
        if r["status"] == "ok":
            # every timed backend was checked, at its dtype's tolerance (1e-4 for fp32)
            assert r["ms"] > 0 and r["max_abs_err"] <= bench.CHECK_TOL[bench.DTYPES[r["dtype"]]], r
        else:
            assert r["reason"], r
    assert {r["dtype"] for r in rows} == {"fp32", "fp16"}
    csv_lines = (tmp_path / "bench.csv").read_text().splitlines()
    assert len(csv_lines) == len(rows) + 1


def test_bench_refuses_without_gpu(capsys):
    if torch.cuda.is_available():
        pytest.skip("only meaningful without CUDA")
    assert bench.main(["--out", "unused"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_bench_fails_a_wrong_baseline(tmp_path, monkeypatch, capsys):
    """A backend other than the kernel that returns wrong numbers is a failed row and exit code 1."""
    pytest.importorskip("triton")
    monkeypatch.setattr(bench, "eager_attention", lambda q, k, v, attn_mask: torch.zeros_like(q))
    assert bench.main(["--out", str(tmp_path), "--dry-run"]) == 1
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    eager = [r for r in rows if r["impl"] == "eager"]
    assert eager and all(r["status"] == "failed" and "tolerance" in r["reason"] for r in eager)
    assert all(r["status"] == "ok" for r in rows if r["impl"] == "triton")
    assert "FAILED: eager" in capsys.readouterr().err


def test_bench_time_budget_lists_the_rest_as_skipped(tmp_path, capsys):
    pytest.importorskip("triton")
    assert bench.main(["--out", str(tmp_path), "--dry-run", "--time-budget", "0"]) == 0
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert len(rows) == len(bench._shapes(True))
    assert all(r["status"] == "skipped" and "time budget" in r["reason"] for r in rows)
    assert "skipped: time budget" in capsys.readouterr().out
