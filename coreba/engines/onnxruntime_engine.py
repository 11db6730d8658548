"""ONNX Runtime as an engine, on the CPU, CUDA or TensorRT execution provider.

``onnxruntime-gpu`` silently falls back to the CPU when the CUDA (or TensorRT) libraries cannot be
loaded; this engine checks ``session.get_providers()`` and refuses to run on the wrong device.

Precision is that of the file: ``fp32`` (or an fp16 export, which casts inside), or ``int8`` for a QDQ model
from ``export/quantize.py --backend onnxruntime``; asking for one the file does not hold is an error, so a
Predictor never reports int8 for an fp32 model. ONNX Runtime's CPU provider has no bf16 mode.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from coreba.engines.base import EngineUnavailable

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
GRAPH_OPTIMIZATIONS = ("disabled", "basic", "extended", "all")
PRECISIONS = ("fp32", "int8")
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearMatMul", "MatMulInteger",
                           "DynamicQuantizeLinear"})


def is_quantized(path: str | Path) -> bool:
    """Whether the ONNX file holds int8 quantization (QDQ pairs or integer MatMuls)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(node.op_type in QUANTIZED_OPS for node in graph.node)


def session_options(graph_optimization: str = "all", threads: int | None = None,
                    optimized_model_path: str | Path | None = None):
    import onnxruntime as ort

    if graph_optimization not in GRAPH_OPTIMIZATIONS:
        raise ValueError(f"graph_optimization must be one of {GRAPH_OPTIMIZATIONS}, got {graph_optimization!r}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[graph_optimization]
    if threads:
        opts.intra_op_num_threads = threads
    if optimized_model_path is not None:
        opts.optimized_model_filepath = str(optimized_model_path)
    opts.log_severity_level = 3
    return opts


class OnnxRuntimeEngine:
    name = "onnxruntime"

    def __init__(self, path: str | Path, provider: str = "cpu", graph_optimization: str = "all",
                 threads: int | None = None, provider_options: dict | None = None, precision: str = "fp32") -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no ONNX model at {path}")
        if precision == "bf16":
            raise EngineUnavailable("ONNX Runtime's CPU provider has no bf16 inference mode; use engine='openvino' "
                                    "or 'torch' with precision='bf16', or precision='int8' with a quantized model")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; choose from {tuple(PROVIDERS)}")
        wanted = PROVIDERS[provider]
        if wanted not in ort.get_available_providers():
            raise EngineUnavailable(f"ONNX Runtime here has no {wanted} (available: {ort.get_available_providers()}); "
                                    "install onnxruntime-gpu with matching CUDA/TensorRT libraries")
        providers = [(wanted, provider_options or {})]
        if provider != "cpu":
            providers.append(("CPUExecutionProvider", {}))  # for the few ops a GPU provider leaves to the CPU
        self.session = ort.InferenceSession(str(path), session_options(graph_optimization, threads),
                                            providers=providers)
        active = self.session.get_providers()
        if not active or active[0] != wanted:
            raise EngineUnavailable(f"asked for {wanted} but ONNX Runtime activated {active} (its libraries failed to "
                                    "load); refusing to run on the wrong device")
        # after the session, so that a file ONNX Runtime cannot parse gets ONNX Runtime's own error
        quantized = is_quantized(path)
        if precision == "int8" and not quantized:
            raise ValueError(f"{path} holds no int8 quantization; write one with `python export/quantize.py "
                             f"--onnx {path} --backend onnxruntime --output ...`")
        if precision == "fp32" and quantized:
            raise ValueError(f"{path} is an int8-quantized model: load it with precision='int8'")
        self.provider, self.precision = provider, precision
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Float outputs as float32 (an fp16 graph's too); integer outputs (an end-to-end graph's num_clips) as
        they are."""
        outputs = self.session.run(self.output_names, {k: feeds[k] for k in self.input_names})
        return {name: value if np.issubdtype(value.dtype, np.integer) else np.asarray(value, dtype=np.float32)
                for name, value in zip(self.output_names, outputs)}
