"""The command line of ``python -m coreba.train``, parsed once into a :class:`TrainConfig`, the run's
:class:`DataPaths` and a few per-invocation options.

Precedence: the paper's defaults < ``--config JSON`` < the named flags (``--epochs`` ...) < ``--set
KEY=VALUE`` (dotted keys into the config, JSON values: ``--set model.hidden_dim=128 loss.aux_loss=false``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coreba.config import ConfigError, TrainConfig
from coreba.training.data_sources import DEFAULT_SYNTHETIC_DIR, DataPaths, SyntheticSpec

# flag name -> TrainConfig field, for the flags that only override a config value
CONFIG_FLAGS = ("epochs", "batch_size", "lr", "weight_decay", "grad_clip", "eval_every", "seed", "num_workers",
                "output_dir")
DEFAULT_SPEC = SyntheticSpec()


@dataclass(frozen=True)
class RunOptions:
    """What this invocation does with the config (not part of the experiment itself)."""

    resume: bool = False
    device: str | None = None
    progress: bool = True


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m coreba.train", description="Train COREBA (QD-DETR's recipe).")
    p.add_argument("--config", type=Path, help="TrainConfig JSON (e.g. a run's train_config.json)")
    defaults = TrainConfig()
    for name in CONFIG_FLAGS:
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=type(getattr(defaults, name)), default=None,
                       help=f"default: {getattr(defaults, name)}")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. model.hidden_dim=128 (values are JSON)")
    data = p.add_argument_group("data (QVHighlights layout)")
    data.add_argument("--train-annotations", type=Path)
    data.add_argument("--val-annotations", type=Path, help="evaluated every --eval-every epochs")
    data.add_argument("--video-feature-dirs", nargs="+", type=Path, help="SlowFast then CLIP: {vid}.npz")
    data.add_argument("--text-feature-dir", type=Path, help="qid{qid}.npz")
    data.add_argument("--video-cache-size", type=int, default=0, help="videos kept in memory per split")
    syn = p.add_argument_group("synthetic data (instead of the above)")
    syn.add_argument("--synthetic", action="store_true", help="generate (once, cached) and train on synthetic data")
    syn.add_argument("--synthetic-dir", default=DEFAULT_SYNTHETIC_DIR)
    syn.add_argument("--synthetic-queries", type=int, default=DEFAULT_SPEC.num_queries, help="queries per split")
    syn.add_argument("--synthetic-dims", type=int, nargs=3, metavar=("SLOWFAST", "CLIP", "TEXT"),
                     default=(DEFAULT_SPEC.slowfast_dim, DEFAULT_SPEC.clip_dim, DEFAULT_SPEC.text_dim),
                     help="feature dims; the model's input dims follow them")
    syn.add_argument("--synthetic-signal", type=float, default=DEFAULT_SPEC.signal_strength,
                     help="planted signal strength, in noise norms")
    syn.add_argument("--synthetic-topic-dim", type=int, default=DEFAULT_SPEC.topic_dim,
                     help="rank of the planted query-clip relation (smaller is easier)")
    run = p.add_argument_group("run")
    run.add_argument("--resume", action="store_true", help="continue from output_dir/last.pt")
    run.add_argument("--device", default=None, help="default: cuda (this rank's GPU) when present, else cpu")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return p


def apply_override(config: dict[str, Any], assignment: str) -> None:
    """``a.b=VALUE`` sets ``config["a"]["b"]``; VALUE is parsed as JSON, else kept as a string."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects KEY=VALUE, got {assignment!r}")
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        if not isinstance(node.get(part), dict):
            raise ConfigError(f"--set {key}: {part!r} is not a config section")
        node = node[part]
    if leaf not in node:
        raise ConfigError(f"--set {key}: unknown field {leaf!r} (known: {', '.join(sorted(node))})")
    try:
        node[leaf] = json.loads(raw)
    except json.JSONDecodeError:
        node[leaf] = raw


def parse_args(argv: Sequence[str] | None = None) -> tuple[TrainConfig, DataPaths | SyntheticSpec, RunOptions]:
    """The config, the data (a :class:`SyntheticSpec` is generated later, by rank 0 alone) and run options."""
    parser = build_parser()
    args = parser.parse_args(argv)
    config = TrainConfig.load(args.config).to_dict() if args.config else TrainConfig().to_dict()
    for name in CONFIG_FLAGS:
        if getattr(args, name) is not None:
            config[name] = getattr(args, name)
    try:
        for assignment in args.set:
            apply_override(config, assignment)
        cfg = TrainConfig.from_dict(config)
    except (ConfigError, TypeError) as err:
        parser.error(str(err))

    if args.synthetic:
        slowfast, clip, text = args.synthetic_dims
        spec = SyntheticSpec(out_dir=args.synthetic_dir, num_queries=args.synthetic_queries, slowfast_dim=slowfast,
                             clip_dim=clip, text_dim=text, signal_strength=args.synthetic_signal,
                             topic_dim=args.synthetic_topic_dim)
        cfg.model = spec.model_config(cfg.model)
        data: DataPaths | SyntheticSpec = spec
    else:
        needed = ("train_annotations", "val_annotations", "video_feature_dirs", "text_feature_dir")
        missing = [f"--{n.replace('_', '-')}" for n in needed if getattr(args, n) is None]
        if missing:
            parser.error(f"give {', '.join(missing)} (or --synthetic)")
        data = DataPaths(args.train_annotations, args.val_annotations, args.video_feature_dirs,
                         args.text_feature_dir, video_cache_size=args.video_cache_size)
    return cfg, data, RunOptions(resume=args.resume, device=args.device, progress=args.progress)
