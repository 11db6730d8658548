"""Batch prediction: the submission file is what the official evaluation expects, on labelled and test splits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from coreba.evaluate import evaluate, load_jsonl
from coreba.model import Coreba
from coreba.predict import build_predict_loader, main, predict_dataset
from coreba.training.data_sources import SyntheticSpec
from tests.conftest import tiny_config

NUM_QUERIES = 12


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> SyntheticSpec:
    spec = SyntheticSpec(out_dir=str(tmp_path_factory.mktemp("predict_data")), num_queries=NUM_QUERIES,
                         slowfast_dim=24, clip_dim=16, text_dim=16, splits=("train", "val", "test"))
    spec.generate()
    return spec


@pytest.fixture(scope="module")
def checkpoint(synthetic, tmp_path_factory):
    torch.manual_seed(0)
    cfg = synthetic.model_config(tiny_config(max_video_len=75, max_text_len=32))
    return Coreba(cfg).save_pretrained(tmp_path_factory.mktemp("predict_ckpt") / "model")


def _cli(checkpoint, synthetic: SyntheticSpec, split: str, out, *extra: str) -> list[dict]:
    paths = synthetic.generate()
    argv = ["--checkpoint", str(checkpoint), "--annotations", str(paths.annotations[split]),
            "--video-feature-dirs", *map(str, paths.video_feature_dirs), "--text-feature-dir",
            str(paths.text_feature_dir), "--out", str(out), "--batch-size", "5", "--device", "cpu", *extra]
    assert main(argv) == 0
    return load_jsonl(out)


def test_predict_cli_writes_a_submission_the_evaluation_accepts(checkpoint, synthetic, tmp_path, capsys):
    lines = _cli(checkpoint, synthetic, "val", tmp_path / "sub.jsonl", "--evaluate")
    gt = load_jsonl(synthetic.generate().annotations["val"])
    assert [line["qid"] for line in lines] == [g["qid"] for g in gt]
    for line, g in zip(lines, gt, strict=True):
        assert set(line) == {"qid", "query", "vid", "pred_relevant_windows", "pred_saliency_scores"}
        assert (line["query"], line["vid"]) == (g["query"], g["vid"])
        windows = line["pred_relevant_windows"]
        assert len(windows) == 10
        # QD-DETR's submission rule: the 2 s clip grid, clamped to [0, 150] s (not to the duration)
        assert all(0 <= s <= e <= 150 and s % 2 == 0 and e % 2 == 0 for s, e, _ in windows)
        scores = [w[2] for w in windows]
        assert scores == sorted(scores, reverse=True)
        assert len(line["pred_saliency_scores"]) == g["duration"] // 2
    brief = evaluate(lines, gt)["brief"]
    assert {"MR-full-R1@0.5", "MR-full-mAP", "HL-min-VeryGood-mAP"} <= set(brief)
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1]) == brief  # --evaluate printed the same numbers


def test_predict_cli_handles_the_unlabelled_test_split(checkpoint, synthetic, tmp_path):
    lines = _cli(checkpoint, synthetic, "test", tmp_path / "test.jsonl")
    assert len(lines) == NUM_QUERIES
    assert all(len(line["pred_relevant_windows"]) == 10 for line in lines)


def test_predict_dataset_is_batch_independent_and_keeps_the_mode(checkpoint, synthetic):
    model = Coreba.from_pretrained(checkpoint).train()
    paths = synthetic.generate()
    args = (model.config, paths.annotations["val"], paths.video_feature_dirs, paths.text_feature_dir)
    # exact times: rounding to the clip grid or to float16 could turn a 1e-6 difference into a whole step
    one = predict_dataset(model, build_predict_loader(*args, batch_size=1), mode="exact")
    many = predict_dataset(model, build_predict_loader(*args, batch_size=NUM_QUERIES), mode="exact")
    assert model.training
    for a, b in zip(one, many, strict=True):
        assert a["qid"] == b["qid"]
        # untrained scores nearly tie, so rounding may swap neighbours: compare the windows as a set
        np.testing.assert_allclose(sorted(a["pred_relevant_windows"]), sorted(b["pred_relevant_windows"]),
                                   atol=1e-4)
        np.testing.assert_allclose(a["pred_saliency_scores"], b["pred_saliency_scores"], atol=1e-4)
