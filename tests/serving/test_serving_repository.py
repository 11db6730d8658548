"""The model repository without a server: every config.pbtxt parses with Triton's ModelConfig and passes the
cross-model checks (incl. coreba_onnx and coreba_trt, which cannot be loaded here, and the baseline
ensemble), the options reach the configs, the warm-up files fit their inputs, bad options and the wrong graph
are refused; the answer's layout round-trips and the request checks name each problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from coreba.answer import pack_answer, unpack_answer
from coreba.model.validation import InputError
from coreba.onnx_io import read_metadata
from coreba.postprocess import postprocess
from serving.baseline import BASELINE, BASELINE_MODELS
from serving.build_repository import build_repository, main
from serving.config_check import ConfigCheckError, check_ensemble, check_repository, check_same_interface, read_config
from serving.model_configs import Batching, TensorRTAcceleration
from serving.request_checks import check_request
from serving.spec import ALL_MODELS, ENGINE_MODELS, PLAN_FILENAME, SERVED, SERVED_INPUTS, WARMUP_FOLDER


@pytest.fixture(scope="module")
def full_repository(served_model, tmp_path_factory):
    """Every model: a (fake) TensorRT plan, TensorRT-accelerated coreba_onnx, two instances, the baseline."""
    root = tmp_path_factory.mktemp("full")
    plan = root / "coreba.plan"
    plan.write_bytes(b"serialized engine stand-in")
    output = root / "repository"
    build_repository(served_model.onnx_path, output, plan_path=plan, batching=Batching(16, (4, 16), 500),
                     tensorrt=TensorRTAcceleration("FP16", engine_cache_path="/c"), instances=2,
                     baseline_onnx=served_model.raw_onnx_path)
    return output


def test_every_config_parses_with_model_config(full_repository):
    for name in (*ALL_MODELS, *BASELINE_MODELS):
        text = (full_repository / name / "config.pbtxt").read_text()
        config = text_format.Parse(text, mc.ModelConfig())  # Triton's own schema, nothing of ours
        assert config.name == name
        assert config.max_batch_size == 16
    configs = check_repository(full_repository)
    assert set(configs) == {*ALL_MODELS, *BASELINE_MODELS}
    assert (full_repository / ENGINE_MODELS["trt"] / "1" / PLAN_FILENAME).is_file()


def test_one_step_models_share_the_end_to_end_interface(full_repository, served_model):
    cfg = served_model.config
    configs = check_repository(full_repository)
    python, onnx, trt = (configs[name] for name in ALL_MODELS)
    assert python.name == SERVED and python.backend == "python"
    assert onnx.platform == "onnxruntime_onnx" and trt.platform == "tensorrt_plan"
    for config in (python, onnx, trt):
        assert [t.name for t in config.input] == list(SERVED_INPUTS) and not config.ensemble_scheduling.step
        dims = {t.name: list(t.dims) for t in (*config.input, *config.output)}
        assert dims["video_feats"] == [cfg.max_video_len, cfg.video_dim] and dims["text_mask"] == [cfg.max_text_len]
        assert dims["duration"] == [1] and list(config.input[4].reshape.shape) == []  # (B, 1) -> the graph's (B,)
        assert dims["moments"] == [10, 3] and dims["saliency"] == [cfg.max_video_len] and dims["num_clips"] == [1]
        assert config.output[2].data_type == mc.TYPE_INT32
        assert [w.batch_size for w in config.model_warmup] == [1, 16]
        assert config.instance_group[0].count == 2
    assert python.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert onnx.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    accelerator = onnx.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"
    assert accelerator.parameters["trt_profile_max_shapes"].startswith(f"video_feats:16x{cfg.max_video_len}x")
    assert accelerator.parameters["trt_profile_max_shapes"].endswith(",duration:16")
    assert list(python.dynamic_batching.preferred_batch_size) == [4, 16]
    assert python.dynamic_batching.max_queue_delay_microseconds == 500
    warmup = full_repository / SERVED / WARMUP_FOLDER
    assert np.fromfile(warmup / "video_mask", dtype=bool).all()
    assert np.fromfile(warmup / "duration", dtype=np.float32).tolist() == [cfg.max_video_len * cfg.clip_length]


def test_default_repository(repository):
    configs = check_repository(repository)
    assert ENGINE_MODELS["trt"] not in configs and BASELINE in configs
    assert configs[SERVED].dynamic_batching.max_queue_delay_microseconds == 5000  # the fixture's
    onnx = configs[ENGINE_MODELS["onnx"]]
    assert not onnx.optimization.execution_accelerators.gpu_execution_accelerator
    steps = [s.model_name for s in configs[BASELINE].ensemble_scheduling.step]
    assert steps == ["coreba_baseline_engine", "coreba_baseline_postprocess"]
    old = configs["coreba_baseline_engine"].dynamic_batching  # batched as the old path was
    assert list(old.preferred_batch_size) == [4, 8] and old.max_queue_delay_microseconds == 2000


@pytest.mark.parametrize("kwargs,message", [
    (dict(onnx_kind="cpu", tensorrt=TensorRTAcceleration()), "needs GPU instances"),
    (dict(python_kind="tpu"), "instance kind"),
    (dict(instances=0), "instances"),
    (dict(python_engine="tvm"), "runs one of"),
    (dict(python_engine="onnxruntime", precision="bf16"), "no precision 'bf16'"),
    (dict(python_engine="openvino", precision="int8"), "give it with --python-model"),
    (dict(python_engine="openvino", python_kind="gpu"), "openvino engine runs on CPU"),
])
def test_bad_options_are_refused(served_model, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_repository(served_model.onnx_path, tmp_path / "repo", **kwargs)


def test_the_wrong_graph_is_refused(served_model, tmp_path):
    with pytest.raises(ValueError, match="holds the raw graph.*--end-to-end"):
        build_repository(served_model.raw_onnx_path, tmp_path / "repo")
    with pytest.raises(ValueError, match="holds the end_to_end graph"):
        build_repository(served_model.onnx_path, tmp_path / "repo", baseline_onnx=served_model.onnx_path)


def _ir_of(onnx_path: Path, output: Path, **changed: str) -> Path:
    """An OpenVINO IR of ``onnx_path`` carrying its metadata in rt_info as export/quantize.py writes it."""
    import openvino as ov

    model = ov.Core().read_model(str(onnx_path))
    for key, value in {**read_metadata(onnx_path), **changed}.items():
        model.set_rt_info(value, ["coreba", key])
    ov.save_model(model, str(output), compress_to_fp16=False)
    return output


def test_the_python_engine_and_its_file_reach_the_config(served_model, tmp_path):
    """The engine choice is written into coreba's parameters, and another model file (here an OpenVINO IR of the
    same end-to-end graph) is copied beside model.py with its .bin; a file of another model or graph is refused."""
    pytest.importorskip("openvino")
    (tmp_path / "ir").mkdir()
    ir = _ir_of(served_model.onnx_path, tmp_path / "ir" / "model.xml")
    written = build_repository(served_model.onnx_path, tmp_path / "repo", python_engine="openvino",
                               precision="bf16", python_model=ir, intra_op_threads=2)
    python = check_repository(tmp_path / "repo")[SERVED]
    params = {k: v.string_value for k, v in python.parameters.items()}
    assert params["engine"] == "openvino" and params["precision"] == "bf16"
    assert params["model_filename"] == "model.bf16.xml" and params["intra_op_threads"] == "2"
    folder = written[SERVED] / "1"
    assert (folder / "model.bf16.xml").is_file() and (folder / "model.bf16.bin").is_file()

    config = read_metadata(served_model.onnx_path)["config"]
    other = _ir_of(served_model.onnx_path, tmp_path / "other.xml",
                   config=config.replace('"hidden_dim": 32', '"hidden_dim": 64'))
    with pytest.raises(ValueError, match="configs differ"):
        build_repository(served_model.onnx_path, tmp_path / "repo2", python_engine="openvino", python_model=other)
    raw = _ir_of(served_model.raw_onnx_path, tmp_path / "raw.xml")
    with pytest.raises(ValueError, match="not the end-to-end graph"):
        build_repository(served_model.onnx_path, tmp_path / "repo3", python_engine="openvino", python_model=raw)


def test_bad_batching_is_refused():
    with pytest.raises(ValueError, match="outside 1..max_batch_size"):
        Batching(4, (8,), 100)
    with pytest.raises(ValueError, match="max_batch_size"):
        Batching(0, (), 100)


def test_a_warmup_file_of_the_wrong_size_is_caught(full_repository, tmp_path):
    import shutil

    model = tmp_path / ENGINE_MODELS["trt"]
    shutil.copytree(full_repository / ENGINE_MODELS["trt"], model)
    read_config(model)
    (model / WARMUP_FOLDER / "video_feats").write_bytes(b"\0" * 12)
    with pytest.raises(ConfigCheckError, match="should hold .* bytes for 'video_feats', 12 bytes"):
        read_config(model)
    (model / WARMUP_FOLDER / "video_feats").unlink()
    with pytest.raises(ConfigCheckError, match="missing"):
        read_config(model)


def test_models_with_different_tensors_are_caught(full_repository):
    configs = check_repository(full_repository)
    configs[ENGINE_MODELS["onnx"]].output[0].dims[:] = [5, 3]
    with pytest.raises(ConfigCheckError, match="'coreba_onnx' does not offer the tensors of 'coreba'"):
        check_same_interface(configs)


def test_miswired_baseline_ensemble_is_caught(full_repository):
    configs = check_repository(full_repository)
    ensemble = configs[BASELINE]
    ensemble.ensemble_scheduling.step[1].input_map["duration"] = "durations"
    with pytest.raises(ConfigCheckError, match="'durations'"):
        check_ensemble(ensemble, configs)
    ensemble = check_repository(full_repository)[BASELINE]
    ensemble.input[4].data_type = mc.TYPE_FP64
    with pytest.raises(ConfigCheckError, match="TYPE_FP64"):
        check_ensemble(ensemble, configs)


def test_invalid_pbtxt_is_caught(full_repository, tmp_path):
    folder = tmp_path / "coreba"
    folder.mkdir()
    text = (full_repository / BASELINE / "config.pbtxt").read_text()
    (folder / "config.pbtxt").write_text(text.replace("max_batch_size", "max_batchsize"))
    with pytest.raises(ConfigCheckError, match="not a valid Triton ModelConfig"):
        read_config(folder)
    (folder / "config.pbtxt").write_text(text.replace('name: "coreba_baseline"', 'name: "other"'))
    with pytest.raises(ConfigCheckError, match="differs from its folder"):
        read_config(folder)


def test_cli(served_model, tmp_path, capsys):
    assert main(["--onnx", str(served_model.onnx_path), "--output", str(tmp_path / "r"), "--max-batch-size", "4",
                 "--preferred-batch-sizes", "2", "4", "--onnx-cpu"]) == 0
    assert "clients call 'coreba'" in capsys.readouterr().out
    config = read_config(tmp_path / "r" / SERVED)
    assert config.max_batch_size == 4 and config.dynamic_batching.max_queue_delay_microseconds == 0  # the default
    assert main(["--onnx", str(tmp_path / "missing.onnx"), "--output", str(tmp_path / "r")]) == 1
    assert main(["--onnx", str(served_model.onnx_path), "--output", str(tmp_path / "r"),
                 "--preferred-batch-sizes", "16"]) == 1
    assert "outside" in capsys.readouterr().err


def test_answer_round_trip():
    rng = np.random.default_rng(0)
    logits, spans = rng.standard_normal((2, 10, 2)), rng.uniform(0.05, 0.9, (2, 10, 2))
    saliency = rng.standard_normal((2, 6)).astype(np.float32)
    video_mask = np.array([[1, 1, 1, 0, 0, 0], [1, 0, 1, 1, 1, 1]], dtype=bool)  # the second has a hole
    results = postprocess(logits, spans, saliency, video_mask, durations=[6.0, 12.0], top_k=4)
    packed = pack_answer(results, top_k=4, num_slots=6)
    assert packed["moments"].shape == (2, 4, 3) and packed["num_clips"].ravel().tolist() == [3, 5]
    assert np.all(packed["saliency"][0, 3:] == 0)
    for got, want in zip(unpack_answer(packed), results):
        np.testing.assert_allclose(got.moments, want.moments, atol=1e-6)
        np.testing.assert_allclose(got.saliency, want.saliency, atol=1e-6)


@pytest.mark.parametrize("change,message", [
    (dict(text_mask=np.zeros((2, 4), bool)), r"sample\(s\) \[0, 1\] have an empty query"),
    (dict(video_mask=np.array([[1, 0], [0, 0]], bool)), r"sample\(s\) \[1\] have no valid clip"),
    (dict(duration=np.array([[3.0], [np.inf]], np.float32)), "duration must be finite"),
    (dict(duration=np.array([[3.0], [-1.0]], np.float32)), "and positive"),
    (dict(video_feats=np.full((2, 2, 3), np.nan, np.float32)), "video_feats contains NaN"),
    (dict(text_feats=np.full((2, 4, 3), -np.inf, np.float32)), "text_feats contains NaN or Inf"),
])
def test_request_checks(change, message):
    rng = np.random.default_rng(1)
    arrays = {"video_feats": rng.standard_normal((2, 2, 3), dtype=np.float32), "video_mask": np.ones((2, 2), bool),
              "text_feats": rng.standard_normal((2, 4, 3), dtype=np.float32), "text_mask": np.ones((2, 4), bool),
              "duration": np.array([[3.0], [4.0]], np.float32)}
    check_request(arrays)
    with pytest.raises(InputError, match=message):
        check_request({**arrays, **change})
