"""Named presets, one per row of the paper's Tables II-V: each builds and runs, and the full-size parameter
counts follow what the rows imply (REC_N constant, MOD_N growing by one CFC module, qd3/qd4 next to COREBA)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from coreba import Coreba, CorebaConfig
from coreba.config import PRESETS, ConfigError
from tests.conftest import random_batch, tiny_config

README = Path(__file__).resolve().parents[2] / "README.md"
PAPER_ROWS = ({f"table2_nb{n}" for n in (0, 1, 3, 5, 7, 9)}
              | {f"table3_{r}" for r in ("qd3", "qd4", "a", "b", "c", "d", "e")}
              | {f"table4_{k}{n}" for k in ("rec", "mod") for n in (2, 3, 4, 5)}
              | {f"table5_{r}" for r in ("a", "b", "c", "d", "e", "f", "g", "i")})
TINY = {k: v for k, v in tiny_config().to_dict().items()
        if k in ("video_dim", "text_dim", "hidden_dim", "num_heads", "ffn_dim", "max_video_len", "max_text_len")}


def count(name: str) -> int:
    with torch.device("meta"):
        return Coreba(CorebaConfig.preset(name)).num_parameters()


@pytest.fixture(scope="module")
def counts() -> dict[str, int]:
    return {name: count(name) for name in PRESETS}


def layer_size(d: int = 256, ffn: int = 1024) -> int:
    """One attention layer: q/k/v/out (d x d + d each), two LayerNorms, FFN (two Linears + PReLU)."""
    return 4 * (d * d + d) + 2 * 2 * d + (d * ffn + ffn) + (ffn * d + d) + 1


def test_every_paper_row_has_a_preset():
    assert set(PRESETS) >= PAPER_ROWS
    assert set(PRESETS) - PAPER_ROWS == {"coreba", "qd_detr"}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_builds_and_runs(name):
    cfg = CorebaConfig.preset(name, **TINY)
    for key, value in PRESETS[name].changes.items():
        assert getattr(cfg, key) == value
    model = Coreba(cfg).eval()
    with torch.no_grad():
        out = model(*random_batch(cfg, [30, 9], [12, 4]))
    assert out["pred_spans"].shape == (2, 10, 2) and torch.isfinite(out["saliency_scores"]).all()


def test_presets_are_exact_configs():
    assert CorebaConfig.preset("coreba") == CorebaConfig()
    assert CorebaConfig.preset("table3_e") == CorebaConfig.preset("table5_i") == CorebaConfig.preset("table4_rec3")
    a = CorebaConfig.preset("table5_a")  # the QD-DETR baseline: 1 fusion layer, no RAM, no Balance Tokens
    assert (a.encoder_type, a.num_qd_layers, a.num_recurrent, a.num_balance_tokens) == ("qd_detr", 1, 1, 0)
    qd3 = CorebaConfig.preset("table3_qd3")  # 3 QD-DETR fusion layers, one pass, the same 7 Balance Tokens
    assert (qd3.encoder_type, qd3.num_qd_layers, qd3.num_recurrent, qd3.num_balance_tokens) == ("qd_detr", 3, 1, 7)
    qd = CorebaConfig.preset("qd_detr")  # QD-DETR as released: enc_layers 2 sets both encoders, n_input_proj 2
    assert (qd.num_qd_layers, qd.num_saliency_layers, qd.num_input_proj_layers, qd.num_balance_tokens) == (2, 2, 2, 0)
    assert CorebaConfig.preset("table2_nb3", video_dim=40).video_dim == 40
    with pytest.raises(ConfigError, match="unknown preset 'table6_a'.*table5_a"):
        CorebaConfig.preset("table6_a")


def test_parameter_counts_follow_the_paper_rows(counts):
    layer, coreba = layer_size(), counts["coreba"]
    # Table IV: recurrence shares weights; MOD_N adds one CFC module (TV + VT + SA = 3 layers) per step
    assert {counts[f"table4_rec{n}"] for n in (2, 3, 4, 5)} == {coreba}
    for n in (2, 3, 4, 5):
        assert counts[f"table4_mod{n}"] == coreba + (n - 1) * 3 * layer
    # Table II: 256 parameters per Balance Token
    for n in (0, 1, 3, 5, 7, 9):
        assert counts[f"table2_nb{n}"] == coreba + (n - 7) * 256
    # Table III: qd3 has COREBA's count (3 fusion layers for TV + VT + SA), qd4 one layer more (+9%)
    assert counts["table3_qd3"] == coreba
    assert counts["table3_qd4"] == coreba + layer and counts["table3_qd4"] < 1.1 * coreba
    assert counts["table3_a"] == counts["table3_b"] == coreba - layer
    assert counts["table3_c"] == counts["table3_d"] == coreba + layer
    # Table V: RAM adds no parameter, CFC adds 2 layers over QD-DETR's 1, BAT adds 7 tokens
    assert counts["table5_a"] == counts["table5_b"]
    assert counts["table5_c"] == counts["table5_e"] == counts["table5_a"] + 2 * layer
    assert counts["table5_d"] == counts["table5_f"] == counts["table5_a"] + 7 * 256
    assert counts["table5_g"] == counts["table5_i"] == coreba


def test_readme_documents_every_preset_with_its_parameter_count(counts):
    text = README.read_text()
    for name, n in counts.items():
        assert f"`{name}`" in text, f"README does not mention preset {name}"
        assert f"{n:,}" in text, f"README does not give the parameter count of {name} ({n:,})"
