"""Load test of the served paths beside the engine's own speed, in ONE run on one machine. Usage::

    python -m serving.perf --repository artifacts/model_repository [--concurrency 1 8] [--runs old:socket ...]

1. Engine block: ONNX Runtime called directly (:mod:`serving.engine_timing`) on the raw graph (the baseline
   engine's file) and on the end-to-end graph (``coreba``'s), B=1 median and B=8 throughput, with every core of
   the machine (the engine at its best, whatever the served model's instances and threads: a repository with
   two 1-thread instances is still compared with the 2-thread engine) and the requests perf_analyzer sends.
2. Served runs (:mod:`serving.perf_analyzer`), one server for all: ``old`` = the two-step baseline ensemble
   (``coreba_baseline``, written by ``build_repository --baseline``), ``new`` = the one-step model ``coreba``;
   each through the socket, or with its tensors in system shared memory (``shm``); at each concurrency. Every
   run reports the server's time model by model (queue, compute input, compute infer, compute output).
   After EACH served run, an engine block on the raw graph (B=1 and B=8, a few seconds): every served run is
   held against the two engine blocks around it (the faster figure of the two), timed within a minute of it.
3. The full engine block again at the end.
4. Each path, transport and concurrency once more, interleaved (:mod:`serving.interleaved`): the engine and
   the served model through the project's client in alternating blocks about a second apart, which the
   machine's drift cannot come between (``--pairs 0`` skips it).

``--rounds N`` repeats the served runs N times and each target is judged on the median over the rounds. This
VM's speed drifts by up to a third within minutes: an engine figure timed minutes away from a served run can
be taken in a fast minute and the run in a slow one (or the reverse); the engine blocks next to each run and
the rounds bound that error instead of betting on it.

Printed and written to ``<output>/perf.md`` / ``perf.json``: the tables, the machine's load (``uptime``) before
and after, and the two targets of issue 12: served p50 at concurrency 1 <= 1.2 x the engine's B=1 median;
throughput at concurrency 8 >= 90% of the engine's B=8 throughput. ``--profile-execute DIR`` also writes a
cProfile of each Python model's ``execute`` (:class:`serving.backend_io.ExecuteProfiler`) and its summary.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pstats
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from serving.baseline import BASELINE, BASELINE_ENGINE
from serving.client import InputLayout
from serving.config_check import read_config
from serving.engine_timing import EngineTiming, time_engine
from serving.interleaved import Interleaved, interleaved
from serving.launcher import TritonServer
from serving.perf_analyzer import (
    TRANSPORTS,
    PerfRun,
    UnstableMeasurement,
    ensure_perf_analyzer,
    library_shims,
    make_requests,
    perf_env,
    run_perf_analyzer,
    write_input_data,
)
from serving.spec import ONNX_FILENAME, PROFILE_ENV, SERVED

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VENV = REPO_ROOT / "artifacts" / "venv-perf"
DEFAULT_OUTPUT = REPO_ROOT / "artifacts" / "perf"
PATHS = {"old": BASELINE, "new": SERVED}
DEFAULT_RUNS = ("old:socket", "new:socket", "new:shm")
LATENCY_TARGET, THROUGHPUT_TARGET = 1.2, 0.9  # issue 12


def layout_of(repository: Path) -> InputLayout:
    """The padded lengths and dims from the served model's config.pbtxt (no server needed)."""
    dims = {t.name: list(t.dims) for t in read_config(repository / SERVED).input}
    return InputLayout(dims["video_feats"][0], dims["video_feats"][1], dims["text_feats"][0], dims["text_feats"][1])


def served_threads(repository: Path) -> int:
    """The ONNX Runtime threads of one ``coreba`` instance, as its model.py chooses them."""
    config = read_config(repository / SERVED)
    given = int(config.parameters["intra_op_threads"].string_value or 0)
    instances = sum(group.count or 1 for group in config.instance_group) or 1
    return given or max(1, len(os.sched_getaffinity(0)) // instances)


def engine_block(repository: Path, requests: list, threads: int, budget_s: float,
                 graphs: tuple[str, ...] = ("raw", "end_to_end")) -> list[EngineTiming]:
    paths = {"raw": repository / BASELINE_ENGINE / "1" / ONNX_FILENAME, "end_to_end": repository / SERVED / "1" /
             ONNX_FILENAME}
    return [time_engine(paths[graph], graph, requests, batch, threads, budget_s)
            for graph in graphs if paths[graph].is_file() for batch in (1, 8)]


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (what ``uptime`` prints): other jobs on the machine."""
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.is_file() else "unknown"


def measure_served(args: argparse.Namespace, url: str, binary: Path, env: dict[str, str], input_data: Path,
                   path: str, transport: str, concurrency: int) -> PerfRun:
    """One perf_analyzer run, retried once if it does not settle, then reported flagged as unstable."""
    for attempt in range(2):  # one retry: a neighbour's burst on a shared machine can spoil a run
        try:
            run = run_perf_analyzer(binary, env, url, args.protocol, PATHS[path], transport, concurrency,
                                    input_data, args.output, args.measurement_interval, args.stability,
                                    args.max_trials)
            break
        except UnstableMeasurement as err:
            print(f"{path}/{transport} c{concurrency}: {err} (attempt {attempt + 1})", flush=True)
    else:  # reported without the stability requirement, flagged
        run = run_perf_analyzer(binary, env, url, args.protocol, PATHS[path], transport, concurrency,
                                input_data, args.output, args.measurement_interval, 100, 3)
        run.stable = False
    print(f"{path}/{transport} c{concurrency}: {run.throughput:.1f} infer/s, p50 {run.p50_ms:.2f} ms, "
          f"server {run.server_ms:.2f} ms", flush=True)
    return run


def engine_table(blocks: list[list[EngineTiming]]) -> str:
    """One row per engine figure, one value per block (in the order they were timed; "-": not in that block)."""
    names = " / ".join(str(i + 1) for i in range(len(blocks)))
    lines = [f"| engine (ONNX Runtime, direct) | B | median ms (block {names}) | p90 ms (max) "
             f"| queries/s (block {names}) |",
             "|---|---:|---:|---:|---:|"]
    keys = list(dict.fromkeys((t.graph, t.batch) for block in blocks for t in block))
    for graph, batch in keys:
        row = [next((t for t in block if (t.graph, t.batch) == (graph, batch)), None) for block in blocks]
        medians = " / ".join(f"{t.median_ms:.2f}" if t else "-" for t in row)
        rates = " / ".join(f"{t.queries_per_s:.1f}" if t else "-" for t in row)
        lines.append(f"| {graph} graph | {batch} | {medians} | {max(t.p90_ms for t in row if t):.2f} | {rates} |")
    return "\n".join(lines)


def path_name(run: PerfRun) -> str:
    return next(name for name, model in PATHS.items() if model == run.model)


def served_table(rounds: list[list[PerfRun]]) -> str:
    lines = ["| round | path | transport | conc. | infer/s | p50 ms | p90 ms | p99 ms | avg ms | server queue "
             "| compute input | compute infer | compute output | outside the server | engine batch |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for number, r in ((i + 1, r) for i, runs in enumerate(rounds) for r in runs):
        flag = " (unstable)" if not r.stable else ""
        lines.append(f"| {number} | {path_name(r)} | {r.transport} | {r.concurrency}{flag} | {r.throughput:.1f} | "
                     f"{r.p50_ms:.2f} | {r.p90_ms:.2f} | {r.p99_ms:.2f} | {r.avg_ms:.2f} | {r.total('queue_ms'):.2f} | "
                     f"{r.total('compute_input_ms'):.2f} | {r.total('compute_infer_ms'):.2f} | "
                     f"{r.total('compute_output_ms'):.2f} | {r.avg_ms - r.server_ms:.2f} | {r.steps[0].batch:.2f} |")
    return "\n".join(lines)


def step_table(runs: list[PerfRun]) -> str:
    """Per model, for the runs that have more than one step (the baseline ensemble)."""
    lines = ["| path | transport | conc. | model | queue | compute input | compute infer | compute output | batch |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in runs:
        for m in r.steps if len(r.models) > 1 else ():
            lines.append(f"| {path_name(r)} | {r.transport} | {r.concurrency} | {m.model} | {m.queue_ms:.2f} | "
                         f"{m.compute_input_ms:.2f} | {m.compute_infer_ms:.2f} | {m.compute_output_ms:.2f} | "
                         f"{m.batch:.2f} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def references(engine: list[EngineTiming]) -> tuple[float, float]:
    """The engine figures a served run is held against: the raw graph's best B=1 median and best B=8
    throughput (the faster graph: the end-to-end graph's few more ops cost a little)."""
    raw = [e for e in engine if e.graph == "raw"] or engine
    return min(e.median_ms for e in raw if e.batch == 1), max(e.queries_per_s for e in raw if e.batch == 8)


def targets(blocks: list[list[EngineTiming]], rounds: list[list[PerfRun]]) -> str:
    """The issue's two ratios for every served path and transport. ``blocks`` are the engine blocks in the order
    they were timed, one before the first served run and one after each (``rounds`` flattened); each run is
    held against the faster figure of the blocks before and after it; the median over the rounds is judged."""
    runs = [(number, r) for number, runs_of_round in enumerate(rounds) for r in runs_of_round]
    if len(blocks) != len(runs) + 1:
        raise ValueError(f"{len(runs)} served runs need {len(runs) + 1} engine blocks around them, got {len(blocks)}")
    ratios: dict[tuple[str, str, int], list[float]] = {}
    lines = []
    for index, (number, r) in enumerate(runs):
        if r.concurrency not in (1, 8):
            continue
        b1, b8 = references(blocks[index] + blocks[index + 1])
        value = r.p50_ms / b1 if r.concurrency == 1 else r.throughput / b8
        reference = f"B=1 median {b1:.2f} ms" if r.concurrency == 1 else f"B=8 {b8:.1f} queries/s"
        label = f"round {number + 1}, " if len(rounds) > 1 else ""
        lines.append(f"{label}{path_name(r)}/{r.transport} c{r.concurrency}: engine (raw graph, blocks {index + 1} "
                     f"and {index + 2}) {reference} -> {_ratio_text(r.concurrency, value)}")
        ratios.setdefault((path_name(r), r.transport, r.concurrency), []).append(value)
    for (path, transport, concurrency), values in ratios.items():
        median = float(np.median(values))
        each = f" (rounds: {', '.join(_ratio_text(concurrency, v) for v in values)})" if len(values) > 1 else ""
        if concurrency == 1:
            verdict = "meets" if median <= LATENCY_TARGET else "misses"
            lines.append(f"{path}/{transport}: p50 at concurrency 1 = {median:.2f} x the engine's B=1 median{each} "
                         f"({verdict} <= {LATENCY_TARGET})")
        else:
            verdict = "meets" if median >= THROUGHPUT_TARGET else "misses"
            lines.append(f"{path}/{transport}: throughput at concurrency 8 = {100 * median:.0f}% of the engine's "
                         f"B=8{each} ({verdict} >= {100 * THROUGHPUT_TARGET:.0f}%)")
    return "\n".join(lines)


def interleaved_targets(results: list[tuple[str, Interleaved]]) -> str:
    """The issue's targets judged on each interleaved measurement (path, its result)."""
    lines = ["Interleaved (serving.interleaved: the raw graph here and the served model through serving.client, "
             "in alternating warm blocks):"] if results else []
    for path, result in results:
        if result.concurrency == 1:
            verdict = f"{'meets' if result.ratio <= LATENCY_TARGET else 'misses'} <= {LATENCY_TARGET}"
        else:
            verdict = f"{'meets' if result.ratio >= THROUGHPUT_TARGET else 'misses'} >= {100 * THROUGHPUT_TARGET:.0f}%"
        lines.append(f"{path}/{result.summary()} ({verdict})")
    return "\n".join(lines)


def _ratio_text(concurrency: int, value: float) -> str:
    return f"{value:.2f}x" if concurrency == 1 else f"{100 * value:.0f}%"


def stream_summaries(log: str) -> list[str]:
    """The served model's CPU-streams summaries (:class:`serving.cpu_streams.StreamStats`), which it logs when the
    server unloads it: the batches the streams really ran."""
    return [line[line.index("coreba"):].rstrip('"') for line in log.splitlines()
            if "cpu streams:" in line and "coreba" in line]


def profile_summary(folder: Path, top: int = 12) -> str:
    """The heaviest functions (cumulative time) of each model's execute() profile."""
    parts = []
    for path in sorted(folder.glob("*.prof")):
        out = io.StringIO()
        pstats.Stats(str(path), stream=out).sort_stats("cumulative").print_stats(top)
        parts.append(f"### {path.name}\n{out.getvalue()}")
    return "\n".join(parts)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--repository", required=True, type=Path,
                        help="model repository (build_repository, with --baseline for the old path)")
    parser.add_argument("--url", default=None, help="a running server (host:port for --protocol); else one is "
                                                    "started on 127.0.0.1 for the run")
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS),
                        help=f"path:transport pairs; path in {tuple(PATHS)}, transport in {TRANSPORTS}")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--measurement-interval", type=int, default=5000, help="ms per measurement window")
    parser.add_argument("--stability", type=int, default=25, help="stability percentage (-s)")
    parser.add_argument("--max-trials", type=int, default=10, help="max measurement windows per run")
    parser.add_argument("--requests", type=int, default=8, help="distinct requests in the input data")
    parser.add_argument("--engine-budget", type=float, default=3.0, help="seconds per engine measurement")
    parser.add_argument("--rounds", type=int, default=1,
                        help="served blocks, each followed by an engine block; targets judged on the median")
    parser.add_argument("--pairs", type=int, default=40,
                        help="interleaved pairs of blocks per path, transport and concurrency (0: none)")
    parser.add_argument("--pair-block", type=int, default=6,
                        help="calls per interleaved block (per client at concurrency > 1); the first 2 not kept")
    parser.add_argument("--profile-execute", type=Path, default=None, metavar="DIR",
                        help="cProfile each Python model's execute() into DIR (a server started here only)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--perf-venv", type=Path, default=DEFAULT_VENV)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    if args.pairs < 0 or args.pair_block < 4:
        parser.error(f"--pairs must be >= 0 and --pair-block >= 4, got {args.pairs} and {args.pair_block}")
    for run in args.runs:
        path, _, transport = run.partition(":")
        if path not in PATHS or transport not in TRANSPORTS:
            parser.error(f"--runs {run!r}: expected path:transport with path in {tuple(PATHS)}, transport in "
                         f"{TRANSPORTS}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = [tuple(run.split(":")) for run in args.runs]
    missing = sorted({PATHS[p] for p, _ in runs if not (args.repository / PATHS[p] / "config.pbtxt").is_file()})
    if missing:
        print(f"error: {args.repository} has no {missing} (the old path needs build_repository --baseline RAW.onnx)",
              file=sys.stderr)
        return 1
    args.output.mkdir(parents=True, exist_ok=True)
    binary = ensure_perf_analyzer(args.perf_venv)
    env = perf_env(library_shims(args.output / "lib-shims"))
    input_data = args.output / "input_data.json"
    requests = make_requests(layout_of(args.repository), args.requests)
    write_input_data(input_data, requests)
    threads = len(os.sched_getaffinity(0))  # the reference: the engine with the whole machine
    load_before = load_average()
    print(f"load average before: {load_before}; {len(requests)} requests; engine block on {threads} threads, "
          f"served instances on {served_threads(args.repository)} each", flush=True)
    blocks = [engine_block(args.repository, requests, threads, args.engine_budget)]
    rounds: list[list[PerfRun]] = []
    interleaved_runs: list[tuple[str, Interleaved]] = []

    def measure_rounds(url: str) -> None:
        for number in range(args.rounds):
            if args.rounds > 1:
                print(f"round {number + 1} of {args.rounds}", flush=True)
            rounds.append([])
            for path, transport in runs:
                for concurrency in args.concurrency:
                    rounds[-1].append(measure_served(args, url, binary, env, input_data, path, transport, concurrency))
                    blocks.append(engine_block(args.repository, requests, threads, args.engine_budget, ("raw",)))
        blocks[-1] += engine_block(args.repository, requests, threads, args.engine_budget, ("end_to_end",))
        for path, transport in runs if args.pairs else ():
            for concurrency in args.concurrency:
                result = interleaved(args.repository / BASELINE_ENGINE / "1" / ONNX_FILENAME, url, args.protocol,
                                     transport, concurrency, requests, threads, args.pairs, args.pair_block,
                                     model=PATHS[path])
                print(f"interleaved {path}/{result.summary()}", flush=True)
                interleaved_runs.append((path, result))

    streams_lines: list[str] = []
    if args.url:
        measure_rounds(args.url)
    else:
        if args.profile_execute:
            os.environ[PROFILE_ENV] = str(args.profile_execute.resolve())
        models = tuple(dict.fromkeys(PATHS[p] for p, _ in runs))
        with TritonServer(args.repository, models=models, startup_timeout_s=300) as server:
            measure_rounds(server.grpc_url if args.protocol == "grpc" else server.http_url)
        streams_lines = stream_summaries(server.last_log)
    load_after = load_average()
    results = [r for runs_of_round in rounds for r in runs_of_round]
    report = "\n\n".join(part for part in (
        f"load average (1, 5, 15 min) before: {load_before}, after: {load_after}",
        engine_table(blocks), served_table(rounds), step_table(results), targets(blocks, rounds),
        interleaved_targets(interleaved_runs)) if part)
    if streams_lines:
        report += ("\n\nCPU streams over the server's life (Triton's compute infer above covers only execute(), "
                   "which hands batches to them):\n" + "\n".join(streams_lines))
    if args.profile_execute and not args.url:
        report += "\n\n## execute() profiles\n" + profile_summary(args.profile_execute)
    (args.output / "perf.md").write_text(report + "\n")
    (args.output / "perf.json").write_text(json.dumps({
        "load_before": load_before, "load_after": load_after,
        "engine_blocks": [[asdict(e) for e in block] for block in blocks],
        "served": [{"round": number + 1, **asdict(r)} for number, runs_of_round in enumerate(rounds)
                   for r in runs_of_round],
        "interleaved": [{"path": path, **asdict(r)} for path, r in interleaved_runs]}, indent=1))
    print(report)
    print(f"written: {args.output / 'perf.md'}, {args.output / 'perf.json'}")
    return 0 if all(r.stable for r in results) else 2


if __name__ == "__main__":
    sys.exit(main())
