"""Does the interleaved load test (:mod:`serving.interleaved`) flatter the served side? Usage::

    python -m benchmarks.interleave_bias --repository artifacts/model_repository [--pairs 12] [--transport shm]

At concurrency 8 each engine block there runs right after a served burst; if the server's threads were still
busy or spinning then, the engine would be timed slow and the served/engine ratio would look better than it is.
This times the same engine block (B=8, first runs not kept) right after a burst and right after an idle pause
of the same length, alternating, and prints the two medians: they should agree within the machine's noise.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from coreba.engines.onnxruntime_engine import OnnxRuntimeEngine
from serving.baseline import BASELINE_ENGINE
from serving.client import CorebaClient
from serving.engine_timing import stack_requests
from serving.interleaved import alternate, burst, timed_calls
from serving.launcher import TritonServer
from serving.perf import layout_of
from serving.perf_analyzer import make_requests
from serving.spec import ONNX_FILENAME, SERVED


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, required=True, help="build_repository with --baseline")
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--transport", choices=("socket", "shm"), default="shm")
    parser.add_argument("--burst-s", type=float, default=1.5)
    args = parser.parse_args(argv)
    requests = make_requests(layout_of(args.repository), 8)
    engine = OnnxRuntimeEngine(args.repository / BASELINE_ENGINE / "1" / ONNX_FILENAME, provider="cpu",
                               graph_optimization="all", threads=len(os.sched_getaffinity(0)))
    feeds = stack_requests(requests, 8, engine.input_names)
    arrays = [{name: value[None] for name, value in request.items()} for request in requests]
    with ExitStack() as stack:
        server = stack.enter_context(TritonServer(args.repository, models=(SERVED,), startup_timeout_s=300))
        clients = [stack.enter_context(CorebaClient(server.grpc_url, "grpc", shared_memory=args.transport == "shm"))
                   for _ in range(8)]
        served = burst(clients, arrays, stack.enter_context(ThreadPoolExecutor(8)), 0.3, args.burst_s - 0.3)
        engine_block = timed_calls(lambda i: engine.session.run(None, feeds[0]), 6, 2)

        def after_burst(number: int) -> list[float]:
            served(number)
            return engine_block(number)

        def after_pause(number: int) -> list[float]:
            time.sleep(args.burst_s)
            return engine_block(number)

        after_burst(0)  # warm-up
        bursts, pauses = alternate(after_burst, after_pause, args.pairs)
    print(f"engine B=8 run, median: {np.median(np.concatenate(bursts)):.1f} ms right after a served burst, "
          f"{np.median(np.concatenate(pauses)):.1f} ms right after a {args.burst_s} s pause ({args.pairs} pairs, "
          f"{args.transport})")


if __name__ == "__main__":
    main()
