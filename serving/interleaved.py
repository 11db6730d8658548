"""Concurrency 1 without the machine's drift: the engine and the served model timed in alternating short blocks.

perf_analyzer's concurrency-1 run lasts tens of seconds and the engine blocks around it are timed before and
after; on a VM whose speed drifts by a third within a minute, the ratio of the two then carries that drift. Here
the two are timed a fraction of a second apart, over and over: a block of ``block`` engine calls (ONNX Runtime
in this process, on every core), then a block of ``block`` lone requests through the project's client (so the
client's own work is counted too), the order swapped every pair so neither side always goes first. The first
``discard`` calls of each block are not kept: they pay for the switch (the other side's thread pool still
spinning, caches taken over); the rest run back to back and warm, as in an engine block and as perf_analyzer
sends them. Each pair gives a ratio of the medians of its two blocks; the figure is served median / engine
median over all kept calls, with the pairs' p10-p90 beside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from coreba.engines.onnxruntime_engine import OnnxRuntimeEngine
from serving.client import CorebaClient
from serving.engine_timing import stack_requests
from serving.spec import SERVED

Blocks = list[list[float]]  # the kept milliseconds of each block, block by block


@dataclass
class InterleavedLatency:
    transport: str  # "socket" or "shm"
    engine_blocks: Blocks = field(default_factory=list)  # ms of each kept call, block by block
    served_blocks: Blocks = field(default_factory=list)

    @property
    def engine_median_ms(self) -> float:
        return float(np.median(np.concatenate(self.engine_blocks)))

    @property
    def served_median_ms(self) -> float:
        return float(np.median(np.concatenate(self.served_blocks)))

    @property
    def ratio(self) -> float:
        """Served median / engine median: what issue 12's concurrency-1 target holds against 1.2."""
        return self.served_median_ms / self.engine_median_ms

    def pair_ratios(self) -> np.ndarray:
        return np.array([np.median(s) / np.median(e) for e, s in zip(self.engine_blocks, self.served_blocks)])

    def summary(self) -> str:
        pairs = self.pair_ratios()
        return (f"{self.transport}: engine B=1 median {self.engine_median_ms:.2f} ms, served p50 "
                f"{self.served_median_ms:.2f} ms -> {self.ratio:.2f}x ({len(pairs)} pairs of blocks, each pair "
                f"p10-p90 {np.percentile(pairs, 10):.2f}-{np.percentile(pairs, 90):.2f}x)")


def alternate(engine_call: Callable[[int], object], served_call: Callable[[int], object], pairs: int, block: int,
              discard: int, timer: Callable[[], float] = time.perf_counter) -> tuple[Blocks, Blocks]:
    """``pairs`` pairs of blocks, engine first in even pairs and served first in odd ones; each call gets the index
    of the request to send. Returns the kept milliseconds of every engine block and every served block."""
    if pairs < 1 or block <= discard or discard < 0:
        raise ValueError(f"need pairs >= 1 and block > discard >= 0, got pairs={pairs} block={block} "
                         f"discard={discard}")
    engine_blocks: Blocks = []
    served_blocks: Blocks = []
    sides = ((engine_call, engine_blocks), (served_call, served_blocks))
    for pair in range(pairs):
        for call, blocks in sides if pair % 2 == 0 else sides[::-1]:
            kept = []
            for i in range(block):
                start = timer()
                call(pair * block + i)
                if i >= discard:
                    kept.append((timer() - start) * 1000.0)
            blocks.append(kept)
    return engine_blocks, served_blocks


def interleaved_latency(engine_onnx: Path, url: str, protocol: str, transport: str,
                        requests: Sequence[dict[str, np.ndarray]], threads: int, pairs: int = 40, block: int = 6,
                        discard: int = 2, model: str = SERVED) -> InterleavedLatency:
    """Time ``engine_onnx`` here (B=1, ``threads`` threads) and ``model`` at ``url`` (lone requests through
    :class:`serving.client.CorebaClient`, shared memory if ``transport == "shm"``) in alternating blocks, on the
    same ``requests`` (perf_analyzer's, one query each)."""
    engine = OnnxRuntimeEngine(engine_onnx, provider="cpu", graph_optimization="all", threads=threads)
    feeds = stack_requests(list(requests), 1, engine.input_names)
    arrays = [{name: value[None] for name, value in request.items()} for request in requests]
    with CorebaClient(url, protocol=protocol, model=model, shared_memory=transport == "shm") as client:
        def served(i: int) -> None:
            client.infer(arrays[i % len(arrays)])

        def engine_run(i: int) -> None:
            engine.session.run(None, feeds[i % len(feeds)])

        alternate(engine_run, served, 1, block, 0)  # warm-up: both sides' first calls (sessions, connections)
        engine_blocks, served_blocks = alternate(engine_run, served, pairs, block, discard)
    return InterleavedLatency(transport, engine_blocks, served_blocks)
