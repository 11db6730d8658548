"""Issue 12's two ratios without the machine's drift: the engine and the served model in alternating short blocks.

perf_analyzer's runs last tens of seconds and the engine blocks around them are timed before and after; on a VM
whose speed drifts by a third within a minute, the ratio of the two then carries that drift. Here the two sides
are timed about a second apart, over and over, the order swapped every pair so neither side always goes first:

* concurrency 1: a block of ``block`` engine runs at B=1 (ONNX Runtime in this process, on every core), then a
  block of ``block`` lone requests through the project's client (its own work is counted too). Figure: served
  median / engine median over all kept calls.
* concurrency 8: a block of ``block`` engine runs at B=8, then a burst of 8 clients (one thread and one
  connection each, as perf_analyzer's 8 in flight), each sending its next request as soon as it has its answer,
  for ``burst_s`` seconds; the answers of its first ``warm_s`` are not counted (perf_analyzer's windows the
  same way). Figure: median burst throughput / (8 / engine's median B=8 run).

The first ``discard`` calls of every block are not kept: they pay for the switch (the other side's thread pool
still spinning, caches taken over); the rest run back to back and warm, as in an engine block and as
perf_analyzer sends them. Each pair also gives its own ratio; their p10-p90 is printed beside the figure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from coreba.engines.onnxruntime_engine import OnnxRuntimeEngine
from serving.client import CorebaClient
from serving.engine_timing import stack_requests
from serving.spec import SERVED

Blocks = list[list[float]]  # what each block kept, block by block
Timer = Callable[[], float]
BlockRun = Callable[[int], list[float]]  # runs block number n, returns what it kept


@dataclass
class Interleaved:
    """``engine_blocks``: ms of each kept engine run; ``served_blocks``: ms of each kept lone request
    (concurrency 1) or the burst's queries/s (concurrency 8, one value a block)."""

    transport: str  # "socket" or "shm"
    concurrency: int  # 1 or 8
    engine_blocks: Blocks = field(default_factory=list)
    served_blocks: Blocks = field(default_factory=list)

    def _engine(self, blocks: Blocks) -> float:
        """Median ms at B=1, or queries/s of the median B=8 run."""
        median = float(np.median(np.concatenate(blocks)))
        return median if self.concurrency == 1 else self.concurrency * 1000.0 / median

    def _served(self, blocks: Blocks) -> float:
        return float(np.median(np.concatenate(blocks)))

    @property
    def engine(self) -> float:
        return self._engine(self.engine_blocks)

    @property
    def served(self) -> float:
        return self._served(self.served_blocks)

    @property
    def ratio(self) -> float:
        """Concurrency 1: served p50 / engine median (target <= 1.2). Concurrency 8: served / engine
        throughput (target >= 0.9)."""
        return self.served / self.engine

    def pair_ratios(self) -> np.ndarray:
        return np.array([self._served([s]) / self._engine([e]) for e, s in zip(self.engine_blocks,
                                                                               self.served_blocks)])

    def summary(self) -> str:
        pairs = self.pair_ratios()
        if self.concurrency == 1:
            figures = f"engine B=1 median {self.engine:.2f} ms, served p50 {self.served:.2f} ms -> {self.ratio:.2f}x"
            spread = f"{np.percentile(pairs, 10):.2f}-{np.percentile(pairs, 90):.2f}x"
        else:
            figures = (f"engine B={self.concurrency} {self.engine:.1f} queries/s, served {self.served:.1f} "
                       f"queries/s -> {100 * self.ratio:.0f}%")
            spread = f"{100 * np.percentile(pairs, 10):.0f}-{100 * np.percentile(pairs, 90):.0f}%"
        return (f"{self.transport} c{self.concurrency}: {figures} ({len(pairs)} pairs of blocks, each pair "
                f"p10-p90 {spread})")


def timed_calls(call: Callable[[int], object], block: int, discard: int,
                timer: Timer = time.perf_counter) -> BlockRun:
    """A block of ``block`` calls in a row (``call(i)``, i counting on across blocks); the ms of all but the
    first ``discard``."""
    if block <= discard or discard < 0:
        raise ValueError(f"need block > discard >= 0, got block={block} discard={discard}")

    def run(number: int) -> list[float]:
        kept = []
        for i in range(block):
            start = timer()
            call(number * block + i)
            if i >= discard:
                kept.append((timer() - start) * 1000.0)
        return kept

    return run


def alternate(engine_block: BlockRun, served_block: BlockRun, pairs: int) -> tuple[Blocks, Blocks]:
    """``pairs`` pairs of blocks, the engine's first in even pairs and the served one first in odd pairs."""
    if pairs < 1:
        raise ValueError(f"need pairs >= 1, got {pairs}")
    engine_blocks: Blocks = []
    served_blocks: Blocks = []
    sides = ((engine_block, engine_blocks), (served_block, served_blocks))
    for pair in range(pairs):
        for run, blocks in sides if pair % 2 == 0 else sides[::-1]:
            blocks.append(run(pair))
    return engine_blocks, served_blocks


def window_throughput(finished: Sequence[Sequence[float]], begin: float, end: float) -> float:
    """Queries/s answered in (begin, end], from each client's answer times (seconds)."""
    answered = sum(1 for times in finished for t in times if begin < t <= end)
    if end <= begin or not answered:
        raise ValueError(f"no answer in the burst's window of {end - begin:.3f} s: lengthen it")
    return answered / (end - begin)


def burst(clients: Sequence[CorebaClient], arrays: Sequence[dict[str, np.ndarray]], pool: ThreadPoolExecutor,
          warm_s: float, window_s: float, timer: Timer = time.perf_counter) -> BlockRun:
    """A block for concurrency ``len(clients)``: each client sends lone requests one after another on its own
    thread until ``warm_s + window_s`` have passed (so all are in flight all along); the block keeps the
    throughput of the last ``window_s`` (answers after it are not counted)."""

    def client_loop(client: CorebaClient, first: int, stop: float) -> list[float]:
        times: list[float] = []
        while True:
            client.infer(arrays[(first + len(times)) % len(arrays)])
            now = timer()
            if now > stop:
                return times
            times.append(now)

    def run(number: int) -> list[float]:
        begin = timer() + warm_s
        futures = [pool.submit(client_loop, client, number + c, begin + window_s) for c, client in enumerate(clients)]
        return [window_throughput([f.result() for f in futures], begin, begin + window_s)]

    return run


@contextmanager
def engine_and_served_blocks(engine_onnx: Path, url: str, protocol: str, transport: str, concurrency: int,
                             requests: Sequence[dict[str, np.ndarray]], threads: int, block: int = 6,
                             discard: int = 2, burst_s: float = 1.5, warm_s: float = 0.3,
                             model: str = SERVED) -> Iterator[tuple[BlockRun, BlockRun]]:
    """The engine's block (``engine_onnx`` here, B = ``concurrency``, ``threads`` threads) and the served block
    (``model`` at ``url``: lone requests from ``concurrency`` :class:`serving.client.CorebaClient` s, shared
    memory if ``transport == "shm"``), on perf_analyzer's ``requests`` (one query each), both warmed up."""
    engine = OnnxRuntimeEngine(engine_onnx, provider="cpu", graph_optimization="all", threads=threads)
    feeds = stack_requests(list(requests), concurrency, engine.input_names)
    arrays = [{name: value[None] for name, value in request.items()} for request in requests]
    with ExitStack() as stack:
        clients = [stack.enter_context(CorebaClient(url, protocol=protocol, model=model,
                                                    shared_memory=transport == "shm")) for _ in range(concurrency)]
        pool = stack.enter_context(ThreadPoolExecutor(concurrency))
        engine_block = timed_calls(lambda i: engine.session.run(None, feeds[i % len(feeds)]), block, discard)
        if concurrency == 1:
            served_block = timed_calls(lambda i: clients[0].infer(arrays[i % len(arrays)]), block, discard)
        else:
            served_block = burst(clients, arrays, pool, warm_s, burst_s - warm_s)
        for i in range(discard + 1):  # warm-up: sessions, connections, shared-memory regions
            engine.session.run(None, feeds[i % len(feeds)])
            list(pool.map(CorebaClient.infer, clients, [arrays[i % len(arrays)]] * len(clients)))
        yield engine_block, served_block


def interleaved(engine_onnx: Path, url: str, protocol: str, transport: str, concurrency: int,
                requests: Sequence[dict[str, np.ndarray]], threads: int, pairs: int = 40, block: int = 6,
                discard: int = 2, burst_s: float = 1.5, warm_s: float = 0.3, model: str = SERVED) -> Interleaved:
    """``pairs`` pairs of the two blocks of :func:`engine_and_served_blocks`, alternating."""
    with engine_and_served_blocks(engine_onnx, url, protocol, transport, concurrency, requests, threads, block,
                                  discard, burst_s, warm_s, model) as (engine_block, served_block):
        engine_blocks, served_blocks = alternate(engine_block, served_block, pairs)
    return Interleaved(transport, concurrency, engine_blocks, served_blocks)
