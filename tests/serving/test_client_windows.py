"""The client's side of long videos, without a server: what it reads from the served model's config and metadata,
and how it writes a batch of window rows into one padded request."""

from __future__ import annotations

import numpy as np
import pytest

from coreba.data.qvhighlights import NUM_TEF, temporal_endpoint_features
from coreba.schedule import Row
from coreba.windows import plan_windows
from serving.client import InputLayout, ServedWindows, pad_request, row_request
from serving.spec import CLIP_LENGTH_PARAMETER

LAYOUT = InputLayout(max_clips=30, video_dim=40, max_tokens=12, text_dim=24)
METADATA = {"outputs": [{"name": "moments", "shape": [-1, 6, 3]}, {"name": "saliency", "shape": [-1, 30]}]}


@pytest.mark.parametrize("wrap", [lambda c: c, lambda c: {"config": c}])  # HTTP, gRPC as_json
def test_served_windows_read_from_config_and_metadata(wrap):
    config = {"max_batch_size": 8, "parameters": {CLIP_LENGTH_PARAMETER: {"string_value": "1.5"}}}
    windows = ServedWindows.from_server(wrap(config), METADATA)
    assert windows == ServedWindows(max_batch_size=8, top_k=6, clip_length=1.5)
    answering = windows.answering(LAYOUT, 100, None, 0.4)
    assert (answering.top_k, answering.mode, answering.window, answering.stride) == (6, "exact", 30, 15)
    assert (answering.iou_threshold, answering.clip_length) == (0.4, 1.5)


def test_a_repository_without_a_clip_length_still_answers_short_videos():
    windows = ServedWindows.from_server({"max_batch_size": 4}, METADATA)
    assert windows.clip_length is None
    assert windows.answering(LAYOUT, 30, None, 0.5).window == 30
    with pytest.raises(ValueError, match="no 'clip_length' parameter"):
        windows.answering(LAYOUT, 31, None, 0.5)


def test_window_rows_become_one_request_in_window_seconds():
    rng = np.random.default_rng(0)
    video = rng.standard_normal((70, 40), dtype=np.float32)
    texts = [rng.standard_normal((n, 24), dtype=np.float32) for n in (3, 12)]
    windows = plan_windows(70, 139.0, 30, 20, 2.0)  # starts 0, 20, 40
    rows = [Row(q, 0, q, w) for w in windows for q in range(2)]
    request = row_request(rows, [video], texts, LAYOUT)
    assert request["video_feats"].shape == (6, 30, 40) and request["video_mask"].all()
    for i, row in enumerate(rows):
        clips = video[row.window.start: row.window.start + 30]
        np.testing.assert_array_equal(request["video_feats"][i, :, :-NUM_TEF], clips[:, :-NUM_TEF])
        np.testing.assert_array_equal(request["video_feats"][i, :, -NUM_TEF:], temporal_endpoint_features(30))
        assert request["text_mask"][i].sum() == len(texts[row.text])
    # each row's duration is its window's: 60 s, except the last, which ends at the video's 139 s
    np.testing.assert_allclose(request["duration"][:, 0], [60.0, 60.0, 60.0, 60.0, 59.0, 59.0])


def test_a_video_within_the_model_is_padded_as_one_untouched_row():
    rng = np.random.default_rng(1)
    video, text = rng.standard_normal((17, 40), dtype=np.float32), rng.standard_normal((5, 24), dtype=np.float32)
    request = pad_request(video, text, 33.5, LAYOUT)
    np.testing.assert_array_equal(request["video_feats"][0, :17], video)  # endpoint features as given
    assert not request["video_feats"][0, 17:].any() and request["video_mask"][0].sum() == 17
    assert request["duration"].tolist() == [[33.5]]
