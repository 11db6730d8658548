"""Pick an engine by name. Kept apart from :mod:`coreba.engines.base` (which every engine imports) so that
no import circle runs through the interface; engine modules load lazily, so a missing optional library
(onnxruntime, OpenVINO, TensorRT) only matters to the engine that needs it."""

from __future__ import annotations

from pathlib import Path

from coreba.engines.base import Engine

ENGINE_NAMES = ("torch", "onnxruntime", "openvino", "tensorrt")
# the precisions each engine can be asked for (whether the CPU or the file allows it is checked on load)
ENGINE_PRECISIONS: dict[str, tuple[str, ...]] = {
    "torch": ("fp32", "bf16"),
    "onnxruntime": ("fp32", "int8"),
    "openvino": ("fp32", "bf16", "int8"),
    "tensorrt": (),  # a plan's precision is fixed when it is built (export/to_tensorrt.py --precision)
}


def load_engine(engine: str, path: str | Path, device: str = "cpu", **options) -> Engine:
    """``torch``: a ``save_pretrained`` directory; ``onnxruntime``: an ONNX file; ``openvino``: an ONNX file or
    an int8 IR (.xml); ``tensorrt``: a ``.plan``. ``precision`` (default fp32) is one of ``ENGINE_PRECISIONS``."""
    if engine not in ENGINE_NAMES:
        raise ValueError(f"unknown engine {engine!r}; choose from {ENGINE_NAMES}")
    precision = options.get("precision")
    if precision is not None and precision not in ENGINE_PRECISIONS[engine]:
        raise ValueError(f"engine {engine!r} has no precision {precision!r}; it has {ENGINE_PRECISIONS[engine]}")
    if engine == "torch":
        from coreba.engines.torch_engine import TorchEngine

        return TorchEngine.from_pretrained(path, device=device, **options)
    if engine == "onnxruntime":
        from coreba.engines.onnxruntime_engine import OnnxRuntimeEngine

        provider = options.pop("provider", "cuda" if device.startswith("cuda") else "cpu")
        return OnnxRuntimeEngine(path, provider=provider, **options)
    if engine == "openvino":
        from coreba.engines.openvino_engine import OpenVINOEngine

        if device != "cpu":
            raise ValueError(f"the openvino engine runs on the CPU; got device={device!r}")
        return OpenVINOEngine(path, **options)
    from coreba.engines.tensorrt_engine import TensorRTEngine

    return TensorRTEngine(path, device=device if device.startswith("cuda") else "cuda:0", **options)


def model_file_metadata(path: str | Path) -> dict[str, str]:
    """The exporter's metadata (``config``, ``graph``, ``top_k``, ...) of a model file the file-based engines read:
    an ONNX file's ``metadata_props``, or an OpenVINO IR's ``coreba`` rt_info (written by export/quantize.py)."""
    path = Path(path)
    if path.suffix == ".xml":
        from coreba.engines.openvino_engine import read_ir_metadata

        return read_ir_metadata(path)
    from coreba.onnx_io import read_metadata

    return read_metadata(path)
