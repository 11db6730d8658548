"""TensorRT export: the static operator check (runs everywhere), profiles, the trtexec line, the CLI and
engine errors without TensorRT; engine builds and parity with eager PyTorch where TensorRT and a CUDA GPU
are present (skipped elsewhere, with the reason)."""

from __future__ import annotations

import re
import sys
import types

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from coreba.engines import EngineUnavailable
from coreba.engines.tensorrt_engine import TensorRTEngine, TensorSpec, check_shapes, require_cuda, require_tensorrt
from coreba.onnx_io import OnnxFileError, read_model_config
from export import to_tensorrt
from export.tensorrt_build import (
    ModelDims,
    ProfileError,
    ShapeProfile,
    build_engine,
    check_engine_parity,
    graph_precision,
    model_dims,
    plan_build,
    profile_cases,
    trtexec_command,
)
from export.tensorrt_ops import (
    MAX_OPSET,
    SUPPORTED_TYPES,
    UNSUPPORTED_OPS,
    analyze_tensorrt_compatibility,
    check_tensorrt_compatibility,
)
from tests.conftest import tiny_config

TINY_PROFILE = ShapeProfile(min_batch=1, opt_batch=4, max_batch=8, min_clips=1, opt_clips=30, max_clips=30,
                            min_tokens=1, opt_tokens=12, max_tokens=12)


def _graph(nodes, inputs, outputs, opset: int = 18, initializers=(), domains=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(graph, opset_imports=opsets)


def _vi(name: str, elem=TensorProto.FLOAT, shape=(2, 3)):
    return helper.make_tensor_value_info(name, elem, list(shape))


# --------------------------------------------------------------------------------------- static op check
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_static_check_passes_on_exported_graph(trt_onnx, precision):
    report = analyze_tensorrt_compatibility(trt_onnx[precision])
    assert report.problems == [], report.summary()
    assert report.opset <= MAX_OPSET and {"MatMul", "Softmax", "LayerNormalization", "Where"} <= set(report.op_counts)
    assert any("INT64" in note for note in report.notes)  # noted, not failed
    assert check_tensorrt_compatibility(onnx.load(str(trt_onnx[precision]))) == []  # a proto works too


def test_static_check_rejects_unsupported_op():
    model = _graph([helper.make_node("Unique", ["x"], ["y"], name="uniq")], [_vi("x")], [_vi("y", shape=[None])])
    problems = check_tensorrt_compatibility(model)
    assert len(problems) == 1 and "Unique" in problems[0] and "uniq" in problems[0]


def test_static_check_looks_inside_loop_bodies():
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("StringNormalizer", ["s_in"], ["s_out"], name="inner")],
        "body", [_vi("i", TensorProto.INT64, []), _vi("cond_in", TensorProto.BOOL, []),
                 _vi("s_in", TensorProto.STRING, [2])],
        [_vi("cond_out", TensorProto.BOOL, []), _vi("s_out", TensorProto.STRING, [2])])
    loop = helper.make_node("Loop", ["n", "c", "s"], ["s_final"], body=body, name="loop")
    model = _graph([loop], [_vi("n", TensorProto.INT64, []), _vi("c", TensorProto.BOOL, []),
                            _vi("s", TensorProto.STRING, [2])], [_vi("s_final", TensorProto.STRING, [2])])
    problems = check_tensorrt_compatibility(model)
    assert any("StringNormalizer" in p and "loop" in p for p in problems), problems
    assert not any(p.startswith("Loop ") for p in problems)  # TensorRT itself supports Loop


def test_static_check_rejects_unsupported_dtype_domain_opset_and_computed_axes():
    nodes = [helper.make_node("MatMul", ["a", "a"], ["m"], name="int_matmul"),
             helper.make_node("FusedMatMul", ["x", "x"], ["f"], domain="com.microsoft", name="fused"),
             helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Slice", ["shape", "zero", "one"], ["axis"]),
             helper.make_node("Squeeze", ["axis"], ["axis0"]),
             helper.make_node("CumSum", ["x", "axis0"], ["cs"], name="cumsum")]
    model = _graph(nodes, [_vi("a", TensorProto.INT32, (3, 3)), _vi("x", shape=(3, 3))],
                   [_vi("m", TensorProto.INT32, (3, 3)), _vi("f", shape=(3, 3)), _vi("cs", shape=(3, 3))],
                   opset=MAX_OPSET + 1, domains=("com.microsoft",),
                   initializers=[helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
                                 helper.make_tensor("one", TensorProto.INT64, [1], [1])])
    text = "\n".join(check_tensorrt_compatibility(model))
    assert f"opset {MAX_OPSET + 1}" in text
    assert "MatMul on INT32" in text and "int_matmul" in text
    assert "com.microsoft" in text and "FusedMatMul" in text
    assert "CumSum has a computed 'axis'" in text


def test_operator_table_transcription():
    assert len(SUPPORTED_TYPES) == 150 and len(UNSUPPORTED_OPS) == 46
    assert not set(SUPPORTED_TYPES) & UNSUPPORTED_OPS
    assert SUPPORTED_TYPES["MatMul"] == {"FP32", "FP16", "BF16"}
    assert SUPPORTED_TYPES["Not"] == {"BOOL"}
    assert "INT64" in SUPPORTED_TYPES["ConstantOfShape"]  # "INF64" in the table
    assert {"BOOL", "INT64"} <= SUPPORTED_TYPES["Where"] and "UINT8" in SUPPORTED_TYPES["Cast"]


# --------------------------------------------------------------------------------- profile and trtexec
def test_shape_profile_validation():
    with pytest.raises(ProfileError, match="batch: need min <= opt <= max, got 4/2/8"):
        ShapeProfile(min_batch=4, opt_batch=2, max_batch=8)
    with pytest.raises(ProfileError, match="clips: min must be >= 1"):
        ShapeProfile(min_clips=0)
    with pytest.raises(ProfileError, match="tokens: min/opt/max must be integers"):
        ShapeProfile(opt_tokens=2.5)
    dims = ModelDims(video_dim=40, text_dim=24, max_video_len=30, max_text_len=12)
    with pytest.raises(ProfileError, match="max clips 75 > the model's max_video_len 30.*max tokens 32 > .* 12"):
        ShapeProfile().check_fits(dims)
    capped = ShapeProfile.for_model(dims, max_batch=16)
    assert capped.axis("clips") == (1, 30, 30) and capped.axis("tokens") == (1, 12, 12)
    assert capped.axis("batch") == (1, 8, 16)
    capped.check_fits(dims)
    assert ShapeProfile().axis("batch") == (1, 8, 64) and ShapeProfile().axis("clips") == (1, 75, 75)


def test_trtexec_command_shapes_and_flags():
    dims = ModelDims(video_dim=2818, text_dim=512, max_video_len=75, max_text_len=32)
    profile = ShapeProfile(min_batch=1, opt_batch=8, max_batch=64, min_clips=2, opt_clips=60, max_clips=75,
                           min_tokens=3, opt_tokens=20, max_tokens=32)
    cmd = trtexec_command("m.onnx", "out dir/m.plan", profile, plan_build("fp16"), dims, timing_cache="t.cache",
                          workspace_gb=2)
    assert cmd.startswith("trtexec --onnx=m.onnx '--saveEngine=out dir/m.plan'")
    shapes = dict(re.findall(r"--(min|opt|max)Shapes=(\S+)", cmd))
    assert shapes["min"] == "video_feats:1x2x2818,video_mask:1x2,text_feats:1x3x512,text_mask:1x3"
    assert shapes["opt"] == "video_feats:8x60x2818,video_mask:8x60,text_feats:8x20x512,text_mask:8x20"
    assert shapes["max"] == "video_feats:64x75x2818,video_mask:64x75,text_feats:64x32x512,text_mask:64x32"
    assert "--stronglyTyped" in cmd and "--timingCacheFile=t.cache" in cmd and "--memPoolSize=workspace:2048" in cmd
    assert not re.search(r"--(fp16|bf16|noTF32)\b", cmd)  # an fp16 graph strongly typed: no precision flag
    flags = {p: trtexec_command("m.onnx", "m.plan", profile, plan, dims) for p, plan in (
        ("fp32", plan_build("fp32", "fp32")), ("tf32", plan_build("fp32", "tf32")),
        ("weak-fp16", plan_build("fp32", "fp16", "weak")), ("weak-bf16", plan_build("fp32", "bf16", "weak")))}
    assert "--noTF32" in flags["fp32"] and "--stronglyTyped" in flags["fp32"]
    assert not re.search(r"--(noTF32|fp16|bf16)\b", flags["tf32"]) and "--stronglyTyped" in flags["tf32"]
    assert "--fp16" in flags["weak-fp16"] and "--stronglyTyped" not in flags["weak-fp16"]
    assert "--bf16" in flags["weak-bf16"]


def test_graph_precision_of_the_real_exports(trt_onnx):
    assert graph_precision(trt_onnx["fp32"]) == "fp32"
    assert graph_precision(trt_onnx["fp16"]) == "fp16"


def test_end_to_end_graph_profiles_duration(tiny_end_to_end):
    """An end-to-end graph's profile (and trtexec line) covers ``duration`` (B,), its K is read from the file."""
    from coreba.onnx_io import end_to_end_top_k

    _, result = tiny_end_to_end
    assert end_to_end_top_k(result.path) == 10
    dims = ModelDims(video_dim=40, text_dim=24, max_video_len=30, max_text_len=12)
    profile = ShapeProfile.for_model(dims, max_batch=16)
    assert profile.input_shapes(dims, end_to_end=True)["duration"] == ((1,), (8,), (16,))
    cmd = trtexec_command(result.path, "e2e.plan", profile, plan_build("fp32"), dims, end_to_end=True)
    assert dict(re.findall(r"--(min|opt|max)Shapes=(\S+)", cmd))["max"].endswith(",duration:16")


def test_profile_cases_stay_inside_the_profile():
    cfg = tiny_config()
    narrow = ShapeProfile(min_batch=2, opt_batch=3, max_batch=5, min_clips=4, opt_clips=20, max_clips=30,
                          min_tokens=1, opt_tokens=12, max_tokens=12)
    cases = profile_cases(cfg, narrow)
    assert {c.name.split()[0] for c in cases} >= {"opt", "max"}
    for case in cases:
        # the profile bounds the padded shape (B, max length); a sample may hold fewer valid clips
        assert narrow.contains(len(case.video_lens), max(case.video_lens), max(case.text_lens)), case
        assert len(case.video_lens) == len(case.text_lens)


def test_read_model_config_from_onnx_metadata(trt_onnx, tmp_path):
    cfg = read_model_config(trt_onnx["fp32"])
    assert model_dims(cfg) == ModelDims(40, 24, 30, 12)
    bare = onnx.load(str(trt_onnx["fp32"]))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(OnnxFileError, match="no 'config' metadata"):
        read_model_config(tmp_path / "bare.onnx")


# ------------------------------------------------------------------------------- without TensorRT/CUDA
def test_engine_without_tensorrt_is_unavailable(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError, whatever is installed
    with pytest.raises(EngineUnavailable, match="`tensorrt` cannot be imported.*NVIDIA"):
        TensorRTEngine(tmp_path / "missing.plan")


def test_engine_without_cuda_is_unavailable(monkeypatch, tmp_path):
    fake = types.ModuleType("tensorrt")
    fake.__version__ = "10.0.1"
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(EngineUnavailable, match="needs a CUDA GPU"):
        TensorRTEngine(tmp_path / "missing.plan")
    fake.__version__ = "8.6.1"
    with pytest.raises(EngineUnavailable, match="TensorRT 8.6.1 is not supported: coreba supports TensorRT 10.x and "
                                                "11.x only"):
        TensorRTEngine(tmp_path / "missing.plan")


def test_engine_checks_shapes_against_the_profile():
    specs = {"video_mask": TensorSpec("video_mask", (-1, -1), (1, 1), (8, 30)),
             "text_mask": TensorSpec("text_mask", (-1, -1), (1, 1), (8, 12))}
    check_shapes(specs, {"video_mask": np.ones((8, 30), bool), "text_mask": np.ones((1, 1), bool)})
    with pytest.raises(ValueError) as err:
        check_shapes(specs, {"video_mask": np.ones((9, 31), bool)})
    message = str(err.value)
    assert "missing input text_mask" in message and "--max-batch" in message
    assert "video_mask axis 0 is 9, outside the engine's profile range [1, 8]" in message
    assert "video_mask axis 1 is 31" in message


def test_build_and_cli_without_tensorrt(monkeypatch, trt_onnx, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(EngineUnavailable, match="tensorrt"):
        build_engine(trt_onnx["fp32"], tmp_path / "m.plan", TINY_PROFILE, "fp32")
    code = to_tensorrt.main(["--onnx", str(trt_onnx["fp32"]), "--output", str(tmp_path / "m.plan"),
                             "--max-batch", "8", "--precision", "fp32"])
    out, err = capsys.readouterr()
    assert code == 1 and "`tensorrt` cannot be imported" in err
    assert "trtexec --onnx=" in out and "--maxShapes=video_feats:8x30x40" in out and "--noTF32" in out
    assert "--stronglyTyped" in out and "fp32 graph -> strongly typed fp32 engine" in out
    # an fp16 engine from the fp32 graph, strongly typed: refused before TensorRT is even looked for
    assert to_tensorrt.main(["--onnx", str(trt_onnx["fp32"]), "--output", "x.plan", "--precision", "fp16"]) == 2
    assert "python export/to_onnx.py --fp16" in capsys.readouterr().err
    assert to_tensorrt.main(["--onnx", str(trt_onnx["fp32"]), "--output", "x.plan", "--max-clips", "31"]) == 2
    assert "max clips 31 > the model's max_video_len 30" in capsys.readouterr().err


# ------------------------------------------------------------------------- with TensorRT and a CUDA GPU
@pytest.fixture
def tensorrt_gpu():
    """Skip, saying exactly what is missing, unless TensorRT 10 or 11 imports and a CUDA device is visible."""
    try:
        trt = require_tensorrt()
        require_cuda("cuda:0")
    except EngineUnavailable as err:
        pytest.skip(f"TensorRT engine tests need TensorRT 10 or 11 and a CUDA GPU: {err}")
    return trt


@pytest.mark.gpu
@pytest.mark.parametrize(("graph", "precision", "typing"), [("fp32", "fp32", "strong"), ("fp32", "tf32", "strong"),
                                                            ("fp16", "fp16", "strong"), ("fp32", "fp16", "weak")])
def test_tensorrt_engine_parity(tensorrt_gpu, trt_model, trt_onnx, tmp_path, graph, precision, typing):
    if typing == "weak" and not hasattr(tensorrt_gpu.BuilderFlag, "FP16"):
        pytest.skip(f"TensorRT {tensorrt_gpu.__version__} has no weakly typed builds (removed in TensorRT 11)")
    cache = tmp_path / "timing.cache"
    plan = build_engine(trt_onnx[graph], tmp_path / f"{graph}-{precision}.plan", TINY_PROFILE, precision, cache,
                        typing=typing)
    assert plan.stat().st_size > 0 and cache.stat().st_size > 0
    report = check_engine_parity(plan, trt_model, TINY_PROFILE, precision)
    assert report.ok and {r.case.split()[0] for r in report.rows} >= {"opt", "max"}
    rebuilt = build_engine(trt_onnx[graph], tmp_path / "again.plan", TINY_PROFILE, precision, cache,
                           typing=typing)  # reuses the cache
    assert rebuilt.stat().st_size > 0


@pytest.mark.gpu
def test_tensorrt_engine_io_and_profile_errors(tensorrt_gpu, trt_onnx, tmp_path):
    plan = build_engine(trt_onnx["fp32"], tmp_path / "m.plan", TINY_PROFILE, "fp32")
    engine = TensorRTEngine(plan)
    assert engine.name == "tensorrt" and engine.dtypes["video_mask"] == torch.bool
    assert engine.inputs["video_feats"].max == (8, 30, 40)
    rng = np.random.default_rng(0)
    feeds = {"video_feats": rng.standard_normal((2, 5, 40), dtype=np.float32), "video_mask": np.ones((2, 5), bool),
             "text_feats": rng.standard_normal((2, 3, 24)).astype(np.float64), "text_mask": np.ones((2, 3), bool)}
    out = engine.run(feeds)  # float64 features are converted to the engine's float32
    assert out["pred_spans"].shape == (2, 10, 2) and out["saliency_scores"].shape == (2, 5)
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in out.values())
    feeds["video_feats"], feeds["video_mask"] = np.zeros((9, 5, 40), np.float32), np.ones((9, 5), bool)
    with pytest.raises(ValueError, match="axis 0 is 9"):
        engine.run(feeds)


@pytest.mark.gpu
def test_tensorrt_cli_end_to_end(tensorrt_gpu, trt_model, trt_onnx, tmp_path, capsys):
    checkpoint = trt_model.save_pretrained(tmp_path / "ckpt")
    code = to_tensorrt.main(["--onnx", str(trt_onnx["fp16"]), "--output", str(tmp_path / "cli.plan"),
                             "--checkpoint", str(checkpoint), "--max-batch", "8",
                             "--opt-batch", "4", "--timing-cache", str(tmp_path / "cli.cache")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "OK:" in out and (tmp_path / "cli.plan").is_file() and (tmp_path / "cli.cache").is_file()


@pytest.mark.gpu
def test_tensorrt_cli_end_to_end_graph(tensorrt_gpu, tiny_end_to_end, tmp_path, capsys):
    """The served graph: duration in the profile, its answer checked against eager + postprocess while the plan
    still has its temporary name (the sidecar is not there yet), then both moved into place."""
    import json

    model, result = tiny_end_to_end
    checkpoint = model.save_pretrained(tmp_path / "ckpt")
    code = to_tensorrt.main(["--onnx", str(result.path), "--output", str(tmp_path / "e2e.plan"),
                             "--checkpoint", str(checkpoint), "--max-batch", "8", "--opt-batch", "4"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "end-to-end" in out and "duration:8" in out and "OK:" in out
    sidecar = json.loads((tmp_path / "e2e.json").read_text())
    assert (sidecar["graph"], sidecar["top_k"]) == ("end_to_end", 10)
