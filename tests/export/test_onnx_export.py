"""ONNX export: structure (unrolled loop, shared weights, dynamic axes), parity with eager PyTorch for the
default config and ablations, fp16, optimizers, metadata, the CLI, and a property test over shapes."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coreba import Coreba, CorebaConfig
from coreba.engines import EngineUnavailable
from coreba.engines.onnxruntime_engine import OnnxRuntimeEngine
from coreba.interface import make_feeds
from coreba.onnx_io import read_metadata
from export import to_onnx
from export.onnx_export import export_onnx
from export.spec import FP32_TOLERANCE, INPUT_NAMES, OUTPUT_NAMES
from export.validate import ParityCase, check_parity, eager_outputs
from tests.conftest import tiny_config

ABLATIONS = {
    "nb0": {"num_balance_tokens": 0},
    "mod3": {"num_recurrent": 3, "recurrent_mode": "stacked"},
    "no_tv_two_sa": {"use_tv_block": False, "self_attention": "separate", "share_vt_block": False},
    "qd_detr": {"encoder_type": "qd_detr", "num_qd_layers": 2, "num_recurrent": 1, "num_balance_tokens": 0},
}


def _model(cfg: CorebaConfig, seed: int = 0) -> Coreba:
    torch.manual_seed(seed)
    return Coreba(cfg).eval()


def _ops(path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


@pytest.fixture(scope="module")
def full_size_export(tmp_path_factory):
    model = _model(CorebaConfig())
    path = tmp_path_factory.mktemp("full") / "coreba.onnx"
    return model, export_onnx(model, path)


def test_default_config_exports_with_parity_and_shared_weights(full_size_export):
    model, result = full_size_export
    assert result.parity.ok and len(result.parity.rows) == 15
    assert max(result.parity.worst().values()) <= FP32_TOLERANCE.pred_logits
    assert result.file_bytes <= 1.05 * result.parameter_bytes
    assert result.parameter_bytes == model.num_parameters() * 4
    assert not {"Loop", "If", "Scan"} & set(result.op_counts)
    proto = onnx.load(str(result.path))
    assert [i.name for i in proto.graph.input] == list(INPUT_NAMES)
    assert [o.name for o in proto.graph.output] == list(OUTPUT_NAMES)
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    assert dims["video_feats"] == ["batch", "num_clips", 2818] and dims["text_mask"] == ["batch", "num_tokens"]
    assert {i.name: i.type.tensor_type.elem_type for i in proto.graph.input}["video_mask"] == onnx.TensorProto.BOOL


def test_metadata_records_config_and_parity(full_size_export):
    _, result = full_size_export
    meta = read_metadata(result.path)
    assert CorebaConfig.from_json(meta["config"]) == CorebaConfig()
    assert (meta["num_recurrent"], meta["num_balance_tokens"], meta["opset"]) == ("3", "7", "18")
    assert "saliency_scores" in meta["parity_max_abs_error"]


def test_recurrent_turns_unroll_onto_the_same_weights(tmp_path):
    sizes, matmuls = {}, {}
    for n in (1, 2, 3):
        result = export_onnx(_model(tiny_config(num_recurrent=n)), tmp_path / f"rec{n}.onnx")
        proto = onnx.load(str(result.path))
        sizes[n] = sum(onnx.numpy_helper.to_array(t).nbytes for t in proto.graph.initializer)
        matmuls[n] = result.op_counts["MatMul"]
    assert sizes[1] == sizes[2] == sizes[3], sizes  # one copy of each weight, whatever N_r
    assert matmuls[1] < matmuls[2] < matmuls[3], matmuls  # but N_r copies of the CFC subgraph
    assert matmuls[3] - matmuls[2] == matmuls[2] - matmuls[1]


@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
def test_ablation_configs_export_with_parity(ablation, tmp_path):
    model = _model(tiny_config(**ABLATIONS[ablation]))
    result = export_onnx(model, tmp_path / "m.onnx")
    assert result.parity.ok
    for row in result.parity.rows:
        assert row.max_abs <= 1e-4 and row.max_rel <= 1e-3, row


def test_fp16_export_and_optimizers(tmp_path):
    model = _model(tiny_config())
    result = export_onnx(model, tmp_path / "m16.onnx", fp16=True, optimize=("ort", "onnxslim"))
    assert result.parity.ok
    fg = [r for r in result.parity.rows if r.output == "fg_probability"]
    assert fg and all(r.max_abs <= 1e-2 for r in fg)
    assert read_metadata(result.path)["precision"] == "fp16"
    proto = onnx.load(str(result.path))
    half_bytes = sum(onnx.numpy_helper.to_array(t).nbytes for t in proto.graph.initializer
                     if t.data_type == onnx.TensorProto.FLOAT16)
    assert 0.95 * result.parameter_bytes <= half_bytes <= 1.05 * result.parameter_bytes  # weights stored in fp16
    for kind in ("ort", "onnxslim"):
        assert result.optimized[kind].is_file() and result.optimized_parity[kind].ok


@pytest.fixture(scope="module")
def tiny_session(tmp_path_factory):
    model = _model(tiny_config(), seed=3)
    path = tmp_path_factory.mktemp("tiny") / "m.onnx"
    export_onnx(model, path)
    return model, OnnxRuntimeEngine(path), path


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_property_any_shape_and_padding_matches_eager(tiny_session, data):
    model, engine, _ = tiny_session
    cfg = model.config
    batch = data.draw(st.integers(1, 5), label="batch")
    video_lens = tuple(data.draw(st.lists(st.integers(1, cfg.max_video_len), min_size=batch, max_size=batch)))
    text_lens = tuple(data.draw(st.lists(st.integers(1, cfg.max_text_len), min_size=batch, max_size=batch)))
    case = ParityCase("hypothesis", video_lens, text_lens)
    report = check_parity(engine.run, model, "ort", cases=[case], seed=data.draw(st.integers(0, 10_000)))
    assert report.ok


def test_parity_harness_catches_a_wrong_engine(tiny_session):
    model, engine, _ = tiny_session

    def slightly_wrong(feeds):
        out = engine.run(feeds)
        out["saliency_scores"] = out["saliency_scores"] + 1e-3
        return out

    with pytest.raises(AssertionError, match="saliency_scores"):
        check_parity(slightly_wrong, model, "wrong")


def test_outputs_never_nan_on_padded_rows(tiny_session):
    model, engine, _ = tiny_session
    feeds = make_feeds(model.config, (1, 30), (1, 12), seed=5)
    out = engine.run(feeds)
    assert all(np.isfinite(v).all() for v in out.values())
    want = eager_outputs(model, feeds)
    assert np.abs(out["saliency_scores"] - want["saliency_scores"]).max() <= 1e-4


def test_unavailable_provider_is_refused(tiny_session):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA provider is available here; the refusal path is for machines without it")
    _, _, path = tiny_session
    with pytest.raises(EngineUnavailable, match="CUDAExecutionProvider"):
        OnnxRuntimeEngine(path, provider="cuda")


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_gpu_providers_match_eager(provider, tiny_session):
    import onnxruntime as ort

    from coreba.engines.onnxruntime_engine import PROVIDERS

    if PROVIDERS[provider] not in ort.get_available_providers():
        pytest.skip(f"{PROVIDERS[provider]} is not available in this onnxruntime build "
                    f"({ort.get_available_providers()}); runs with onnxruntime-gpu on a CUDA machine")
    model, _, path = tiny_session
    engine = OnnxRuntimeEngine(path, provider=provider)
    assert check_parity(engine.run, model, f"ORT {provider}", FP32_TOLERANCE).ok


def test_cli_exports_a_checkpoint(tmp_path, capsys):
    model = _model(tiny_config(num_balance_tokens=2))
    model.save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "cli.onnx"
    assert to_onnx.main(["--checkpoint", str(tmp_path / "ckpt"), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "parity of ONNX Runtime CPU" in printed and "MatMul" in printed and "Softmax" in printed and out.is_file()


def test_cli_explains_a_missing_or_mismatched_checkpoint(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        to_onnx.main(["--checkpoint", str(tmp_path / "missing"), "--output", str(tmp_path / "x.onnx")])
    _model(tiny_config(hidden_dim=64)).save_pretrained(tmp_path / "bad")
    _model(tiny_config()).config.save(tmp_path / "bad" / "config.json")
    with pytest.raises(SystemExit, match="does not match"):
        to_onnx.main(["--checkpoint", str(tmp_path / "bad"), "--output", str(tmp_path / "x.onnx")])
