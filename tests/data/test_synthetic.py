"""The synthetic dataset: valid generated annotations, the release layout, idempotence, a learnable signal."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from coreba.data import QVHighlightsDataset, load_annotations
from coreba.data.synthetic import SyntheticPaths, generate_synthetic_dataset, main

SHARED = Path(os.environ.get("COREBA_SHARED_DIR", Path(__file__).resolve().parents[2].parent / "shared"))
VAL = SHARED / "data" / "qvhighlights" / "highlight_val_release.jsonl"
RELEASE_FIELDS = {"qid", "query", "duration", "vid", "relevant_windows", "relevant_clip_ids", "saliency_scores"}
SMALL = {"slowfast_dim": 64, "clip_dim": 32, "text_dim": 32}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> SyntheticPaths:
    return generate_synthetic_dataset(tmp_path_factory.mktemp("gen"), num_queries=200, seed=3, **SMALL)


def test_layout_and_dims(generated: SyntheticPaths):
    root = generated.root
    assert generated.annotations == {s: root / "annotations" / f"{s}.jsonl" for s in ("train", "val", "test")}
    assert generated.video_feature_dirs == (root / "features" / "slowfast", root / "features" / "clip")
    assert generated.text_feature_dir == root / "features" / "text"
    assert (generated.video_dim, generated.text_dim) == (64 + 32 + 2, 32)
    assert not generated.annotations["val"].read_bytes().endswith(b"\n")  # as the release files


def test_generated_annotations_are_valid(generated: SyntheticPaths):
    splits = {s: load_annotations(p) for s, p in generated.annotations.items()}
    qids = [r["qid"] for records in splits.values() for r in records]
    assert len(qids) == len(set(qids)) == 600
    assert all(set(r) == RELEASE_FIELDS - {"relevant_windows", "relevant_clip_ids", "saliency_scores"}
               for r in splits["test"])
    for record in splits["train"] + splits["val"]:
        assert set(record) == RELEASE_FIELDS
        assert 120 <= record["duration"] <= 150 and record["duration"] % 2 == 0
        windows = record["relevant_windows"]
        assert 1 <= len(windows) <= 3 and all(0 <= s < e <= record["duration"] for s, e in windows)
        assert all(w[1] < v[0] for w, v in zip(windows, windows[1:], strict=False))  # sorted, disjoint
        assert record["relevant_clip_ids"] == [c for s, e in windows for c in range(s // 2, e // 2)]
        scores = np.asarray(record["saliency_scores"])
        assert scores.shape == (len(record["relevant_clip_ids"]), 3) and scores.min() >= 0 and scores.max() <= 4
    assert max(Counter(r["vid"] for r in splits["train"]).values()) >= 2  # some videos have several queries


def test_features_fit_the_annotations(generated: SyntheticPaths):
    for split in ("train", "test"):
        dataset = QVHighlightsDataset(generated.data_config(split))  # expects the written dims
        for index in range(0, len(dataset), 37):
            record, sample = dataset.records[index], dataset[index]
            assert len(sample["video_feats"]) == record["duration"] // 2
            assert 8 <= len(sample["text_feats"]) <= 24


def test_same_parameters_are_not_rewritten(generated: SyntheticPaths, tmp_path: Path):
    feature = next(generated.video_feature_dirs[0].iterdir())
    stamp = feature.stat().st_mtime_ns
    again = generate_synthetic_dataset(generated.root, num_queries=200, seed=3, **SMALL)
    assert again == generated and feature.stat().st_mtime_ns == stamp

    def arrays(paths: SyntheticPaths) -> list[np.ndarray]:
        return [np.load(p)["features"] for p in sorted(paths.video_feature_dirs[1].iterdir())[:5]]

    copy = generate_synthetic_dataset(tmp_path / "copy", num_queries=200, seed=3, **SMALL)
    assert all(np.array_equal(a, b) for a, b in zip(arrays(copy), arrays(generated), strict=True))
    other = generate_synthetic_dataset(tmp_path / "copy", num_queries=20, seed=4, **SMALL)
    assert len(load_annotations(other.annotations["val"])) == 20
    assert len(list(other.text_feature_dir.iterdir())) == 60  # the 600 files of the first run are gone


def fit_text_to_video(dataset: QVHighlightsDataset, dims: slice) -> np.ndarray:
    """Ridge map from a query's mean token to the mean of its relevant clips: a linear probe of the signal."""
    texts, videos = [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        texts.append(sample["text_feats"].mean(0).numpy())
        videos.append(sample["video_feats"][sample["saliency_all_labels"] > 0, dims].mean(0).numpy())
    x, y = np.stack(texts), np.stack(videos)
    return np.linalg.solve(x.T @ x + 1e-2 * np.eye(x.shape[1]), x.T @ y)


def test_the_planted_signal_is_learnable_from_the_text(generated: SyntheticPaths):
    train = QVHighlightsDataset(generated.data_config("train"))
    val = QVHighlightsDataset(generated.data_config("val"))
    dims = slice(0, SMALL["slowfast_dim"])
    text_to_video = fit_text_to_video(train, dims)
    aucs, correlations = [], []
    for index in range(len(val)):
        sample = val[index]
        score = sample["video_feats"][:, dims].numpy() @ (sample["text_feats"].mean(0).numpy() @ text_to_video)
        saliency = sample["saliency_all_labels"].numpy()
        inside, outside = score[saliency > 0], score[saliency == 0]
        aucs.append((inside[:, None] > outside[None, :]).mean())
        if np.ptp(saliency[saliency > 0]) > 0:
            correlations.append(np.corrcoef(inside, saliency[saliency > 0])[0, 1])
    assert np.mean(aucs) > 0.95  # the clips of a query's moments stand out given only its text
    assert np.mean(correlations) > 0.3  # and more so the more salient they are


@pytest.mark.skipif(not VAL.is_file(), reason=f"the QVHighlights val annotations are not at {VAL} "
                                                "(set COREBA_SHARED_DIR to the shared/ folder)")
def test_real_annotations_subset_and_shared_videos(tmp_path: Path):
    paths = generate_synthetic_dataset(tmp_path, annotations=VAL, num_queries=160, **SMALL)
    assert list(paths.annotations) == ["val"]
    written = load_annotations(paths.annotations["val"])
    assert written == load_annotations(VAL)[:160]
    # qids 548 (clips 1-13, 15-23) and 1918 (clips 0-12) share one video: each plants its own direction
    dataset = QVHighlightsDataset(paths.data_config("val"))
    index = next(i for i, r in enumerate(dataset.records) if r["qid"] == 548)
    clips = torch.nn.functional.normalize(dataset[index]["video_feats"][:, :SMALL["slowfast_dim"]], dim=1)
    only_548 = torch.nn.functional.normalize(clips[15:24].mean(0), dim=0)
    assert (clips[15:24] @ only_548).min() > 0.7
    assert abs(clips[0] @ only_548) < 0.5  # the 1918-only clip carries the other query's direction
    assert (clips[1:13] @ only_548).mean() > 0.3 and (clips[1:13] @ clips[0]).mean() > 0.3  # both, shared


def test_cli_and_argument_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    paths = main(["--out", str(tmp_path), "--num-queries", "4", "--num-videos", "3", "--splits", "train",
                  "--slowfast-dim", "16", "--clip-dim", "8", "--text-dim", "8", "--topic-dim", "4"])
    assert "video_dim 26" in capsys.readouterr().out
    assert len(load_annotations(paths.annotations["train"])) == 4
    assert json.loads((tmp_path / "synthetic_params.json").read_text())["topic_dim"] == 4
    with pytest.raises(ValueError, match="topic_dim"):
        generate_synthetic_dataset(tmp_path / "x", topic_dim=9, slowfast_dim=16, clip_dim=8, text_dim=8)
    with pytest.raises(ValueError, match="num_videos"):
        generate_synthetic_dataset(tmp_path / "y", num_queries=2, num_videos=3, **SMALL)


def test_planted_like_reuses_a_trained_datasets_relation(tmp_path):
    """A set made ``planted_like`` another carries that set's query-clip relation (what a model trained on it
    learned): its queries' text lies in the span of the other set's text map; an unrelated set's does not."""
    from coreba.data.qvhighlights import TEXT_FEATURE_KEY, text_feature_path
    from coreba.data.synthetic import planted_topic_maps

    dims = dict(slowfast_dim=24, clip_dim=16, text_dim=16)
    common = dict(signal_strength=4.0, topic_dim=4, **dims)
    like = dict(seed=0, splits=("train",), num_queries=20)
    trained_on = generate_synthetic_dataset(tmp_path / "train", **like, **common)
    text_map = planted_topic_maps(like, {"slowfast": 24, "clip": 16, "text": 16}, 4)["text"]  # (16, 4), orthonormal
    extra = generate_synthetic_dataset(tmp_path / "extra", seed=5, splits=("gate",), num_queries=30,
                                       planted_like=like, **common)
    unrelated = generate_synthetic_dataset(tmp_path / "unrelated", seed=5, splits=("gate",), num_queries=30, **common)

    def in_span(paths, split: str) -> float:
        """Mean over queries of |projection of the mean token onto the text map's span| / |mean token|."""
        ratios = []
        for record in load_annotations(paths.annotations[split]):
            tokens = np.load(text_feature_path(paths.text_feature_dir, record["qid"]))[TEXT_FEATURE_KEY]
            mean = tokens.mean(0)
            ratios.append(np.linalg.norm(text_map.T @ mean) / np.linalg.norm(mean))
        return float(np.mean(ratios))

    assert in_span(trained_on, "train") > 0.9  # the replayed map is the one the dataset was drawn with
    assert in_span(extra, "gate") > 0.9
    assert in_span(unrelated, "gate") < 0.75
    with pytest.raises(ValueError, match="planted_like takes"):
        planted_topic_maps({"seed": 0, "topic_dim": 3}, {"slowfast": 24, "clip": 16, "text": 16}, 4)
