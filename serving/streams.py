"""CPU streams for ONNX Runtime: a batch split across one-thread sessions that run side by side.

Why: one session with N intra-op threads meets its threads at a barrier in every op. In a server the cores are
shared with the socket, the client and the copies of the next requests, and one preempted thread stalls the
other N-1 at each barrier. N one-thread sessions, each on a slice of the batch, never wait for one another.
OpenVINO calls this idea streams (its THROUGHPUT hint); ONNX Runtime has no such mode, so it is built here.

A lone query cannot be split: batch 1 goes to a session with all N threads, so a quiet server keeps the
multi-thread latency and a busy one gets the streams' throughput. Outputs are the same numbers either way (each
query's rows are computed alone: the graph has no op that mixes the batch), in the batch's order.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np

from coreba.engines.onnxruntime_engine import OnnxRuntimeEngine


def slice_bounds(batch: int, streams: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) slices of ``batch`` rows over at most ``streams`` streams, sizes differing by at
    most one, larger first (the caller's thread takes the first)."""
    if batch < 1 or streams < 1:
        raise ValueError(f"batch and streams must be >= 1, got batch={batch}, streams={streams}")
    parts = min(batch, streams)
    size, extra = divmod(batch, parts)
    bounds, start = [], 0
    for i in range(parts):
        stop = start + size + (i < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


class StreamedSessions:
    """``run(output_names, feeds)`` with ``session.run``'s contract, on ``streams`` one-thread sessions (a batch
    of several queries) or one ``streams``-thread session (a single query)."""

    def __init__(self, path: str | Path, streams: int, graph_optimization: str = "all", precision: str = "fp32",
                 whole: OnnxRuntimeEngine | None = None) -> None:
        """``whole``: an engine already loaded on ``path`` for single queries (by default one with ``streams``
        threads is loaded)."""
        if streams < 2:
            raise ValueError(f"streams must be >= 2 (1 stream is a plain session), got {streams}")
        self.streams = streams
        self.whole = whole or OnnxRuntimeEngine(path, threads=streams, graph_optimization=graph_optimization,
                                                precision=precision)
        self.slices = [OnnxRuntimeEngine(path, threads=1, graph_optimization=graph_optimization,
                                         precision=precision).session for _ in range(streams)]
        # the caller's thread runs the first slice: streams - 1 helpers
        self.pool = ThreadPoolExecutor(streams - 1, thread_name_prefix="coreba-stream")

    @property
    def input_names(self) -> list[str]:
        return self.whole.input_names

    @property
    def output_names(self) -> list[str]:
        return self.whole.output_names

    def run(self, output_names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        batch = len(next(iter(feeds.values())))
        if batch == 1:
            return self.whole.session.run(output_names, feeds)
        bounds = slice_bounds(batch, self.streams)
        parts = [{name: array[start:stop] for name, array in feeds.items()} for start, stop in bounds]
        # ONNX Runtime releases the GIL inside run: the helpers' slices compute while the caller's does
        futures: list[Future] = [self.pool.submit(session.run, output_names, part)
                                 for session, part in zip(self.slices[1:], parts[1:])]
        try:
            first = self.slices[0].run(output_names, parts[0])
        finally:
            wait(futures)  # never return (or raise) with a slice still running: the next batch would share its core
        results = [first] + [future.result() for future in futures]
        return [np.concatenate([result[i] for result in results]) for i in range(len(output_names))]

    def close(self) -> None:
        self.pool.shutdown(wait=True)
