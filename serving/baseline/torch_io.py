"""The baseline models' tensor I/O as it was before issue 12: DLPack through torch (see
:mod:`serving.backend_io` for why DLPack). Kept with the baseline so that it measures the old path as it was."""

from __future__ import annotations

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
