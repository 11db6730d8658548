"""One epoch of training and one evaluation pass: the inner loops, free of bookkeeping (logging, checkpoints,
process groups live in :mod:`coreba.training.train`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm  # the type of the run's bar

from coreba.evaluate import evaluate
from coreba.predict import predict_dataset

LOSS_TOTAL = "loss_total"


def targets_to(targets: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The criterion's targets on ``device`` (``span_labels`` is a list of dicts of tensors)."""
    moved: dict[str, Any] = {}
    for key, value in targets.items():
        if isinstance(value, Tensor):
            moved[key] = value.to(device, non_blocking=True)
        else:
            moved[key] = [{k: v.to(device, non_blocking=True) for k, v in item.items()} for item in value]
    return moved


def training_step(model: nn.Module, criterion: nn.Module, batch: dict[str, Any], device: torch.device,
                  optimizer: torch.optim.Optimizer, grad_clip: float) -> dict[str, float]:
    """Forward, weighted loss, backward, clip the gradient norm (QD-DETR: 0.1), step. Returns the losses."""
    inputs = {k: v.to(device, non_blocking=True) for k, v in batch["model_inputs"].items()}
    losses = criterion(model(**inputs), targets_to(batch["targets"], device))
    optimizer.zero_grad(set_to_none=True)
    losses[LOSS_TOTAL].backward()
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return {k: float(v.detach()) for k, v in losses.items()}


def train_one_epoch(model: nn.Module, criterion: nn.Module, loader: Iterable[dict[str, Any]],
                    optimizer: torch.optim.Optimizer, device: torch.device, grad_clip: float,
                    *, bar: tqdm | None = None) -> dict[str, float]:
    """Train over ``loader`` once; returns each loss averaged over the epoch's batches. ``bar``, the run's one
    progress bar, advances by one per batch."""
    model.train()
    criterion.train()
    sums: dict[str, float] = defaultdict(float)
    num_batches = 0
    for batch in loader:
        losses = training_step(model, criterion, batch, device, optimizer, grad_clip)
        for k, v in losses.items():
            sums[k] += v
        num_batches += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses[LOSS_TOTAL]:.3f}", refresh=False)
    return {k: v / max(num_batches, 1) for k, v in sums.items()}


def evaluate_model(model: nn.Module, loader: Iterable[dict[str, Any]], ground_truth: list[dict[str, Any]],
                   *, progress: bool = False) -> dict[str, Any]:
    """Predict the split with :func:`~coreba.predict.predict_dataset` and score it with
    :func:`~coreba.evaluate.evaluate` (the official QVHighlights metrics)."""
    return evaluate(predict_dataset(model, loader, progress=progress), ground_truth)
