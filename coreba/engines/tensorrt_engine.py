"""A serialized TensorRT engine (``.plan``) as an engine: numpy in, numpy (float32) out.

Device memory comes from PyTorch (CUDA tensors, whose ``data_ptr`` TensorRT reads and writes), so no
pycuda or cuda-python is needed and the engine runs on the current torch stream, ordered with any torch
work around it. Each call sets the input shapes (the dynamic B, Lv, Lt of the batch), allocates outputs
from the shapes TensorRT infers, and runs ``execute_async_v3``.

TensorRT 10 and 11 are supported, and nothing else (:func:`require_tensorrt` refuses other majors by
name). This file uses only the name-based I/O tensor API that both have (``num_io_tensors``,
``get_tensor_*``, ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``, ``Runtime``,
``deserialize_cuda_engine``); none of it is on NVIDIA's list of Python APIs removed in 11.x, and it asks
no ``ICudaEngine`` memory query (``device_memory_size`` and ``get_device_memory_size_for_profile`` are
removed in 11; the execution context allocates its own memory). The builder side, where 10 and 11
differ (weak typing), is ``export/tensorrt_build.py``. Under a type checker the ``tensorrt`` module is the
``tensorrt-stubs`` description of TensorRT 10.x (``tests/export/test_tensorrt_static.py``).
One execution context per engine: an instance is not safe to call from several threads at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from coreba.engines.base import EngineUnavailable

if TYPE_CHECKING:
    import tensorrt

SUPPORTED_MAJORS = (10, 11)
INSTALL_HINT = ("install NVIDIA's TensorRT Python package for the driver's CUDA: `pip install tensorrt` (TensorRT 11) "
                "or `pip install \"tensorrt>=10,<11\"` (TensorRT 10); both fetch their libraries from NVIDIA's "
                "index, pypi.nvidia.com (see the README)")
_LOGGER = None  # TensorRT wants one logger per process


def tensorrt_major(trt: ModuleType) -> int:
    """The major version of an imported ``tensorrt`` module; :class:`EngineUnavailable` when it has none.

    A ``tensorrt`` without ``__version__`` is not TensorRT: e.g. a stubs-only install (``tensorrt-stubs``
    into site-packages) imports as an empty namespace package.
    """
    version = getattr(trt, "__version__", None)
    match = re.match(r"\s*(\d+)\.", str(version)) if version is not None else None
    if match is None:
        where = getattr(trt, "__file__", None) or list(getattr(trt, "__path__", []))
        raise EngineUnavailable(f"the `tensorrt` module found at {where} has no usable __version__ ({version!r}): it "
                                f"is not TensorRT (a stubs-only or partial install?); {INSTALL_HINT}")
    return int(match.group(1))


def require_tensorrt() -> ModuleType:
    """Import ``tensorrt`` (major 10 or 11) or raise :class:`EngineUnavailable` saying what is wrong."""
    try:
        import tensorrt as trt
    except ImportError as err:
        raise EngineUnavailable(f"TensorRT is not available: the Python package `tensorrt` cannot be imported "
                                f"({err}); {INSTALL_HINT}") from err
    major = tensorrt_major(trt)
    if major not in SUPPORTED_MAJORS:
        supported = " and ".join(f"{m}.x" for m in SUPPORTED_MAJORS)
        why = ("it predates the name-based I/O tensor API" if major < min(SUPPORTED_MAJORS)
               else "its Python API has not been checked against this code")
        raise EngineUnavailable(f"TensorRT {trt.__version__} is not supported: coreba supports TensorRT {supported} "
                                f"only ({why}); {INSTALL_HINT}")
    return trt


def require_cuda(device: str = "cuda:0"):
    """The torch CUDA device to run on, or :class:`EngineUnavailable` when there is none."""
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        raise EngineUnavailable(f"TensorRT engines run on a CUDA device; got device={device!r}")
    if not torch.cuda.is_available():
        raise EngineUnavailable("TensorRT needs a CUDA GPU, and torch.cuda.is_available() is False here "
                                f"(torch {torch.__version__}, CUDA build {torch.version.cuda})")
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise EngineUnavailable(f"no CUDA device {index}: {torch.cuda.device_count()} visible")
    return torch.device("cuda", index)


def trt_logger(trt: ModuleType) -> Any:
    """The process's one ``tensorrt.Logger`` (WARNING)."""
    global _LOGGER
    if _LOGGER is None:
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


def torch_dtype(trt: ModuleType, dtype: Any) -> Any:
    """The torch dtype of a TensorRT ``DataType`` (bool I/O is native in TensorRT 10 and 11)."""
    import torch

    table = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT32": torch.int32,
             "INT64": torch.int64, "INT8": torch.int8, "UINT8": torch.uint8, "BOOL": torch.bool}
    for name, value in table.items():
        if getattr(trt.DataType, name, None) == dtype:
            return value
    raise EngineUnavailable(f"engine tensor type {dtype} has no torch equivalent")


def dims_tuple(dims: tensorrt.Dims) -> tuple[int, ...]:
    """A ``tensorrt.Dims`` as a tuple (through ``len`` and indexing, which every version's Dims has)."""
    return tuple(int(dims[i]) for i in range(len(dims)))


@dataclass(frozen=True)
class TensorSpec:
    """One engine input's shape range (profile 0), with -1 marking the dynamic axes of ``shape``."""

    name: str
    shape: tuple[int, ...]
    min: tuple[int, ...]
    max: tuple[int, ...]

    def violations(self, shape: tuple[int, ...]) -> list[str]:
        if len(shape) != len(self.shape):
            return [f"{self.name} has rank {len(shape)}, the engine expects rank {len(self.shape)} {self.shape}"]
        out = []
        for axis, (size, lo, hi) in enumerate(zip(shape, self.min, self.max)):
            if not lo <= size <= hi:
                kind = "fixed" if lo == hi else "profile range"
                out.append(f"{self.name} axis {axis} is {size}, outside the engine's {kind} [{lo}, {hi}]")
        return out


def check_shapes(specs: dict[str, TensorSpec], feeds: dict[str, np.ndarray]) -> None:
    """Raise ``ValueError`` listing every input missing or outside the engine's optimization profile."""
    problems = [f"missing input {name}" for name in specs if name not in feeds]
    for name, spec in specs.items():
        if name in feeds:
            problems += spec.violations(tuple(np.shape(feeds[name])))
    if problems:
        raise ValueError("inputs do not fit this TensorRT engine (rebuild it with a wider profile, e.g. "
                         "--max-batch/--max-clips/--max-tokens of export/to_tensorrt.py):\n  " + "\n  ".join(problems))


class TensorRTEngine:
    name = "tensorrt"

    def __init__(self, plan_path: str | Path, device: str = "cuda:0") -> None:
        import torch

        if TYPE_CHECKING:  # a type checker sees the API description; at run time the version-checked module
            import tensorrt as trt
        else:
            trt = require_tensorrt()
        self.device = require_cuda(device)
        self.plan_path = Path(plan_path)
        if not self.plan_path.is_file():
            raise FileNotFoundError(f"no TensorRT engine at {self.plan_path}")
        self._trt = trt
        with torch.cuda.device(self.device):
            runtime = trt.Runtime(trt_logger(trt))
            engine = runtime.deserialize_cuda_engine(self.plan_path.read_bytes())
            if engine is None:
                raise EngineUnavailable(f"TensorRT {trt.__version__} could not deserialize {self.plan_path}: a plan "
                                        "only loads with the TensorRT version and GPU architecture that built it; "
                                        "rebuild it here with export/to_tensorrt.py")
            context = engine.create_execution_context()
        self._runtime: tensorrt.Runtime = runtime
        self.engine: tensorrt.ICudaEngine = engine
        self.context: tensorrt.IExecutionContext = context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: torch_dtype(trt, engine.get_tensor_dtype(n)) for n in names}
        self.inputs: dict[str, TensorSpec] = {}
        for n in self.input_names:
            lo, _opt, hi = engine.get_tensor_profile_shape(n, 0)
            self.inputs[n] = TensorSpec(n, dims_tuple(engine.get_tensor_shape(n)), dims_tuple(lo), dims_tuple(hi))

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        check_shapes(self.inputs, feeds)
        with torch.cuda.device(self.device):
            stream = torch.cuda.current_stream(self.device)
            buffers = {}  # every buffer stays referenced until the outputs are copied back
            for name in self.input_names:
                host = torch.from_numpy(np.ascontiguousarray(feeds[name]))
                tensor = host.to(self.device, dtype=self.dtypes[name]).contiguous()
                if not self.context.set_input_shape(name, tuple(tensor.shape)):
                    raise ValueError(f"TensorRT rejected shape {tuple(tensor.shape)} for input {name}")
                self.context.set_tensor_address(name, tensor.data_ptr())
                buffers[name] = tensor
            for name in self.output_names:
                shape = dims_tuple(self.context.get_tensor_shape(name))
                if any(size < 0 for size in shape):
                    given = {n: tuple(buffers[n].shape) for n in self.input_names}
                    raise ValueError(f"TensorRT could not infer the shape of {name} ({shape}) from the input shapes "
                                     f"{given}: do B, Lv and Lt agree across the inputs?")
                buffers[name] = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
                self.context.set_tensor_address(name, buffers[name].data_ptr())
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError(f"TensorRT execute_async_v3 failed for {self.plan_path} (see the TensorRT log)")
            # .cpu() waits for the stream, so the outputs are complete when they are read
            return {name: buffers[name].float().cpu().numpy() for name in self.output_names}
