"""The launcher reports a model that fails to load by name and error, and leaves no process behind."""

from __future__ import annotations

import os
import shutil

import pytest

from serving.launcher import ModelLoadError, TritonServer
from serving.spec import ENGINE_MODELS, ONNX_FILENAME


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
    (broken / ENGINE_MODELS["python"] / "1" / ONNX_FILENAME).write_bytes(b"this is not an ONNX protobuf")
    server = TritonServer(broken, startup_timeout_s=120)
    with pytest.raises(ModelLoadError) as info:
        server.start()
    failures = info.value.failures
    assert "coreba_python" in failures, failures
    assert "Protobuf parsing failed" in failures["coreba_python"]
    assert "model 'coreba_python'" in str(info.value) and "INVALID_PROTOBUF" in str(info.value)
    assert server.process is None and server.pid is not None and not _alive(server.pid)
    assert "failed to load 'coreba_python'" in server.last_log


def test_missing_repository_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model repository"):
        TritonServer(tmp_path / "nowhere")
