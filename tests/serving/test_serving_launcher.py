"""The launcher reports a model that fails to load by name and error, says when the server dies under it, and
leaves no process behind."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from serving.launcher import ModelLoadError, TritonServer, free_port
from serving.spec import ONNX_FILENAME, SERVED

REPO = Path(__file__).resolve().parents[2]


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


@pytest.mark.server
def test_launcher_says_when_the_server_dies_under_it(repository):
    """Kill the real tritonserver the CLI started: the CLI must say it died, with its exit status and the end of
    its log, and exit 1 (it used to exit silently with status 247)."""
    http, grpc = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    launcher = subprocess.Popen([sys.executable, "-m", "serving.launcher", "--repository", str(repository),
                                 "--http-port", str(http), "--grpc-port", str(grpc)], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = launcher.stdout.readline()
        match = re.search(r"\(PID (\d+)\)", ready)
        assert ready.startswith("ready:") and match, ready + launcher.stderr.read()
        server_pid = int(match.group(1))
        os.kill(server_pid, signal.SIGKILL)
        _, err = launcher.communicate(timeout=60)
    finally:
        launcher.kill()
    assert launcher.returncode == 1, err
    assert f"tritonserver (PID {server_pid}) died with exit status -9 (killed by SIGKILL)" in err, err
    assert f"127.0.0.1:{http}" in err.split("the end of its log:")[1], err  # the server's own log lines
    assert not _alive(server_pid)
