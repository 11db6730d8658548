"""Long videos and many queries through the Predictor: exact within one window, windows batched and merged,
a moment across a window border found, memory bounded by the batch, clear errors."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from coreba import Coreba, InputError, Predictor
from coreba.engines.torch_engine import TorchEngine
from coreba.postprocess import postprocess
from coreba.windows import num_windows
from export.onnx_export import export_onnx
from tests.conftest import tiny_config

WINDOW = 30  # tiny_config's max_video_len


class MarkerEngine:
    """A stand-in for a trained model that finds the clips whose feature 0 is 1 (a planted moment): moment
    query 0 spans them with a logit equal to the number of marked clips it sees, the other queries are weak
    decoys; saliency is feature 0. It records each batch: (rows, clips, video features broadcast?)."""

    name = "marker"

    def __init__(self, num_queries: int = 10) -> None:
        self.num_queries = num_queries
        self.batches: list[tuple[int, int, bool]] = []

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        video, mask = feeds["video_feats"], feeds["video_mask"]
        B, Lv = mask.shape
        self.batches.append((B, Lv, video.strides[0] == 0))
        Q = self.num_queries
        logits = np.zeros((B, Q, 2), np.float32)
        logits[..., 1] = 3.0  # decoys: foreground probability ~0.05
        spans = np.stack([(np.arange(Q) + 0.5) / Q, np.full(Q, 0.05)], axis=-1)[None].repeat(B, 0).astype(np.float32)
        for b in range(B):
            clips = int(mask[b].sum())
            marked = np.flatnonzero(video[b, :clips, 0] > 0.5)
            if marked.size:
                start, end = marked[0], marked[-1] + 1
                spans[b, 0] = [(start + end) / 2 / clips, (end - start) / clips]
                logits[b, 0] = [marked.size, 0.0]
        return {"pred_logits": logits, "pred_spans": spans, "saliency_scores": np.array(video[..., 0])}


def _video(num_clips: int, marked: tuple[int, int] | None = None, seed: int = 0, dim: int = 40) -> np.ndarray:
    video = np.random.default_rng(seed).uniform(-1.0, 0.4, (num_clips, dim)).astype(np.float32)
    if marked is not None:
        video[marked[0]: marked[1], 0] = 1.0
    return video


def _text(seed: int = 0, length: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((length, 24), dtype=np.float32)


def _iou(a, b) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


def _marker_predictor(max_batch_size: int = 64) -> tuple[Predictor, MarkerEngine]:
    engine = MarkerEngine()
    return Predictor(engine, tiny_config(), max_batch_size=max_batch_size), engine


@pytest.mark.parametrize("marked", [(25, 35), (40, 47), (58, 62)])
def test_a_moment_across_a_window_border_is_found_whole(marked):
    predictor, _ = _marker_predictor()
    (answer,) = predictor.predict([_video(200, marked)], [_text()])
    truth = (marked[0] * 2.0, marked[1] * 2.0)
    assert _iou(answer.moments[0], truth) > 0.99, answer.moments[:3]
    # the windows that saw the moment whole agree on it: one copy is left of it
    assert sum(_iou(m, truth) > 0.99 for m in answer.moments) == 1, answer.moments


def test_without_overlap_the_border_moment_is_cut_in_two():
    predictor, _ = _marker_predictor()
    (answer,) = predictor.predict([_video(200, (25, 35))], [_text()], stride=WINDOW)
    assert _iou(answer.moments[0], (50.0, 70.0)) <= 0.5  # what the overlap of the default stride buys


def test_the_last_window_is_measured_to_the_video_end():
    predictor, _ = _marker_predictor()
    (answer,) = predictor.predict([_video(200, (190, 200))], [_text()], durations=[399.0])
    # the last window holds clips 170..199 and lasts 340..399 s, so clip 190 starts at 340 + 20/30 * 59 s
    np.testing.assert_allclose(answer.moments[0][:2], [340 + 20 / 30 * 59, 399.0])


def test_saliency_has_one_score_per_clip_of_the_whole_video():
    predictor, _ = _marker_predictor()
    video = _video(200, (25, 35))
    (answer,) = predictor.predict([video], [_text()])
    assert len(answer.saliency) == 200
    np.testing.assert_allclose(answer.saliency, video[:, 0], rtol=0, atol=1e-6)  # the mean of equal scores


def test_all_windows_of_all_videos_share_batches():
    predictor, engine = _marker_predictor(max_batch_size=8)
    lengths = [200, 17, 95, 30]
    predictor.predict([_video(n, seed=n) for n in lengths], [_text(i) for i in range(4)])
    rows = sum(num_windows(n, WINDOW, WINDOW // 2) for n in lengths)
    assert [b for b, _, _ in engine.batches] == [8] * (rows // 8) + ([rows % 8] if rows % 8 else [])
    assert max(lv for _, lv, _ in engine.batches) == WINDOW


def test_search_sends_one_window_broadcast_over_the_queries():
    predictor, engine = _marker_predictor(max_batch_size=4)
    video = _video(60, (10, 14))
    answers = predictor.search(video, [_text(q) for q in range(4)])
    assert len(answers) == 4 and all(a.moments[0] == answers[0].moments[0] for a in answers)
    assert engine.batches == [(4, WINDOW, True)] * num_windows(60, WINDOW, WINDOW // 2)  # Q rows, one window


def test_a_two_hour_video_holds_a_few_batches_never_every_window():
    """3,600 clips at the real feature width: the memory held beyond the video itself stays that of a few batches
    (what a call copies and what its engine sees), far below the features of all its windows."""
    cfg = tiny_config(video_dim=2818)
    engine = MarkerEngine()
    predictor = Predictor(engine, cfg, max_batch_size=4)
    batch_bytes = 4 * WINDOW * cfg.video_dim * 4

    def extra_peak(num_clips: int) -> int:
        video = _video(num_clips, (1000, 1010), dim=cfg.video_dim)
        tracemalloc.start()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        predictor.predict([video], [_text()])
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        return peak

    short, long = extra_peak(1200), extra_peak(3600)
    all_windows = num_windows(3600, WINDOW, WINDOW // 2) * WINDOW * cfg.video_dim * 4
    assert long < 2 * batch_bytes + 1_000_000, (long, batch_bytes)
    assert long < all_windows / 20
    assert long - short < 1_000_000  # 3x the video, ~the same memory: only per-clip outputs grow
    assert max(b for b, _, _ in engine.batches) == 4


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"stride": 0}, r"stride must be in 1\.\.30 clips"),
    ({"stride": -5}, r"stride must be in 1\.\.30 clips"),
    ({"stride": 31}, r"stride must be in 1\.\.30 clips \(the window is 30 clips\), got 31"),
    ({"stride": 2.5}, r"stride must be an integer number of clips"),
    ({"stride": True}, r"stride must be an integer number of clips"),
    ({"iou_threshold": -0.1}, r"iou_threshold must be a number in \[0, 1\]"),
    ({"iou_threshold": 1.01}, r"iou_threshold must be a number in \[0, 1\]"),
    ({"iou_threshold": float("nan")}, r"iou_threshold must be a number in \[0, 1\]"),
    ({"mode": "rounded"}, r"mode must be one of"),
    ({"durations": [100.0]}, r"duration 100 s ends before clip 170 starts"),
])
def test_bad_window_options_raise_input_errors(kwargs, message):
    predictor, engine = _marker_predictor()
    with pytest.raises(InputError, match=message):
        predictor.predict([_video(200)], [_text()], **kwargs)
    assert not engine.batches  # refused before anything ran


def test_bad_long_videos_raise_input_errors():
    predictor, _ = _marker_predictor()
    video = _video(3600)
    video[3000, 7] = np.nan
    with pytest.raises(InputError, match=r"video_feats\[1\] contains NaN or Inf values"):
        predictor.predict([_video(50), video], [_text(), _text()])
    with pytest.raises(InputError, match=r"video_feats\[0\] is empty \(length 0\)"):
        predictor.predict([_video(200)[:0]], [_text()])
    with pytest.raises(InputError, match=r"text_feats\[1\] is empty"):
        predictor.search(_video(200), [_text(), _text()[:0]])
    with pytest.raises(InputError, match="search needs at least one query"):
        predictor.search(_video(200), [])
    with pytest.raises(InputError, match=r"stride must be in 1\.\.30"):
        predictor.search(_video(200), [_text()], stride=0)


# ---------------------------------------------------------------- the real model (tiny), eager and ONNX Runtime


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("long_videos")
    torch.manual_seed(0)
    model = Coreba(tiny_config()).eval()
    model.save_pretrained(root / "ckpt")
    export_onnx(model, root / "model.onnx")
    return root


def _reference(predictor: Predictor, videos, texts, durations, mode, top_k=10):
    """What a batch of videos within one window got before windows existed: pad, run, post-process."""
    cfg = predictor.config
    B, Lv, Lt = len(videos), max(map(len, videos)), max(map(len, texts))
    feeds = {"video_feats": np.zeros((B, Lv, cfg.video_dim), np.float32), "video_mask": np.zeros((B, Lv), bool),
             "text_feats": np.zeros((B, Lt, cfg.text_dim), np.float32), "text_mask": np.zeros((B, Lt), bool)}
    for i, (v, t) in enumerate(zip(videos, texts)):
        feeds["video_feats"][i, :len(v)], feeds["video_mask"][i, :len(v)] = v, True
        feeds["text_feats"][i, :len(t)], feeds["text_mask"][i, :len(t)] = t, True
    out = predictor.engine.run(feeds)
    return postprocess(out["pred_logits"], out["pred_spans"], out["saliency_scores"], feeds["video_mask"], durations,
                       clip_length=cfg.clip_length, top_k=top_k, mode=mode)


@pytest.mark.parametrize("engine", ["torch", "onnxruntime"])
@pytest.mark.parametrize("mode", ["exact", "qvhighlights"])
def test_videos_within_one_window_get_exactly_the_answer_of_before(artifacts, engine, mode):
    path = artifacts / ("ckpt" if engine == "torch" else "model.onnx")
    predictor = Predictor.from_pretrained(path, engine=engine)
    lens = [30, 7, 1, 19]
    videos = [_video(n, seed=n) for n in lens]
    texts = [_text(i, length=3 + i) for i in range(4)]
    durations = [60.0, 14.0, 2.0, 37.5]
    got = predictor.predict(videos, texts, durations, top_k=7, mode=mode)
    assert got == _reference(predictor, videos, texts, durations, mode, top_k=7)  # equal, not close
    searched = predictor.search(videos[0], texts, duration=60.0, mode=mode)
    assert searched == _reference(predictor, [videos[0]] * 4, texts, [60.0] * 4, mode)


def _assert_close(a, b, atol=1e-5):
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x.moments, y.moments, atol=atol, rtol=0)
        np.testing.assert_allclose(x.saliency, y.saliency, atol=atol, rtol=0)


def test_long_videos_agree_across_engines_batch_sizes_and_paths(artifacts):
    torch_pred = Predictor.from_pretrained(artifacts / "ckpt", engine="torch")
    ort_pred = Predictor.from_pretrained(artifacts / "model.onnx", engine="onnxruntime", max_batch_size=5)
    videos = [_video(200, seed=1), _video(12, seed=2), _video(77, seed=3)]
    texts = [_text(i) for i in range(3)]
    want = torch_pred.predict(videos, texts, stride=10)
    assert [len(a.saliency) for a in want] == [200, 12, 77]
    assert all(len(a.moments) == 10 for a in want)
    _assert_close(ort_pred.predict(videos, texts, stride=10), want, atol=1e-4)
    alone = [torch_pred.predict([v], [t], stride=10)[0] for v, t in zip(videos, texts)]
    _assert_close(alone, want)
    searched = ort_pred.search(videos[0], texts, stride=10)  # windows broadcast over queries, through ORT
    _assert_close(searched, ort_pred.predict([videos[0]] * 3, texts, stride=10))


def test_search_hands_the_engine_a_view_of_the_video_not_q_copies(artifacts):
    predictor = Predictor(TorchEngine(Coreba.from_pretrained(artifacts / "ckpt")), tiny_config())
    seen = []
    run = predictor.engine.run
    predictor.engine.run = lambda feeds: seen.append(feeds["video_feats"]) or run(feeds)  # type: ignore[method-assign]
    video = _video(20)
    predictor.search(video, [_text(q) for q in range(6)])
    (feats,) = seen
    assert feats.shape == (6, 20, 40) and feats.strides[0] == 0 and np.shares_memory(feats, video)


def test_a_window_brings_its_top_k_moments_as_the_served_graph_does():
    """A window row is answered with the caller's top k, not every moment query: the served end-to-end graph
    returns its top K per row, and the client's merge pools what the Predictor's pools (coreba.windows)."""
    from coreba.schedule import Row
    from coreba.windows import plan_windows

    predictor, _ = _marker_predictor()
    answering = predictor.answering(3, "exact", None, 0.5)
    rows = [Row(0, 0, 0, w) for w in plan_windows(70, 140.0, WINDOW, answering.stride, 2.0)]
    results = predictor.run_rows(rows, [_video(70, (30, 34))], [_text()], answering)
    assert len(results) == len(rows) and all(len(r.moments) == 3 for r in results)
