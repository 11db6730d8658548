"""The demo checkpoint: the whole recipe on a shrunken dataset (full-size model), then the cache."""

from __future__ import annotations

import json

import pytest

import coreba.pretrained as pretrained
from coreba import Coreba, CorebaConfig


def test_demo_checkpoint_trains_once_then_comes_from_the_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(pretrained.DEMO_DATA, "num_queries", 6)
    monkeypatch.setitem(pretrained.DEMO_TRAIN, "epochs", 1)
    monkeypatch.setitem(pretrained.DEMO_TRAIN, "batch_size", 3)
    path = pretrained.demo_checkpoint(tmp_path / "demo")
    out = capsys.readouterr().out
    assert "DEMO" in out and "SYNTHETIC" in out

    model = Coreba.from_pretrained(path)
    assert model.config == CorebaConfig()  # the full-size default, training-only dropout change undone
    metrics = json.loads((path / pretrained.METRICS_NAME).read_text())
    assert "synthetic" in metrics["note"]
    assert {"MR-full-R1@0.5", "MR-full-mAP", "HL-min-VeryGood-mAP"} <= set(metrics["heldout"])

    def no_training(*args, **kwargs):
        raise AssertionError("a cached demo checkpoint must not retrain")

    monkeypatch.setattr(pretrained, "train", no_training)
    assert pretrained.demo_checkpoint(tmp_path / "demo") == path
    monkeypatch.setitem(pretrained.DEMO_TRAIN, "epochs", 2)  # another recipe: the cache no longer applies
    with pytest.raises(AssertionError, match="must not retrain"):
        pretrained.demo_checkpoint(tmp_path / "demo")
