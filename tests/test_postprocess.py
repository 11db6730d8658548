"""Post-processing modes: "exact" times (Predictor, serving) and QD-DETR's QVHighlights submission rule
(``coreba.predict``), on windows whose answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coreba import Coreba, Predictor
from coreba.engines.torch_engine import TorchEngine
from coreba.postprocess import postprocess, qvhighlights_moment
from coreba.predict import predict_dataset
from tests.conftest import random_batch, tiny_config


def _spans_for(windows: list[tuple[float, float]], duration: float) -> np.ndarray:
    """(cx, w) spans whose windows times ``duration`` are ``windows`` (start, end in seconds)."""
    return np.array([[[(s + e) / 2 / duration, (e - s) / duration] for s, e in windows]])


def _logits_for(scores: list[float]) -> np.ndarray:
    """Logits whose foreground probability (softmax index 0) is each score."""
    p = np.asarray(scores, dtype=np.float64)
    return np.stack([np.log(p), np.log(1 - p)], axis=-1)[None]


WINDOWS = [(3.1, 10.9), (-1.2, 151.7), (5.0, 9.0), (140.99996, 149.00004), (7.0, 7.2)]
SCORES = [0.9, 0.87654321, 0.5, 0.123449, 0.12344]


def test_qvhighlights_rule_on_known_windows():
    duration = 150.0
    saliency = np.array([[0.1, 0.3, -2.5, 7.0]])
    mask = np.array([[True, True, True, False]])
    (result,) = postprocess(_logits_for(SCORES), _spans_for(WINDOWS, duration), saliency, mask,
                            durations=[duration], mode="qvhighlights")
    assert result.moments == [
        [4.0, 10.0, 0.9],  # 3.1 -> 4 (1.55 clips rounds up), 10.9 -> 10
        [0.0, 150.0, 0.8765],  # clamped to [0, 150] s, score to 4 decimals
        [4.0, 8.0, 0.5],  # 5.0 and 9.0 are 2.5 and 4.5 clips: halves go to even, as torch.round does
        # ends are written to 4 decimals first, as QD-DETR writes them: 149.00004 s -> 149.0 s = 74.5 clips -> 74
        # (unwritten, 74.50002 clips would round to 75, i.e. 150 s)
        [140.0, 148.0, 0.1234],
        [8.0, 8.0, 0.1234],  # a window shorter than a clip may collapse; QD-DETR keeps it too
    ]
    # both last scores round to 0.1234: the order is the one of the unrounded scores (QD-DETR sorts first)
    assert result.saliency == [float(np.float16(0.1)), float(np.float16(0.3)), -2.5]  # float16, as QD-DETR stores
    assert result.saliency != [0.1, 0.3, -2.5]


def test_qvhighlights_rule_clamps_to_150_s_not_to_the_duration():
    # QD-DETR's PostProcessorDETR clamps to [0, 150] whatever the video's duration
    assert qvhighlights_moment(120.3, 133.1, 0.5, 2.0) == [120.0, 134.0, 0.5]
    assert qvhighlights_moment(120.3, 133.1, 0.5, 1.0) == [120.0, 133.0, 0.5]  # the model's clip length


def test_exact_mode_keeps_times_and_is_the_default():
    duration = 150.0
    args = (_logits_for(SCORES), _spans_for(WINDOWS, duration), np.array([[0.1]]), np.array([[True]]))
    (default,) = postprocess(*args, durations=[duration])
    (exact,) = postprocess(*args, durations=[duration], mode="exact")
    assert default == exact
    np.testing.assert_allclose(exact.moments[0], [3.1, 10.9, 0.9])
    np.testing.assert_allclose(exact.moments[1], [0.0, 150.0, 0.87654321])  # clamped to the duration
    assert exact.saliency == [0.1]
    with pytest.raises(ValueError, match="unknown post-processing mode"):
        postprocess(*args, durations=[duration], mode="rounded")


def test_predictor_times_are_exact_unless_asked(tmp_path):
    cfg = tiny_config()
    torch.manual_seed(0)
    model = Coreba(cfg).eval()
    predictor = Predictor(TorchEngine(model), cfg)
    video, vmask, text, tmask = random_batch(cfg, [30], [12])
    exact = predictor.predict([video[0].numpy()], [text[0].numpy()], durations=[150.0])[0]
    assert any(s % 2 or e % 2 for s, e, _ in exact.moments)  # random weights: times not on the 2 s grid
    rounded = predictor.predict([video[0].numpy()], [text[0].numpy()], durations=[150.0], mode="qvhighlights")[0]
    assert all(s % 2 == 0 and e % 2 == 0 for s, e, _ in rounded.moments)
    for (s, e, p), (rs, re, rp) in zip(exact.moments, rounded.moments, strict=True):
        assert abs(rs - s) <= 1 + 1e-4 and abs(re - e) <= 1 + 1e-4 and abs(rp - p) <= 5e-5


def test_predict_dataset_writes_submissions_with_the_qvhighlights_rule():
    cfg = tiny_config()
    torch.manual_seed(0)
    model = Coreba(cfg).eval()
    video, vmask, text, tmask = random_batch(cfg, [30, 17], [12, 5])
    batch = {"model_inputs": {"video_feats": video, "video_mask": vmask, "text_feats": text, "text_mask": tmask},
             "meta": [{"qid": 1, "query": "a", "vid": "v1", "duration": 60.0},
                      {"qid": 2, "query": "b", "vid": "v2", "duration": 34.0}]}
    lines = predict_dataset(model, [batch])
    for line in lines:
        for start, end, score in line["pred_relevant_windows"]:
            assert start % 2 == 0 and end % 2 == 0 and 0 <= start <= end <= 150
            assert score == round(score, 4)
    exact = predict_dataset(model, [batch], mode="exact")
    assert any(s % 2 for line in exact for s, _, _ in line["pred_relevant_windows"])
