"""Pick an engine by name. Kept apart from :mod:`coreba.engines.base` (which every engine imports) so that
no import circle runs through the interface; engine modules load lazily, so a missing optional library
(onnxruntime, TensorRT) only matters to the engine that needs it."""

from __future__ import annotations

from pathlib import Path

from coreba.engines.base import Engine

ENGINE_NAMES = ("torch", "onnxruntime", "tensorrt")


def load_engine(engine: str, path: str | Path, device: str = "cpu", **options) -> Engine:
    """``torch``: a ``save_pretrained`` directory; ``onnxruntime``: an ONNX file; ``tensorrt``: a ``.plan``."""
    if engine == "torch":
        from coreba.engines.torch_engine import TorchEngine

        return TorchEngine.from_pretrained(path, device=device, **options)
    if engine == "onnxruntime":
        from coreba.engines.onnxruntime_engine import OnnxRuntimeEngine

        provider = options.pop("provider", "cuda" if device.startswith("cuda") else "cpu")
        return OnnxRuntimeEngine(path, provider=provider, **options)
    if engine == "tensorrt":
        from coreba.engines.tensorrt_engine import TensorRTEngine

        return TensorRTEngine(path, device=device if device.startswith("cuda") else "cuda:0", **options)
    raise ValueError(f"unknown engine {engine!r}; choose from {ENGINE_NAMES}")
