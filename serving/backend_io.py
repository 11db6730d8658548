"""Tensor I/O for the Python-backend models, importable only inside Triton's stub process.

Tensors cross the stub boundary through DLPack, never through ``pb_utils.Tensor.as_numpy()`` or
``pb_utils.Tensor(name, ndarray)``: the stub bundled with nvidia-pytriton 0.7.0 is built against NumPy 1.x,
and with NumPy 2 in the environment those calls read a wrong item size and silently corrupt data
(an FP32 ``[1, 2]`` arrives as ``[1, 1]``; outputs fail with "output tensor shape does not match size").
DLPack hands over the same memory without NumPy's C API, so it is also zero-copy. Inputs arrive as numpy
views (``np.from_dlpack``: ~10 us a tensor). Outputs leave through a torch DLPack capsule of the numpy array
(``torch.from_numpy``, no copy): measured inside this stub, ``Tensor.from_dlpack`` takes ~12 us with torch's
capsule and ~150 us with NumPy's own (``ndarray.__dlpack__``), 3 outputs a request (``python -m serving.perf
--profile-execute`` shows it; docs/serving.md). torch only wraps the pointer there; no data is converted.
"""

from __future__ import annotations

import cProfile
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from torch.utils.dlpack import to_dlpack

from serving.spec import PROFILE_ENV


def input_array(request: Any, name: str) -> np.ndarray | None:
    """The input ``name`` of ``request`` as a zero-copy (read-only) numpy view, or None when absent."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else np.from_dlpack(tensor)


def output_tensor(name: str, array: np.ndarray) -> Any:
    """A ``pb_utils.Tensor`` sharing ``array``'s memory (made C-contiguous first if it is not), handed over as a
    torch DLPack capsule: the fast way into this stub (module docstring)."""
    return pb_utils.Tensor.from_dlpack(name, to_dlpack(torch.from_numpy(np.ascontiguousarray(array))))


def error_response(message: str, invalid_input: bool = True) -> Any:
    """A response that carries only an error: the client gets ``message`` (HTTP 400 for a bad input, 500 for an
    internal failure), the model keeps serving the other requests."""
    code = pb_utils.TritonError.INVALID_ARG if invalid_input else pb_utils.TritonError.INTERNAL
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code))


def output_dtypes(model_config: dict, names: Iterable[str]) -> dict[str, np.dtype]:
    """Each output's NumPy dtype as the model config declares it (the config is the source of truth)."""
    dtypes = {}
    for name in names:
        config = pb_utils.get_output_config_by_name(model_config, name)
        if config is None:
            raise pb_utils.TritonModelException(f"config.pbtxt declares no output {name!r}")
        dtypes[name] = np.dtype(pb_utils.triton_string_to_numpy(config["data_type"]))
    return dtypes


def string_parameters(model_config: dict) -> dict[str, str]:
    """The config's ``parameters`` map as plain strings (``{key: {"string_value": v}}`` -> ``{key: v}``)."""
    return {key: value["string_value"] for key, value in model_config.get("parameters", {}).items()}


def instance_count(model_config: dict) -> int:
    """How many instances of this model the config starts (they share the machine's cores)."""
    return max(1, sum(int(group.get("count", 1)) for group in model_config.get("instance_group", [])) or 1)


class ExecuteProfiler:
    """cProfile of ``execute`` when the server was started with ``COREBA_PROFILE_EXECUTE=<folder>`` (the load
    test's ``--profile-execute``); off otherwise, at the cost of one attribute test per call. ``finalize``
    writes ``<folder>/<model>.<pid>.prof`` (one per instance: each runs in its own stub process)."""

    def __init__(self, model_name: str) -> None:
        folder = os.environ.get(PROFILE_ENV)
        self.path = Path(folder) / f"{model_name}.{os.getpid()}.prof" if folder else None
        self.profile = cProfile.Profile() if self.path else None

    def wrap(self, execute: Callable[[list], list]) -> Callable[[list], list]:
        if self.profile is None:
            return execute
        profile = self.profile

        def profiled(requests: list) -> list:
            return profile.runcall(execute, requests)

        return profiled

    def finalize(self) -> None:
        if self.profile is not None and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.profile.dump_stats(str(self.path))
