"""The load test's parts that need no server: perf_analyzer's summary parsed model by model (a one-step model
and an ensemble with its composing models, as perf_analyzer 2.51.0 prints them), the requests it sends and the
engine block's timing, and the issue's two ratios."""

from __future__ import annotations

import json

import numpy as np
import pytest

from serving.client import InputLayout
from serving.engine_timing import EngineTiming, time_engine
from serving.perf import targets
from serving.perf_analyzer import PerfRun, make_requests, parse_server_times, write_input_data

ONE_STEP = """
  Server: 
    Inference count: 303
    Execution count: 151
    Successful request count: 303
    Avg request latency: 11805 usec (overhead 6 usec + queue 256 usec + compute input 54 usec + compute infer 10788 usec + compute output 700 usec)
"""  # noqa: W291, E501 (perf_analyzer's text, trailing spaces included)

ENSEMBLE = """
  Server: 
    Inference count: 250
    Execution count: 250
    Successful request count: 250
    Avg request latency: 16902 usec (overhead 0 usec + queue 935 usec + compute 16468 usec)

  Composing models: 
  coreba_baseline_engine, version: 1
      Inference count: 249
      Execution count: 249
      Successful request count: 249
      Avg request latency: 13043 usec (overhead 4 usec + queue 294 usec + compute input 57 usec + compute infer 12018 usec + compute output 668 usec)

  coreba_baseline_postprocess, version: 1
      Inference count: 250
      Execution count: 125
      Successful request count: 250
      Avg request latency: 4369 usec (overhead 5 usec + queue 641 usec + compute input 55 usec + compute infer 2562 usec + compute output 1106 usec)
"""  # noqa: W291, E501


def test_one_step_model_breakdown():
    (model,) = parse_server_times(ONE_STEP, "coreba")
    assert (model.model, model.inferences, model.executions) == ("coreba", 303, 151)
    assert (model.queue_ms, model.compute_input_ms, model.compute_infer_ms, model.compute_output_ms) == \
        (0.256, 0.054, 10.788, 0.7)
    assert model.batch == pytest.approx(303 / 151)
    run = PerfRun("coreba", "socket", 1, 41.6, 23.6, 36.0, 62.1, 24.0, [model])
    assert run.steps == [model] and run.server_ms == pytest.approx(11.798)


def test_ensemble_breakdown_per_composing_model():
    ensemble, engine, post = parse_server_times(ENSEMBLE, "coreba_baseline")
    assert (ensemble.model, ensemble.compute_ms, ensemble.queue_ms) == ("coreba_baseline", 16.468, 0.935)
    assert engine.model == "coreba_baseline_engine" and engine.compute_infer_ms == 12.018
    assert post.model == "coreba_baseline_postprocess" and post.batch == 2.0
    run = PerfRun("coreba_baseline", "socket", 1, 34.3, 28.0, 45.8, 68.0, 29.0, [ensemble, engine, post])
    assert run.steps == [engine, post]
    assert run.total("queue_ms") == pytest.approx(0.294 + 0.641)
    assert run.server_ms == pytest.approx(0.294 + 0.057 + 12.018 + 0.668 + 0.641 + 0.055 + 2.562 + 1.106)


def test_missing_summary_is_an_error():
    with pytest.raises(RuntimeError, match="no server-side summary for 'coreba'"):
        parse_server_times("Concurrency: 1, throughput: 41.6 infer/sec, latency 24009 usec", "coreba")


def _block(b1_ms: float, b8_ms: float) -> list[EngineTiming]:
    return [EngineTiming("raw", 1, b1_ms, b1_ms, 20), EngineTiming("raw", 8, b8_ms, b8_ms, 20)]


def test_each_run_is_held_against_the_faster_figure_of_the_engine_blocks_around_it():
    first = [EngineTiming("raw", 1, 10.0, 11.0, 20), EngineTiming("raw", 8, 80.0, 90.0, 20),
             EngineTiming("end_to_end", 1, 9.0, 9.5, 20)]
    runs = [PerfRun("coreba", "shm", 1, 80.0, 11.5, 12.0, 13.0, 11.6),
            PerfRun("coreba", "socket", 8, 92.0, 80, 90, 99, 85)]
    text = targets([first, _block(12.0, 90.0), _block(11.0, 100.0)], [runs])
    # run 1 between blocks 1 and 2: raw B=1 10 ms (the end-to-end graph's 9 ms is not the reference)
    assert "new/shm c1: engine (raw graph, blocks 1 and 2) B=1 median 10.00 ms -> 1.15x" in text
    # run 2 between blocks 2 and 3: B=8 at 90 ms -> 88.9 queries/s, at 100 ms -> 80: the faster is 88.9
    assert "new/socket c8: engine (raw graph, blocks 2 and 3) B=8 88.9 queries/s -> 104%" in text
    assert "new/shm: p50 at concurrency 1 = 1.15 x" in text and "(meets <= 1.2)" in text
    assert "new/socket: throughput at concurrency 8 = 104%" in text and "(meets >= 90%)" in text
    assert "rounds:" not in text
    with pytest.raises(ValueError, match="2 served runs need 3 engine blocks around them, got 2"):
        targets([first, first], [runs])


def test_rounds_judge_the_median_of_each_run_against_its_own_neighbours():
    """Three rounds of two runs; the engine drifts from 100 to 50 queries/s. Against a global best, rounds 2
    and 3 would miss; each against its neighbours: 95%, 80%, 100% -> median 95% meets."""
    blocks = [_block(10, 80), _block(10, 80), _block(10, 100), _block(12, 100), _block(20, 160), _block(30, 160),
              _block(20, 160)]  # B=8: 100, 100, 80, 80, 50, 50, 50 queries/s
    rounds = [[PerfRun("coreba", "socket", 8, q, 1, 1, 1, 1), PerfRun("coreba", "socket", 1, 1, p50, 1, 1, 1)]
              for q, p50 in ((95.0, 14.0), (64.0, 13.0), (50.0, 30.0))]
    text = targets(blocks, rounds)
    assert "round 2, new/socket c8: engine (raw graph, blocks 3 and 4) B=8 80.0 queries/s -> 80%" in text
    assert "round 3, new/socket c1: engine (raw graph, blocks 6 and 7) B=1 median 20.00 ms -> 1.50x" in text
    assert "throughput at concurrency 8 = 95% of the engine's B=8 (rounds: 95%, 80%, 100%) (meets >= 90%)" in text
    assert "p50 at concurrency 1 = 1.40 x the engine's B=1 median (rounds: 1.40x, 1.08x, 1.50x) (misses" in text


def test_engine_table_marks_figures_a_block_did_not_time():
    from serving.perf import engine_table

    table = engine_table([[*_block(10, 80), EngineTiming("end_to_end", 1, 9.0, 9.5, 20)], _block(12, 96)])
    assert "| raw graph | 1 | 10.00 / 12.00 | 12.00 | 100.0 / 83.3 |" in table
    assert "| end_to_end graph | 1 | 9.00 / - | 9.50 | 111.1 / - |" in table


def test_requests_and_engine_block(served_model, tmp_path):
    cfg = served_model.config
    layout = InputLayout(cfg.max_video_len, cfg.video_dim, cfg.max_text_len, cfg.text_dim)
    requests = make_requests(layout, count=4)
    assert requests[0]["video_mask"].all() and not requests[1]["video_mask"].all()  # max length, then shorter
    for r in requests:
        clips = int(r["video_mask"].sum())
        assert not r["video_feats"][clips:].any() and r["duration"].tolist() == [clips * 2.0]
    write_input_data(tmp_path / "data.json", requests)
    data = json.loads((tmp_path / "data.json").read_text())["data"]
    assert np.allclose(np.reshape(data[1]["video_feats"]["content"], data[1]["video_feats"]["shape"]),
                       requests[1]["video_feats"])
    timing = time_engine(served_model.onnx_path, "end_to_end", requests, batch=4, threads=1, budget_s=0.1, min_runs=2)
    assert timing.runs >= 2 and timing.median_ms > 0 and timing.queries_per_s == pytest.approx(4000 / timing.median_ms)


def test_stream_summaries_are_read_from_the_server_log():
    from serving.cpu_streams import StreamStats
    from serving.perf import stream_summaries

    stats = StreamStats(inline_runs=3)
    for rows in (4, 2, 4, 4):
        stats.add(rows, 0.125, 0.1)
    assert stats.summary() == ("cpu streams: 3 lone queries inline on every thread; 4 stream batches of 14 queries "
                               "(mean 3.50 a batch, 125.00 ms of compute a batch, 80% of it on the CPU; "
                               "batches by rows {2: 1, 4: 3})")
    log = f'I1130 17:00:00.1 12 model.py:9] "coreba: {stats.summary()}"\nI1130 other line\n'  # as the stub logs
    assert stream_summaries(log) == [f"coreba: {stats.summary()}"]
    assert stream_summaries("I1130 nothing here\n") == []



def test_interleaved_blocks_alternate_and_keep_only_the_warm_calls():
    """Engine first in even pairs, served first in odd ones; the first ``discard`` calls of a block are dropped."""
    from serving.interleaved import alternate, timed_calls

    calls, clock = [], iter(float(t) for t in range(1000))
    tick = lambda: next(clock)  # noqa: E731 (each call spans one tick of the fake clock)
    engine, served = alternate(timed_calls(lambda i: calls.append(("e", i)), 3, 1, tick),
                               timed_calls(lambda i: calls.append(("s", i)), 3, 1, tick), pairs=2)
    assert calls == [("e", 0), ("e", 1), ("e", 2), ("s", 0), ("s", 1), ("s", 2),
                     ("s", 3), ("s", 4), ("s", 5), ("e", 3), ("e", 4), ("e", 5)]
    assert engine == served == [[1000.0, 1000.0]] * 2
    with pytest.raises(ValueError, match="block > discard"):
        timed_calls(print, 2, 2)


def test_burst_throughput_counts_the_answers_of_its_window_only():
    from serving.interleaved import window_throughput

    finished = [[0.1 * k for k in range(1, 6)], [0.2 * k for k in range(1, 6)]]  # two clients' answer times
    # in (0.25, 0.65]: 0.3, 0.4, 0.5 from the first, 0.4 and 0.6 from the second
    assert window_throughput(finished, 0.25, 0.65) == pytest.approx(5 / 0.4)
    with pytest.raises(ValueError, match="no answer"):
        window_throughput(finished, 1.5, 2.0)


def test_interleaved_ratios_and_verdicts():
    from serving.interleaved import Interleaved
    from serving.perf import interleaved_targets

    lone = Interleaved("shm", 1, [[10.0, 10.0], [20.0, 20.0]], [[11.0, 11.0], [23.0, 23.0]])
    assert (lone.engine, lone.served, lone.ratio) == (15.0, 17.0, pytest.approx(17 / 15))
    np.testing.assert_allclose(lone.pair_ratios(), [1.1, 1.15])
    slow = Interleaved("socket", 1, [[10.0]], [[12.5]])
    # B=8 runs of 100 and 200 ms: 8 / 0.15 s = 53.3 queries/s; bursts of 50 and 40 queries/s
    loaded = Interleaved("socket", 8, [[100.0], [200.0]], [[50.0], [40.0]])
    assert loaded.engine == pytest.approx(8 / 0.15) and loaded.ratio == pytest.approx(45 / (8 / 0.15))
    np.testing.assert_allclose(loaded.pair_ratios(), [50 / 80, 40 / 40])
    heading, *lines = interleaved_targets([("new", lone), ("new", slow), ("new", loaded)]).splitlines()
    assert "Interleaved" in heading and interleaved_targets([]) == ""
    assert lines[0].startswith("new/shm c1: engine B=1 median 15.00 ms, served p50 17.00 ms -> 1.13x")
    assert lines[0].endswith("(meets <= 1.2)") and lines[1].endswith("(misses <= 1.2)")
    assert "served 45.0 queries/s -> 84%" in lines[2] and lines[2].endswith("(misses >= 90%)")
