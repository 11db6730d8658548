"""TensorRT 10 vs 11: which versions are accepted, how each builds, and the errors for what one cannot do.

TensorRT cannot be installed here, so ``build_engine`` runs against fake ``tensorrt`` modules with the API
surface of each major (tests/export/fake_tensorrt.py): a call to something the version lacks raises
AttributeError exactly as the real module would, and the test fails. The real engines are built by
tests/export/test_tensorrt.py where TensorRT and a GPU exist.
"""

from __future__ import annotations

import ast
import json
import sys
import types
from pathlib import Path

import pytest

import coreba.engines.tensorrt_engine as trt_engine
from coreba.engines import EngineUnavailable
from coreba.engines.tensorrt_engine import require_tensorrt
from export import tensorrt_build, to_tensorrt
from export.tensorrt_build import PrecisionError, ShapeProfile, build_engine, check_supported, plan_build
from tests.export.fake_tensorrt import fake_tensorrt, flags_of

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ShapeProfile(min_batch=1, opt_batch=2, max_batch=4, min_clips=1, opt_clips=30, max_clips=30,
                       min_tokens=1, opt_tokens=12, max_tokens=12)


@pytest.fixture
def use_tensorrt(monkeypatch):
    """Install a fake ``tensorrt`` of the given version (and pretend a CUDA device exists for the build)."""

    def install(version: str, **kwargs) -> types.ModuleType:
        fake = fake_tensorrt(version, **kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", fake)
        monkeypatch.setattr(trt_engine, "_LOGGER", None)  # the process-wide logger must not outlive the fake
        monkeypatch.setattr(tensorrt_build, "require_cuda", lambda *args, **kwargs: None)
        return fake

    return install


# ------------------------------------------------------------------------------------------- versions
@pytest.mark.parametrize("version", ["10.0.1.6", "10.16.1.11", "11.0.0.114", "11.4.0.106"])
def test_require_tensorrt_accepts_10_and_11(use_tensorrt, version):
    use_tensorrt(version)
    assert require_tensorrt().__version__ == version


@pytest.mark.parametrize(("version", "message"), [
    ("8.6.1", r"TensorRT 8.6.1 is not supported: coreba supports TensorRT 10.x and 11.x only \(it predates"),
    ("9.3.0.1", r"TensorRT 9.3.0.1 is not supported.*predates the name-based I/O tensor API"),
    ("12.0.0", r"TensorRT 12.0.0 is not supported.*its Python API has not been checked against this code"),
])
def test_require_tensorrt_refuses_other_majors_by_name(use_tensorrt, version, message):
    use_tensorrt(version)
    with pytest.raises(EngineUnavailable, match=message):
        require_tensorrt()


def test_a_tensorrt_without_version_is_not_tensorrt(monkeypatch):
    """A stubs-only install imports as an empty namespace package: say so, not "TensorRT 0"."""
    namespace = types.ModuleType("tensorrt")
    namespace.__path__ = ["/site-packages/tensorrt"]
    monkeypatch.setitem(sys.modules, "tensorrt", namespace)
    with pytest.raises(EngineUnavailable, match="has no usable __version__.*not TensorRT"):
        require_tensorrt()


# ------------------------------------------------------------------------------------------- plans
def test_plans_strongly_typed_take_the_graphs_precision():
    fp32 = plan_build("fp32")
    assert (fp32.precision, fp32.typing, fp32.clear_flags, fp32.set_flags) == ("fp32", "strong", ("TF32",), ())
    assert plan_build("fp32", "tf32").set_flags == ("TF32",)
    fp16 = plan_build("fp16")
    assert (fp16.precision, fp16.strongly_typed, fp16.set_flags, fp16.clear_flags) == ("fp16", True, (), ())
    with pytest.raises(PrecisionError, match="fp32 graph, so it cannot be built as fp16.*to_onnx.py --fp16"):
        plan_build("fp32", "fp16")
    with pytest.raises(PrecisionError, match="fp16 graph, so it cannot be built as fp32: build it as fp16"):
        plan_build("fp16", "fp32")


def test_plans_weakly_typed_only_reduce_an_fp32_graph():
    weak = plan_build("fp32", "fp16", "weak")
    assert (weak.typing, weak.set_flags, weak.strongly_typed) == ("weak", ("FP16",), False)
    assert plan_build("fp32", "bf16", "weak").set_flags == ("BF16",)
    for graph, precision in (("fp16", "fp16"), ("fp32", "fp32"), ("fp32", "auto")):
        with pytest.raises(PrecisionError, match="weak typing only"):
            plan_build(graph, precision, "weak")
    with pytest.raises(PrecisionError, match="typing must be one of"):
        plan_build("fp32", "fp32", "loose")


# ------------------------------------------------------------------------------------------- builds
def _sidecar(plan_path: Path) -> dict:
    return json.loads(plan_path.with_suffix(".json").read_text())


def test_tensorrt_10_strongly_typed_fp32(use_tensorrt, trt_onnx, tmp_path):
    trt = use_tensorrt("10.16.1.11")
    plan = build_engine(trt_onnx["fp32"], tmp_path / "m.plan", PROFILE, timing_cache=tmp_path / "t.cache",
                        workspace_gb=1)
    assert plan.read_bytes() == b"fake plan" and (tmp_path / "t.cache").read_bytes() == b"timing cache"
    set_, cleared, network = flags_of(trt)
    assert network == [1 << 1] and set_ == set() and cleared == {"TF32"}  # STRONGLY_TYPED is 1 in 10.x
    assert ("set_memory_pool_limit", "WORKSPACE", 1 << 30) in trt.calls
    assert ("set_shape", "video_feats", (1, 1, 40), (2, 30, 40), (4, 30, 40)) in trt.calls
    meta = _sidecar(plan)
    assert (meta["precision"], meta["typing"], meta["graph_precision"], meta["tensorrt"]) == (
        "fp32", "strong", "fp32", "10.16.1.11")


@pytest.mark.parametrize("version", ["10.16.1.11", "11.4.0.106"])
def test_end_to_end_graph_profiles_duration_and_its_sidecar_says_so(use_tensorrt, tiny_end_to_end, tmp_path, version):
    """The end-to-end graph builds like the raw one (strongly typed, atomic, checked under its temporary name) with
    ``duration`` (B,) in the profile; the sidecar records the graph and K."""
    trt = use_tensorrt(version)
    _, result = tiny_end_to_end
    checked = []
    plan = build_engine(result.path, tmp_path / "e2e.plan", PROFILE, check=checked.append)
    assert ("set_shape", "duration", (1,), (2,), (4,)) in trt.calls
    assert ("set_shape", "video_feats", (1, 1, 40), (2, 30, 40), (4, 30, 40)) in trt.calls
    meta = _sidecar(plan)
    assert (meta["graph"], meta["top_k"], meta["precision"], meta["typing"]) == ("end_to_end", 10, "fp32", "strong")
    assert len(checked) == 1 and checked[0] != plan and not checked[0].exists()  # the temporary, gone after
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e2e.json", "e2e.plan"]


def test_tensorrt_10_weakly_typed_fp16(use_tensorrt, trt_onnx, tmp_path):
    trt = use_tensorrt("10.16.1.11")
    plan = build_engine(trt_onnx["fp32"], tmp_path / "m.plan", PROFILE, "fp16", typing="weak")
    set_, cleared, network = flags_of(trt)
    assert network == [0] and set_ == {"FP16"} and cleared == set()
    assert _sidecar(plan)["typing"] == "weak"


@pytest.mark.parametrize("version", ["10.16.1.11", "11.4.0.106"])
def test_fp16_graph_builds_strongly_typed_on_10_and_11(use_tensorrt, trt_onnx, tmp_path, version):
    trt = use_tensorrt(version)
    plan = build_engine(trt_onnx["fp16"], tmp_path / "m.plan", PROFILE)  # precision "auto": the graph's fp16
    set_, cleared, network = flags_of(trt)
    strongly_typed = int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert network == [1 << strongly_typed] and set_ == set() and cleared == set()
    meta = _sidecar(plan)
    assert (meta["precision"], meta["graph_precision"], meta["tensorrt"]) == ("fp16", "fp16", version)


def test_tensorrt_11_fp32_clears_tf32(use_tensorrt, trt_onnx, tmp_path):
    trt = use_tensorrt("11.4.0.106")
    build_engine(trt_onnx["fp32"], tmp_path / "m.plan", PROFILE, "fp32")
    assert flags_of(trt) == (set(), {"TF32"}, [1])  # STRONGLY_TYPED is 0 in 11.x
    trt.calls.clear()
    build_engine(trt_onnx["fp32"], tmp_path / "m.plan", PROFILE, "tf32")
    assert flags_of(trt) == ({"TF32"}, set(), [1])


def test_tensorrt_11_refuses_weak_typing_with_a_clear_error(use_tensorrt, trt_onnx, tmp_path, capsys):
    trt = use_tensorrt("11.4.0.106")
    with pytest.raises(PrecisionError, match=r"TensorRT 11.4.0.106 has no weakly typed builds \(BuilderFlag.FP16 "
                                             r"and BF16 were removed in TensorRT 11\).*to_onnx.py --fp16"):
        build_engine(trt_onnx["fp32"], tmp_path / "m.plan", PROFILE, "fp16", typing="weak")
    assert not [c for c in trt.calls if c[0] == "create_network"]  # refused before building anything
    code = to_tensorrt.main(["--onnx", str(trt_onnx["fp32"]), "--output", str(tmp_path / "cli.plan"),
                             "--max-batch", "4", "--opt-batch", "2", "--precision", "fp16", "--typing", "weak"])
    out, err = capsys.readouterr()
    assert code == 1 and "error: TensorRT 11.4.0.106 has no weakly typed builds" in err and "Traceback" not in err
    assert "--fp16" in out  # the trtexec line still printed, for TensorRT 10 users


def test_a_future_11_without_the_deprecated_flag_still_builds(use_tensorrt, trt_onnx, tmp_path):
    """11.x ignores STRONGLY_TYPED (always strongly typed) and may drop it: then the flags are simply 0."""
    trt = use_tensorrt("11.9.0", strongly_typed_flag=False)
    build_engine(trt_onnx["fp16"], tmp_path / "m.plan", PROFILE)
    assert flags_of(trt)[2] == [0]
    old = fake_tensorrt("10.0.0", strongly_typed_flag=False)
    with pytest.raises(PrecisionError, match="lacks NetworkDefinitionCreationFlag.STRONGLY_TYPED"):
        check_supported(old, plan_build("fp16"))


def test_parser_errors_are_listed(use_tensorrt, trt_onnx, tmp_path):
    use_tensorrt("11.4.0.106", parser_errors=("Unique is not supported", "bad attribute"))
    with pytest.raises(tensorrt_build.TensorRTBuildError, match=r"rejected .* \(2 error\(s\)\):\n  node 0 'node_0' "
                                                               r"\(Unique\): Unique is not supported"):
        build_engine(trt_onnx["fp32"], tmp_path / "m.plan", PROFILE)


# ------------------------------------------------------------------------------ removed in TensorRT 11
# NVIDIA's "Removed Python APIs and Replacements" (10.x -> 11.x) for the classes this code uses, by name.
REMOVED_IN_11 = {
    # BuilderFlag (weak typing, implicit quantization)
    "FP16", "BF16", "INT8", "FP8", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS",
    # IBuilderConfig (calibration)
    "int8_calibrator", "set_calibration_profile", "get_calibration_profile", "set_quantization_flag",
    "get_quantization_flag", "quantization_flags", "clear_quantization_flag", "algorithm_selector",
    # ICudaEngine memory queries (the _v2 forms remain)
    "device_memory_size", "get_device_memory_size_for_profile", "create_execution_context_without_device_memory",
    # IBuilder platform queries, network creation
    "platform_has_fast_fp16", "platform_has_fast_int8", "platform_has_tf32", "EXPLICIT_BATCH",
    # ILayer / ITensor precision hints (meaningless in strongly typed networks)
    "set_output_type", "reset_precision", "set_dynamic_range", "dynamic_range",
}


def test_no_api_removed_in_11_is_used_outside_the_guarded_flag_lookup():
    """Every attribute the TensorRT modules touch that TensorRT 11 removed must sit in ``builder_flag``,
    which is only reached for a weakly typed plan after ``check_supported`` found the flag."""
    offenders = []
    for rel in ("coreba/engines/tensorrt_engine.py", "export/tensorrt_build.py", "export/to_tensorrt.py"):
        tree = ast.parse((ROOT / rel).read_text())
        allowed: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name == "builder_flag":
                allowed |= {id(n) for n in ast.walk(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in REMOVED_IN_11 and id(node) not in allowed:
                offenders.append(f"{rel}:{node.lineno} .{node.attr}")
    assert offenders == [], offenders
