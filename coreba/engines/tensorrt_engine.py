"""A serialized TensorRT engine (``.plan``) as an engine: numpy in, numpy (float32) out.

Device memory comes from PyTorch (CUDA tensors, whose ``data_ptr`` TensorRT reads and writes), so no
pycuda or cuda-python is needed and the engine runs on the current torch stream, ordered with any torch
work around it. Each call sets the input shapes (the dynamic B, Lv, Lt of the batch), allocates outputs
from the shapes TensorRT infers, and runs ``execute_async_v3``.

Written against TensorRT 10's Python API (``num_io_tensors``/``get_tensor_*``, ``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``); older binding-index APIs are gone in 10. One execution
context per engine: an instance is not safe to call from several threads at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from coreba.engines.base import EngineUnavailable

INSTALL_HINT = ("install TensorRT 10's Python package from NVIDIA's index (e.g. `pip install tensorrt-cu12` with "
                "--extra-index-url https://pypi.nvidia.com), matching the CUDA of the driver")
_LOGGER = None  # TensorRT wants one logger per process


def require_tensorrt() -> ModuleType:
    """Import ``tensorrt`` or raise :class:`EngineUnavailable` saying how to get it."""
    try:
        import tensorrt as trt
    except ImportError as err:
        raise EngineUnavailable(f"TensorRT is not available: the Python package `tensorrt` cannot be imported "
                                f"({err}); {INSTALL_HINT}") from err
    major = int(str(getattr(trt, "__version__", "0")).split(".")[0] or 0)
    if major < 10:
        raise EngineUnavailable(f"TensorRT {getattr(trt, '__version__', '?')} found; this code needs TensorRT >= 10 "
                                "(its name-based I/O tensor API)")
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


def trt_logger(trt: ModuleType):
    global _LOGGER
    if _LOGGER is None:
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


def torch_dtype(trt: ModuleType, dtype):
    """The torch dtype of a TensorRT ``DataType`` (bool I/O is native in TensorRT 10)."""
    import torch

    table = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT32": torch.int32,
             "INT64": torch.int64, "INT8": torch.int8, "UINT8": torch.uint8, "BOOL": torch.bool}
    for name, value in table.items():
        if getattr(trt.DataType, name, None) == dtype:
            return value
    raise EngineUnavailable(f"engine tensor type {dtype} has no torch equivalent")


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
        self._runtime, self.engine, self.context = runtime, engine, context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: torch_dtype(trt, engine.get_tensor_dtype(n)) for n in names}
        self.inputs: dict[str, TensorSpec] = {}
        for n in self.input_names:
            lo, _opt, hi = engine.get_tensor_profile_shape(n, 0)
            self.inputs[n] = TensorSpec(n, tuple(engine.get_tensor_shape(n)), tuple(lo), tuple(hi))

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
                shape = tuple(self.context.get_tensor_shape(name))
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
