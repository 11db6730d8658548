"""The resumable training state (``last.pt``): model, optimizer, progress and random-number states.

It holds only tensors and plain Python values, so it loads with ``torch.load(weights_only=True)`` (no
arbitrary code runs on load). The deployable model is the separate ``save_pretrained`` directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from coreba.atomic import atomic_file

STATE_VERSION = 1


@dataclass
class Progress:
    """How far a run got: epochs completed and the best evaluation so far."""

    epoch: int = 0  # completed epochs; training resumes at epoch + 1
    best_metric: float = float("-inf")
    best_epoch: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def capture_rng(data_rng: np.random.Generator | None = None) -> dict[str, Any]:
    """Torch (CPU and CUDA) and, optionally, a dataset's numpy generator state."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if data_rng is not None:
        state["data"] = data_rng.bit_generator.state
    return state


def restore_rng(state: dict[str, Any], data_rng: np.random.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    if data_rng is not None and "data" in state:
        data_rng.bit_generator.state = state["data"]


def save_training_state(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, progress: Progress,
                        config: dict[str, Any], data_rng: np.random.Generator | None = None) -> Path:
    """Write ``path`` atomically (a crash mid-write leaves the previous state intact)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "version": STATE_VERSION,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "progress": {"epoch": progress.epoch, "best_metric": progress.best_metric,
                     "best_epoch": progress.best_epoch, "extra": progress.extra},
        "config": config,
        "rng": capture_rng(data_rng),
    }
    with atomic_file(path) as tmp:
        torch.save(state, tmp)
    return path


def load_training_state(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                        data_rng: np.random.Generator | None = None,
                        expected_config: dict[str, Any] | None = None) -> Progress:
    """Restore model, optimizer and RNG states in place; returns the progress.

    With ``expected_config`` (a ``TrainConfig.to_dict()``), a state saved for another model config is
    refused before anything is loaded; the other fields (epochs, lr, ...) may change between runs.
    """
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"{path}: training state version {state.get('version')!r}, expected {STATE_VERSION}")
    if expected_config is not None and state["config"].get("model") != expected_config.get("model"):
        raise ValueError(f"{path} was saved for a different model config; resume with the same one or start "
                         "a new output_dir")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])  # moves its tensors to the parameters' device
    restore_rng(state["rng"], data_rng)
    p = state["progress"]
    return Progress(p["epoch"], p["best_metric"], p["best_epoch"], p["extra"])
