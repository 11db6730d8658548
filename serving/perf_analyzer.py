"""perf_analyzer 2.51.0 for the load test: where it lives, the requests it sends, one bounded run, and what it
prints about the server's time, model by model.

* perf_analyzer lives in its own environment (default ``artifacts/venv-perf``, created on first use with
  ``pip install tritonclient[all]==2.51.0``): newer releases need a newer glibc, and the server is 2.51.0.
  It needs ``libb64.so.0d`` and ``libcudart.so.12``; nvidia-pytriton bundles both under hashed names in
  ``nvidia_pytriton.libs``, so a folder of symlinks with the plain names goes first on LD_LIBRARY_PATH.
* Requests of realistic lengths (QVHighlights videos last up to 150 s = the maximum clips, most of them that
  long; queries are short sentences): half the videos at the maximum, the rest between 60% and 100% of it;
  queries 30% to 70% of the token maximum; padded, with masks, exactly as :mod:`serving.client` sends them.
  The same requests feed the engine block of :mod:`serving.perf`.
* Each run is bounded: ``--measurement-interval`` per window, a stability percentage, at most ``--max-trials``
  windows. ``--shared-memory system`` puts inputs and outputs in system shared memory, as a same-host client
  of :mod:`serving.shared_memory` does.
* The server's time per model (queue, compute input, compute infer, compute output) comes from the summary
  perf_analyzer prints: for an ensemble, one block per composing model.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serving.client import InputLayout
from serving.launcher import wheel_libs
from serving.spec import DURATION, SERVED_INPUTS

PERF_ANALYZER_VERSION = "2.51.0"
SHIMS = {"libb64.so.0d": "libb64-*.so.0d", "libcudart.so.12": "libcudart-*.so.12*"}  # plain name -> bundled
TRANSPORTS = ("socket", "shm")  # the tensors travel through the gRPC/HTTP socket, or system shared memory


class UnstableMeasurement(RuntimeError):
    """perf_analyzer found no stable window within its trials."""


def ensure_perf_analyzer(venv: Path) -> Path:
    """``venv/bin/perf_analyzer``, creating the environment with tritonclient[all]==2.51.0 if needed."""
    binary = venv / "bin" / "perf_analyzer"
    if not binary.is_file():
        print(f"creating {venv} with tritonclient[all]=={PERF_ANALYZER_VERSION} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"tritonclient[all]=={PERF_ANALYZER_VERSION}"],
                       check=True, timeout=1200)
    return binary


def library_shims(target: Path) -> Path:
    """A folder of symlinks giving the wheel's bundled libraries the names perf_analyzer links against."""
    target.mkdir(parents=True, exist_ok=True)
    for name, pattern in SHIMS.items():
        matches = sorted(wheel_libs().glob(pattern))
        if not matches:
            raise FileNotFoundError(f"no {pattern} in {wheel_libs()} (is nvidia-pytriton 0.7.0 installed?)")
        link = target / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(matches[0])
    return target


def perf_env(shims: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(shims), str(wheel_libs()),
                                                         env.get("LD_LIBRARY_PATH", "")) if p)
    return env


def realistic_lengths(layout: InputLayout, count: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    clips = [layout.max_clips if i % 2 == 0 else int(rng.integers(max(1, int(0.6 * layout.max_clips)),
                                                                  layout.max_clips + 1)) for i in range(count)]
    low, high = max(1, int(0.3 * layout.max_tokens)), max(1, int(0.7 * layout.max_tokens))
    return [(c, int(rng.integers(low, high + 1))) for c in clips]


def make_requests(layout: InputLayout, count: int = 8, seed: int = 0,
                  clip_length: float = 2.0) -> list[dict[str, np.ndarray]]:
    """``count`` padded one-query requests (no batch axis), features rounded to 4 decimals as the JSON holds them."""
    rng = np.random.default_rng(seed)
    requests = []
    for clips, tokens in realistic_lengths(layout, count, rng):
        video = np.zeros((layout.max_clips, layout.video_dim), np.float32)
        video[:clips] = rng.standard_normal((clips, layout.video_dim)).round(4)
        text = np.zeros((layout.max_tokens, layout.text_dim), np.float32)
        text[:tokens] = rng.standard_normal((tokens, layout.text_dim)).round(4)
        requests.append({"video_feats": video, "video_mask": np.arange(layout.max_clips) < clips,
                         "text_feats": text, "text_mask": np.arange(layout.max_tokens) < tokens,
                         DURATION: np.array([clips * clip_length], np.float32)})
    return requests


def write_input_data(path: Path, requests: list[dict[str, np.ndarray]]) -> None:
    """perf_analyzer's ``--input-data`` JSON (no batch axis: perf_analyzer sends batch 1)."""
    data = [{name: {"content": request[name].ravel().tolist(), "shape": list(request[name].shape)}
             for name in SERVED_INPUTS} for request in requests]
    path.write_text(json.dumps({"data": data}))


@dataclass
class ModelTime:
    """One model's server-side time per request, averaged by perf_analyzer (milliseconds)."""

    model: str
    inferences: int
    executions: int
    queue_ms: float = 0.0
    compute_input_ms: float = 0.0
    compute_infer_ms: float = 0.0
    compute_output_ms: float = 0.0
    compute_ms: float = 0.0  # an ensemble reports only the sum over its steps
    overhead_ms: float = 0.0

    @property
    def batch(self) -> float:
        """Mean batch the model executed (inferences / executions)."""
        return self.inferences / max(1, self.executions)


@dataclass
class PerfRun:
    """One perf_analyzer run: client-side latency and throughput, and the server's time model by model."""

    model: str
    transport: str
    concurrency: int
    throughput: float  # inferences / s
    p50_ms: float
    p90_ms: float
    p99_ms: float
    avg_ms: float  # end to end, as the client sees it
    models: list[ModelTime] = field(default_factory=list)  # the called model first, then its steps
    stable: bool = True

    @property
    def steps(self) -> list[ModelTime]:
        """The models that computed: the composing models of an ensemble, else the model itself."""
        return self.models[1:] or self.models[:1]

    def total(self, part: str) -> float:
        return sum(getattr(m, part) for m in self.steps)

    @property
    def server_ms(self) -> float:
        """Queue and compute over every step."""
        return sum(self.total(p) for p in ("queue_ms", "compute_input_ms", "compute_infer_ms", "compute_output_ms"))


# "Server:" (the model called) or "<name>, version: <v>" (a composing model), its counts, then its latency split
SERVER_BLOCK = re.compile(r"^\s*(?:(?P<name>[\w.-]+), version: \S+|(?P<server>Server):)\s*\n"
                          r"\s*Inference count: (?P<inferences>\d+)\s*\n\s*Execution count: (?P<executions>\d+)\s*\n"
                          r"(?:\s*Successful request count: \d+\s*\n)?"
                          r"\s*Avg request latency: \d+ usec \((?P<parts>[^)]*)\)", re.MULTILINE)
PART = re.compile(r"([a-z][a-z ]*?) (\d+) usec")
PARTS = {"queue": "queue_ms", "compute input": "compute_input_ms", "compute infer": "compute_infer_ms",
         "compute output": "compute_output_ms", "compute": "compute_ms", "overhead": "overhead_ms"}


def parse_server_times(stdout: str, model: str) -> list[ModelTime]:
    """The called ``model``'s block, then one per composing model, from perf_analyzer's printed summary."""
    times = []
    for match in SERVER_BLOCK.finditer(stdout):
        time = ModelTime(model if match["server"] else match["name"], int(match["inferences"]),
                         int(match["executions"]))
        for part, usec in PART.findall(match["parts"]):
            setattr(time, PARTS[part.strip()], int(usec) / 1000.0)
        if not time.compute_ms:
            time.compute_ms = time.compute_input_ms + time.compute_infer_ms + time.compute_output_ms
        times.append(time)
    if not times or times[0].model != model:
        raise RuntimeError(f"perf_analyzer printed no server-side summary for {model!r}")
    return times


def _ms(row: dict[str, str], name: str) -> float:
    return float(row[name]) / 1000.0


def run_perf_analyzer(binary: Path, env: dict[str, str], url: str, protocol: str, model: str, transport: str,
                      concurrency: int, input_data: Path, workdir: Path, measurement_ms: int, stability: int,
                      max_trials: int) -> PerfRun:
    """One bounded run; raises :class:`UnstableMeasurement` if no window was stable."""
    stem = f"perf_{model}_{transport}_c{concurrency}"
    csv_path, log_path = workdir / f"{stem}.csv", workdir / f"{stem}.log"
    cmd = [str(binary), "-m", model, "-u", url, "-i", protocol, "--input-data", str(input_data),
           "--concurrency-range", f"{concurrency}:{concurrency}", "--measurement-interval", str(measurement_ms),
           "-s", str(stability), "--max-trials", str(max_trials), "-f", str(csv_path), "--verbose-csv"]
    if transport == "shm":
        cmd += ["--shared-memory", "system", "--output-shared-memory-size", str(1 << 16)]
    csv_path.unlink(missing_ok=True)
    timeout = 60 + 2 * max_trials * measurement_ms / 1000
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    log_path.write_text(" ".join(cmd) + "\n\n" + result.stdout + result.stderr)
    if result.returncode != 0 or not csv_path.is_file():
        if "stable" in result.stdout + result.stderr:
            raise UnstableMeasurement(f"{stem}: no stable window, see {log_path}")
        raise RuntimeError(f"perf_analyzer failed (exit {result.returncode}), see {log_path}:\n{result.stderr[-2000:]}")
    with open(csv_path) as handle:
        row = next(csv.DictReader(handle))
    return PerfRun(model, transport, concurrency, float(row["Inferences/Second"]), _ms(row, "p50 latency"),
                   _ms(row, "p90 latency"), _ms(row, "p99 latency"), _ms(row, "Avg latency"),
                   parse_server_times(result.stdout, model))
