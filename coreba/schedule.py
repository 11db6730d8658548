"""Every query of a call as engine rows, in batches: the one scheduler behind ``Predictor.predict``,
``Predictor.search``, ``coreba.predict`` and the serving client.

A *query* asks one text about one video. Each video is cut into windows (:func:`coreba.windows.plan_windows`;
one whole window when it fits the model); each (window, query of that video) pair is one *row* of an engine
batch. Rows are generated video by video, window by window, query by query, and cut into batches of at most
``max_batch_size`` rows, so the windows of all videos of a call share batches and are never run one at a time.
Batches are built and run one after the other (``run_rows``, the caller's engine) and each answer is folded into
its query's :class:`~coreba.windows.WindowMerge` at once: memory holds one batch's features and activations,
whatever the length of the videos.

Rows of a whole video are answered in the caller's final form (its ``top_k`` and ``mode``): a video that fits
the model gets exactly the answer it got before windows existed. Rows of a window are answered in
``mode="exact"`` with their top k moments, in the window's own seconds, for the merge (why top k:
:mod:`coreba.windows`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from coreba.postprocess import PostprocessMode, QueryResult
from coreba.windows import Window, WindowMerge, plan_windows


@dataclass(frozen=True)
class Query:
    """One text about one video of the call (indices into the call's video and text lists)."""

    video: int
    text: int


@dataclass(frozen=True)
class Row:
    """One engine row: a query over one window of its video. ``query`` indexes the call's queries."""

    query: int
    video: int
    text: int
    window: Window


@dataclass(frozen=True)
class Answering:
    """How the caller wants its answers: moments kept, time format, windows (stride in clips) and their NMS."""

    top_k: int
    mode: PostprocessMode
    window: int
    stride: int
    iou_threshold: float
    clip_length: float


RunRows = Callable[[Sequence[Row]], list[QueryResult]]


def batches(rows: Sequence[Row] | Iterator[Row], max_batch_size: int) -> Iterator[list[Row]]:
    """Consecutive rows in lists of at most ``max_batch_size``."""
    batch: list[Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) == max_batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def answer_queries(num_clips: Sequence[int], durations: Sequence[float], queries: Sequence[Query],
                   run_rows: RunRows, answering: Answering, max_batch_size: int) -> list[QueryResult]:
    """One answer per query. ``num_clips[v]``, ``durations[v]``: video v's clips and seconds. ``run_rows`` runs
    one batch of rows and answers each (see the module docstring for the form)."""
    by_video: dict[int, list[int]] = {}
    for i, query in enumerate(queries):
        by_video.setdefault(query.video, []).append(i)
    plans = {v: plan_windows(num_clips[v], durations[v], answering.window, answering.stride, answering.clip_length)
             for v in by_video}  # every duration is checked before anything runs

    def rows() -> Iterator[Row]:
        for video, members in by_video.items():
            for window in plans[video]:
                for i in members:
                    yield Row(i, video, queries[i].text, window)

    answers: list[QueryResult | None] = [None] * len(queries)
    merges: dict[int, WindowMerge] = {}
    remaining = {i: len(plans[q.video]) for i, q in enumerate(queries)}
    for batch in batches(rows(), max_batch_size):
        results = run_rows(batch)
        if len(results) != len(batch):
            raise RuntimeError(f"the engine answered {len(results)} of {len(batch)} rows")
        for row, result in zip(batch, results):
            if row.window.whole:
                answers[row.query] = result
                continue
            merge = merges.get(row.query)
            if merge is None:
                merge = merges[row.query] = WindowMerge(num_clips[row.video], durations[row.video],
                                                        answering.clip_length)
            merge.add(row.window, result)
            remaining[row.query] -= 1
            if remaining[row.query] == 0:
                answers[row.query] = merges.pop(row.query).finish(answering.top_k, answering.iou_threshold,
                                                                   answering.mode)
    assert all(a is not None for a in answers), "every query is answered once all its rows ran"
    return answers  # type: ignore[return-value]


def shared_window(batch: Sequence[Row]) -> bool:
    """Whether every row of the batch reads the same window of the same video (the many-queries case): its
    features can then be one window broadcast over the batch instead of one copy per row."""
    first = batch[0]
    return all(row.video == first.video and row.window == first.window for row in batch)


def row_durations(batch: Sequence[Row]) -> np.ndarray:
    """Each row's duration in seconds: its window's (the video's own for a whole one)."""
    return np.array([row.window.duration_s for row in batch], dtype=np.float64)
