"""Train COREBA: QD-DETR's recipe (AdamW 1e-4, weight decay 1e-4, 200 epochs, batch 32, gradient clip 0.1,
evaluation every 5 epochs keeping the best checkpoint by MR-full-mAP), on one process or many.

Usage::

    python -m coreba.train --train-annotations highlight_train_release.jsonl \\
        --val-annotations highlight_val_release.jsonl \\
        --video-feature-dirs features/slowfast_features features/clip_features \\
        --text-feature-dir features/clip_text_features --output-dir artifacts/run
    python -m coreba.train --synthetic --epochs 20          # generated (cached) data, no download
    torchrun --nproc_per_node 4 -m coreba.train ...          # DistributedDataParallel, one process per GPU

A run writes into ``output_dir``: ``best/`` (``save_pretrained`` of the best evaluation), ``last.pt`` (the
resumable state, see :mod:`coreba.training.state`), ``log.jsonl`` (one line per epoch and per evaluation) and
the run's ``train_config.json``/``data.json``. ``--resume`` continues from ``last.pt``.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from coreba.config import TrainConfig
from coreba.data import QVHighlightsDataset, collate_batch
from coreba.evaluate import load_jsonl
from coreba.losses import build_criterion
from coreba.model import Coreba
from coreba.model.coreba import CONFIG_NAME
from coreba.predict import build_predict_loader, data_config_for
from coreba.progress import progress_bar
from coreba.training.cli import parse_args
from coreba.training.data_sources import DataPaths, SyntheticSpec
from coreba.training.distributed import (
    DistContext,
    average_across_ranks,
    barrier,
    cleanup_distributed,
    setup_distributed,
    unwrap,
    wrap_model,
)
from coreba.training.loop import evaluate_model, train_one_epoch
from coreba.training.state import Progress, load_training_state, save_training_state

BEST_METRIC = "MR-full-mAP"  # QD-DETR's model selection
BEST_DIR, LAST_STATE, LOG_FILE = "best", "last.pt", "log.jsonl"
CONFIG_FILE, DATA_FILE, METRICS_FILE = "train_config.json", "data.json", "metrics.json"


@dataclass
class TrainResult:
    """What a run reached; ``history`` holds the log lines written by this call."""

    output_dir: Path
    best_dir: Path | None
    best_metric: float
    best_epoch: int
    epochs_done: int
    last_metrics: dict[str, float] | None = None  # the brief metrics of the latest evaluation
    history: list[dict[str, Any]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class JsonlLog:
    """Append-only JSON-lines log (a resumed run continues the same file); silent off rank 0."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled, self.lines = path, enabled, []

    def write(self, **record: Any) -> None:
        self.lines.append(record)
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


def build_train_loader(cfg: TrainConfig, data: DataPaths, ctx: DistContext) -> tuple[DataLoader, DistributedSampler]:
    """Shuffled by a :class:`DistributedSampler` on every process count (one replica when single), so the
    order of epoch ``e`` depends only on ``(seed, e)`` and a resumed run sees the same batches."""
    if cfg.batch_size % ctx.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {ctx.world_size} processes")
    config = data_config_for(cfg.model, data.train_annotations, data.video_feature_dirs, data.text_feature_dir,
                             video_cache_size=data.video_cache_size)
    dataset = QVHighlightsDataset(config, seed=cfg.seed + ctx.rank)
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=cfg.seed)
    loader = DataLoader(dataset, batch_size=cfg.batch_size // ctx.world_size, sampler=sampler,
                        num_workers=cfg.num_workers, collate_fn=collate_batch,
                        pin_memory=ctx.device.type == "cuda", persistent_workers=cfg.num_workers > 0)
    return loader, sampler


def train(cfg: TrainConfig, data: DataPaths, *, resume: bool = False, ctx: DistContext | None = None,
          device: str | None = None, progress: bool = True) -> TrainResult:
    """Train ``cfg.model`` on ``data`` for ``cfg.epochs`` epochs (from ``last.pt`` with ``resume``).

    ``ctx`` comes from :func:`~coreba.training.distributed.setup_distributed` (default: the ``torchrun`` environment,
    or a single process on ``device``). ``cfg.batch_size`` is the global batch, split over the processes.
    Only rank 0 evaluates, logs and writes files; the others wait for it.
    """
    ctx = ctx or setup_distributed(device)
    out = Path(cfg.output_dir)
    main = ctx.is_main
    seed_everything(cfg.seed)
    model = Coreba(cfg.model).to(ctx.device)  # same initial weights on every rank (DDP also broadcasts them)
    torch.manual_seed(cfg.seed + ctx.rank)  # but each rank its own dropout
    criterion = build_criterion(cfg.loss).to(ctx.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loader, sampler = build_train_loader(cfg, data, ctx)
    data_rng = loader.dataset.rng if cfg.num_workers == 0 else None  # workers draw from their own generators

    state = Progress()
    last_path = out / LAST_STATE
    if resume and last_path.is_file():
        state = load_training_state(last_path, model, optimizer, data_rng if main else None,
                                    expected_config=cfg.to_dict())
        if not main:  # rank 0's saved RNG state is rank 0's; keep the others distinct
            torch.manual_seed(cfg.seed + ctx.rank + state.epoch * ctx.world_size)
        if main:
            print(f"resumed from {last_path} after epoch {state.epoch} (best {BEST_METRIC} {state.best_metric:.2f} "
                  f"at epoch {state.best_epoch})")
    elif resume and main:
        print(f"--resume: no {last_path} yet, starting from scratch")
    if main:  # written once the config is known to fit (a refused resume leaves the run's files alone)
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / CONFIG_FILE)
        (out / DATA_FILE).write_text(json.dumps(data.to_dict(), indent=2) + "\n")
        if state.epoch == 0:
            (out / LOG_FILE).unlink(missing_ok=True)  # a fresh run starts a fresh log; a resumed one appends

    ddp_model = wrap_model(model, ctx)
    val_loader = gt = None
    if data.val_annotations is not None and main:
        val_loader = build_predict_loader(cfg.model, data.val_annotations, data.video_feature_dirs,
                                          data.text_feature_dir, cfg.batch_size, cfg.num_workers,
                                          video_cache_size=data.video_cache_size)
        gt = load_jsonl(data.val_annotations)
    log = JsonlLog(out / LOG_FILE, enabled=main)
    last_metrics = None
    # ONE bar for the run, in batches (an epoch bar and a batch bar would redraw each other)
    bar = progress_bar(None, progress and main, desc="train", unit="batch", total=cfg.epochs * len(loader),
                       initial=state.epoch * len(loader))
    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        sampler.set_epoch(epoch)
        bar.set_description(f"epoch {epoch}/{cfg.epochs}", refresh=False)
        start = time.perf_counter()
        losses = train_one_epoch(ddp_model, criterion, loader, optimizer, ctx.device, cfg.grad_clip, bar=bar)
        losses = average_across_ranks(losses, ctx)
        log.write(event="train", epoch=epoch, lr=optimizer.param_groups[0]["lr"],
                  time_s=round(time.perf_counter() - start, 3), **losses)
        state.epoch = epoch
        if val_loader is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
            last_metrics = _evaluate_and_keep_best(model, val_loader, gt, state, out, log)
            bar.set_postfix({BEST_METRIC: f"{state.best_metric:.2f}"}, refresh=False)
        if main:
            save_training_state(last_path, model, optimizer, state, cfg.to_dict(), data_rng)
        barrier(ctx)
    bar.close()
    best_dir = out / BEST_DIR
    return TrainResult(output_dir=out, best_dir=best_dir if (best_dir / CONFIG_NAME).is_file() else None,
                       best_metric=state.best_metric, best_epoch=state.best_epoch, epochs_done=state.epoch,
                       last_metrics=last_metrics, history=log.lines)


def _evaluate_and_keep_best(model: Coreba, val_loader: DataLoader, gt: list[dict], state: Progress, out: Path,
                            log: JsonlLog) -> dict[str, float]:
    """Rank 0: score the validation split; a new best ``MR-full-mAP`` replaces ``best/``."""
    start = time.perf_counter()
    brief = evaluate_model(unwrap(model), val_loader, gt)["brief"]
    if BEST_METRIC not in brief:
        raise ValueError(f"validation split has no moment labels: {BEST_METRIC} cannot be computed")
    improved = brief[BEST_METRIC] > state.best_metric
    if improved:
        state.best_metric, state.best_epoch = brief[BEST_METRIC], state.epoch
        model.save_pretrained(out / BEST_DIR)
        (out / BEST_DIR / METRICS_FILE).write_text(json.dumps({"epoch": state.epoch, **brief}, indent=2) + "\n")
    log.write(event="eval", epoch=state.epoch, time_s=round(time.perf_counter() - start, 3), best=improved, **brief)
    return brief


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m coreba.train``: flags parsed once (see :mod:`coreba.training.cli`), then :func:`train`."""
    cfg, source, options = parse_args(argv)
    ctx = setup_distributed(options.device)
    try:
        if isinstance(source, SyntheticSpec):
            if ctx.is_main:  # one writer; the others then find it cached
                print(f"synthetic data in {source.out_dir} (generated once, then reused)")
                source.generate()
            barrier(ctx)
        data = source.data_paths() if isinstance(source, SyntheticSpec) else source
        result = train(cfg, data, resume=options.resume, ctx=ctx, progress=options.progress)
    finally:
        cleanup_distributed()
    if ctx.is_main:
        print(f"done: {result.epochs_done} epochs; best {BEST_METRIC} {result.best_metric:.2f} at epoch "
              f"{result.best_epoch} -> {result.best_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
