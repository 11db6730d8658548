"""CPU engines beside ONNX Runtime: OpenVINO fp32 matches eager like ONNX Runtime does, bf16 really runs in bf16
where the CPU has it and is refused by name where it does not, and the Predictor serves them all."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coreba import Coreba, Predictor
from coreba.engines import load_engine
from coreba.engines.isa import CpuIsa, PrecisionUnavailable, cpu_isa
from coreba.interface import make_feeds
from export.onnx_export import export_onnx
from export.spec import REDUCED_PRECISION_SANITY
from export.validate import check_parity, eager_outputs
from tests.conftest import tiny_config

openvino = pytest.importorskip("openvino")
NO_BF16 = "this CPU has no AVX512_BF16 / AMX: bf16 is refused here (tested below), not run"
AVX2_ONLY = CpuIsa.from_flags(["fpu", "sse2", "avx", "avx2", "fma", "f16c"], source="test")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("cpu_engines")
    torch.manual_seed(0)
    model = Coreba(tiny_config()).eval()
    model.save_pretrained(root / "ckpt")
    export_onnx(model, root / "model.onnx")
    return root, model


def _within_sanity(got: dict, want: dict) -> None:
    """Reduced precision: close to fp32 at the benchmark's sanity bound (a fraction of each output's range)."""
    for name, ref in want.items():
        scale = max(float(np.abs(ref).max()), 1e-3)
        assert np.isfinite(got[name]).all(), name
        assert float(np.abs(got[name] - ref).max()) <= REDUCED_PRECISION_SANITY * scale, name


def test_isa_flags_are_read_from_the_cpu_flag_list():
    assert AVX2_ONLY.flags() == {"AVX2": True, "AVX-512": False, "VNNI": False, "BF16": False, "AMX": False}
    zen4 = CpuIsa.from_flags(["avx2", "avx512f", "avx512_vnni", "avx512_bf16"])
    assert zen4.vnni and zen4.bf16 and zen4.avx512 and not zen4.amx
    spr = CpuIsa.from_flags(["avx2", "avx512f", "amx_tile", "amx_int8", "amx_bf16"])
    assert spr.amx and spr.bf16 and spr.vnni
    alder_lake = CpuIsa.from_flags(["avx2", "avx_vnni"])
    assert alder_lake.vnni and not alder_lake.bf16
    with pytest.raises(PrecisionUnavailable, match="AVX512_BF16 or AMX-BF16.*BF16 no"):
        AVX2_ONLY.require("bf16", "OpenVINO")
    AVX2_ONLY.require("fp32", "OpenVINO")
    assert "BF16" in cpu_isa().summary()  # this machine, whatever it has


def test_openvino_fp32_matches_eager(artifacts):
    root, model = artifacts
    engine = load_engine("openvino", root / "model.onnx", precision="fp32")
    assert str(engine.compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
    check_parity(engine.run, model, "OpenVINO fp32")  # every case of the harness, 1e-4; raises on failure


@pytest.mark.skipif(not cpu_isa().bf16, reason=NO_BF16)
def test_openvino_bf16_runs_in_bf16(artifacts):
    root, model = artifacts
    engine = load_engine("openvino", root / "model.onnx", precision="bf16")
    assert "bfloat16" in str(engine.compiled.get_property("INFERENCE_PRECISION_HINT"))
    feeds = make_feeds(model.config, (30, 11, 1), (12, 4, 1), seed=3)
    got, want = engine.run(feeds), eager_outputs(model, feeds)
    _within_sanity(got, want)
    assert max(float(np.abs(got[k] - want[k]).max()) for k in want) > 1e-5  # not fp32 in disguise


@pytest.mark.skipif(not cpu_isa().bf16, reason=NO_BF16)
def test_torch_bf16_runs_in_bf16(artifacts):
    root, model = artifacts
    engine = load_engine("torch", root / "ckpt", precision="bf16")
    assert next(engine.model.parameters()).dtype == torch.bfloat16
    feeds = make_feeds(model.config, (30, 11, 1), (12, 4, 1), seed=4)
    got = engine.run(feeds)
    assert all(v.dtype == np.float32 for v in got.values())
    _within_sanity(got, eager_outputs(model, feeds))


def test_bf16_is_refused_by_name_without_the_instructions(artifacts, monkeypatch):
    import coreba.engines.openvino_engine as ov_engine
    import coreba.engines.torch_engine as torch_engine

    root, _ = artifacts
    monkeypatch.setattr(ov_engine, "cpu_isa", lambda: AVX2_ONLY)
    monkeypatch.setattr(torch_engine, "cpu_isa", lambda: AVX2_ONLY)
    with pytest.raises(PrecisionUnavailable, match="OpenVINO bf16 needs a CPU with AVX512_BF16"):
        load_engine("openvino", root / "model.onnx", precision="bf16")
    with pytest.raises(PrecisionUnavailable, match="PyTorch bf16 needs a CPU with AVX512_BF16"):
        load_engine("torch", root / "ckpt", precision="bf16")
    load_engine("openvino", root / "model.onnx", precision="fp32")  # fp32 is never refused


def test_wrong_precisions_are_explained(artifacts):
    root, _ = artifacts
    with pytest.raises(ValueError, match="no precision 'bf16'"):
        load_engine("onnxruntime", root / "model.onnx", precision="bf16")
    with pytest.raises(ValueError, match="no int8 quantization"):
        load_engine("openvino", root / "model.onnx", precision="int8")
    with pytest.raises(ValueError, match="no precision 'int8'"):
        load_engine("torch", root / "ckpt", precision="int8")
    with pytest.raises(ValueError, match="no precision 'fp16'"):
        load_engine("tensorrt", root / "model.plan", precision="fp16")


def test_predictor_on_openvino_gives_the_eager_answers(artifacts):
    from tests.test_predictor import _assert_same, _samples

    root, _ = artifacts
    eager = Predictor.from_pretrained(root / "ckpt", engine="torch")
    ov = Predictor.from_pretrained(root / "model.onnx", engine="openvino", precision="fp32", max_batch_size=3)
    assert ov.config == eager.config
    videos, texts = _samples(eager.config, [(30, 12), (7, 3), (1, 1), (19, 8)], seed=5)
    _assert_same(ov.predict(videos, texts), eager.predict(videos, texts))
