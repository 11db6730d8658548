"""The engine's own speed, in the load test's run: ONNX Runtime called directly on the served graphs, with the
requests perf_analyzer sends and the threads the served model uses, so that a served figure can be read as a
multiple of what the engine alone needs on the same machine at the same time.

B=1: the median latency of one query (the requests in turn). B=8 (the batch the server builds under load):
all 8 requests in one call; throughput = 8 / its median.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coreba.engines.onnxruntime_engine import OnnxRuntimeEngine


@dataclass
class EngineTiming:
    graph: str  # "raw" or "end_to_end"
    batch: int
    median_ms: float
    p90_ms: float
    runs: int

    @property
    def queries_per_s(self) -> float:
        return self.batch / (self.median_ms / 1000.0)


def stack_requests(requests: list[dict[str, np.ndarray]], batch: int, names: list[str]) -> list[dict[str, np.ndarray]]:
    """Batches of ``batch`` requests (cycling through them), each input stacked along a new batch axis;
    ``duration`` flattened to the graph's (B,)."""
    groups = [[requests[(start + i) % len(requests)] for i in range(batch)] for start in range(0, len(requests), batch)]
    join = {name: np.concatenate if name == "duration" else np.stack for name in names}  # duration: (1,) each
    return [{name: np.ascontiguousarray(join[name]([r[name] for r in group])) for name in names} for group in groups]


def time_engine(onnx_path: Path, graph: str, requests: list[dict[str, np.ndarray]], batch: int, threads: int,
                budget_s: float = 3.0, min_runs: int = 15, warmup: int = 3) -> EngineTiming:
    """Median and p90 of ``session.run`` over batches of ``batch`` requests: warm-up runs, then as many timed runs
    as fit ``budget_s`` (at least ``min_runs``)."""
    engine = OnnxRuntimeEngine(onnx_path, provider="cpu", graph_optimization="all", threads=threads)
    feeds = stack_requests(requests, batch, engine.input_names)
    for i in range(warmup):
        engine.session.run(None, feeds[i % len(feeds)])
    times, deadline = [], time.perf_counter() + budget_s
    while len(times) < min_runs or time.perf_counter() < deadline:
        start = time.perf_counter()
        engine.session.run(None, feeds[len(times) % len(feeds)])
        times.append((time.perf_counter() - start) * 1000.0)
    return EngineTiming(graph, batch, float(np.median(times)), float(np.percentile(times, 90)), len(times))
