"""QD-DETR checkpoints: the converted model equals QD-DETR's own outputs; strict mapping; clear errors; ONNX.

The reference outputs come from QD-DETR's official code (``tests/data/qd_detr``, see its README): this test
never imports QD-DETR. Tolerance 1e-5 absolute, float32 on the CPU (measured: about 1e-6).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from coreba import CheckpointError, Coreba, CorebaConfig
from coreba.convert import CONVERSION_NAME, config_from_opt, from_qd_detr, main

DATA = Path(__file__).parent / "data" / "qd_detr"
VARIANTS = ("qd_detr_default", "qd_detr_variant")
CASES = ("b1", "batch")
TOL = 1e-5
# QD-DETR parameter -> this model's, for the gradients stored with the reference
GRAD_PARAMETERS = {"query_embed.weight": "decoder.anchors.weight",
                   "transformer.decoder.bbox_embed.layers.2.weight": "decoder.refine_head.layers.2.weight",
                   "span_embed.layers.2.weight": "decoder.span_head.layers.2.weight"}


def reference(variant: str) -> np.lib.npyio.NpzFile:
    return np.load(DATA / f"{variant}_outputs.npz")


def inputs(ref, case: str) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(ref[f"{case}.{k}"]) for k in ("video_feats", "video_mask", "text_feats",
                                                                 "text_mask"))


def load_raw(variant: str = "qd_detr_default") -> dict:
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(DATA / f"{variant}.ckpt", weights_only=True)


def save_raw(data, path: Path) -> Path:
    torch.save(data, path)
    return path


def assert_within(got: torch.Tensor | np.ndarray, want: np.ndarray, what: str, tol: float = TOL) -> None:
    got = got.detach().numpy() if isinstance(got, torch.Tensor) else got
    err = float(np.abs(got - want).max())
    assert err <= tol, f"{what}: max abs error {err:.2e} > {tol:.0e}"


# ------------------------------------------------------------------ parity with QD-DETR's own outputs


@pytest.mark.parametrize("backend", ["math", "sdpa"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_converted_model_equals_qd_detr(variant, backend):
    model = from_qd_detr(DATA / f"{variant}.ckpt")
    model.set_attention_backend(backend)
    ref = reference(variant)
    for case in CASES:
        with torch.no_grad():
            out = model(*inputs(ref, case))
        valid = ref[f"{case}.video_mask"]
        assert_within(out["pred_logits"], ref[f"{case}.pred_logits"], f"{variant}/{case} pred_logits")
        assert_within(out["pred_spans"], ref[f"{case}.pred_spans"], f"{variant}/{case} pred_spans")
        assert_within(out["saliency_scores"].numpy()[valid], ref[f"{case}.saliency_scores"][valid],
                      f"{variant}/{case} saliency_scores")
        assert np.abs(ref[f"{case}.pred_spans"] - 0.5).max() > 0.1  # the reference is not a degenerate one


def _training_twin(variant: str) -> Coreba:
    """The converted model without dropout, in training mode: auxiliary outputs and the negative pass on."""
    converted = from_qd_detr(DATA / f"{variant}.ckpt")
    model = Coreba(converted.config.replace(dropout=0.0, input_dropout=0.0))
    model.load_state_dict(converted.state_dict())
    return model.train()


@pytest.mark.parametrize("variant", VARIANTS)
def test_auxiliary_outputs_negative_pass_and_gradients_equal_qd_detr(variant):
    """Every decoder layer's outputs, and the gradients that show where anchors are detached (issue 11, fix 1):
    the refinement head and the anchors get QD-DETR's gradients only if the prediction reference is NOT
    detached and the next layer's anchor IS."""
    model = _training_twin(variant)
    ref = reference(variant)
    for case in CASES:
        model.zero_grad(set_to_none=True)
        out = model(*inputs(ref, case))
        layers = [*out["aux_outputs"], out]
        assert len(layers) == model.config.num_decoder_layers
        for i, aux in enumerate(out["aux_outputs"]):
            assert_within(aux["pred_logits"], ref[f"{case}.aux{i}_pred_logits"], f"{case} aux{i} logits")
            assert_within(aux["pred_spans"], ref[f"{case}.aux{i}_pred_spans"], f"{case} aux{i} spans")
        if not (model.config.text_position_embedding and case == "batch"):  # see the next test
            valid = ref[f"{case}.video_mask"]
            assert_within(out["saliency_scores_neg"].detach().numpy()[valid],
                          ref[f"{case}.saliency_scores_neg"][valid], f"{case} negative saliency")
        objective = sum((layer["pred_spans"] * torch.from_numpy(ref[f"{case}.objective_w{i}"])).sum()
                        for i, layer in enumerate(layers))
        objective.backward()
        params = dict(model.named_parameters())
        for theirs, ours in GRAD_PARAMETERS.items():
            want = ref[f"{case}.grad.{theirs}"]
            assert np.abs(want).max() > 1e-2, f"{theirs}: the reference gradient should not vanish"
            assert_within(params[ours].grad, want, f"{case} gradient of {ours}")


def test_negative_pass_differs_from_qd_detr_only_by_its_text_positions():
    """With use_txt_pos, QD-DETR's negative pass keys the other query's text with the POSITIVE query's
    positions (its positions depend on the text); here positions travel with their query. Using the positive
    query's positions reproduces QD-DETR's number, so that is the whole (documented) difference."""
    model = _training_twin("qd_detr_variant")
    ref = reference("qd_detr_variant")
    video_feats, video_mask, text_feats, text_mask = inputs(ref, "batch")
    with torch.no_grad():
        ours = model(video_feats, video_mask, text_feats, text_mask)["saliency_scores_neg"].numpy()
        from coreba.model.layers import video_position_embedding

        video_pos = video_position_embedding(video_mask, model.config.hidden_dim)
        video = model.video_proj(video_feats)
        text, mask, text_pos = model._balanced_text(text_feats, text_mask)
        qd_style = model._encode(video, video_mask, video_pos, text.roll(-1, 0), mask.roll(-1, 0), text_pos)[1]
    want = ref["batch.saliency_scores_neg"]
    assert np.abs(ours - want).max() > 1e-3
    assert_within(qd_style, want, "negative saliency with the positive query's positions")


def test_config_comes_from_opt():
    opt = vars(load_raw()["opt"])
    cfg = config_from_opt(opt)
    assert cfg == CorebaConfig.preset("qd_detr", video_dim=8, text_dim=6, ffn_dim=64)
    assert (cfg.num_qd_layers, cfg.num_saliency_layers, cfg.num_input_proj_layers) == (2, 2, 2)
    assert (cfg.num_balance_tokens, cfg.num_recurrent, cfg.encoder_type) == (0, 1, "qd_detr")
    variant = config_from_opt(vars(load_raw("qd_detr_variant")["opt"]))
    assert (variant.num_qd_layers, variant.num_saliency_layers, variant.num_decoder_layers) == (1, 1, 3)
    assert (variant.num_input_proj_layers, variant.text_position_embedding, variant.num_heads) == (3, True, 4)
    assert (variant.max_video_len, variant.max_text_len, variant.num_queries) == (16, 8, 4)


# ------------------------------------------------------------------ the CLI


def test_cli_writes_a_save_pretrained_directory(tmp_path, capsys):
    out = tmp_path / "converted"
    assert main(["qd-detr", "--checkpoint", str(DATA / "qd_detr_default.ckpt"), "--output", str(out)]) == 0
    assert "converted" in capsys.readouterr().out
    model = Coreba.from_pretrained(out).eval()
    ref = reference("qd_detr_default")
    with torch.no_grad():
        assert_within(model(*inputs(ref, "b1"))["pred_spans"], ref["b1.pred_spans"], "reloaded pred_spans")
    assert (out / CONVERSION_NAME).is_file()
    assert main(["qd-detr", "--checkpoint", str(DATA / "qd_detr_default.ckpt"), "--output", str(out)]) == 1
    assert "exists" in capsys.readouterr().err
    assert main(["qd-detr", "--checkpoint", str(DATA / "qd_detr_variant.ckpt"), "--output", str(out),
                 "--force"]) == 0
    assert Coreba.from_pretrained(out).config.text_position_embedding
    assert [p.name for p in tmp_path.iterdir()] == ["converted"]  # no temporary folder left behind


# ------------------------------------------------------------------ clear errors


def _raise_if_loaded():  # the "payload" of a malicious pickle: must never run
    Path(os.environ["COREBA_TEST_MARKER"]).write_text("executed")


class _Payload:
    def __reduce__(self):
        return (_raise_if_loaded, ())


def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    monkeypatch.setenv("COREBA_TEST_MARKER", str(marker))
    data = load_raw()
    data["opt"] = _Payload()
    path = save_raw(data, tmp_path / "evil.ckpt")
    refusal = r"refused to load: it asks for tests\.test_convert\._raise_if_loaded.*never runs code"
    with pytest.raises(CheckpointError, match=refusal):
        from_qd_detr(path)
    assert not marker.exists()


def test_corrupt_and_foreign_files_get_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no QD-DETR checkpoint"):
        from_qd_detr(tmp_path / "missing.ckpt")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x00not a checkpoint" * 20)
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        from_qd_detr(garbage)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((DATA / "qd_detr_default.ckpt").read_bytes()[:20000])
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        from_qd_detr(truncated)
    state_only = save_raw(load_raw()["model"], tmp_path / "state_only.ckpt")
    with pytest.raises(CheckpointError, match=r"not a QD-DETR training checkpoint.*global_rep_pos.*\(178 in all\)"):
        from_qd_detr(state_only)
    ours = Coreba(CorebaConfig.preset("qd_detr", video_dim=8, text_dim=6)).save_pretrained(tmp_path / "ours")
    with pytest.raises(CheckpointError, match="not a QD-DETR training checkpoint.*Coreba.from_pretrained"):
        from_qd_detr(ours / "model.safetensors")  # (torch.load reads safetensors files too)
    with pytest.raises(CheckpointError, match="found a list"):
        from_qd_detr(save_raw([1, 2], tmp_path / "list.ckpt"))


@pytest.mark.parametrize(("option", "value", "message"), [
    ("a_feat_dir", "features/pann", "a_feat_dir.*audio"),
    ("span_loss_type", "ce", "span_loss_type='ce'"),
    ("pre_norm", True, "pre_norm=True"),
    ("position_embedding", "learned", "position_embedding='learned'"),
    ("hidden_dim", 128, "hidden_dim=128.*256"),
    ("ctx_mode", "video", "ctx_mode='video'.*TEF"),
    ("no_norm_vfeat", True, "no_norm_vfeat=True"),
])
def test_options_this_model_cannot_express_are_named(tmp_path, option, value, message):
    data = load_raw()
    setattr(data["opt"], option, value)
    with pytest.raises(CheckpointError, match=message):
        from_qd_detr(save_raw(data, tmp_path / "x.ckpt"))


def test_missing_option_is_named(tmp_path):
    data = load_raw()
    del data["opt"].n_input_proj
    with pytest.raises(CheckpointError, match="missing.*n_input_proj"):
        from_qd_detr(save_raw(data, tmp_path / "x.ckpt"))


def test_parameter_mapping_is_strict(tmp_path):
    data = load_raw()
    data["model"]["transformer.decoder.extra_head.weight"] = torch.zeros(2, 2)
    with pytest.raises(CheckpointError, match=r"no place for: transformer\.decoder\.extra_head\.weight"):
        from_qd_detr(save_raw(data, tmp_path / "leftover.ckpt"))
    data = load_raw()
    del data["model"]["transformer.decoder.bbox_embed.layers.1.bias"]
    with pytest.raises(CheckpointError, match=r"missing 1 tensor\(s\): transformer\.decoder\.bbox_embed\.layers\.1"):
        from_qd_detr(save_raw(data, tmp_path / "missing.ckpt"))
    data = load_raw()
    data["opt"].enc_layers = 3  # opt and weights disagree: layer 2 has no tensors
    with pytest.raises(CheckpointError, match=r"t2v_encoder\.layers\.2\.self_attn\.in_proj_weight"):
        from_qd_detr(save_raw(data, tmp_path / "layers.ckpt"))
    data = load_raw()
    data["opt"].v_feat_dim = 10
    with pytest.raises(CheckpointError, match=r"shape mismatch: input_vid_proj\.0\.LayerNorm\.weight"):
        from_qd_detr(save_raw(data, tmp_path / "dims.ckpt"))
    data = load_raw()  # contrastive heads without the option that makes them training-only: leftovers
    data["model"]["contrastive_align_projection_txt.weight"] = torch.zeros(64, 256)
    with pytest.raises(CheckpointError, match="contrastive_align_projection_txt.weight"):
        from_qd_detr(save_raw(data, tmp_path / "contrastive.ckpt"))


# ------------------------------------------------------------------ checkpoint -> ONNX Runtime


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_qd_detr_checkpoint_exports_to_onnx_with_parity(tmp_path, variant):
    """checkpoint -> convert -> ONNX (export_onnx checks ONNX Runtime against eager at 5 shape cases) -> ONNX
    Runtime against QD-DETR's own outputs, at the export's fp32 tolerance (1e-4)."""
    pytest.importorskip("onnxruntime")
    from coreba.engines.onnxruntime_engine import OnnxRuntimeEngine
    from export.onnx_export import export_onnx
    from export.spec import FP32_TOLERANCE

    model = from_qd_detr(DATA / f"{variant}.ckpt")
    result = export_onnx(model, tmp_path / "qd_detr.onnx")  # raises unless ORT matches eager at every case
    assert result.parity.ok
    engine = OnnxRuntimeEngine(result.path, provider="cpu")
    ref = reference(variant)
    for case in CASES:
        feeds = {k: ref[f"{case}.{k}"] for k in ("video_feats", "video_mask", "text_feats", "text_mask")}
        out = engine.run(feeds)
        valid = feeds["video_mask"]
        assert_within(out["pred_logits"], ref[f"{case}.pred_logits"], f"ORT {case} logits", FP32_TOLERANCE.pred_logits)
        assert_within(out["pred_spans"], ref[f"{case}.pred_spans"], f"ORT {case} spans", FP32_TOLERANCE.pred_spans)
        assert_within(out["saliency_scores"][valid], ref[f"{case}.saliency_scores"][valid], f"ORT {case} saliency",
                      FP32_TOLERANCE.saliency_scores)
