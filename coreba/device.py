"""The default torch device, shared by training (one per rank) and prediction."""

from __future__ import annotations

import torch


def default_device(local_rank: int = 0) -> torch.device:
    """CUDA (this rank's GPU) when present, CPU otherwise."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")
