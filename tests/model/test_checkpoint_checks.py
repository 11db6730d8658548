"""Checkpoints are checked before they are trusted: non-finite weights and wrong dtypes are refused by name, the
config is checked against the weights' header before anything is allocated, and every config field's type and
range is validated (fields added later included: the checks follow the dataclass annotations)."""

from __future__ import annotations

import dataclasses
import json
import math
import resource
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from coreba import CheckpointError, Coreba, CorebaConfig
from coreba.config import ConfigError
from coreba.model.coreba import CONFIG_NAME, WEIGHTS_NAME
from tests.conftest import tiny_config

REPO = Path(__file__).resolve().parents[2]
TENSOR = "decoder.class_head.weight"  # any float parameter


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    torch.manual_seed(0)
    return Coreba(tiny_config()).save_pretrained(tmp_path / "ckpt")


def _rewrite_weights(ckpt: Path, change) -> None:
    state = load_file(str(ckpt / WEIGHTS_NAME))
    change(state)
    save_file(state, str(ckpt / WEIGHTS_NAME))


def _rewrite_config(ckpt: Path, **changes) -> None:
    config = json.loads((ckpt / CONFIG_NAME).read_text())
    (ckpt / CONFIG_NAME).write_text(json.dumps({**config, **changes}))


# --------------------------------------------------------------------------------------------- 5. NaN/Inf
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused_by_name(checkpoint, value):
    def poison(state):
        state[TENSOR].view(-1)[3] = value

    _rewrite_weights(checkpoint, poison)
    with pytest.raises(CheckpointError, match=rf"non-finite .* {TENSOR} \(1 of"):
        Coreba.from_pretrained(checkpoint)


# ------------------------------------------------------------------------------------------------ 6. dtype
@pytest.mark.parametrize("dtype", [torch.int64, torch.float64, torch.float16])
def test_weights_of_another_dtype_are_refused(checkpoint, dtype):
    def cast(state):
        state[TENSOR] = state[TENSOR].to(dtype)

    _rewrite_weights(checkpoint, cast)
    with pytest.raises(CheckpointError, match=rf"dtype mismatch .* {TENSOR} is {str(dtype)[6:]}, the model's is "
                                              "float32"):
        Coreba.from_pretrained(checkpoint)


# ------------------------------------------------------------------------------- 7. header before building
def test_an_oversized_config_fails_on_the_header_before_allocating(checkpoint):
    """hidden_dim 4096 with the tiny weights: building that model needs > 4 GB. Under a 2.5 GB address-space cap
    the loader must still answer with the CheckpointError, so it compared the header before building anything."""
    _rewrite_config(checkpoint, hidden_dim=4096, ffn_dim=16384)
    cap = int(2.5 * 2**30)
    code = f"from coreba import Coreba\nCoreba.from_pretrained({str(checkpoint)!r})"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap)))
    assert result.returncode == 1, result.stderr[-2000:]
    assert "CheckpointError" in result.stderr and "shape mismatch" in result.stderr, result.stderr[-2000:]
    assert "4096" in result.stderr.split("shape mismatch")[1]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("num_balance_tokens", True, "must be an integer"),
    ("clip_length", float("nan"), "must be finite"),
    ("clip_length", float("inf"), "must be finite"),
    ("clip_length", 0.0, "must be in"),
    ("max_video_len", 10**9, "must be in"),
    ("hidden_dim", 2**20, "must be in"),
    ("dropout", "0.1", "must be a number"),
    ("use_tv_block", 1, "must be true or false"),
])
def test_bad_config_fields_are_refused_before_loading(checkpoint, field, value, message):
    _rewrite_config(checkpoint, **{field: value})
    with pytest.raises(CheckpointError, match=f"CorebaConfig.{field} {message}"):
        Coreba.from_pretrained(checkpoint)


def _wrong_values(annotation) -> list:
    """Values of the wrong type (or out of any sane range) for a field annotated ``annotation``."""
    if typing.get_origin(annotation) is typing.Literal:
        return ["not-a-choice", 1, None]
    return {bool: [1, 0, "true", None], int: [True, 1.5, "3", None, -(10**12), 10**12],
            float: [True, "2.0", None, math.nan, math.inf]}.get(annotation, [])


def test_every_config_field_checks_its_type_and_range():
    """Driven by the annotations, so a field added later is covered without editing this test."""
    hints = typing.get_type_hints(CorebaConfig)
    checked = 0
    for f in dataclasses.fields(CorebaConfig):
        bad = _wrong_values(hints[f.name])
        assert bad, f"CorebaConfig.{f.name}: no wrong values known for {hints[f.name]}; extend _wrong_values"
        for value in bad:
            with pytest.raises(ConfigError, match=f"CorebaConfig.{f.name} "):
                CorebaConfig(**{f.name: value})
            checked += 1
    assert checked >= 3 * len(dataclasses.fields(CorebaConfig))
