"""CPU streams for ONE served instance: batches run side by side on one-thread ONNX Runtime calls while the
instance takes the next requests, and a lone query on a quiet server runs on every core.

Why (measured on the 2-core machine, docs/serving.md): one instance running ONNX Runtime on both cores
computes, then hands the answers back, then takes the next batch; under load the client and the server's front
end parse the next requests on the same cores meanwhile, and the instance settles into alternating batches of
half the clients. Two instances with one thread each overlap all of that and pass the engine's B=8 throughput
at concurrency 8, but then a lone query runs on one core (1.4-1.9x the engine's B=1 latency). One instance
with streams gets both: Triton's Python backend (2.51) lets a non-decoupled model return from ``execute``
before it answers (each request's response sender sends the one final response later), so the instance is free
to take requests while the streams compute.

Policy (``run_if_quiet`` and ``submit`` run on the instance's ``execute`` thread; each stream is a thread
calling a one-thread session):

* nothing running or waiting and a batch of one query -> ``run_if_quiet`` runs it on the ``whole`` session (every
  thread) and returns the outputs: a quiet server answers at the engine's best latency, and ``execute`` returns
  the response as a model without streams does (a response sender's ``send`` costs a round trip to the server
  per response; without it a lone query's overhead fell by 0.5-0.6 ms on the 2-core machine, RESULTS.md);
* otherwise ``submit`` queues the batch, and the next free stream takes everything waiting (up to
  ``max_rows`` queries) as ONE batch: requests that arrived one by one while the streams were busy are
  batched here, as Triton's dynamic batcher would have batched them for a busy instance;
* at ``max_rows`` queries waiting, ``submit`` blocks (backpressure: requests wait in Triton's queue instead).

The whole session never runs beside a stream (no more threads than cores, apart from ONNX Runtime's short spin
after a run).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from coreba.engines.onnxruntime_engine import OnnxRuntimeEngine

Outputs = list[np.ndarray]
Done = Callable[[Outputs | None, BaseException | None], None]


@dataclass
class _Work:
    batch: dict[str, np.ndarray]
    rows: int
    done: Done


@dataclass
class StreamStats:
    """What the streams computed since load: Triton's statistics see only ``execute``, which hands batches over."""

    inline_runs: int = 0  # lone queries on the whole session
    sizes: Counter = field(default_factory=Counter)  # stream runs by their rows
    compute_s: float = 0.0  # session.run time of the stream runs
    cpu_s: float = 0.0  # the CPU time of their threads meanwhile: below compute_s when others took the core

    @property
    def batches(self) -> int:
        return sum(self.sizes.values())

    @property
    def rows(self) -> int:
        return sum(size * count for size, count in self.sizes.items())

    def add(self, rows: int, seconds: float, cpu_seconds: float) -> None:
        self.sizes[rows] += 1
        self.compute_s += seconds
        self.cpu_s += cpu_seconds

    def summary(self) -> str:
        batches, rows = self.batches, self.rows
        mean_rows = rows / batches if batches else 0.0
        mean_ms = 1000.0 * self.compute_s / batches if batches else 0.0
        cpu_share = self.cpu_s / self.compute_s if self.compute_s else 0.0
        sizes = ", ".join(f"{size}: {count}" for size, count in sorted(self.sizes.items()))
        return (f"cpu streams: {self.inline_runs} lone queries inline on every thread; {batches} stream batches "
                f"of {rows} queries (mean {mean_rows:.2f} a batch, {mean_ms:.2f} ms of compute a batch, "
                f"{cpu_share:.0%} of it on the CPU; batches by rows {{{sizes}}})")


class CpuStreams:
    """``run_if_quiet(batch)``: the outputs now, for a lone query on a quiet scheduler; ``submit(batch, done)``:
    run the answer graph on ``batch`` on a stream's thread and call ``done(outputs, None)`` (the batch's rows of
    each output) or ``done(None, error)`` exactly once."""

    def __init__(self, whole, sessions: list, output_names: list[str], max_rows: int) -> None:
        """``whole``: the session for a lone query (every thread); ``sessions``: one per stream (one thread each; the
        same session may be given for every stream); ONNX Runtime ``InferenceSession``s or anything with their
        ``run(output_names, feeds)``."""
        if not sessions or max_rows < 1:
            raise ValueError(f"need >= 1 stream session and max_rows >= 1, got {len(sessions)} and {max_rows}")
        self.whole, self.sessions, self.max_rows = whole, list(sessions), max_rows
        self.output_names = list(output_names)
        self.waiting: deque[_Work] = deque()
        self.waiting_rows = self.running = 0
        self.closing = False
        self.stats = StreamStats()
        self.changed = threading.Condition()
        self.threads = [threading.Thread(target=self._stream, args=(session,), name=f"coreba-stream-{number}",
                                         daemon=True) for number, session in enumerate(sessions)]
        for thread in self.threads:
            thread.start()

    @classmethod
    def load(cls, path: str | Path, streams: int, whole: OnnxRuntimeEngine, output_names: list[str], max_rows: int,
             graph_optimization: str = "all", precision: str = "fp32") -> CpuStreams:
        """``streams`` streams on ``path`` beside the loaded ``whole`` engine, all calling ONE one-thread ONNX Runtime
        session: ``run`` is thread-safe and, with one intra-op thread, computes on the calling thread, so the
        streams run side by side on one copy of the weights (measured on the 2-core machine: two callers of one
        session 67-72 queries/s, two sessions 68-74; each further session costs ~55 MiB)."""
        if streams < 1:
            raise ValueError(f"streams must be >= 1, got {streams}")
        session = OnnxRuntimeEngine(path, threads=1, graph_optimization=graph_optimization, precision=precision).session
        return cls(whole.session, [session] * streams, output_names, max_rows)

    def run_if_quiet(self, batch: dict[str, np.ndarray]) -> Outputs | None:
        """A lone query on a quiet scheduler: its outputs, computed now on the whole session (an engine failure
        raises); None otherwise: hand the batch to ``submit``. Only the instance's ``execute`` thread hands work
        over, so a scheduler found quiet here stays quiet until the run ends."""
        rows = len(next(iter(batch.values())))
        with self.changed:
            if self.closing:
                raise RuntimeError("the model is being unloaded")
            if rows != 1 or self.running or self.waiting:
                return None
        self.stats.inline_runs += 1
        return self.whole.run(self.output_names, batch)

    def submit(self, batch: dict[str, np.ndarray], done: Done) -> None:
        """Queue ``batch`` for the streams. ``batch``: arrays the caller owns and no longer changes (not views of a
        request's memory, which may go once execute returns)."""
        rows = len(next(iter(batch.values())))
        with self.changed:
            self.changed.wait_for(lambda: self.waiting_rows < self.max_rows or self.closing)
            if self.closing:  # the streams may be gone: nothing would take the batch
                raise RuntimeError("the model is being unloaded")
            self.waiting.append(_Work(batch, rows, done))
            self.waiting_rows += rows
            self.changed.notify_all()

    def _take(self) -> list[_Work] | None:
        """Everything waiting, up to ``max_rows`` queries (at least one batch); None when closed and drained."""
        with self.changed:
            self.changed.wait_for(lambda: self.waiting or self.closing)
            if not self.waiting:
                return None
            taken = [self.waiting.popleft()]
            rows = taken[0].rows
            while self.waiting and rows + self.waiting[0].rows <= self.max_rows:
                taken.append(self.waiting.popleft())
                rows += taken[-1].rows
            self.waiting_rows -= rows
            self.running += 1
            self.changed.notify_all()
            return taken

    def _stream(self, session) -> None:
        while (taken := self._take()) is not None:
            batch = taken[0].batch if len(taken) == 1 else {
                name: np.concatenate([w.batch[name] for w in taken]) for name in taken[0].batch}
            computed = functools.partial(self._computed, sum(w.rows for w in taken), time.perf_counter(),
                                         time.thread_time())
            with contextlib.suppress(Exception):  # nothing may end a stream (_call answers every work itself)
                _call(session, self.output_names, batch, taken, on_computed=computed)

    def _computed(self, rows: int, start: float, cpu_start: float) -> None:
        """Runs on the stream's thread, which ran the one-thread session: its CPU time is the session's."""
        wall, cpu = time.perf_counter() - start, time.thread_time() - cpu_start
        with self.changed:  # free the stream's slot before answering: the next batch may start meanwhile
            self.running -= 1
            self.stats.add(rows, wall, cpu)
            self.changed.notify_all()

    def close(self, timeout_s: float = 60.0) -> None:
        """Answer everything handed over, then stop the streams."""
        with self.changed:
            self.closing = True
            self.changed.notify_all()
        for thread in self.threads:
            thread.join(timeout_s)


def _call(session, output_names: list[str], batch: dict[str, np.ndarray], works: list[_Work],
          on_computed: Callable[[], None] | None = None) -> None:
    """Run ``batch`` (the works' batches in order) and give each work its rows, or the error."""
    try:
        outputs, error = session.run(output_names, batch), None
    except Exception as err:  # the requests get the error; the instance goes on
        outputs, error = None, err
    finally:
        if on_computed is not None:
            on_computed()
    start = 0
    for work in works:
        try:
            if outputs is None:
                work.done(None, error)
            else:
                work.done([output[start:start + work.rows] for output in outputs], None)
        except Exception as err:  # answering failed: one more try with the error, so no request is left hanging
            with contextlib.suppress(Exception):
                work.done(None, err)
        start += work.rows
