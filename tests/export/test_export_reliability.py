"""The export never loses or fakes a file: the asked opset or a named refusal, the output path checked before the
trace, the previous file intact after a failed check or a real Ctrl-C, and each optimized copy checked on its own.
The end-to-end graph (``--end-to-end``) goes through the same code path: the same refusals and the same atomicity.

Most tests reuse one traced tiny graph (the trace is the slow part and is not what they test); the interruption
test runs the real CLI in a subprocess and sends it a real SIGINT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
import torch

import export.onnx_export as onnx_export
from coreba import Coreba
from coreba.atomic import PARTIAL_TAG
from coreba.onnx_io import read_metadata, read_onnx
from export import to_onnx
from export.onnx_export import ExportError, export_onnx, opset_of
from export.spec import MAX_OPSET, MIN_OPSET, SUPPORTED_OPSETS
from export.validate import ParityError
from tests.conftest import tiny_config

REPO = Path(__file__).resolve().parents[2]
OLD = b"the previous, good export"
TRACE = onnx_export.trace_to_onnx


@pytest.fixture(scope="module")
def model() -> Coreba:
    torch.manual_seed(0)
    return Coreba(tiny_config()).eval()


@pytest.fixture(scope="module")
def traced(model) -> onnx.ModelProto:
    return onnx_export.trace_to_onnx(model)


@pytest.fixture(scope="module")
def traced_end_to_end(model) -> onnx.ModelProto:
    return TRACE(model, top_k=10)  # the real one: reuse_trace may already stand in for it when this is first asked


@pytest.fixture
def reuse_trace(monkeypatch, traced, request):
    """export_onnx with the module's one traced graph (a fresh copy each call) instead of a new ~30 s trace; the
    end-to-end one, traced once too, when the export asks for it."""
    def trace(model, opset, fp16, top_k=None):
        proto = onnx.ModelProto()
        proto.CopyFrom(traced if top_k is None else request.getfixturevalue("traced_end_to_end"))
        return proto

    monkeypatch.setattr(onnx_export, "trace_to_onnx", trace)


@pytest.fixture
def checkpoint(model, tmp_path) -> Path:
    return model.save_pretrained(tmp_path / "ckpt")


def _previous(folder: Path, name: str = "m.onnx") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(OLD)
    return path


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------------- 1. --opset
@pytest.mark.parametrize("end_to_end", [False, True], ids=["raw", "end-to-end"])
@pytest.mark.parametrize("opset", [7, MIN_OPSET - 1, MAX_OPSET + 1, 99])
def test_unsupported_opset_fails_naming_the_supported_range(model, tmp_path, capsys, opset, end_to_end):
    out = _previous(tmp_path / "out")
    with pytest.raises(ExportError, match=f"{MIN_OPSET}..{MAX_OPSET}"):
        export_onnx(model, out, opset=opset, end_to_end=end_to_end)
    with pytest.raises(SystemExit) as exit_info:
        to_onnx.main(["--checkpoint", str(tmp_path / "unused"), "--output", str(out), "--opset", str(opset),
                      *(["--end-to-end"] if end_to_end else [])])
    assert exit_info.value.code != 0 and f"{MIN_OPSET}..{MAX_OPSET}" in capsys.readouterr().err
    assert out.read_bytes() == OLD and _names(out.parent) == ["m.onnx"]


def test_a_supported_opset_is_the_opset_written(model, tmp_path):
    """The lowest supported opset goes through a version conversion: the file must really declare it."""
    assert SUPPORTED_OPSETS[0] == MIN_OPSET
    result = export_onnx(model, tmp_path / "m.onnx", opset=MIN_OPSET)
    assert opset_of(read_onnx(result.path)) == MIN_OPSET
    assert read_metadata(result.path)["opset"] == str(MIN_OPSET) and result.parity.ok


# ---------------------------------------------------------------------------- 2. atomic, interruption
def test_a_failed_check_keeps_the_previous_file(model, tmp_path, monkeypatch, reuse_trace):
    out = _previous(tmp_path)

    def failing_parity(*args, **kwargs):
        raise ParityError("saliency_scores off by 1")

    monkeypatch.setattr(onnx_export, "check_parity", failing_parity)
    with pytest.raises(ParityError):
        export_onnx(model, out)
    assert out.read_bytes() == OLD and _names(tmp_path) == ["m.onnx"]


def test_a_failed_answer_check_keeps_the_previous_end_to_end_file(model, tmp_path, monkeypatch, reuse_trace):
    """The end-to-end export writes through the same atomic path: a passing export replaces the file (metadata
    says which graph), a failing answer check leaves the previous one and no temporary."""
    out = _previous(tmp_path)
    result = export_onnx(model, out, end_to_end=True)
    meta = read_metadata(result.path)
    assert (meta["graph"], meta["top_k"]) == ("end_to_end", "10") and result.parity.ok
    assert _names(tmp_path) == ["m.onnx"]

    out.write_bytes(OLD)

    def failing_answer(*args, **kwargs):
        raise ParityError("moment times off by 1 s")

    monkeypatch.setattr(onnx_export, "check_answer_parity", failing_answer)
    with pytest.raises(ParityError, match="moment times"):
        export_onnx(model, out, end_to_end=True, optimize=("ort",))
    assert out.read_bytes() == OLD and _names(tmp_path) == ["m.onnx"]


def test_ctrl_c_during_a_real_export_keeps_the_previous_file(checkpoint, tmp_path):
    """SIGINT as soon as the export starts writing (any new entry beside the output, or the output changing):
    the output keeps its previous bytes and nothing else is left in its folder."""
    out = _previous(tmp_path / "out")
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    # SIGINT as at a terminal: a shell starting this run in the background (`cmd &`, nohup) sets it to "ignore",
    # which the child would inherit, and the export would rightly never see the Ctrl-C
    process = subprocess.Popen([sys.executable, "export/to_onnx.py", "--checkpoint", str(checkpoint),
                                "--output", str(out)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert process.stdout.readline().startswith("exporting COREBA"), "the export did not start"
        deadline = time.monotonic() + 300
        while _names(out.parent) == ["m.onnx"] and out.read_bytes() == OLD and process.poll() is None:
            assert time.monotonic() < deadline, "the export wrote nothing within 300 s"
            time.sleep(0.002)
        assert process.poll() is None, "the export finished before it could be interrupted"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == to_onnx.INTERRUPTED, err
    assert "left as it was" in err
    assert out.read_bytes() == OLD and _names(out.parent) == ["m.onnx"]


# --------------------------------------------------------------------------------------- 3. --optimize
def test_each_optimized_copy_has_its_own_checks_and_figures(model, tmp_path, monkeypatch, reuse_trace):
    result = export_onnx(model, tmp_path / "m.onnx", optimize=("ort",))
    copy = result.optimized["ort"]
    assert copy.name == "m.ort.onnx" and _names(tmp_path) == ["m.onnx", "m.ort.onnx"]
    meta = read_metadata(copy)
    assert meta["optimized"] == "ort" and "optimized" not in read_metadata(result.path)
    assert meta["parity_max_abs_error"] == json.dumps(result.optimized_parity["ort"].worst())
    assert "ort-optimized" in result.optimized_parity["ort"].engine

    # a copy that fails its own parity check: neither file replaces the previous ones, no temporary is left
    for path in (tmp_path / "m.onnx", copy):
        path.write_bytes(OLD)
    real = onnx_export.check_parity

    def copy_fails(run, model, name, *args, **kwargs):
        if "optimized" in name:
            raise ParityError(f"{name}: pred_spans off by 1")
        return real(run, model, name, *args, **kwargs)

    monkeypatch.setattr(onnx_export, "check_parity", copy_fails)
    with pytest.raises(ParityError, match="ort-optimized"):
        export_onnx(model, tmp_path / "m.onnx", optimize=("ort",))
    assert (tmp_path / "m.onnx").read_bytes() == OLD and copy.read_bytes() == OLD
    assert not [p for p in tmp_path.iterdir() if PARTIAL_TAG in p.name]


# --------------------------------------------------------------------------------- 4. the output path
@pytest.mark.parametrize("end_to_end", [False, True], ids=["raw", "end-to-end"])
@pytest.mark.parametrize("case", ["a folder", "under a file"])
def test_unwritable_output_fails_at_once_in_one_line(checkpoint, tmp_path, monkeypatch, capsys, case, end_to_end):
    (tmp_path / "file").write_text("x")
    output = {"a folder": tmp_path, "under a file": tmp_path / "file" / "m.onnx"}[case]

    def no_trace(*args, **kwargs):
        raise AssertionError("traced before the output path was checked")

    monkeypatch.setattr(onnx_export, "trace_to_onnx", no_trace)
    assert to_onnx.main(["--checkpoint", str(checkpoint), "--output", str(output),
                         *(["--end-to-end"] if end_to_end else [])]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(output) in err
