"""The Predictor: the same answers from every available engine, batched or one by one; clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coreba import Coreba, InputError, Predictor
from coreba.onnx_io import OnnxFileError
from coreba.postprocess import QueryResult, postprocess
from export.onnx_export import export_onnx
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("predictor")
    torch.manual_seed(0)
    model = Coreba(tiny_config()).eval()
    model.save_pretrained(root / "ckpt")
    export_onnx(model, root / "model.onnx")
    return root


def _samples(cfg, lens, seed=0):
    rng = np.random.default_rng(seed)
    videos = [rng.standard_normal((lv, cfg.video_dim), dtype=np.float32) for lv, _ in lens]
    texts = [rng.standard_normal((lt, cfg.text_dim), dtype=np.float32) for _, lt in lens]
    return videos, texts


def _assert_same(a: list[QueryResult], b: list[QueryResult], atol=1e-4):
    """Same saliency, and the same moments; moments whose scores tie (within atol) may come in either order."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.saliency, y.saliency, atol=atol, rtol=0)
        mx, my = np.asarray(x.moments), np.asarray(y.moments)
        assert mx.shape == my.shape
        np.testing.assert_allclose(mx[:, 2], my[:, 2], atol=atol, rtol=0)  # the sorted scores
        unmatched = list(range(len(my)))
        for moment in mx:
            hit = next((j for j in unmatched if np.abs(my[j] - moment).max() <= atol), None)
            assert hit is not None, f"moment {moment} has no counterpart within {atol} in {my}"
            unmatched.remove(hit)


def test_every_engine_gives_the_same_answers(artifacts):
    torch_pred = Predictor.from_pretrained(artifacts / "ckpt", engine="torch")
    ort_pred = Predictor.from_pretrained(artifacts / "model.onnx", engine="onnxruntime")
    cfg = torch_pred.config
    lens = [(30, 12), (7, 3), (1, 1), (19, 8)]
    videos, texts = _samples(cfg, lens)
    durations = [60.0, 14.0, 2.0, 37.5]
    want = torch_pred.predict(videos, texts, durations)
    _assert_same(ort_pred.predict(videos, texts, durations), want)
    for result, (lv, _), duration in zip(want, lens, durations):
        assert len(result.saliency) == lv and len(result.moments) == cfg.num_queries
        scores = [m[2] for m in result.moments]
        assert scores == sorted(scores, reverse=True)
        assert all(0.0 <= m[0] <= m[1] <= duration for m in result.moments)


def test_batched_equals_one_by_one(artifacts):
    pred = Predictor.from_pretrained(artifacts / "model.onnx", engine="onnxruntime", max_batch_size=3)
    videos, texts = _samples(pred.config, [(30, 12), (5, 2), (17, 1), (2, 9), (30, 4)], seed=1)
    together = pred.predict(videos, texts)
    alone = [pred.predict([v], [t])[0] for v, t in zip(videos, texts)]
    _assert_same(together, alone, atol=1e-5)


def test_submission_line_and_top_k(artifacts):
    pred = Predictor.from_pretrained(artifacts / "ckpt")
    videos, texts = _samples(pred.config, [(10, 4)])
    result = pred.predict(videos, texts, top_k=3)[0]
    assert len(result.moments) == 3
    line = result.to_submission(qid=1, query="q", vid="v")
    assert set(line) == {"qid", "query", "vid", "pred_relevant_windows", "pred_saliency_scores"}


def test_postprocess_is_qd_detr_inference():
    logits = np.array([[[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]]])
    spans = np.array([[[0.5, 0.2], [0.1, 0.4], [0.95, 0.3]]])
    saliency = np.array([[0.1, 0.2, 0.3, 9.0]])
    mask = np.array([[True, True, True, False]])
    (result,) = postprocess(logits, spans, saliency, mask, durations=[100.0])
    fg = np.exp(2) / (np.exp(2) + 1)
    np.testing.assert_allclose(result.moments[0], [40.0, 60.0, fg])
    np.testing.assert_allclose(result.moments[1], [80.0, 100.0, 0.5])  # clamped to the video's end
    np.testing.assert_allclose(result.moments[2], [0.0, 30.0, 1 - fg])  # clamped to 0
    assert result.saliency == pytest.approx([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="durations"):
        postprocess(logits, spans, saliency, mask, durations=[1.0, 2.0])


@pytest.mark.parametrize("problem", ["rank", "feature dim", "NaN", "more than the supported maximum", "empty",
                                     "videos but", "mask"])
def test_bad_inputs_raise_clear_errors(artifacts, problem):
    pred = Predictor.from_pretrained(artifacts / "model.onnx", engine="onnxruntime")
    cfg = pred.config
    (video,), (text,) = _samples(cfg, [(10, 4)])
    if problem == "rank":
        with pytest.raises(InputError, match=r"video_feats\[0\] must have shape"):
            pred.predict([video[None]], [text])
    elif problem == "feature dim":
        with pytest.raises(InputError, match=r"text_feats\[0\] must have shape"):
            pred.predict([video], [text[:, :-1]])
    elif problem == "NaN":
        video[3, 2] = np.nan
        with pytest.raises(InputError, match="NaN"):
            pred.predict([video], [text])
    elif problem == "more than the supported maximum":
        long_video = np.ones((cfg.max_video_len + 1, cfg.video_dim), np.float32)
        with pytest.raises(InputError, match=problem):
            pred.predict([long_video], [text])
    elif problem == "empty":
        with pytest.raises(InputError, match="empty"):
            pred.predict([video], [text[:0]])
    elif problem == "videos but":
        with pytest.raises(InputError, match=problem):
            pred.predict([video, video], [text])
    else:
        feeds = {"video_feats": video[None], "video_mask": np.ones((1, 9), bool), "text_feats": text[None],
                 "text_mask": np.ones((1, 4), bool)}
        with pytest.raises(InputError, match="video_mask has shape"):
            pred.predict_padded(feeds)


def test_missing_artifacts_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="no ONNX model"):
        Predictor.from_pretrained(tmp_path / "nope.onnx", engine="onnxruntime")
    with pytest.raises(FileNotFoundError, match="config"):
        Predictor.from_pretrained(tmp_path, engine="torch")
    with pytest.raises(ValueError, match="unknown engine"):
        Predictor.from_pretrained(tmp_path / "x.onnx", engine="tvm")


@pytest.mark.parametrize("keep", [0, 1000, 0.5, -200])
def test_truncated_onnx_is_named_as_not_a_whole_model(artifacts, tmp_path, keep):
    data = (artifacts / "model.onnx").read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[:int(len(data) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(OnnxFileError, match=r"cut\.onnx is not a (valid|complete) ONNX model") as err:
        Predictor.from_pretrained(cut, engine="onnxruntime")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("problem", "message"), [
    ("top_k 0", r"top_k must be an integer >= 1"),
    ("top_k -2", r"top_k must be an integer >= 1"),
    ("top_k True", r"top_k must be an integer >= 1"),
    ("top_k 2.5", r"top_k must be an integer >= 1"),
    ("scalar durations", r"durations must be a list of one duration"),
    ("NaN duration", r"durations\[1\] must be a finite number of seconds > 0"),
    ("negative duration", r"durations\[0\] must be a finite number of seconds > 0"),
    ("string durations", r"durations must be"),
    ("stacked batch", r"video_feats must be a list with one \(L, D\) array per sample, got one array"),
    ("complex video", r"video_feats\[0\] must hold real numbers, got dtype complex"),
    ("bool query", r"text_feats\[1\] must hold real numbers, got dtype bool"),
    ("ragged sample", r"video_feats\[0\] is not an array of numbers"),
])
def test_bad_predict_arguments_raise_input_errors(artifacts, problem, message):
    pred = Predictor.from_pretrained(artifacts / "ckpt")
    videos, texts = _samples(pred.config, [(10, 4), (10, 3)])
    kwargs = {"durations": [20.0, 20.0]}
    if problem.startswith("top_k"):
        kwargs["top_k"] = {"0": 0, "-2": -2, "True": True, "2.5": 2.5}[problem.split()[1]]
    elif problem == "scalar durations":
        kwargs["durations"] = 150.0
    elif problem == "NaN duration":
        kwargs["durations"] = [20.0, float("nan")]
    elif problem == "negative duration":
        kwargs["durations"] = [-1.0, 20.0]
    elif problem == "string durations":
        kwargs["durations"] = "20"
    elif problem == "stacked batch":
        videos = np.stack(videos)
    elif problem == "complex video":
        videos[0] = videos[0] + 1j
    elif problem == "bool query":
        texts[1] = texts[1] > 0
    else:
        videos[0] = [[1.0, 2.0], [3.0]]
    with pytest.raises(InputError, match=message):
        pred.predict(videos, texts, **kwargs)
