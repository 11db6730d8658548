"""The ``config.pbtxt`` files as Triton ``ModelConfig`` protobuf messages (built, never templated text).

Building the message with Triton's own ``model_config_pb2`` means a misspelt field fails here, in Python,
instead of at server start; :mod:`serving.config_check` then checks what protobuf cannot (batching bounds,
ensemble wiring). Tensor names come from :mod:`serving.spec`, dims from the ONNX file's ``CorebaConfig``.

Every served model has the same inputs and outputs (the end-to-end graph's): lengths fixed to the model's
maxima (the client pads, with masks), because Triton's dynamic batcher only puts requests of one shape into a
batch; padding is exact for COREBA (a sample's outputs depend neither on its padding nor on its batch-mates).
``duration`` travels as (B, 1), as clients send one number per query, and is reshaped to the graph's (B,).
Each model warms up at batch 1 and at the largest batch before it is marked ready (``model_warmup``, from one
valid sample written into ``<model>/warmup/``), so the first client request is not the one that pays for
ONNX Runtime's first allocations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from coreba.config import CorebaConfig
from serving.spec import (
    ANSWER_OUTPUTS,
    CLIP_LENGTH_PARAMETER,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_QUEUE_DELAY_US,
    DEFAULT_PREFERRED_BATCH_SIZES,
    DURATION,
    ENGINE_MODELS,
    ONNX_FILENAME,
    PLAN_FILENAME,
    SERVED_INPUTS,
)

FP32, BOOL, INT32 = mc.TYPE_FP32, mc.TYPE_BOOL, mc.TYPE_INT32
KINDS = {"cpu": mc.ModelInstanceGroup.KIND_CPU, "gpu": mc.ModelInstanceGroup.KIND_GPU}
NUMPY_DTYPES = {FP32: np.float32, BOOL: np.bool_, INT32: np.int32}


@dataclass(frozen=True)
class Batching:
    """Dynamic batching: Triton waits up to ``max_queue_delay_us`` to fill a preferred size (none: no wait)."""

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


def _input(name: str, dtype: int, dims: Sequence[int], reshape: Sequence[int] | None = None) -> mc.ModelInput:
    tensor = mc.ModelInput(name=name, data_type=dtype, dims=list(dims))
    if reshape is not None:
        tensor.reshape.shape[:] = list(reshape)
    return tensor


def _output(name: str, dtype: int, dims: Sequence[int]) -> mc.ModelOutput:
    return mc.ModelOutput(name=name, data_type=dtype, dims=list(dims))


def served_inputs(cfg: CorebaConfig) -> list[mc.ModelInput]:
    """video_feats (Lv, Dv) FP32, video_mask (Lv) BOOL, text_feats (Lt, Dt) FP32, text_mask (Lt) BOOL at the
    model's maximum lengths; duration (1) FP32 seconds, reshaped to the graph's (B,)."""
    Lv, Lt = cfg.max_video_len, cfg.max_text_len
    dims = {"video_feats": (FP32, [Lv, cfg.video_dim]), "video_mask": (BOOL, [Lv]),
            "text_feats": (FP32, [Lt, cfg.text_dim]), "text_mask": (BOOL, [Lt]), DURATION: (FP32, [1])}
    return [_input(name, *dims[name], reshape=[] if name == DURATION else None) for name in SERVED_INPUTS]


def answer_outputs(cfg: CorebaConfig, top_k: int) -> list[mc.ModelOutput]:
    """The layout of :mod:`coreba.answer`: moments (K, 3), saliency (Lv), num_clips (1) INT32."""
    dims = {"moments": (FP32, [top_k, 3]), "saliency": (FP32, [cfg.max_video_len]), "num_clips": (INT32, [1])}
    return [_output(name, *dims[name]) for name in ANSWER_OUTPUTS]


def warmup_sample(cfg: CorebaConfig) -> dict[str, np.ndarray]:
    """One valid query at the maximum lengths (random features, every clip and token valid): the warm-up data,
    which goes through the same validation as a client's request."""
    rng = np.random.default_rng(0)
    return {"video_feats": rng.standard_normal((cfg.max_video_len, cfg.video_dim), dtype=np.float32),
            "video_mask": np.ones(cfg.max_video_len, dtype=bool),
            "text_feats": rng.standard_normal((cfg.max_text_len, cfg.text_dim), dtype=np.float32),
            "text_mask": np.ones(cfg.max_text_len, dtype=bool),
            DURATION: np.array([cfg.max_video_len * cfg.clip_length], dtype=np.float32)}


def model_warmup(cfg: CorebaConfig, batching: Batching) -> list[mc.ModelWarmup]:
    """Warm-up requests of batch 1 and of the largest batch, each input read from ``warmup/<input name>``."""
    specs = {t.name: t for t in served_inputs(cfg)}
    warmups = []
    for batch in sorted({1, batching.max_batch_size}):
        warmup = mc.ModelWarmup(name=f"batch {batch}", batch_size=batch, count=1)
        for name in SERVED_INPUTS:
            warmup.inputs[name].CopyFrom(mc.ModelWarmup.Input(data_type=specs[name].data_type, dims=specs[name].dims,
                                                              input_data_file=name))
        warmups.append(warmup)
    return warmups


def _instances(kind: str, count: int) -> list[mc.ModelInstanceGroup]:
    if kind not in KINDS:
        raise ValueError(f"instance kind must be one of {tuple(KINDS)}, got {kind!r}")
    if count < 1:
        raise ValueError(f"instances must be >= 1, got {count}")
    return [mc.ModelInstanceGroup(kind=KINDS[kind], count=count)]


def _parameters(config: mc.ModelConfig, values: dict[str, str]) -> None:
    for key, value in values.items():
        config.parameters[key].string_value = value


def _shape_list(cfg: CorebaConfig, batch: int, Lv: int, Lt: int) -> str:
    """ONNX Runtime's TensorRT profile syntax: ``name:BxLvxD,...``."""
    shapes = {"video_feats": (batch, Lv, cfg.video_dim), "video_mask": (batch, Lv),
              "text_feats": (batch, Lt, cfg.text_dim), "text_mask": (batch, Lt), DURATION: (batch,)}
    return ",".join(f"{name}:" + "x".join(map(str, shapes[name])) for name in SERVED_INPUTS)


def _served(model: str, cfg: CorebaConfig, batching: Batching, kind: str, instances: int, top_k: int,
            **fields) -> mc.ModelConfig:
    """What every served model shares: the end-to-end graph's tensors, instances, dynamic batching, warm-up, and the
    clip length (the client places a long video's windows with it)."""
    config = mc.ModelConfig(name=ENGINE_MODELS[model], max_batch_size=batching.max_batch_size,
                            input=served_inputs(cfg), output=answer_outputs(cfg, top_k),
                            instance_group=_instances(kind, instances), dynamic_batching=batching.dynamic_batching(),
                            model_warmup=model_warmup(cfg, batching), **fields)
    _parameters(config, {CLIP_LENGTH_PARAMETER: repr(float(cfg.clip_length))})
    return config


PYTHON_ENGINES = ("onnxruntime", "openvino")


@dataclass(frozen=True)
class PythonEngine:
    """What ``coreba`` (the Python backend) runs, written into its config parameters and read by its
    ``initialize``: a :func:`coreba.engines.load_engine` engine that reads a file (ONNX Runtime, OpenVINO) at one of
    its precisions, on the model file ``model_filename`` of the version folder (the end-to-end graph, or an int8
    model of it from export/quantize.py)."""

    engine: str = "onnxruntime"
    precision: str = "fp32"
    model_filename: str = ONNX_FILENAME

    def __post_init__(self) -> None:
        from coreba.engines import ENGINE_PRECISIONS

        if self.engine not in PYTHON_ENGINES:
            raise ValueError(f"the served Python model runs one of {PYTHON_ENGINES}, got {self.engine!r}")
        if self.precision not in ENGINE_PRECISIONS[self.engine]:
            raise ValueError(f"engine {self.engine!r} has no precision {self.precision!r}; it has "
                             f"{ENGINE_PRECISIONS[self.engine]}")


def python_config(cfg: CorebaConfig, batching: Batching, top_k: int, kind: str = "cpu", instances: int = 1,
                  graph_optimization: str = "all", intra_op_threads: int = 0,
                  engine: PythonEngine | None = None, cpu_streams: int = 0) -> mc.ModelConfig:
    """``coreba``: the Python backend running the end-to-end graph on ``engine`` (default ONNX Runtime fp32, CPU or
    CUDA provider from the instance kind; OpenVINO runs on CPU instances). ``intra_op_threads`` 0: the model
    divides the CPU cores among its instances. ``cpu_streams`` (ONNX Runtime on CPU instances,
    :mod:`serving.cpu_streams`): one-thread sessions that run batches side by side, 0 = one per thread, 1 = off."""
    if cpu_streams < 0 or intra_op_threads < 0:
        raise ValueError(f"cpu_streams and intra_op_threads must be >= 0, got {cpu_streams} and {intra_op_threads}")
    engine = engine or PythonEngine()
    if engine.engine == "openvino" and kind != "cpu":
        raise ValueError("the openvino engine runs on CPU instances (kind='cpu')")
    config = _served("python", cfg, batching, kind, instances, top_k, backend="python")
    _parameters(config, {"engine": engine.engine, "precision": engine.precision,
                         "model_filename": engine.model_filename, "graph_optimization": graph_optimization,
                         "intra_op_threads": str(intra_op_threads), "cpu_streams": str(cpu_streams)})
    return config


def onnx_config(cfg: CorebaConfig, batching: Batching, top_k: int, kind: str = "gpu", instances: int = 1,
                tensorrt: TensorRTAcceleration | None = None) -> mc.ModelConfig:
    """``coreba_onnx``: Triton's ONNX Runtime backend (NGC images), optionally accelerated by TensorRT."""
    config = _served("onnx", cfg, batching, kind, instances, top_k, platform="onnxruntime_onnx",
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


def trt_config(cfg: CorebaConfig, batching: Batching, top_k: int, instances: int = 1) -> mc.ModelConfig:
    """``coreba_trt``: a serialized TensorRT engine of the end-to-end graph; its optimization profile must cover
    batch 1..max_batch_size at the padded maxima, or the server rejects the config at load."""
    return _served("trt", cfg, batching, "gpu", instances, top_k, platform="tensorrt_plan",
                   default_model_filename=PLAN_FILENAME)


def to_pbtxt(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config)


def parse_pbtxt(text: str) -> mc.ModelConfig:
    """Parse ``config.pbtxt`` text with Triton's own schema (raises ``text_format.ParseError``)."""
    return text_format.Parse(text, mc.ModelConfig())
