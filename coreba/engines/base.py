"""The engine interface every back end implements, and the error an unavailable one raises."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class EngineUnavailable(RuntimeError):
    """The engine (or the device it was asked for) cannot run here; the message says why."""


class Engine(Protocol):
    """``run`` takes the four model inputs by name and returns the three outputs by name (numpy)."""

    name: str

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...
