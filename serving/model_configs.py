"""The five ``config.pbtxt`` files as Triton ``ModelConfig`` protobuf messages (built, never templated text).

Building the message with Triton's own ``model_config_pb2`` means a misspelt field fails here, in Python,
instead of at server start; :mod:`serving.config_check` then checks what protobuf cannot (batching bounds,
ensemble wiring). Tensor names come from :mod:`serving.spec`, dims from the ONNX file's ``CorebaConfig``.

Dims: the engines take variable lengths (``-1``), so they can be called directly with any length up to the
model's maximum; the ensemble fixes them to the maximum (the client pads, with masks), because Triton's
dynamic batcher only puts requests of one shape into a batch. Padding is exact for COREBA: a sample's
outputs depend neither on its padding nor on its batch-mates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from coreba.config import CorebaConfig
from serving.spec import (
    ANSWER_OUTPUTS,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_QUEUE_DELAY_US,
    DEFAULT_PREFERRED_BATCH_SIZES,
    DURATION,
    ENGINE_INPUTS,
    ENGINE_MODELS,
    ENGINE_OUTPUTS,
    ENSEMBLE,
    ENSEMBLE_INPUTS,
    ONNX_FILENAME,
    PLAN_FILENAME,
    POSTPROCESS,
    POSTPROCESS_INPUTS,
)

FP32, BOOL, INT32 = mc.TYPE_FP32, mc.TYPE_BOOL, mc.TYPE_INT32
KINDS = {"cpu": mc.ModelInstanceGroup.KIND_CPU, "gpu": mc.ModelInstanceGroup.KIND_GPU}


@dataclass(frozen=True)
class Batching:
    """Dynamic batching of the engine: Triton waits up to ``max_queue_delay_us`` to fill a preferred size."""

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    preferred_batch_sizes: tuple[int, ...] = DEFAULT_PREFERRED_BATCH_SIZES
    max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        bad = [size for size in self.preferred_batch_sizes if not 1 <= size <= self.max_batch_size]
        if bad:
            raise ValueError(f"preferred batch sizes {bad} are outside 1..max_batch_size {self.max_batch_size}")
        if self.max_queue_delay_us < 0:
            raise ValueError(f"max_queue_delay_us must be >= 0, got {self.max_queue_delay_us}")

    def dynamic_batching(self) -> mc.ModelDynamicBatching:
        return mc.ModelDynamicBatching(preferred_batch_size=list(self.preferred_batch_sizes),
                                       max_queue_delay_microseconds=self.max_queue_delay_us)


@dataclass(frozen=True)
class TensorRTAcceleration:
    """ONNX Runtime's TensorRT execution provider inside Triton's ONNX Runtime backend (GPU only)."""

    precision: str = "FP16"
    workspace_bytes: int = 1 << 30
    engine_cache_path: str | None = None  # a writable folder on the server: TensorRT engines outlive restarts

    def __post_init__(self) -> None:
        if self.precision not in ("FP16", "FP32"):
            raise ValueError(f"TensorRT precision must be FP16 or FP32, got {self.precision!r}")


def _input(name: str, dtype: int, dims: Sequence[int]) -> mc.ModelInput:
    return mc.ModelInput(name=name, data_type=dtype, dims=list(dims))


def _output(name: str, dtype: int, dims: Sequence[int]) -> mc.ModelOutput:
    return mc.ModelOutput(name=name, data_type=dtype, dims=list(dims))


def engine_inputs(cfg: CorebaConfig, fixed: bool = False) -> list[mc.ModelInput]:
    """video_feats (Lv, Dv) FP32, video_mask (Lv) BOOL, text_feats (Lt, Dt) FP32, text_mask (Lt) BOOL;
    Lv, Lt are -1, or the model's maxima when ``fixed`` (the ensemble)."""
    Lv, Lt = (cfg.max_video_len, cfg.max_text_len) if fixed else (-1, -1)
    dims = {"video_feats": (FP32, [Lv, cfg.video_dim]), "video_mask": (BOOL, [Lv]),
            "text_feats": (FP32, [Lt, cfg.text_dim]), "text_mask": (BOOL, [Lt])}
    return [_input(name, *dims[name]) for name in ENGINE_INPUTS]


def engine_outputs(cfg: CorebaConfig) -> list[mc.ModelOutput]:
    dims = {"pred_logits": [cfg.num_queries, 2], "pred_spans": [cfg.num_queries, 2], "saliency_scores": [-1]}
    return [_output(name, FP32, dims[name]) for name in ENGINE_OUTPUTS]


def answer_outputs(cfg: CorebaConfig, top_k: int, fixed: bool = False) -> list[mc.ModelOutput]:
    """The layout of :mod:`serving.answer`: moments (K, 3), saliency (Lv), num_clips (1)."""
    dims = {"moments": (FP32, [top_k, 3]), "saliency": (FP32, [cfg.max_video_len if fixed else -1]),
            "num_clips": (INT32, [1])}
    return [_output(name, *dims[name]) for name in ANSWER_OUTPUTS]


def _instances(kind: str, count: int) -> list[mc.ModelInstanceGroup]:
    if kind not in KINDS:
        raise ValueError(f"instance kind must be one of {tuple(KINDS)}, got {kind!r}")
    return [mc.ModelInstanceGroup(kind=KINDS[kind], count=count)]


def _parameters(config: mc.ModelConfig, values: dict[str, str]) -> None:
    for key, value in values.items():
        config.parameters[key].string_value = value


def _shape_list(cfg: CorebaConfig, batch: int, Lv: int, Lt: int) -> str:
    """ONNX Runtime's TensorRT profile syntax: ``name:BxLvxD,...``."""
    shapes = {"video_feats": (batch, Lv, cfg.video_dim), "video_mask": (batch, Lv),
              "text_feats": (batch, Lt, cfg.text_dim), "text_mask": (batch, Lt)}
    return ",".join(f"{name}:" + "x".join(map(str, shapes[name])) for name in ENGINE_INPUTS)


def _engine(model: str, cfg: CorebaConfig, batching: Batching, kind: str, instances: int,
            **fields) -> mc.ModelConfig:
    """What every engine model shares: the export's tensors (variable lengths), instances, dynamic batching."""
    return mc.ModelConfig(name=ENGINE_MODELS[model], max_batch_size=batching.max_batch_size,
                          input=engine_inputs(cfg), output=engine_outputs(cfg),
                          instance_group=_instances(kind, instances), dynamic_batching=batching.dynamic_batching(),
                          **fields)


def onnx_config(cfg: CorebaConfig, batching: Batching, kind: str = "gpu", instances: int = 1,
                tensorrt: TensorRTAcceleration | None = None) -> mc.ModelConfig:
    """``coreba_onnx``: Triton's ONNX Runtime backend (NGC images), optionally accelerated by TensorRT."""
    config = _engine("onnx", cfg, batching, kind, instances, platform="onnxruntime_onnx",
                     default_model_filename=ONNX_FILENAME)
    if tensorrt is not None:
        if kind != "gpu":
            raise ValueError("TensorRT acceleration needs GPU instances (kind='gpu')")
        opt_batch = max(batching.preferred_batch_sizes, default=batching.max_batch_size)
        params = {"precision_mode": tensorrt.precision, "max_workspace_size_bytes": str(tensorrt.workspace_bytes),
                  # one profile from (1 clip, 1 token) to the padded maxima: no engine rebuild per shape
                  "trt_profile_min_shapes": _shape_list(cfg, 1, 1, 1),
                  "trt_profile_opt_shapes": _shape_list(cfg, opt_batch, cfg.max_video_len, cfg.max_text_len),
                  "trt_profile_max_shapes": _shape_list(cfg, batching.max_batch_size, cfg.max_video_len,
                                                        cfg.max_text_len)}
        if tensorrt.engine_cache_path:
            params.update(trt_engine_cache_enable="1", trt_engine_cache_path=tensorrt.engine_cache_path)
        accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        for key, value in params.items():
            accelerator.parameters[key] = value
    return config


def trt_config(cfg: CorebaConfig, batching: Batching, instances: int = 1) -> mc.ModelConfig:
    """``coreba_trt``: a serialized TensorRT engine; its optimization profile must cover batch
    1..max_batch_size and lengths up to the padded maxima, or the server rejects the config at load."""
    return _engine("trt", cfg, batching, "gpu", instances, platform="tensorrt_plan",
                   default_model_filename=PLAN_FILENAME)


@dataclass(frozen=True)
class PythonEngine:
    """What ``coreba_python`` runs, written into its config parameters and read by its ``initialize``: any
    :func:`coreba.engines.load_engine` engine that reads a file (ONNX Runtime, OpenVINO) at any of its
    precisions, on the model file ``model_filename`` of the version folder."""

    engine: str = "onnxruntime"
    precision: str = "fp32"
    model_filename: str = ONNX_FILENAME

    def __post_init__(self) -> None:
        from coreba.engines import ENGINE_PRECISIONS

        if self.engine not in PYTHON_ENGINES:
            raise ValueError(f"coreba_python runs one of {PYTHON_ENGINES}, got {self.engine!r}")
        if self.precision not in ENGINE_PRECISIONS[self.engine]:
            raise ValueError(f"engine {self.engine!r} has no precision {self.precision!r}; it has "
                             f"{ENGINE_PRECISIONS[self.engine]}")


PYTHON_ENGINES = ("onnxruntime", "openvino")


def python_engine_config(cfg: CorebaConfig, batching: Batching, kind: str = "cpu", instances: int = 1,
                         graph_optimization: str = "all", intra_op_threads: int = 0,
                         engine: PythonEngine | None = None) -> mc.ModelConfig:
    """``coreba_python``: the Python backend running ``engine`` (default ONNX Runtime fp32; CPU or CUDA provider
    from the kind). ``intra_op_threads`` is the engine's thread count (0: its default)."""
    engine = engine or PythonEngine()
    if engine.engine == "openvino" and kind != "cpu":
        raise ValueError("the openvino engine runs on CPU instances (kind='cpu')")
    config = _engine("python", cfg, batching, kind, instances, backend="python")
    _parameters(config, {"engine": engine.engine, "precision": engine.precision,
                         "model_filename": engine.model_filename, "graph_optimization": graph_optimization,
                         "intra_op_threads": str(intra_op_threads)})
    return config


def postprocess_config(cfg: CorebaConfig, batching: Batching, top_k: int, instances: int = 1) -> mc.ModelConfig:
    """``coreba_postprocess``: CPU, batches whatever is queued (no delay: the engine already batched)."""
    video_len = [-1]
    dims = {"pred_logits": (FP32, [cfg.num_queries, 2]), "pred_spans": (FP32, [cfg.num_queries, 2]),
            "saliency_scores": (FP32, video_len), "video_mask": (BOOL, video_len), "text_mask": (BOOL, [-1]),
            DURATION: (FP32, [1])}
    return mc.ModelConfig(name=POSTPROCESS, backend="python", max_batch_size=batching.max_batch_size,
                          input=[_input(name, *dims[name]) for name in POSTPROCESS_INPUTS],
                          output=answer_outputs(cfg, top_k), instance_group=_instances("cpu", instances),
                          dynamic_batching=mc.ModelDynamicBatching())


def ensemble_config(cfg: CorebaConfig, batching: Batching, engine: str, top_k: int) -> mc.ModelConfig:
    """``coreba``: the ONE model a client calls; inputs padded to the maxima, engine -> post-processing."""
    if engine not in ENGINE_MODELS:
        raise ValueError(f"engine must be one of {tuple(ENGINE_MODELS)}, got {engine!r}")
    inputs = [*engine_inputs(cfg, fixed=True), _input(DURATION, FP32, [1])]
    assert [i.name for i in inputs] == list(ENSEMBLE_INPUTS)
    config = mc.ModelConfig(name=ENSEMBLE, platform="ensemble", max_batch_size=batching.max_batch_size,
                            input=inputs, output=answer_outputs(cfg, top_k, fixed=True))
    steps = config.ensemble_scheduling.step
    run = steps.add(model_name=ENGINE_MODELS[engine], model_version=-1)
    for name in ENGINE_INPUTS:
        run.input_map[name] = name
    for name in ENGINE_OUTPUTS:
        run.output_map[name] = name
    answer = steps.add(model_name=POSTPROCESS, model_version=-1)
    for name in POSTPROCESS_INPUTS:
        answer.input_map[name] = name
    for name in ANSWER_OUTPUTS:
        answer.output_map[name] = name
    return config


def to_pbtxt(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config)


def parse_pbtxt(text: str) -> mc.ModelConfig:
    """Parse ``config.pbtxt`` text with Triton's own schema (raises ``text_format.ParseError``)."""
    return text_format.Parse(text, mc.ModelConfig())
