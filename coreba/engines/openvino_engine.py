"""OpenVINO on the CPU as an engine: the exported ONNX file read directly, or an int8 IR from export/quantize.py.

Precision is explicit, because OpenVINO's default is not fp32 everywhere: on a CPU with AVX512_BF16 or AMX its
CPU plugin runs fp32 models in bf16 unless ``INFERENCE_PRECISION_HINT`` says otherwise.

* ``fp32``: the hint is f32; matches eager PyTorch like ONNX Runtime does (1e-4, ``export.validate``).
* ``bf16``: the hint is bf16 (matrix products and most ops in bf16, accumulation in fp32); refused on CPUs
  without AVX512_BF16 / AMX (:mod:`coreba.engines.isa`).
* ``int8``: the model must hold quantization (FakeQuantize) nodes, i.e. come from ``export/quantize.py
  --backend openvino``; what was left unquantized runs in f32.

One infer request per engine, reused: an instance is not safe to call from several threads at once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from coreba.engines.base import EngineUnavailable
from coreba.engines.isa import cpu_isa

PRECISIONS = ("fp32", "bf16", "int8")
RT_INFO_SECTION = "coreba"  # export/quantize.py stores the model config etc. under this rt_info key
QUANTIZED_OPS = frozenset({"FakeQuantize", "FakeConvert"})


def require_openvino():
    try:
        import openvino as ov
    except ImportError as err:
        raise EngineUnavailable(f"OpenVINO is not installed ({err}); pip install 'coreba[export]' or openvino") \
            from err
    return ov


def is_quantized(model) -> bool:
    """Whether an ``ov.Model`` carries int8 quantization (NNCF's FakeQuantize, or an ONNX QDQ pair converted)."""
    return any(op.get_type_name() in QUANTIZED_OPS for op in model.get_ops())


def read_ir_metadata(path: str | Path) -> dict[str, str]:
    """The strings ``export/quantize.py`` stored in an IR's rt_info (``coreba/<key>``): the source ONNX file's
    metadata (config, graph, top_k) and the quantization report."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no OpenVINO IR at {path}")
    model = require_openvino().Core().read_model(str(path))
    rt_info = model.get_rt_info()
    section = rt_info[RT_INFO_SECTION] if RT_INFO_SECTION in rt_info else {}  # noqa: SIM401 - an RTMap has no get()
    return {key: value.astype(str) for key, value in section.items()}


class OpenVINOEngine:
    name = "openvino"

    def __init__(self, path: str | Path, precision: str = "fp32", threads: int | None = None) -> None:
        ov = require_openvino()
        import openvino.properties as props
        import openvino.properties.hint as hints

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no model at {path} (an .onnx file or an OpenVINO .xml IR)")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        cpu_isa().require(precision, "OpenVINO")
        core = ov.Core()
        model = core.read_model(str(path))
        quantized = is_quantized(model)
        if precision == "int8" and not quantized:
            raise ValueError(f"{path} holds no int8 quantization; write one with `python export/quantize.py "
                             f"--onnx {path} --backend openvino --output ...`")
        if precision != "int8" and quantized:
            raise ValueError(f"{path} is an int8-quantized model: load it with precision='int8'")
        config = {hints.inference_precision: ov.Type.bf16 if precision == "bf16" else ov.Type.f32,
                  hints.performance_mode: hints.PerformanceMode.LATENCY}  # one stream: a request uses every thread
        if threads:
            config[props.inference_num_threads] = threads
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.precision, self.path = precision, path
        self.input_names = [port.get_any_name() for port in self.compiled.inputs]
        self.output_names = [port.get_any_name() for port in self.compiled.outputs]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.request.infer({name: np.ascontiguousarray(feeds[name]) for name in self.input_names})
        # copies: the request reuses its output buffers on the next call; float outputs as float32, integer outputs
        # (an end-to-end graph's num_clips) as they are, like the ONNX Runtime engine
        return {port.get_any_name(): np.array(value, copy=True) if np.issubdtype(value.dtype, np.integer)
                else np.array(value, dtype=np.float32, copy=True) for port, value in results.items()}
