"""Checks a checkpoint passes before a model is built from it or its weights are trusted.

``Coreba.from_pretrained`` reads ``config.json`` (validated field by field, :meth:`CorebaConfig.validate`), then
compares the safetensors HEADER (names, shapes, dtypes; read without loading a tensor) with what the config
would build, computed on the meta device (no memory). So a config that does not fit its weights fails in
milliseconds, whatever size it asks for; only then are the weights read, and any NaN/Inf in them is refused
(a model with one NaN weight answers NaN for every query).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

# safetensors' dtype names, as its header writes them
SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
SHOWN = 3  # names quoted per problem; the count says how many there are


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or does not match its config."""


TensorSpec = tuple[torch.dtype | str, tuple[int, ...]]  # (dtype, shape); a dtype torch lacks stays its name


def _dtype_name(dtype: torch.dtype | str) -> str:
    return dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")


def _some(names: list[str]) -> str:
    return ", ".join(names[:SHOWN]) + (", ..." if len(names) > SHOWN else "")


def read_header(path: Path) -> dict[str, TensorSpec]:
    """Every tensor's (dtype, shape) from the safetensors header, without reading the tensors."""
    try:
        with safe_open(str(path), framework="pt") as f:
            header = {}
            names = f.keys()  # the header only: no tensor is read
            for name in names:
                view = f.get_slice(name)
                dtype = view.get_dtype()
                header[name] = (SAFETENSORS_DTYPES.get(dtype, dtype), tuple(view.get_shape()))
            return header
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from None


def expected_tensors(model: torch.nn.Module) -> dict[str, TensorSpec]:
    """(dtype, shape) of each entry of ``model``'s state dict (build it on the meta device: no memory)."""
    return {name: (t.dtype, tuple(t.shape)) for name, t in model.state_dict().items()}


def check_header(header: Mapping[str, TensorSpec], expected: Mapping[str, TensorSpec], where: str) -> None:
    """Same tensor names, count, shapes and dtypes as the model; a :class:`CheckpointError` lists what differs."""
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected))
    common = sorted(set(expected) & set(header))
    shapes = [k for k in common if header[k][1] != expected[k][1]]
    dtypes = [k for k in common if header[k][0] != expected[k][0]]
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} tensor(s), e.g. {missing[:SHOWN]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[:SHOWN]}")
    if shapes:
        parts.append(f"shape mismatch in {len(shapes)} tensor(s): " + ", ".join(
            f"{k} {header[k][1]} vs {expected[k][1]}" for k in shapes[:SHOWN]))
    if dtypes:
        parts.append(f"dtype mismatch in {len(dtypes)} tensor(s): " + ", ".join(
            f"{k} is {_dtype_name(header[k][0])}, the model's is {_dtype_name(expected[k][0])}"
            for k in dtypes[:SHOWN]))
    if parts:
        raise CheckpointError(f"checkpoint {where} does not match its config ({len(header)} tensors, the config "
                              f"builds {len(expected)}): " + "; ".join(parts))


def check_finite(state: Mapping[str, Tensor], where: str) -> None:
    """Refuse NaN/Inf weights, naming the tensors that hold them."""
    bad = []
    for name, t in state.items():
        if t.is_floating_point():
            count = int((~torch.isfinite(t)).sum())
            if count:
                bad.append(f"{name} ({count} of {t.numel()})")
    if bad:
        raise CheckpointError(f"checkpoint {where} has non-finite values (NaN/Inf) in {len(bad)} tensor(s): "
                              f"{_some(bad)}")
