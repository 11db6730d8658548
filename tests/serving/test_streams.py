"""CPU streams (serving/streams.py): a batch split across one-thread ONNX Runtime sessions returns what one
session returns on the whole batch, row for row, and a failing slice fails the call only after every slice
has stopped."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from coreba.engines.onnxruntime_engine import OnnxRuntimeEngine
from serving.client import InputLayout
from serving.engine_timing import _batches, time_engine
from serving.perf_analyzer import make_requests
from serving.spec import ANSWER_OUTPUTS
from serving.streams import StreamedSessions, slice_bounds

TIME_TOLERANCE_S, SCORE_TOLERANCE = 1e-4, 1e-5  # the end-to-end graph's parity tolerances (thread counts differ)


@pytest.mark.parametrize("batch, streams, expected", [
    (1, 2, [(0, 1)]), (2, 2, [(0, 1), (1, 2)]), (5, 2, [(0, 3), (3, 5)]), (7, 3, [(0, 3), (3, 5), (5, 7)]),
    (2, 4, [(0, 1), (1, 2)])])
def test_slices_cover_the_batch_in_order(batch, streams, expected):
    assert slice_bounds(batch, streams) == expected


def test_bad_slice_counts_are_refused():
    with pytest.raises(ValueError, match="batch and streams must be >= 1"):
        slice_bounds(0, 2)


@pytest.fixture(scope="module")
def layout(served_model) -> InputLayout:
    cfg = served_model.config
    return InputLayout(cfg.max_video_len, cfg.video_dim, cfg.max_text_len, cfg.text_dim)


@pytest.fixture(scope="module")
def streamed(served_model) -> StreamedSessions:
    sessions = StreamedSessions(served_model.onnx_path, streams=3)
    yield sessions
    sessions.close()


def test_one_stream_is_refused(served_model):
    with pytest.raises(ValueError, match="streams must be >= 2"):
        StreamedSessions(served_model.onnx_path, streams=1)


@pytest.mark.parametrize("batch", [1, 2, 3, 5, 8])
def test_streams_answer_as_one_session(served_model, streamed, layout, batch):
    """Random requests, the first at the padded maximum and the others shorter (padded clips and tokens)."""
    requests = make_requests(layout, count=8, seed=batch)
    assert not requests[1]["video_mask"].all() and requests[0]["video_mask"].all()
    one = OnnxRuntimeEngine(served_model.onnx_path, threads=1).session
    feeds = _batches(requests, batch, streamed.input_names)[0]
    names = list(ANSWER_OUTPUTS)
    expected, got = one.run(names, feeds), streamed.run(names, feeds)
    for name, want, have in zip(names, expected, got):
        assert have.shape == want.shape and have.dtype == want.dtype, name
    moments, saliency, clips = got
    assert np.abs(moments[..., :2] - expected[0][..., :2]).max() <= TIME_TOLERANCE_S
    assert np.abs(moments[..., 2] - expected[0][..., 2]).max() <= SCORE_TOLERANCE
    assert np.abs(saliency - expected[1]).max() <= SCORE_TOLERANCE
    assert np.array_equal(clips, expected[2])
    assert np.abs(moments).sum() > 0  # an answer, not zeros


class _FailingSession:
    def __init__(self, started: threading.Event) -> None:
        self.started = started

    def run(self, names, feeds):
        self.started.set()
        raise RuntimeError("slice 2 failed")


class _SlowSession:
    """Stands for slice 1: records whether it had finished when the call returned."""

    def __init__(self, session, started: threading.Event) -> None:
        self.session, self.started, self.finished = session, started, False

    def run(self, names, feeds):
        self.started.wait(5)
        out = self.session.run(names, feeds)
        self.finished = True
        return out


def test_a_failing_slice_fails_the_call_after_every_slice_stopped(served_model, layout):
    sessions = StreamedSessions(served_model.onnx_path, streams=3)
    try:
        started = threading.Event()
        slow = _SlowSession(sessions.slices[1], started)
        sessions.slices[1], sessions.slices[2] = slow, _FailingSession(started)
        feeds = _batches(make_requests(layout, count=3), 3, sessions.input_names)[0]
        with pytest.raises(RuntimeError, match="slice 2 failed"):
            sessions.run(list(ANSWER_OUTPUTS), feeds)
        assert slow.finished
    finally:
        sessions.close()


def test_engine_timing_in_streams(served_model, layout):
    requests = make_requests(layout, count=8)
    timing = time_engine(served_model.onnx_path, "end_to_end", requests, batch=8, threads=2, budget_s=0.1,
                         min_runs=2, streams=2)
    assert timing.streams == 2 and timing.runs >= 2 and timing.median_ms > 0
