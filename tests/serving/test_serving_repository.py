"""The model repository without a server: all five config.pbtxt files parse with Triton's ModelConfig and
pass the cross-model checks (incl. coreba_onnx and coreba_trt, which cannot be loaded here), the options
reach the configs, bad options are refused, and the answer's wire format round-trips."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from coreba.model.validation import InputError
from coreba.postprocess import postprocess
from serving.answer import check_answerable, pack_answer, unpack_answer
from serving.build_repository import build_repository, main
from serving.config_check import ConfigCheckError, check_ensemble, check_repository, read_config
from serving.model_configs import Batching, TensorRTAcceleration
from serving.spec import ALL_MODELS, ENGINE_MODELS, ENSEMBLE, PLAN_FILENAME


@pytest.fixture(scope="module")
def full_repository(served_model, tmp_path_factory):
    """Every model: a (fake) TensorRT plan, TensorRT-accelerated coreba_onnx, the ensemble on trt."""
    root = tmp_path_factory.mktemp("full")
    plan = root / "coreba.plan"
    plan.write_bytes(b"serialized engine stand-in")
    output = root / "repository"
    build_repository(served_model.onnx_path, output, plan_path=plan, engine="trt",
                     batching=Batching(16, (4, 16), 500), tensorrt=TensorRTAcceleration("FP16", engine_cache_path="/c"),
                     top_k=5)
    return output


def test_every_config_parses_with_model_config(full_repository):
    for name in ALL_MODELS:
        text = (full_repository / name / "config.pbtxt").read_text()
        config = text_format.Parse(text, mc.ModelConfig())  # Triton's own schema, nothing of ours
        assert config.name == name
        assert config.max_batch_size == 16
    configs = check_repository(full_repository)
    assert set(configs) == set(ALL_MODELS)
    assert (full_repository / ENGINE_MODELS["trt"] / "1" / PLAN_FILENAME).is_file()


def test_configs_carry_the_options(full_repository, served_model):
    cfg = served_model.config
    configs = check_repository(full_repository)
    onnx, trt, python = (configs[ENGINE_MODELS[k]] for k in ("onnx", "trt", "python"))
    assert onnx.platform == "onnxruntime_onnx" and trt.platform == "tensorrt_plan" and python.backend == "python"
    assert onnx.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert python.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    accelerator = onnx.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"
    assert accelerator.parameters["trt_profile_max_shapes"].startswith(f"video_feats:16x{cfg.max_video_len}x")
    assert list(python.dynamic_batching.preferred_batch_size) == [4, 16]
    assert python.dynamic_batching.max_queue_delay_microseconds == 500
    ensemble = configs[ENSEMBLE]
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == ["coreba_trt", "coreba_postprocess"]
    dims = {t.name: list(t.dims) for t in ensemble.input}
    assert dims["video_feats"] == [cfg.max_video_len, cfg.video_dim] and dims["text_mask"] == [cfg.max_text_len]
    assert list(configs["coreba_postprocess"].output[0].dims) == [5, 3]  # top k


def test_default_repository_has_no_trt_and_runs_python(repository):
    configs = check_repository(repository)
    assert ENGINE_MODELS["trt"] not in configs
    assert configs[ENSEMBLE].ensemble_scheduling.step[0].model_name == ENGINE_MODELS["python"]
    onnx = configs[ENGINE_MODELS["onnx"]]
    assert not onnx.optimization.execution_accelerators.gpu_execution_accelerator


@pytest.mark.parametrize("kwargs,message", [
    (dict(engine="trt"), "needs --plan"),
    (dict(engine="tvm"), "engine must be one of"),
    (dict(onnx_kind="cpu", tensorrt=TensorRTAcceleration()), "needs GPU instances"),
    (dict(python_kind="tpu"), "instance kind"),
    (dict(top_k=0), "top_k"),
    (dict(python_engine="tvm"), "coreba_python runs one of"),
    (dict(python_engine="onnxruntime", precision="bf16"), "no precision 'bf16'"),
    (dict(python_engine="openvino", precision="int8"), "give it with --python-model"),
    (dict(python_engine="openvino", python_kind="gpu"), "openvino engine runs on CPU"),
])
def test_bad_options_are_refused(served_model, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_repository(served_model.onnx_path, tmp_path / "repo", **kwargs)


def test_the_python_engine_and_its_file_reach_the_config(served_model, tmp_path):
    """The engine choice is written into coreba_python's parameters, and another model file (here an OpenVINO IR
    of the same model) is copied beside model.py with its .bin; a file of another model is refused."""
    ov = pytest.importorskip("openvino")
    from export.onnx_export import read_metadata

    ir = tmp_path / "ir" / "model.xml"
    model = ov.Core().read_model(str(served_model.onnx_path))
    model.set_rt_info(read_metadata(served_model.onnx_path)["config"], ["coreba", "config"])
    ov.save_model(model, str(ir), compress_to_fp16=False)
    written = build_repository(served_model.onnx_path, tmp_path / "repo", python_engine="openvino",
                               precision="bf16", python_model=ir, intra_op_threads=2)
    python = check_repository(tmp_path / "repo")[ENGINE_MODELS["python"]]
    params = {k: v.string_value for k, v in python.parameters.items()}
    assert params["engine"] == "openvino" and params["precision"] == "bf16"
    assert params["model_filename"] == "model.bf16.xml" and params["intra_op_threads"] == "2"
    folder = written[ENGINE_MODELS["python"]] / "1"
    assert (folder / "model.bf16.xml").is_file() and (folder / "model.bf16.bin").is_file()

    other = tmp_path / "other.xml"
    model.set_rt_info(read_metadata(served_model.onnx_path)["config"].replace('"hidden_dim": 32', '"hidden_dim": 64'),
                      ["coreba", "config"])
    ov.save_model(model, str(other), compress_to_fp16=False)
    with pytest.raises(ValueError, match="configs differ"):
        build_repository(served_model.onnx_path, tmp_path / "repo2", python_engine="openvino", python_model=other)


def test_bad_batching_is_refused():
    with pytest.raises(ValueError, match="outside 1..max_batch_size"):
        Batching(4, (8,), 100)
    with pytest.raises(ValueError, match="max_batch_size"):
        Batching(0, (), 100)


def test_miswired_ensemble_is_caught(full_repository):
    configs = check_repository(full_repository)
    ensemble = configs[ENSEMBLE]
    ensemble.ensemble_scheduling.step[1].input_map["duration"] = "durations"
    with pytest.raises(ConfigCheckError, match="'durations'"):
        check_ensemble(ensemble, configs)
    ensemble = check_repository(full_repository)[ENSEMBLE]
    ensemble.input[4].data_type = mc.TYPE_FP64
    with pytest.raises(ConfigCheckError, match="TYPE_FP64"):
        check_ensemble(ensemble, configs)
    ensemble = check_repository(full_repository)[ENSEMBLE]
    ensemble.max_batch_size = 32
    with pytest.raises(ConfigCheckError, match="exceeds"):
        check_ensemble(ensemble, configs)


def test_invalid_pbtxt_is_caught(full_repository, tmp_path):
    folder = tmp_path / "coreba"
    folder.mkdir()
    text = (full_repository / ENSEMBLE / "config.pbtxt").read_text()
    (folder / "config.pbtxt").write_text(text.replace("max_batch_size", "max_batchsize"))
    with pytest.raises(ConfigCheckError, match="not a valid Triton ModelConfig"):
        read_config(folder)
    (folder / "config.pbtxt").write_text(text.replace('name: "coreba"', 'name: "other"'))
    with pytest.raises(ConfigCheckError, match="differs from its folder"):
        read_config(folder)


def test_cli(served_model, tmp_path, capsys):
    assert main(["--onnx", str(served_model.onnx_path), "--output", str(tmp_path / "r"), "--max-batch-size", "4",
                 "--preferred-batch-sizes", "2", "4", "--onnx-cpu"]) == 0
    assert "checked against ModelConfig" in capsys.readouterr().out
    assert main(["--onnx", str(tmp_path / "missing.onnx"), "--output", str(tmp_path / "r")]) == 1
    assert main(["--onnx", str(served_model.onnx_path), "--output", str(tmp_path / "r"),
                 "--preferred-batch-sizes", "16"]) == 1
    assert "outside" in capsys.readouterr().err


def _engine_outputs(rng, B=2, Lv=6, Q=10):
    return {"pred_logits": rng.standard_normal((B, Q, 2)).astype(np.float32),
            "pred_spans": rng.uniform(0.05, 0.9, (B, Q, 2)).astype(np.float32),
            "saliency_scores": rng.standard_normal((B, Lv)).astype(np.float32)}


def test_answer_round_trip():
    rng = np.random.default_rng(0)
    out = _engine_outputs(rng)
    video_mask = np.array([[1, 1, 1, 0, 0, 0], [1, 0, 1, 1, 1, 1]], dtype=bool)  # the second has a hole
    results = postprocess(out["pred_logits"], out["pred_spans"], out["saliency_scores"], video_mask,
                          durations=[6.0, 12.0], top_k=4)
    packed = pack_answer(results, top_k=4, num_slots=6)
    assert packed["moments"].shape == (2, 4, 3) and packed["num_clips"].ravel().tolist() == [3, 5]
    assert np.all(packed["saliency"][0, 3:] == 0)
    for got, want in zip(unpack_answer(packed), results):
        np.testing.assert_allclose(got.moments, want.moments, atol=1e-6)
        np.testing.assert_allclose(got.saliency, want.saliency, atol=1e-6)


@pytest.mark.parametrize("change,message", [
    (dict(text_mask=np.zeros((2, 4), bool)), "empty query"),
    (dict(video_mask=np.array([[1, 0], [0, 0]], bool)), r"sample\(s\) \[1\] have no valid clip"),
    (dict(duration=np.array([[3.0], [np.inf]], np.float32)), "duration must be finite"),
    (dict(pred_spans=np.full((2, 10, 2), np.nan, np.float32)), "NaN/Inf in pred_spans"),
])
def test_postprocess_guard(change, message):
    rng = np.random.default_rng(1)
    arrays = {**_engine_outputs(rng, Lv=2), "video_mask": np.ones((2, 2), bool), "text_mask": np.ones((2, 4), bool),
              "duration": np.array([[3.0], [4.0]], np.float32)}
    check_answerable(arrays)
    with pytest.raises(InputError, match=message):
        check_answerable({**arrays, **change})
