"""Fused Triton kernels for COREBA inference (optional: they need the ``triton`` package).

* :func:`balanced_cross_attention`: the VT-block attention, video clips over [text || Balance Tokens],
  in one launch (forward only). :func:`balanced_cross_attention_reference` is the same function in
  plain PyTorch; :func:`triton_available` says whether the kernel can run on a device.
* ``python -m kernels.bench --out DIR`` benchmarks it against PyTorch SDPA on a GPU.

The names are resolved lazily (PEP 562) so that importing this package, e.g. to run
``python -m kernels.bench --dry-run``, does not import triton: ``TRITON_INTERPRET`` must be set before
triton is first imported (triton.language's own helpers are jitted at import time).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["balanced_cross_attention", "balanced_cross_attention_reference", "triton_available"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("kernels.balanced_attention"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
