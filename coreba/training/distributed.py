"""Process-group plumbing for data-parallel training, so the training loop reads the same with one process
or many.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; when they are
present :func:`setup_distributed` joins the group (NCCL on CUDA, Gloo on CPU) and every rank gets its own
device. Without them it is a single process and every helper here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from coreba.device import default_device


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or dist.is_initialized()

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, evaluates and writes checkpoints."""
        return self.rank == 0


def setup_distributed(device: str | torch.device | None = None) -> DistContext:
    """Join the process group described by the ``torchrun`` environment, or describe a single process.

    ``device`` overrides the automatic choice (e.g. ``"cpu"`` on a GPU machine); with a CPU device the
    backend is Gloo, with CUDA it is NCCL.
    """
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return DistContext(device=torch.device(device) if device is not None else default_device())
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    dev = torch.device(device) if device is not None else default_device(local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def wrap_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """The model DDP-wrapped when several processes train it (gradients averaged across ranks)."""
    if not ctx.distributed:
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model under a DDP wrapper (for saving, evaluation and ``config``)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def average_across_ranks(values: dict[str, float], ctx: DistContext) -> dict[str, float]:
    """Mean of each value over the ranks (epoch losses logged by rank 0 then describe every replica)."""
    if not ctx.distributed or not values:
        return values
    keys = sorted(values)
    # Gloo reduces CPU tensors only; NCCL needs them on the GPU.
    stacked = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(stacked)
    return dict(zip(keys, (stacked / ctx.world_size).tolist(), strict=True))
