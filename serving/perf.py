"""Load test of the served ensemble with perf_analyzer 2.51.0: latency percentiles, throughput, and the
server's own time against end-to-end latency, at each concurrency. Usage::

    python -m serving.perf --repository artifacts/model_repository [--concurrency 1 2 4 8] [--url HOST:PORT]

Without ``--url`` it starts a server on 127.0.0.1 (:class:`serving.launcher.TritonServer`) for the run.
Writes ``<output>/perf.csv`` and ``<output>/perf.md`` (the table), the input data and perf_analyzer's raw
CSV and log per concurrency.

* perf_analyzer lives in its own environment (default ``artifacts/venv-perf``, created on first use with
  ``pip install tritonclient[all]==2.51.0``): newer releases need a newer glibc, and the server is 2.51.0.
  It needs ``libb64.so.0d`` and ``libcudart.so.12``; nvidia-pytriton bundles both under hashed names in
  ``nvidia_pytriton.libs``, so a folder of symlinks with the plain names goes first on LD_LIBRARY_PATH.
* Input data: a JSON file of requests of realistic lengths (QVHighlights videos last up to 150 s = the
  maximum clips, most of them that long; queries are short sentences): half the videos at the maximum,
  the rest between 60% and 100% of it; queries 30% to 70% of the token maximum; padded, with masks,
  exactly as :mod:`serving.client` sends them.
* Each run is bounded: ``--measurement-interval`` per window, stability ``-s`` (25% on a 2-core machine,
  where the client shares the cores with the server), at most ``--max-trials`` windows; an unstable run is
  retried once, then reported as unstable instead of failing the whole table.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from serving.client import InputLayout
from serving.config_check import read_config
from serving.launcher import TritonServer, wheel_libs
from serving.spec import DURATION, ENSEMBLE

PERF_ANALYZER_VERSION = "2.51.0"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VENV = REPO_ROOT / "artifacts" / "venv-perf"
DEFAULT_OUTPUT = REPO_ROOT / "artifacts" / "perf"
SHIMS = {"libb64.so.0d": "libb64-*.so.0d", "libcudart.so.12": "libcudart-*.so.12*"}  # plain name -> bundled


@dataclass
class PerfRow:
    concurrency: int
    throughput: float  # inferences / s
    p50_ms: float
    p90_ms: float
    p99_ms: float
    avg_ms: float  # end-to-end, as the client sees it
    server_queue_ms: float  # summed over the ensemble's steps
    server_compute_ms: float  # compute input + infer + output, summed over the ensemble's steps
    engine_batch: float  # mean batch the engine model executed (inferences / executions)
    stable: bool = True

    @property
    def server_share(self) -> float:
        """Server time (queue + compute) as a fraction of the end-to-end latency."""
        return (self.server_queue_ms + self.server_compute_ms) / self.avg_ms if self.avg_ms else float("nan")


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


def write_input_data(path: Path, layout: InputLayout, count: int = 8, seed: int = 0,
                     clip_length: float = 2.0) -> list[tuple[int, int]]:
    """perf_analyzer's ``--input-data`` JSON: ``count`` padded requests (no batch dim: perf sends batch 1)."""
    rng = np.random.default_rng(seed)
    lengths = realistic_lengths(layout, count, rng)
    data = []
    for clips, tokens in lengths:
        video = np.zeros((layout.max_clips, layout.video_dim), np.float32)
        video[:clips] = rng.standard_normal((clips, layout.video_dim))
        text = np.zeros((layout.max_tokens, layout.text_dim), np.float32)
        text[:tokens] = rng.standard_normal((tokens, layout.text_dim))
        data.append({
            "video_feats": {"content": video.ravel().round(4).tolist(), "shape": list(video.shape)},
            "video_mask": {"content": (np.arange(layout.max_clips) < clips).tolist(), "shape": [layout.max_clips]},
            "text_feats": {"content": text.ravel().round(4).tolist(), "shape": list(text.shape)},
            "text_mask": {"content": (np.arange(layout.max_tokens) < tokens).tolist(), "shape": [layout.max_tokens]},
            DURATION: {"content": [clips * clip_length], "shape": [1]},
        })
    path.write_text(json.dumps({"data": data}))
    return lengths


def layout_of(repository: Path) -> InputLayout:
    """The padded lengths and dims from the ensemble's config.pbtxt (no server needed)."""
    dims = {t.name: list(t.dims) for t in read_config(repository / ENSEMBLE).input}
    return InputLayout(dims["video_feats"][0], dims["video_feats"][1], dims["text_feats"][0], dims["text_feats"][1])


def _us_to_ms(row: dict[str, str], *names: str) -> float:
    return sum(float(row[name]) for name in names) / 1000.0


# perf_analyzer's summary of the ensemble (its CSV's "Server Queue" misses the steps' queues in 2.51.0)
SERVER_LINE = re.compile(r"Server:\s*\n.*?Avg request latency: \d+ usec \(overhead \d+ usec \+ queue (\d+) usec "
                         r"\+ compute (\d+) usec\)", re.DOTALL)
ENGINE_BLOCK = re.compile(r"(coreba_(?:python|onnx|trt)), version: \S+\s*\n\s*Inference count: (\d+)\s*\n\s*"
                          r"Execution count: (\d+)")


def parse_server_times(stdout: str) -> tuple[float, float, float]:
    """(queue ms, compute ms, engine's mean batch) from perf_analyzer's printed summary."""
    server, engine = SERVER_LINE.search(stdout), ENGINE_BLOCK.search(stdout)
    if server is None or engine is None:
        raise RuntimeError("perf_analyzer printed no server-side summary for the ensemble")
    batch = int(engine.group(2)) / max(1, int(engine.group(3)))
    return int(server.group(1)) / 1000.0, int(server.group(2)) / 1000.0, batch


def run_perf_analyzer(binary: Path, env: dict[str, str], url: str, protocol: str, concurrency: int,
                      input_data: Path, workdir: Path, measurement_ms: int, stability: int,
                      max_trials: int) -> PerfRow | None:
    """One bounded perf_analyzer run at one concurrency; None if it found no stable measurement."""
    csv_path, log_path = workdir / f"perf_c{concurrency}.csv", workdir / f"perf_c{concurrency}.log"
    cmd = [str(binary), "-m", ENSEMBLE, "-u", url, "-i", protocol, "--input-data", str(input_data),
           "--concurrency-range", f"{concurrency}:{concurrency}", "--measurement-interval", str(measurement_ms),
           "-s", str(stability), "--max-trials", str(max_trials), "-f", str(csv_path), "--verbose-csv"]
    csv_path.unlink(missing_ok=True)
    timeout = 60 + 2 * max_trials * measurement_ms / 1000
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    log_path.write_text(" ".join(cmd) + "\n\n" + result.stdout + result.stderr)
    if result.returncode != 0 or not csv_path.is_file():
        if "stable" in result.stdout + result.stderr:
            return None
        raise RuntimeError(f"perf_analyzer failed (exit {result.returncode}), see {log_path}:\n{result.stderr[-2000:]}")
    with open(csv_path) as handle:
        row = next(csv.DictReader(handle))
    queue_ms, compute_ms, batch = parse_server_times(result.stdout)
    return PerfRow(concurrency=concurrency, throughput=float(row["Inferences/Second"]),
                   p50_ms=_us_to_ms(row, "p50 latency"), p90_ms=_us_to_ms(row, "p90 latency"),
                   p99_ms=_us_to_ms(row, "p99 latency"), avg_ms=_us_to_ms(row, "Avg latency"),
                   server_queue_ms=queue_ms, server_compute_ms=compute_ms, engine_batch=batch)


def markdown_table(rows: list[PerfRow]) -> str:
    lines = ["| concurrency | throughput (infer/s) | p50 (ms) | p90 (ms) | p99 (ms) | avg end-to-end (ms) "
             "| server queue (ms) | server compute (ms) | server share of end-to-end | engine batch (mean) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        flag = "" if r.stable else " (unstable)"
        lines.append(f"| {r.concurrency}{flag} | {r.throughput:.1f} | {r.p50_ms:.2f} | {r.p90_ms:.2f} | "
                     f"{r.p99_ms:.2f} | {r.avg_ms:.2f} | {r.server_queue_ms:.2f} | {r.server_compute_ms:.2f} | "
                     f"{100 * r.server_share:.0f}% | {r.engine_batch:.2f} |")
    return "\n".join(lines)


def write_results(rows: list[PerfRow], output: Path) -> str:
    with open(output / "perf.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*asdict(rows[0]), "server_share"])
        writer.writeheader()
        for r in rows:
            writer.writerow({**asdict(r), "server_share": round(r.server_share, 4)})
    table = markdown_table(rows)
    (output / "perf.md").write_text(table + "\n")
    return table


def measure(args: argparse.Namespace, url: str, binary: Path, env: dict[str, str], input_data: Path) -> list[PerfRow]:
    rows = []
    for concurrency in args.concurrency:
        row = None
        for attempt in range(2):  # one retry: a neighbour's burst on a shared machine can spoil a run
            row = run_perf_analyzer(binary, env, url, args.protocol, concurrency, input_data, args.output,
                                    args.measurement_interval, args.stability, args.max_trials)
            if row is not None:
                break
            print(f"concurrency {concurrency}: no stable measurement (attempt {attempt + 1})", flush=True)
        if row is None:  # report it, measured without the stability requirement, flagged
            row = run_perf_analyzer(binary, env, url, args.protocol, concurrency, input_data, args.output,
                                    args.measurement_interval, 100, 3)
            if row is not None:
                row.stable = False
        if row is not None:
            rows.append(row)
            print(f"concurrency {concurrency}: {row.throughput:.1f} infer/s, p50 {row.p50_ms:.2f} ms, "
                  f"p99 {row.p99_ms:.2f} ms", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=f"Load-test the COREBA ensemble with perf_analyzer "
                                                 f"{PERF_ANALYZER_VERSION}.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--repository", required=True, type=Path, help="model repository (build_repository)")
    parser.add_argument("--url", default=None, help="a running server (host:port for --protocol); else one is "
                                                    "started on 127.0.0.1 for the run")
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--measurement-interval", type=int, default=5000, help="ms per measurement window")
    parser.add_argument("--stability", type=int, default=25, help="stability percentage (-s)")
    parser.add_argument("--max-trials", type=int, default=10, help="max measurement windows per run")
    parser.add_argument("--requests", type=int, default=8, help="distinct requests in the input data")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--perf-venv", type=Path, default=DEFAULT_VENV)
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    binary = ensure_perf_analyzer(args.perf_venv)
    env = perf_env(library_shims(args.output / "lib-shims"))
    input_data = args.output / "input_data.json"
    lengths = write_input_data(input_data, layout_of(args.repository), args.requests)
    print(f"input data: {len(lengths)} requests, (clips, tokens) = {lengths}", flush=True)
    if args.url:
        rows = measure(args, args.url, binary, env, input_data)
    else:
        with TritonServer(args.repository) as server:
            rows = measure(args, server.grpc_url if args.protocol == "grpc" else server.http_url, binary, env,
                           input_data)
    if not rows:
        print("error: no measurement", file=sys.stderr)
        return 1
    print(write_results(rows, args.output))
    print(f"written: {args.output / 'perf.csv'}, {args.output / 'perf.md'}")
    return 0 if all(r.stable for r in rows) else 2


if __name__ == "__main__":
    sys.exit(main())
