"""Warm-up, timed runs and their statistics.

On the CPU each run is bracketed by ``time.perf_counter``. On a GPU, by CUDA events recorded on the
current stream, and each run is waited for before the next starts: the figure is a request's latency
(launch overhead included), not the back-to-back throughput of an overlapped queue. Runs are as many as
fit a time budget, within [min_runs, max_runs] (at least 3 where min_runs would take over 4 budgets), so a
500 ms point and a 50 us point both finish promptly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class TimingPlan:
    warmup: int  # untimed calls first (allocator, autotuning, caches, clocks)
    min_runs: int
    max_runs: int
    budget_s: float  # time to spend on the timed runs of one point (estimated from the warm-up)


@dataclass
class Stats:
    runs: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float

    @classmethod
    def of(cls, times_ms: list[float]) -> Stats:
        t = np.asarray(times_ms, dtype=np.float64)
        p50, p90, p99 = np.percentile(t, [50, 90, 99])
        return cls(len(t), float(p50), float(p90), float(p99), float(t.mean()), float(t.min()))


class Timer:
    """Times one call of ``step``; ``cuda`` picks CUDA events over perf_counter."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def once(self, step: Callable[[], object]) -> float:
        """Milliseconds of one call, the work it queued on the GPU included."""
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end))
        t0 = time.perf_counter()
        step()
        return (time.perf_counter() - t0) * 1e3


def measure(step: Callable[[], object], timer: Timer, plan: TimingPlan) -> Stats:
    """Warm up, size the run count to the budget, time each run; median / p90 / p99 of the runs."""
    timer.sync()
    warm = [timer.once(step) for _ in range(plan.warmup)]
    estimate_ms = max(min(warm[-2:]) if warm else timer.once(step), 1e-3)
    fit = math.floor(plan.budget_s * 1e3 / estimate_ms)
    # min_runs holds unless it would take more than 4x the budget (a slow engine on a big point): then 3 runs
    floor_runs = plan.min_runs if plan.min_runs * estimate_ms <= 4e3 * plan.budget_s else 3
    runs = int(min(plan.max_runs, max(floor_runs, fit)))
    times = [timer.once(step) for _ in range(runs)]
    return Stats.of(times)
