"""CPU streams for ONE served instance: batches run side by side on one-thread ONNX Runtime sessions while the
instance takes the next batch, and a lone query on a quiet server runs on every core.

Why (measured on the 2-core machine, docs/serving.md): one instance running ONNX Runtime on both cores
computes, then hands the answers back, then takes the next batch; under load the client and the server's front
end parse the next requests on the same cores meanwhile, and the instance settles into alternating batches of
half the clients. Two instances with one thread each overlap all of that and reach ~95% of the engine's B=8
throughput at concurrency 8, but then a lone query runs on one core (1.6-1.9x the engine's B=1 latency). One
instance with streams gets both: Triton's Python backend (2.51) lets a non-decoupled model return from
``execute`` before it answers (each request's response sender sends the one final response later), so the
instance is free for the next batch while a stream computes.

Policy, all decided on the instance's ``execute`` thread (the only one that starts work):

* nothing running and a batch of one query -> the ``whole`` session (every thread), inline: latency first;
* otherwise -> the next free one-thread stream, on its own thread; ``submit`` returns at once;
* every stream busy -> ``submit`` waits for one. Meanwhile requests gather in Triton's queue, so the next
  batch is larger: backpressure keeps the batching that a free instance would otherwise lose.

The whole session never runs beside a stream (no more threads than cores). A stream's session reads only memory
the caller owns (``submit`` copies views of request memory): the requests' buffers may go once execute returns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from coreba.engines.onnxruntime_engine import OnnxRuntimeEngine

Outputs = list[np.ndarray]
Done = Callable[[Outputs | None, BaseException | None], None]


class CpuStreams:
    """``submit(batch, done)``: run the answer graph on ``batch`` and call ``done(outputs, None)`` or
    ``done(None, error)`` exactly once, inline or on a stream's thread."""

    def __init__(self, path: str | Path, streams: int, whole: OnnxRuntimeEngine, output_names: list[str],
                 graph_optimization: str = "all", precision: str = "fp32") -> None:
        if streams < 1:
            raise ValueError(f"streams must be >= 1, got {streams}")
        self.whole, self.output_names = whole, list(output_names)
        self.idle = [OnnxRuntimeEngine(path, threads=1, graph_optimization=graph_optimization,
                                       precision=precision).session for _ in range(streams)]
        self.streams = streams
        self.changed = threading.Condition()
        self.pool = ThreadPoolExecutor(streams, thread_name_prefix="coreba-stream")

    @property
    def running(self) -> int:
        return self.streams - len(self.idle)

    def submit(self, batch: dict[str, np.ndarray], done: Done, owned: bool = False) -> None:
        """``owned``: the arrays belong to the caller (not views of request memory), no copy needed."""
        rows = len(next(iter(batch.values())))
        with self.changed:
            quiet = self.running == 0
        if quiet and rows == 1:
            self._run(self.whole.session, batch, done)
            return
        if not owned:
            batch = {name: np.array(array, copy=True) for name, array in batch.items()}
        with self.changed:
            self.changed.wait_for(lambda: self.idle)
            session = self.idle.pop()
        self.pool.submit(self._run_on_stream, session, batch, done)

    def _run(self, session, batch: dict[str, np.ndarray], done: Done) -> None:
        try:
            outputs = session.run(self.output_names, batch)
        except Exception as err:  # the requests get the error; the instance goes on
            done(None, err)
            return
        done(outputs, None)

    def _run_on_stream(self, session, batch: dict[str, np.ndarray], done: Done) -> None:
        try:
            outputs, error = session.run(self.output_names, batch), None
        except Exception as err:
            outputs, error = None, err
        finally:
            with self.changed:  # free the stream before answering: the next batch computes meanwhile
                self.idle.append(session)
                self.changed.notify_all()
        done(outputs, error)

    def drain(self, timeout_s: float | None = None) -> bool:
        """Wait until no stream is running (True), or ``timeout_s`` passed (False)."""
        with self.changed:
            return self.changed.wait_for(lambda: self.running == 0, timeout_s)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
