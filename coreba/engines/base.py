"""The engine interface and a factory that picks the engine by name."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

ENGINE_NAMES = ("torch", "onnxruntime", "tensorrt")


class EngineUnavailable(RuntimeError):
    """The engine (or the device it was asked for) cannot run here; the message says why."""


class Engine(Protocol):
    """``run`` takes the four model inputs by name and returns the three outputs by name (numpy)."""

    name: str

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


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
