"""The QVHighlights dataset: the real annotation files with synthetic features, labels, batching, bad files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from coreba.data import (
    AnnotationError,
    DataConfig,
    FeatureFileError,
    QVHighlightsDataset,
    collate_batch,
    load_annotations,
    write_annotations,
)
from coreba.data.qvhighlights import saliency_labels
from coreba.data.synthetic import SyntheticPaths, generate_synthetic_dataset

SHARED = Path(os.environ.get("COREBA_SHARED_DIR", Path(__file__).resolve().parents[2].parent / "shared"))
QVH = SHARED / "data" / "qvhighlights"
VAL = QVH / "highlight_val_release.jsonl"
TEST = QVH / "highlight_test_release.jsonl"
needs_release = pytest.mark.skipif(
    not (VAL.is_file() and TEST.is_file()),
    reason=f"the QVHighlights annotation files are not at {QVH} (set COREBA_SHARED_DIR to the shared/ folder)",
)

SLOWFAST_DIM, CLIP_DIM, TEXT_DIM = 64, 32, 32
VIDEO_DIM = SLOWFAST_DIM + CLIP_DIM + 2
NUM_QUERIES = 160  # the first 160 val queries include multi-window queries, a 126 s video and a shared video


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> SyntheticPaths:
    if not (VAL.is_file() and TEST.is_file()):
        pytest.skip(f"the QVHighlights annotation files are not at {QVH} (set COREBA_SHARED_DIR)")
    return generate_synthetic_dataset(
        tmp_path_factory.mktemp("qvh"), annotations={"val": VAL, "test": TEST}, num_queries=NUM_QUERIES,
        slowfast_dim=SLOWFAST_DIM, clip_dim=CLIP_DIM, text_dim=TEXT_DIM,
    )


@pytest.fixture(scope="module")
def val_set(release: SyntheticPaths) -> QVHighlightsDataset:
    return QVHighlightsDataset(release.data_config("val"), seed=0)


def sample_of(dataset: QVHighlightsDataset, qid: int) -> dict:
    index = next(i for i, r in enumerate(dataset.records) if r["qid"] == qid)
    return dataset[index]


def record_of(qid: int) -> dict:
    return next(r for r in load_annotations(VAL) if r["qid"] == qid)


# ---------------------------------------------------------------- the real annotation files


@needs_release
def test_release_files_parse_without_final_newline():
    assert not VAL.read_bytes().endswith(b"\n")
    assert len(load_annotations(VAL, require_labels=True)) == 1550
    test = load_annotations(TEST)
    assert len(test) == 1542 and not any("relevant_windows" in r for r in test)
    with pytest.raises(AnnotationError, match=rf"{TEST.name}:1: no labels"):
        load_annotations(TEST, require_labels=True)


@needs_release
def test_sample_shapes_and_normalisation(val_set: QVHighlightsDataset):
    sample = sample_of(val_set, 2579)
    video, text = sample["video_feats"], sample["text_feats"]
    assert video.shape == (75, VIDEO_DIM) and video.dtype == torch.float32
    assert text.shape[1] == TEXT_DIM and text.dtype == torch.float32
    for part in (video[:, :SLOWFAST_DIM], video[:, SLOWFAST_DIM:-2], text):
        torch.testing.assert_close(part.norm(dim=-1), torch.ones(len(part)), atol=1e-4, rtol=0)
    start = torch.arange(75) / 75
    torch.testing.assert_close(video[:, -2:], torch.stack([start, start + 1 / 75], dim=1))
    assert sample["meta"] == {"qid": 2579, "query": record_of(2579)["query"], "duration": 150,
                              "vid": "NUsG9BgSes0_210.0_360.0", "relevant_windows": [[82, 150]]}


@needs_release
def test_labels_of_a_known_query(val_set: QVHighlightsDataset):
    record, sample = record_of(2579), sample_of(val_set, 2579)
    torch.testing.assert_close(sample["span_labels"], torch.tensor([[(82 / 150 + 1) / 2, 68 / 150]]))
    expected = torch.zeros(75)
    expected[record["relevant_clip_ids"]] = torch.tensor([float(sum(s)) for s in record["saliency_scores"]])
    assert torch.equal(sample["saliency_all_labels"], expected)
    pos, neg = sample["saliency_pos_labels"], sample["saliency_neg_labels"]
    assert pos.dtype == neg.dtype == torch.long and pos.shape == neg.shape == (4,)
    relevant = set(record["relevant_clip_ids"])
    assert set(expected[pos[:2]].tolist()) == {9.0}  # the top summed score of this query
    assert sorted(neg[:2].tolist()) == [41, 46]  # its two clips of summed score 4, the lowest
    assert set(pos[2:].tolist()) <= relevant and not set(neg[2:].tolist()) & relevant


@needs_release
def test_multi_window_query(val_set: QVHighlightsDataset):
    spans = sample_of(val_set, 5342)["span_labels"]  # windows [[56, 76], [96, 150]] in a 75-clip video
    xx = torch.stack([spans[:, 0] - spans[:, 1] / 2, spans[:, 0] + spans[:, 1] / 2], dim=1)
    torch.testing.assert_close(xx, torch.tensor([[56.0, 76.0], [96.0, 150.0]]) / 150)
    spans = torch.cat([val_set[i]["span_labels"] for i in range(len(val_set))])
    starts, ends = spans[:, 0] - spans[:, 1] / 2, spans[:, 0] + spans[:, 1] / 2
    assert starts.min() >= -1e-6 and ends.max() <= 1 + 1e-6 and (spans[:, 1] > 0).all()


@needs_release
def test_easy_pairs_are_reproducible(release: SyntheticPaths):
    def picks(seed: int) -> list[list[int]]:
        dataset = QVHighlightsDataset(release.data_config("val"), seed=seed)
        return [dataset[i]["saliency_neg_labels"].tolist() for i in range(20)]

    assert picks(0) == picks(0)
    assert picks(0) != picks(1)


@needs_release
def test_collate_pads_a_shorter_video(val_set: QVHighlightsDataset):
    short, full = sample_of(val_set, 8737), sample_of(val_set, 2579)  # 126 s (63 clips) and 150 s
    batch = collate_batch([short, full])
    inputs, targets = batch["model_inputs"], batch["targets"]
    assert inputs["video_feats"].shape == (2, 75, VIDEO_DIM)
    assert inputs["video_mask"].dtype == torch.bool and inputs["video_mask"].sum(1).tolist() == [63, 75]
    assert not inputs["video_feats"][0, 63:].any() and torch.equal(inputs["video_feats"][0, :63], short["video_feats"])
    lengths = [len(short["text_feats"]), len(full["text_feats"])]
    assert inputs["text_feats"].shape == (2, max(lengths), TEXT_DIM)
    assert inputs["text_mask"].sum(1).tolist() == lengths
    assert targets["saliency_all_labels"].shape == (2, 75) and not targets["saliency_all_labels"][0, 63:].any()
    assert targets["saliency_pos_labels"].shape == (2, 4) and targets["saliency_neg_labels"].dtype == torch.long
    assert torch.equal(targets["span_labels"][0]["spans"], short["span_labels"])
    assert [m["qid"] for m in batch["meta"]] == [8737, 2579]


@needs_release
def test_truncation_to_max_lengths(release: SyntheticPaths):
    dataset = QVHighlightsDataset(release.data_config("val", max_video_len=32, max_text_len=5))
    sample = sample_of(dataset, 5342)  # clips 28..37 and 48..74 are relevant
    assert sample["video_feats"].shape == (32, VIDEO_DIM) and sample["text_feats"].shape == (5, TEXT_DIM)
    torch.testing.assert_close(sample["video_feats"][-1, -2:], torch.tensor([31 / 32, 1.0]))
    assert sample["saliency_all_labels"][28:].all() and not sample["saliency_all_labels"][:28].any()
    assert sample["span_labels"].min() >= 0 and sample["span_labels"][:, 0].max() <= 1
    assert sample["saliency_pos_labels"].max() <= 31
    outside = sample_of(dataset, 2579)  # every relevant clip (41..74) lies beyond the cut
    assert not outside["saliency_all_labels"].any() and outside["saliency_pos_labels"].tolist()[:2] == [31, 31]


@needs_release
def test_unlabelled_test_split(release: SyntheticPaths):
    dataset = QVHighlightsDataset(release.data_config("test"))
    assert not dataset.config.load_labels
    sample = dataset[0]
    assert set(sample) == {"meta", "video_feats", "text_feats"} and "relevant_windows" not in sample["meta"]
    batch = next(iter(DataLoader(dataset, batch_size=4, collate_fn=collate_batch)))
    assert "targets" not in batch and batch["model_inputs"]["video_feats"].shape[0] == 4
    with pytest.raises(AnnotationError, match="test.jsonl:1: no labels"):
        QVHighlightsDataset(release.data_config("test", load_labels=True))


@needs_release
def test_mixed_batch_is_refused(release: SyntheticPaths, val_set: QVHighlightsDataset):
    unlabelled = QVHighlightsDataset(release.data_config("test"))[0]
    with pytest.raises(ValueError, match="labelled and unlabelled"):
        collate_batch([val_set[0], unlabelled])


# ---------------------------------------------------------------- label rules without files


def test_saliency_labels_fall_back_and_clamp():
    rng = np.random.default_rng(0)
    scores = [[1, 1, 1], [4, 4, 4], [2, 2, 2], [0, 0, 0], [3, 3, 3], [1, 2, 1], [2, 2, 1], [0, 1, 0], [4, 4, 3]]
    pos, neg, all_scores = saliency_labels(list(range(9)), scores, 10, rng)  # one clip outside: reuse hard
    assert pos == [8, 1, 8, 1] and neg == [3, 7, 3, 7]
    assert all_scores.tolist() == [3, 12, 6, 0, 9, 4, 5, 1, 11, 0]
    pos, neg, all_scores = saliency_labels([3], [[2, 2, 2]], 10, rng)  # a single relevant clip
    assert pos == [3, 3, 3, 3] and neg[:2] == [3, 3] and 3 not in neg[2:]
    pos, neg, all_scores = saliency_labels([12, 13], [[1, 1, 1], [2, 2, 2]], 10, rng)  # beyond the features
    assert max(pos + neg) <= 9 and not all_scores.any()


# ---------------------------------------------------------------- bad files


def write_npz(path: Path, array: np.ndarray, key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{key: array})


@pytest.fixture
def tiny(tmp_path: Path) -> DataConfig:
    """Two labelled queries on two 10-clip videos, with 8-dim SlowFast, 4-dim CLIP and 4-dim text features."""
    rng = np.random.default_rng(0)
    write_annotations(tmp_path / "val.jsonl", [
        {"qid": q, "query": f"q{q}", "duration": 20, "vid": f"v{q}", "relevant_clip_ids": [1, 2],
         "saliency_scores": [[1, 2, 3], [4, 4, 4]], "relevant_windows": [[2, 6]]} for q in (1, 2)
    ])
    for q in (1, 2):
        write_npz(tmp_path / "slowfast" / f"v{q}.npz", rng.standard_normal((10, 8)), "features")
        write_npz(tmp_path / "clip" / f"v{q}.npz", rng.standard_normal((12, 4)), "features")  # 2 extra clips
        write_npz(tmp_path / "text" / f"qid{q}.npz", rng.standard_normal((6, 4)), "last_hidden_state")
    return DataConfig(tmp_path / "val.jsonl", [tmp_path / "slowfast", tmp_path / "clip"], tmp_path / "text",
                      video_dim=8 + 4 + 2, text_dim=4)


def test_sources_are_cut_to_the_shortest(tiny: DataConfig):
    sample = QVHighlightsDataset(tiny)[0]
    assert sample["video_feats"].shape == (10, 14)
    torch.testing.assert_close(sample["span_labels"], torch.tensor([[0.2, 0.2]]))


def test_training_keeps_at_most_five_windows_a_query_as_qd_detr(tiny: DataConfig):
    assert DataConfig("a.jsonl", ["v"], "t").max_windows == 5  # QD-DETR's --max_windows default
    records = load_annotations(tiny.annotation_path)
    records[0]["relevant_windows"] = [[2 * i, 2 * i + 2] for i in range(0, 10, 2)] + [[18, 20], [14, 16]]  # 7
    write_annotations(tiny.annotation_path, records)
    labels = QVHighlightsDataset(tiny)[0]["span_labels"]
    assert labels.shape == (5, 2)
    assert len({tuple(row) for row in labels.tolist()}) == 5  # 5 distinct windows of the 7


def test_windows_beyond_max_windows_are_sampled(tiny: DataConfig):
    records = load_annotations(tiny.annotation_path)
    records[0]["relevant_windows"] = [[0, 2], [4, 6], [8, 10]]
    write_annotations(tiny.annotation_path, records)
    tiny.max_windows = 2
    assert QVHighlightsDataset(tiny)[0]["span_labels"].shape == (2, 2)


def test_workers_draw_anew_each_epoch_and_reproducibly(tiny: DataConfig):
    loader = DataLoader(QVHighlightsDataset(tiny), batch_size=1, num_workers=2, collate_fn=collate_batch)

    def epoch(torch_seed: int | None = None) -> list[list[int]]:
        if torch_seed is not None:
            torch.manual_seed(torch_seed)
        return [b["targets"]["saliency_neg_labels"][0, 2:].tolist() for b in loader]

    assert epoch(0) == epoch(0)
    assert epoch() != epoch()


BAD_FILES = {
    "missing": ("clip/v1.npz", None, "features", "not found"),
    "wrong key": ("slowfast/v1.npz", np.ones((10, 8)), "feats", "no key 'features'"),
    "wrong video dim": ("clip/v1.npz", np.ones((10, 5)), "features", "expected video_dim 14"),
    "wrong text dim": ("text/qid1.npz", np.ones((6, 5)), "last_hidden_state", "expected 4"),
    "NaN": ("slowfast/v1.npz", np.full((10, 8), np.nan), "features", "NaN or Inf"),
    "Inf": ("text/qid1.npz", np.full((6, 4), np.inf), "last_hidden_state", "NaN or Inf"),
    "empty": ("slowfast/v1.npz", np.zeros((0, 8)), "features", "empty"),
    "1-D": ("slowfast/v1.npz", np.zeros(8), "features", "2-D"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_feature_file_is_named(tiny: DataConfig, case: str):
    relative, array, key, problem = BAD_FILES[case]
    path = tiny.annotation_path.parent / relative
    path.unlink()
    if array is not None:
        write_npz(path, array, key)
    with pytest.raises(FeatureFileError, match=problem) as err:
        QVHighlightsDataset(tiny)[0]
    assert str(path) in str(err.value)


def test_unreadable_file_is_named(tiny: DataConfig):
    path = tiny.annotation_path.parent / "slowfast" / "v1.npz"
    path.write_bytes(b"not a zip archive")
    with pytest.raises(FeatureFileError, match="unreadable") as err:
        QVHighlightsDataset(tiny)[0]
    assert str(path) in str(err.value)


def test_inconsistent_dim_is_named_without_expected_dims(tiny: DataConfig):
    tiny.video_dim = None  # then the first file of a source sets the dim later files must have
    odd = tiny.annotation_path.parent / "clip" / "v2.npz"
    write_npz(odd, np.ones((10, 6)), "features")
    dataset = QVHighlightsDataset(tiny)
    dataset[0]
    with pytest.raises(FeatureFileError, match="differs from 4") as err:
        dataset[1]
    assert str(odd) in str(err.value)


def test_malformed_annotation_lines_are_named(tmp_path: Path):
    good = {"qid": 1, "query": "q", "duration": 150, "vid": "v"}
    cases = {
        "{not json": "not valid JSON",
        json.dumps({**good, "qid": "1"}): "'qid' has type str",
        json.dumps({k: v for k, v in good.items() if k != "vid"}): "missing field 'vid'",
        json.dumps({**good, "relevant_windows": [[0, 2]]}): "not all of",
        json.dumps({**good, "relevant_windows": [[4, 2]], "relevant_clip_ids": [1],
                    "saliency_scores": [[1, 1, 1]]}): "start < end",
        json.dumps({**good, "relevant_windows": [[0, 4]], "relevant_clip_ids": [0, 1],
                    "saliency_scores": [[1, 1, 1]]}): "2 relevant_clip_ids but 1 saliency_scores",
    }
    path = tmp_path / "bad.jsonl"
    for line, problem in cases.items():
        path.write_text(json.dumps(good) + "\n\n" + line)
        with pytest.raises(AnnotationError, match=rf"bad.jsonl:3: .*{problem}"):
            load_annotations(path)
