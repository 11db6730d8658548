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
from pathlib import Path

import numpy as np

from serving.baseline import BASELINE_ENGINE
from serving.interleaved import alternate, engine_and_served_blocks
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
    engine_onnx = args.repository / BASELINE_ENGINE / "1" / ONNX_FILENAME
    with (TritonServer(args.repository, models=(SERVED,), startup_timeout_s=300) as server,
          engine_and_served_blocks(engine_onnx, server.grpc_url, "grpc", args.transport, 8, requests,
                                   len(os.sched_getaffinity(0)), burst_s=args.burst_s) as (engine_block, served)):
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
