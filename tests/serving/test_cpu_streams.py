"""CPU streams (serving/cpu_streams.py) without a server: every batch handed over is answered once, with its own
rows, equal to one session's answer on it; only a lone query on a quiet scheduler runs now, on the whole session;
batches that wait are merged up to max_rows; failures reach exactly the batches they hit; close answers
everything handed over. The served model with streams is tested against a real server in test_serving_e2e.py
and test_serving_errors.py (streams are on by default wherever there are 2+ cores)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from coreba.engines.onnxruntime_engine import OnnxRuntimeEngine
from serving.client import InputLayout
from serving.cpu_streams import CpuStreams
from serving.engine_timing import stack_requests
from serving.perf_analyzer import make_requests
from serving.spec import ANSWER_OUTPUTS

TIME_TOLERANCE_S, SCORE_TOLERANCE = 1e-4, 1e-5  # the end-to-end graph's parity tolerances (thread counts differ)
NAMES = list(ANSWER_OUTPUTS)


class Answers:
    """Collects ``done`` calls: index -> (outputs, error); fails the test on a second answer."""

    def __init__(self) -> None:
        self.got: dict[int, tuple] = {}
        self.lock = threading.Lock()
        self.all_in = threading.Event()
        self.expected = 0

    def done_for(self, index: int):
        def done(outputs, error):
            with self.lock:
                assert index not in self.got, f"batch {index} answered twice"
                self.got[index] = (outputs, error)
                if len(self.got) == self.expected:
                    self.all_in.set()
        return done


class GatedSession:
    """A stream session that waits for ``gate`` and records the rows of each batch it runs; ``fail_rows``:
    raise on a batch of that many rows."""

    def __init__(self, gate: threading.Event, fail_rows: int | None = None) -> None:
        self.gate, self.fail_rows, self.batches = gate, fail_rows, []

    def run(self, names, feeds):
        self.gate.wait(10)
        rows = len(feeds["x"])
        self.batches.append(rows)
        if rows == self.fail_rows:
            raise RuntimeError(f"failed on {rows} rows")
        return [feeds["x"] * 2.0, feeds["x"].sum(axis=1)]


def _feeds(rows: int, start: float) -> dict[str, np.ndarray]:
    return {"x": np.arange(start, start + 3 * rows, dtype=np.float32).reshape(rows, 3) + 1.0}


@pytest.fixture(scope="module")
def layout(served_model) -> InputLayout:
    cfg = served_model.config
    return InputLayout(cfg.max_video_len, cfg.video_dim, cfg.max_text_len, cfg.text_dim)


def test_answers_equal_one_session_on_random_padded_and_unpadded_batches(served_model, layout):
    whole = OnnxRuntimeEngine(served_model.onnx_path, threads=2)
    streams = CpuStreams.load(served_model.onnx_path, 2, whole, NAMES, max_rows=8)
    assert len(streams.sessions) == 2 and streams.sessions[0] is streams.sessions[1]  # one copy of the weights
    reference = OnnxRuntimeEngine(served_model.onnx_path, threads=1).session
    requests = make_requests(layout, count=8, seed=3)
    assert requests[0]["video_mask"].all() and not requests[1]["video_mask"].all()  # padded and not
    batches = [stack_requests(requests[i:], size, whole.input_names)[0] for i, size in enumerate((1, 2, 3, 1, 2, 5))]
    answers = Answers()
    answers.expected = len(batches)
    try:
        for index, batch in enumerate(batches):
            streams.submit(batch, answers.done_for(index))
        assert answers.all_in.wait(60)
    finally:
        streams.close()
    for index, batch in enumerate(batches):
        outputs, error = answers.got[index]
        assert error is None
        expected = reference.run(NAMES, batch)
        moments, saliency, clips = outputs
        assert moments.shape == expected[0].shape and moments.shape[0] == len(batch["duration"])
        assert np.abs(moments[..., :2] - expected[0][..., :2]).max() <= TIME_TOLERANCE_S
        assert np.abs(moments[..., 2] - expected[0][..., 2]).max() <= SCORE_TOLERANCE
        assert np.abs(saliency - expected[1]).max() <= SCORE_TOLERANCE
        assert np.array_equal(clips, expected[2]) and np.abs(moments).sum() > 0


def test_a_lone_query_on_a_quiet_scheduler_runs_now_on_the_whole_session_and_nothing_else_does():
    gate = threading.Event()
    whole, stream = GatedSession(gate), GatedSession(gate)
    streams = CpuStreams(whole, [stream], ["y", "s"], max_rows=8)
    answers = Answers()
    answers.expected = 1
    try:
        gate.set()
        outputs = streams.run_if_quiet(_feeds(1, 0.0))
        assert np.array_equal(outputs[0], _feeds(1, 0.0)["x"] * 2.0)
        assert streams.run_if_quiet(_feeds(2, 0.0)) is None  # two queries: the streams' work
        gate.clear()
        streams.submit(_feeds(1, 10.0), answers.done_for(0))
        while streams.running == 0:  # the stream took it and waits at the gate
            pass
        assert streams.run_if_quiet(_feeds(1, 20.0)) is None  # not quiet: a lone query waits its turn too
        gate.set()
        assert answers.all_in.wait(10)
        assert whole.batches == [1] and stream.batches == [1]
        assert (streams.stats.inline_runs, streams.stats.batches) == (1, 1)
    finally:
        gate.set()
        streams.close()
    with pytest.raises(RuntimeError, match="being unloaded"):
        streams.run_if_quiet(_feeds(1, 0.0))


def test_waiting_batches_are_merged_up_to_max_rows_and_each_gets_its_own_rows():
    gate = threading.Event()
    stream = GatedSession(gate)
    streams = CpuStreams(GatedSession(gate), [stream], ["y", "s"], max_rows=4)
    answers = Answers()
    sizes = (2, 1, 1, 2, 1)  # the first runs alone (stream busy, gate closed); then 1+1+2 = 4 merged, then 1
    answers.expected = len(sizes)
    feeds = [_feeds(rows, 100.0 * i) for i, rows in enumerate(sizes)]
    try:
        streams.submit(feeds[0], answers.done_for(0))
        while streams.running == 0:  # the stream took the first batch
            threading.Event().wait(0.01)
        for index in range(1, 4):
            streams.submit(feeds[index], answers.done_for(index))
        blocked = threading.Thread(target=streams.submit, args=(feeds[4], answers.done_for(4)))
        blocked.start()  # 4 rows wait: this submit blocks until the stream takes them
        blocked.join(0.3)
        assert blocked.is_alive()
        gate.set()
        blocked.join(10)
        assert answers.all_in.wait(10)
    finally:
        streams.close()
    assert stream.batches == [2, 4, 1]
    assert (streams.stats.batches, streams.stats.rows, streams.stats.inline_runs) == (3, 7, 0)
    for index, rows in enumerate(sizes):
        outputs, error = answers.got[index]
        assert error is None and len(outputs[0]) == rows and np.array_equal(outputs[0], feeds[index]["x"] * 2.0)
        assert np.array_equal(outputs[1], feeds[index]["x"].sum(axis=1))


def test_a_failure_reaches_exactly_the_batches_it_hit_and_the_streams_go_on():
    gate = threading.Event()
    stream = GatedSession(gate, fail_rows=3)
    streams = CpuStreams(GatedSession(gate), [stream], ["y", "s"], max_rows=3)
    answers = Answers()
    answers.expected = 4
    try:
        streams.submit(_feeds(2, 0.0), answers.done_for(0))  # runs alone
        while streams.running == 0:
            threading.Event().wait(0.01)
        streams.submit(_feeds(1, 10.0), answers.done_for(1))  # 1 + 2 = 3 rows merged: fails
        streams.submit(_feeds(2, 20.0), answers.done_for(2))
        gate.set()
        answers.all_in.wait(0.5)
        streams.submit(_feeds(2, 30.0), answers.done_for(3))  # after the failure: answered
        assert answers.all_in.wait(10)
    finally:
        streams.close()
    assert [answers.got[i][1] is None for i in range(4)] == [True, False, False, True]
    assert "failed on 3 rows" in str(answers.got[1][1])


def test_a_failing_answer_gets_a_second_call_with_the_error():
    gate = threading.Event()
    gate.set()
    streams = CpuStreams(GatedSession(gate), [GatedSession(gate)], ["y", "s"], max_rows=8)
    calls = []

    def done(outputs, error):
        calls.append(error)
        if error is None:
            raise ValueError("could not build the response")

    try:
        streams.submit(_feeds(2, 0.0), done)
        streams.close()
    finally:
        streams.close()
    assert calls[0] is None and isinstance(calls[1], ValueError) and len(calls) == 2


def test_close_answers_everything_handed_over_and_refuses_more():
    gate = threading.Event()
    streams = CpuStreams(GatedSession(gate), [GatedSession(gate), GatedSession(gate)], ["y", "s"], max_rows=8)
    answers = Answers()
    answers.expected = 3
    for index in range(3):
        streams.submit(_feeds(2, 10.0 * index), answers.done_for(index))
    closer = threading.Thread(target=streams.close)
    closer.start()
    gate.set()
    closer.join(10)
    assert not closer.is_alive() and sorted(answers.got) == [0, 1, 2]
    with pytest.raises(RuntimeError, match="being unloaded"):
        streams.submit(_feeds(1, 0.0), answers.done_for(9))


def test_bad_arguments_are_refused(served_model):
    with pytest.raises(ValueError, match="need >= 1 stream session"):
        CpuStreams(None, [], ["y"], max_rows=8)
    whole = OnnxRuntimeEngine(served_model.onnx_path, threads=1)
    with pytest.raises(ValueError, match="streams must be >= 1"):
        CpuStreams.load(served_model.onnx_path, 0, whole, NAMES, max_rows=8)
