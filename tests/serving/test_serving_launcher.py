"""The launcher reports a model that fails to load by name and error, and leaves no process behind."""

from __future__ import annotations

import os
import shutil

import pytest

from serving.launcher import ModelLoadError, TritonServer
from serving.spec import ONNX_FILENAME, SERVED


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.server
def test_corrupt_onnx_is_reported_by_model_name(repository, tmp_path):
    broken = tmp_path / "repository"
    shutil.copytree(repository, broken)
    (broken / SERVED / "1" / ONNX_FILENAME).write_bytes(b"this is not an ONNX protobuf")
    server = TritonServer(broken, startup_timeout_s=120)
    with pytest.raises(ModelLoadError) as info:
        server.start()
    failures = info.value.failures
    assert SERVED in failures, failures
    assert "Protobuf parsing failed" in failures[SERVED]
    assert f"model '{SERVED}'" in str(info.value) and "INVALID_PROTOBUF" in str(info.value)
    assert server.process is None and server.pid is not None and not _alive(server.pid)
    assert f"failed to load '{SERVED}'" in server.last_log


@pytest.mark.server
def test_a_raw_graph_in_place_of_the_end_to_end_one_fails_the_load(repository, served_model, tmp_path):
    """The one-step model checks its ONNX file against its config: the raw graph (no post-processing) is refused
    at load, by name, rather than failing every request."""
    broken = tmp_path / "repository"
    shutil.copytree(repository, broken)
    shutil.copyfile(served_model.raw_onnx_path, broken / SERVED / "1" / ONNX_FILENAME)
    with pytest.raises(ModelLoadError) as info:
        TritonServer(broken, startup_timeout_s=120).start()
    assert "not an end-to-end graph" in info.value.failures[SERVED]


def test_missing_repository_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model repository"):
        TritonServer(tmp_path / "nowhere")
