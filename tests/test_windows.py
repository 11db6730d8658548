"""Windows of a long video, temporal NMS and the merge of windows' answers, on known numbers."""

from __future__ import annotations

import numpy as np
import pytest

from coreba import InputError
from coreba.ops.temporal_nms import hull_iou, temporal_nms
from coreba.postprocess import QueryResult
from coreba.windows import Window, WindowMerge, num_windows, plan_windows, window_features


def test_windows_cover_the_video_with_the_last_one_aligned_to_its_end():
    windows = plan_windows(200, 399.0, window=75, stride=50, clip_length=2.0)
    assert [(w.start, w.num_clips) for w in windows] == [(0, 75), (50, 75), (100, 75), (125, 75)]
    assert [(w.start_s, w.end_s) for w in windows] == [(0.0, 150.0), (100.0, 250.0), (200.0, 350.0),
                                                       (250.0, 399.0)]  # the partial last clip: 399 s, not 400
    assert not any(w.whole for w in windows)
    assert num_windows(200, 75, 50) == len(windows)
    assert len(plan_windows(175, 350.0, 75, 50, 2.0)) == num_windows(175, 75, 50) == 3  # last start 100 = 2 strides
    (whole,) = plan_windows(75, 137.0, 75, 50, 2.0)
    assert whole == Window(0, 75, 0.0, 137.0, whole=True)  # a video that fits keeps its own duration, unwindowed


def test_a_duration_that_ends_before_the_last_window_is_refused():
    with pytest.raises(InputError, match=r"duration 250 s ends before clip 125 starts \(250 s\)"):
        plan_windows(200, 250.0, 75, 50, 2.0)


def test_each_window_carries_its_own_endpoint_features():
    video = np.arange(200 * 6, dtype=np.float32).reshape(200, 6)
    window = plan_windows(200, 400.0, 75, 50, 2.0)[1]
    feats = window_features(video, window)
    np.testing.assert_array_equal(feats[:, :4], video[50:125, :4])
    np.testing.assert_allclose(feats[:, 4], np.arange(75) / 75)
    np.testing.assert_allclose(feats[:, 5], np.arange(1, 76) / 75)
    assert video[50, 4] == 50 * 6 + 4  # the caller's array is untouched
    whole = plan_windows(30, 60.0, 75, 50, 2.0)[0]
    assert np.shares_memory(window_features(video[:30], whole), video)  # a whole float32 video: a view


def test_hull_iou():
    spans = np.array([[0.0, 10.0], [5.0, 15.0], [10.0, 20.0], [20.0, 30.0], [3.0, 3.0]])
    np.testing.assert_allclose(hull_iou(np.array([0.0, 10.0]), spans), [1.0, 5 / 15, 0.0, 0.0, 0.0])
    assert hull_iou(np.array([3.0, 3.0]), spans[4:])[0] == 0.0  # the same single point: 0, as Moment-DETR


def test_temporal_nms_keeps_the_best_of_overlapping_moments():
    moments = np.array([
        [0.0, 10.0, 0.5],
        [1.0, 11.0, 0.9],    # IoU with [0, 10] is 9/11 = 0.82
        [30.0, 40.0, 0.7],
        [5.0, 15.0, 0.8],    # IoU with [1, 11] is 6/14 = 0.43
        [31.0, 40.0, 0.6],   # IoU with [30, 40] is 0.9
    ])
    kept = temporal_nms(moments, iou_threshold=0.5)
    np.testing.assert_array_equal(kept, moments[[1, 3, 2]])
    np.testing.assert_array_equal(temporal_nms(moments, 0.5, max_kept=2), moments[[1, 3]])
    np.testing.assert_array_equal(temporal_nms(moments, 1.0), moments[[1, 3, 2, 4, 0]])  # nothing exceeds IoU 1
    np.testing.assert_array_equal(temporal_nms(moments, 0.0), moments[[1, 2]])  # any overlap goes


def test_temporal_nms_keeps_a_moment_exactly_at_the_threshold_and_ties_in_input_order():
    moments = np.array([[0.0, 10.0, 0.9], [5.0, 15.0, 0.5], [20.0, 30.0, 0.4]])
    iou = 5 / 15
    np.testing.assert_array_equal(temporal_nms(moments, iou), moments)  # IoU == threshold: kept (strict >)
    np.testing.assert_array_equal(temporal_nms(moments, iou - 1e-9), moments[[0, 2]])
    tie = np.array([[0.0, 1.0, 0.5], [10.0, 11.0, 0.5], [20.0, 21.0, 0.5]])
    np.testing.assert_array_equal(temporal_nms(tie, 0.5), tie)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.5", True, None])
def test_temporal_nms_names_a_bad_threshold(bad):
    with pytest.raises(InputError, match="iou_threshold must be a number in \\[0, 1\\]"):
        temporal_nms(np.zeros((1, 3)), bad)


def _result(moments, saliency) -> QueryResult:
    return QueryResult(moments=[list(map(float, m)) for m in moments], saliency=list(map(float, saliency)))


def test_merge_removes_the_duplicate_that_overlapping_windows_both_saw():
    # 5 clips of 2 s, windows of 3 clips: [0, 3) and [2, 5), overlapping on clip 2
    first, second = plan_windows(5, 10.0, window=3, stride=2, clip_length=2.0)
    merge = WindowMerge(num_clips=5, duration=10.0, clip_length=2.0)
    # the same moment, 4..6 s of the video: 4..6 s of the first window, 0..2 s of the second
    merge.add(first, _result([[4.0, 6.0, 0.9], [0.0, 2.0, 0.3]], [1.0, 2.0, 3.0]))
    merge.add(second, _result([[0.0, 2.0, 0.8], [2.0, 6.0, 0.6]], [5.0, 7.0, 9.0]))
    answer = merge.finish(top_k=10, iou_threshold=0.5, mode="exact")
    assert answer.moments == [[4.0, 6.0, 0.9], [6.0, 10.0, 0.6], [0.0, 2.0, 0.3]]
    assert answer.saliency == [1.0, 2.0, (3.0 + 5.0) / 2, 7.0, 9.0]  # the mean where windows overlap
    kept_both = merge.finish(top_k=10, iou_threshold=1.0, mode="exact")
    assert [4.0, 6.0, 0.8] in kept_both.moments  # without NMS the duplicate stays: the test above can fail
    assert merge.finish(top_k=1, iou_threshold=0.5, mode="exact").moments == [[4.0, 6.0, 0.9]]


def test_merge_in_qvhighlights_mode_clamps_to_the_long_video_not_to_150_s():
    window = Window(100, 75, 200.0, 350.0, whole=False)
    merge = WindowMerge(num_clips=175, duration=350.0, clip_length=2.0)
    merge.add(Window(0, 75, 0.0, 150.0, whole=False), _result([[1.0, 3.0, 0.1]], np.zeros(75)))
    merge.add(Window(50, 75, 100.0, 250.0, whole=False), _result([[1.0, 3.0, 0.1]], np.zeros(75)))
    merge.add(window, _result([[101.2, 149.9, 0.123456]], np.full(75, 0.1)))
    top = merge.finish(top_k=1, iou_threshold=0.5, mode="qvhighlights").moments[0]
    assert top == [302.0, 350.0, 0.1235]  # 301.2 -> 302 and 349.9 -> 350 on the 2 s grid, beyond 150 s
