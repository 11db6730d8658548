"""The tiny model and its real fp32 / fp16 exports, shared by the TensorRT test files (one export per session)."""

from __future__ import annotations

import pytest
import torch

from coreba import Coreba
from export.onnx_export import export_onnx
from tests.conftest import tiny_config


@pytest.fixture(scope="session")
def trt_model() -> Coreba:
    torch.manual_seed(0)
    return Coreba(tiny_config()).eval()


@pytest.fixture(scope="session")
def trt_onnx(trt_model, tmp_path_factory):
    """The tiny model exported by the real exporter, fp32 and fp16 (each parity-checked on ONNX Runtime)."""
    root = tmp_path_factory.mktemp("trt_onnx")
    return {"fp32": export_onnx(trt_model, root / "tiny.onnx").path,
            "fp16": export_onnx(trt_model, root / "tiny-fp16.onnx", fp16=True).path}
