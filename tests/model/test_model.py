"""The model: shapes, masks, batch independence, ablation switches, backends, checkpoints, bad inputs."""

from __future__ import annotations

import pytest
import torch

from coreba import CheckpointError, Coreba, CorebaConfig, InputError
from coreba.config import ConfigError
from tests.conftest import random_batch, tiny_config

ABLATIONS = {
    "default": {},
    "nb0": {"num_balance_tokens": 0},
    "rec1": {"num_recurrent": 1},
    "mod3": {"num_recurrent": 3, "recurrent_mode": "stacked"},
    "no_tv": {"use_tv_block": False},
    "two_vt": {"share_vt_block": False},
    "no_sa": {"self_attention": "none"},
    "two_sa": {"self_attention": "separate"},
    "qd_detr": {"encoder_type": "qd_detr", "num_qd_layers": 1, "num_recurrent": 1, "num_balance_tokens": 0},
    "qd3_bal": {"encoder_type": "qd_detr", "num_qd_layers": 3, "num_recurrent": 1},
    "qd_ram": {"encoder_type": "qd_detr", "num_recurrent": 3},
}


def test_full_size_defaults_match_the_paper():
    cfg = CorebaConfig()
    assert (cfg.hidden_dim, cfg.num_heads, cfg.ffn_dim) == (256, 8, 1024)
    assert (cfg.num_balance_tokens, cfg.num_recurrent, cfg.num_queries) == (7, 3, 10)
    assert (cfg.video_dim, cfg.text_dim, cfg.max_video_len, cfg.max_text_len) == (2818, 512, 75, 32)
    out = Coreba(cfg).eval()(*random_batch(cfg, [75, 40], [32, 5]))
    assert out["pred_logits"].shape == (2, 10, 2)
    assert out["pred_spans"].shape == (2, 10, 2)
    assert out["saliency_scores"].shape == (2, 75)
    assert set(out) == {"pred_logits", "pred_spans", "saliency_scores"}


def test_training_outputs_and_span_range():
    cfg = tiny_config(num_decoder_layers=3)
    model = Coreba(cfg).train()
    out = model(*random_batch(cfg, [20, 9, 30], [4, 12, 1]))
    assert len(out["aux_outputs"]) == 2
    assert out["saliency_scores_neg"].shape == out["saliency_scores"].shape == (3, 30)
    assert ((out["pred_spans"] >= 0) & (out["pred_spans"] <= 1)).all()
    assert all(torch.isfinite(v).all() for k, v in out.items() if torch.is_tensor(v))


def test_config_json_round_trip_and_validation():
    cfg = tiny_config(recurrent_mode="stacked", self_attention="separate")
    assert CorebaConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ConfigError, match="num_heads"):
        CorebaConfig(hidden_dim=30, num_heads=4)
    with pytest.raises(ConfigError, match="self_attention"):
        CorebaConfig(self_attention="both")
    with pytest.raises(ConfigError, match="unknown CorebaConfig field"):
        CorebaConfig.from_dict({"hidden": 3})


@pytest.mark.parametrize("backend", ["math", "sdpa"])
@pytest.mark.parametrize("ablation", ["default", "nb0", "mod3"])
def test_sample_alone_equals_sample_in_padded_batch(backend, ablation):
    cfg = tiny_config(attention_backend=backend, **ABLATIONS[ablation])
    torch.manual_seed(0)
    model = Coreba(cfg).eval()
    video_lens, text_lens = [30, 7, 18, 1], [12, 3, 1, 8]
    batch = random_batch(cfg, video_lens, text_lens, seed=1)
    with torch.no_grad():
        together = model(*batch)
        for i, (lv, lt) in enumerate(zip(video_lens, text_lens)):
            video, video_mask, text, text_mask = (x[i:i + 1] for x in batch)
            alone = model(video[:, :lv], video_mask[:, :lv], text[:, :lt], text_mask[:, :lt])
            for key in ("pred_logits", "pred_spans"):
                torch.testing.assert_close(alone[key][0], together[key][i], atol=1e-5, rtol=0)
            torch.testing.assert_close(alone["saliency_scores"][0], together["saliency_scores"][i, :lv],
                                       atol=1e-5, rtol=0)


def test_padding_content_is_ignored():
    cfg = tiny_config()
    model = Coreba(cfg).eval()
    video, vmask, text, tmask = random_batch(cfg, [30, 10], [12, 4])
    with torch.no_grad():
        a = model(video, vmask, text, tmask)
        video2, text2 = video.clone(), text.clone()
        video2[~vmask] = 1e3
        text2[~tmask] = -7.0
        b = model(video2, vmask, text2, tmask)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0)


def test_math_and_sdpa_backends_agree():
    cfg = tiny_config()
    torch.manual_seed(0)
    model = Coreba(cfg).eval()
    batch = random_batch(cfg, [30, 5], [12, 2])
    with torch.no_grad():
        model.set_attention_backend("math")
        a = model(*batch)
        model.set_attention_backend("sdpa")
        b = model(*batch)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0)


def test_triton_backend_refused_where_it_cannot_run(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    cfg = tiny_config()
    model = Coreba(cfg).eval()
    model.set_attention_backend("triton")
    assert {b.attn.backend for b in model.encoder.vt_blocks()} == {"triton"}
    assert model.saliency.layers[0].attn.backend == "sdpa"
    with pytest.raises(RuntimeError, match="CUDA"):
        model(*random_batch(cfg, [4], [3]))
    model.train()
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(RuntimeError, match="forward-only"):
        model(*random_batch(cfg, [4], [3]))


def test_recurrent_shares_weights_and_stacked_grows():
    counts = {n: Coreba(tiny_config(num_recurrent=n)).num_parameters() for n in (1, 2, 3, 4)}
    assert len(set(counts.values())) == 1, counts
    stacked = [Coreba(tiny_config(num_recurrent=n, recurrent_mode="stacked")).num_parameters() for n in (1, 2, 3)]
    assert stacked[0] == counts[1]
    per_module = stacked[1] - stacked[0]
    assert per_module > 0 and stacked[2] - stacked[1] == per_module


def test_ablation_switches_change_the_architecture():
    base = Coreba(tiny_config()).num_parameters()
    assert Coreba(tiny_config(use_tv_block=False)).num_parameters() < base
    assert Coreba(tiny_config(self_attention="none")).num_parameters() < base
    assert Coreba(tiny_config(self_attention="separate")).num_parameters() > base
    assert Coreba(tiny_config(share_vt_block=False)).num_parameters() > base
    assert Coreba(tiny_config(num_balance_tokens=0)).num_parameters() == base - 3 * 32


@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
def test_every_ablation_runs_forward_and_backward(ablation):
    cfg = tiny_config(**ABLATIONS[ablation])
    torch.manual_seed(0)
    model = Coreba(cfg).train()
    out = model(*random_batch(cfg, [30, 11], [12, 2]))
    loss = out["pred_spans"].sum() + out["pred_logits"].sum() + out["saliency_scores"].sum() \
        + out["saliency_scores_neg"].sum() + sum(a["pred_logits"].sum() for a in out["aux_outputs"])
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.video_proj.net[2].weight.grad.abs().sum() > 0


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    cfg = tiny_config(recurrent_mode="stacked")
    model = Coreba(cfg).eval()
    model.save_pretrained(tmp_path / "ckpt")
    loaded = Coreba.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config == cfg
    want, got = model.state_dict(), loaded.state_dict()
    missing, extra = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
    assert not missing and not extra, f"state dict keys differ: missing {missing}, extra {extra}"
    for key, value in want.items():
        assert got[key].dtype == value.dtype and torch.equal(got[key], value), key
    batch = random_batch(cfg, [30, 4], [5, 12])
    with torch.no_grad():
        want_out, got_out = model(*batch), loaded(*batch)
    assert got_out.keys() == want_out.keys()
    assert all(torch.equal(got_out[k], want_out[k]) for k in want_out)


def test_corrupt_and_mismatched_checkpoints_are_explained(tmp_path):
    model = Coreba(tiny_config())
    ckpt = model.save_pretrained(tmp_path / "ok")
    with pytest.raises(CheckpointError, match="does not exist"):
        Coreba.from_pretrained(tmp_path / "nope")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text((ckpt / "config.json").read_text())
    (corrupt / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        Coreba.from_pretrained(corrupt)
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "config.json").write_text((ckpt / "config.json").read_text())
    (truncated / "model.safetensors").write_bytes((ckpt / "model.safetensors").read_bytes()[:5000])
    with pytest.raises(CheckpointError):
        Coreba.from_pretrained(truncated)
    mismatched = tmp_path / "mismatched"
    Coreba(tiny_config(hidden_dim=64)).save_pretrained(mismatched)
    (mismatched / "config.json").write_text((ckpt / "config.json").read_text())
    with pytest.raises(CheckpointError, match="shape mismatch"):
        Coreba.from_pretrained(mismatched)
    (mismatched / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        Coreba.from_pretrained(mismatched)
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        Coreba.from_pretrained(ckpt)


def _bad_inputs(cfg):
    v, vm, t, tm = random_batch(cfg, [10, 5], [4, 2])
    nan_video = v.clone()
    nan_video[0, 0, 0] = float("nan")
    no_clip, no_token = vm.clone(), tm.clone()
    no_clip[1] = False
    no_token[0] = False
    long_v, long_vm, _, _ = random_batch(cfg, [cfg.max_video_len + 1, 3], [4, 2])
    return {
        "feature dim": (v[..., :-1], vm, t, tm),
        "rank": (v[0], vm, t, tm),
        "text_mask has shape": (v, vm, t, tm[:, :1]),
        "must be bool": (v, vm.int(), t, tm),
        "NaN": (nan_video, vm, t, tm),
        "no valid clip": (v, no_clip, t, tm),
        "empty query": (v, vm, t, no_token),
        "more than the supported maximum": (long_v, long_vm, t, tm),
        "batch sizes differ": (v, vm, t[:1], tm[:1]),
        "float tensor": (v.long(), vm, t, tm),
        "empty": (v[:, :0], vm[:, :0], t, tm),
    }


@pytest.mark.parametrize("problem", list(_bad_inputs(tiny_config())))
def test_bad_inputs_get_clear_errors(problem):
    cfg = tiny_config()
    model = Coreba(cfg).eval()
    with pytest.raises(InputError, match=problem):
        model(*_bad_inputs(cfg)[problem])
