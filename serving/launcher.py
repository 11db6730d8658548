"""Start and stop the real Triton Inference Server (the binary bundled in the nvidia-pytriton wheel).

:class:`TritonServer` is a context manager used by the tests, the load test and the CLI::

    with TritonServer("artifacts/model_repository") as server:   # waits for /v2/health/ready
        client = CorebaClient(server.http_url)

It binds HTTP and gRPC to 127.0.0.1 only (free ports unless given), disables metrics, loads only the
models asked for (default: ``coreba``, the one-step model clients call; the other models of the repository
may need backends this server lacks; an ensemble loads its steps), and stops the server by its PID on exit,
on an exception and at interpreter exit (``atexit``). When a model fails to load it raises
:class:`ModelLoadError` naming each failed model and its error, read from the server's repository index
and, if the server already exited, from its log.

The wheel ships the Python backend without its stub in place: a private backend folder is assembled from
symlinks (``python/libtriton_python.so``, ``triton_python_backend_utils.py`` and the stub built for this
interpreter's version). The stub embeds the interpreter found first on PATH, so this interpreter's ``bin``
goes first on PATH (the models import the installed ``coreba``), and its LIBDIR goes on LD_LIBRARY_PATH.

CLI: ``python -m serving.launcher --repository artifacts/model_repository [--http-port 8000]`` serves
until Ctrl-C or SIGTERM (exit 0); if the server dies under it, it says so with the exit status and the tail
of the server's log, and exits 1.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from serving.spec import SERVED

POLL_S = 0.25
STOP_TIMEOUT_S = 30.0
# "failed to load 'm' version 1: why" (a model) and "load failed for model 'm': why" (an ensemble, a dependency)
LOAD_FAILURE = re.compile(r"(?:failed to load '([^']+)' version \d+|load failed for model '([^']+)'): (.*?)\"?$",
                          re.MULTILINE)
ERROR_LINE = re.compile(r"^E\d{4} ")  # glog's error lines


class ServerStartError(RuntimeError):
    """The server did not become ready (exited, timed out); the message carries the log's tail."""


class ModelLoadError(ServerStartError):
    """One or more models failed to load. ``failures`` maps each model name to its error."""

    def __init__(self, failures: dict[str, str], log_tail: str = "") -> None:
        self.failures = failures
        lines = "\n".join(f"  model '{name}': {_first_paragraph(reason)}" for name, reason in failures.items())
        log = f"\n--- server log (errors) ---\n{log_tail}" if log_tail else ""
        super().__init__(f"{len(failures)} model(s) failed to load:\n{lines}{log}")


def _first_paragraph(reason: str) -> str:
    """The error without the Python traceback the backend appends ("\\n\\nAt:\\n  file(line): ...")."""
    return re.split(r"(?:\\n|\n){2}At:", reason, maxsplit=1)[0].strip()


def pytriton_root() -> Path:
    """The folder of the ``tritonserver`` distribution inside the nvidia-pytriton wheel."""
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerStartError("nvidia-pytriton is not installed: pip install nvidia-pytriton==0.7.0 --no-deps")
    return Path(next(iter(spec.submodule_search_locations))) / "tritonserver"


def wheel_libs() -> Path:
    """``nvidia_pytriton.libs``: the shared libraries the wheel's binaries were repaired against."""
    return pytriton_root().parent.parent / "nvidia_pytriton.libs"


def make_backend_dir(target: Path) -> Path:
    """``target/python/{libtriton_python.so, triton_python_backend_utils.py, triton_python_backend_stub}``."""
    root = pytriton_root()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    sources = [root / "backends" / "python" / "libtriton_python.so",
               root / "backends" / "python" / "triton_python_backend_utils.py",
               root / "python_backend_stubs" / version / "triton_python_backend_stub"]
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for source in sources:
        if not source.is_file():
            raise ServerStartError(f"{source} is missing from nvidia-pytriton (no stub for Python {version}?)")
        link = python_dir / source.name
        if not link.exists():
            link.symlink_to(source)
    return target


def server_env() -> dict[str, str]:
    """PATH with this interpreter's bin first (the stub's Python); LD_LIBRARY_PATH with its libpython."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    libdirs = [sysconfig.get_config_var("LIBDIR") or "", str(wheel_libs()), env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(d for d in libdirs if d)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _http(url: str, data: bytes | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    """(status, body) of one request to the server; status 0 when it does not answer."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0, b""


class TritonServer:
    """A tritonserver process on 127.0.0.1 serving ``repository``; see the module docstring."""

    def __init__(self, repository: str | Path, models: Sequence[str] | None = (SERVED,), http_port: int = 0,
                 grpc_port: int = 0, startup_timeout_s: float = 120.0, log_verbose: int = 0,
                 extra_args: Sequence[str] = ()) -> None:
        self.repository = Path(repository).resolve()
        if not self.repository.is_dir():
            raise FileNotFoundError(f"no model repository at {self.repository}")
        self.models = tuple(models) if models is not None else None  # None: load every model
        self.http_port, self.grpc_port = http_port or free_port(), grpc_port or free_port()
        self.startup_timeout_s, self.log_verbose, self.extra_args = startup_timeout_s, log_verbose, tuple(extra_args)
        self.process: subprocess.Popen | None = None
        self.pid: int | None = None  # kept after stop(), to check that the process is gone
        self._workdir: tempfile.TemporaryDirectory | None = None
        self.log_path: Path | None = None
        self.last_log = ""  # the log of the last run, kept after stop() removes the working folder

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def command(self, backend_dir: Path) -> list[str]:
        cmd = [str(pytriton_root() / "bin" / "tritonserver"), f"--model-repository={self.repository}",
               f"--backend-directory={backend_dir}", "--http-address=127.0.0.1", f"--http-port={self.http_port}",
               "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}", "--allow-metrics=false",
               "--exit-on-error=false",  # keep serving the index, which names the failed models and why
               "--exit-timeout-secs=10", f"--log-verbose={self.log_verbose}"]
        if self.models is not None:
            cmd += ["--model-control-mode=explicit", *(f"--load-model={name}" for name in self.models)]
        return [*cmd, *self.extra_args]

    def start(self) -> TritonServer:
        if self.process is not None:
            raise ServerStartError("this server is already started")
        self._workdir = tempfile.TemporaryDirectory(prefix="coreba-triton-")
        workdir = Path(self._workdir.name)
        self.log_path = workdir / "tritonserver.log"
        with open(self.log_path, "wb") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(self.command(make_backend_dir(workdir / "backends")), stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=server_env(),
                                            start_new_session=True)  # its own group: the stubs stop with it
        self.pid = self.process.pid
        atexit.register(self.stop)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return ""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def repository_index(self) -> list[dict]:
        status, body = _http(f"http://{self.http_url}/v2/repository/index", data=b"{}")
        return json.loads(body) if status == 200 else []

    def _failures(self) -> dict[str, str]:
        """Failed models and their errors: the repository index, else the log's "failed to load" lines."""
        failures = {entry["name"]: entry.get("reason", "") or "unavailable" for entry in self.repository_index()
                    if entry.get("state") == "UNAVAILABLE" and (self.models is None or entry.get("reason"))}
        for model, ensemble, reason in LOAD_FAILURE.findall(self.log_text()):
            failures.setdefault(model or ensemble, reason)
        return failures

    def _error_lines(self, limit: int = 20) -> str:
        return "\n".join([line for line in self.log_text().splitlines() if ERROR_LINE.match(line)][-limit:])

    def _wait_ready(self) -> None:
        """Poll /v2/health/ready until ready, the process exits, a model fails, or the timeout passes."""
        deadline = time.monotonic() + self.startup_timeout_s
        base = f"http://{self.http_url}/v2/health"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                failures = self._failures()
                if failures:
                    raise ModelLoadError(failures, self._error_lines())
                raise ServerStartError(f"tritonserver exited with code {self.process.returncode}:\n{self.log_tail()}")
            if _http(f"{base}/ready", timeout=1.0)[0] == 200:
                return
            if _http(f"{base}/live", timeout=1.0)[0] == 200:  # endpoints start after the models were loaded
                failures = self._failures()
                if failures:
                    raise ModelLoadError(failures, self._error_lines())
            time.sleep(POLL_S)
        raise ServerStartError(f"tritonserver not ready after {self.startup_timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM the server's PID, wait, then SIGKILL its process group (the stubs) if anything is left."""
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=STOP_TIMEOUT_S)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # the group is the server's own session
        atexit.unregister(self.stop)
        if self._workdir is not None:
            self.last_log = self.log_text()
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def describe_exit(returncode: int) -> str:
    """``-9`` -> "exit status -9 (killed by SIGKILL)": Popen's negative codes are the signal that ended it."""
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"exit status {returncode} (killed by {signal.Signals(-returncode).name})"
    return f"exit status {returncode}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a COREBA model repository on 127.0.0.1 until Ctrl-C.")
    parser.add_argument("--repository", required=True, type=Path)
    parser.add_argument("--models", nargs="*", default=[SERVED],
                        help="models to load (an ensemble loads its steps); none given: every model")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness")
    args = parser.parse_args(argv)
    server = TritonServer(args.repository, args.models or None, args.http_port, args.grpc_port, args.timeout)
    try:
        server.start()
    except ServerStartError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"ready: HTTP {server.http_url}, gRPC {server.grpc_url}, models {args.models or 'all'} "
          f"(PID {server.process.pid}); Ctrl-C stops it", flush=True)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    pid, returncode = server.process.pid, None
    try:
        while not stop["now"] and (returncode := server.process.poll()) is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    if returncode is None:
        server.stop()
        return 0
    tail = server.log_tail()  # before stop() removes the working folder with the log
    server.stop()
    print(f"error: tritonserver (PID {pid}) died with {describe_exit(returncode)}; the end of its log:\n{tail}",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

