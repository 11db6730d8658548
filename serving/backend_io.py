"""Tensor I/O for the Python-backend models, importable only inside Triton's stub process.

Tensors cross the stub boundary through DLPack, never through ``pb_utils.Tensor.as_numpy()`` or
``pb_utils.Tensor(name, ndarray)``: the stub bundled with nvidia-pytriton 0.7.0 is built against NumPy 1.x,
and with NumPy 2 in the environment those calls read a wrong item size and silently corrupt data
(an FP32 ``[1, 2]`` arrives as ``[1, 1]``; outputs fail with "output tensor shape does not match size").
DLPack hands over the same shared memory without NumPy's C API, so it is also zero-copy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from torch.utils.dlpack import from_dlpack, to_dlpack


def input_tensor(request: Any, name: str) -> torch.Tensor | None:
    """The input ``name`` of ``request`` as a (CPU, zero-copy) torch tensor, or None when absent."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else from_dlpack(tensor.to_dlpack())


def output_tensor(name: str, array: np.ndarray, dtype: np.dtype) -> Any:
    """A ``pb_utils.Tensor`` holding ``array`` cast to ``dtype`` (the dtype the model config declares)."""
    contiguous = np.ascontiguousarray(np.asarray(array).astype(dtype, copy=False))
    return pb_utils.Tensor.from_dlpack(name, to_dlpack(torch.from_numpy(contiguous)))


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
