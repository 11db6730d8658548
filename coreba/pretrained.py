"""The demo checkpoint: the full-size default COREBA trained for about two minutes on synthetic data.

The real QVHighlights features are not redistributable with this package, so the export CLI and the examples
need a checkpoint they can build anywhere. :func:`demo_checkpoint` trains the paper's default
:class:`~coreba.config.CorebaConfig` (full feature dims: SlowFast 2304 + CLIP 512 + 2, text 512) on the
planted-signal synthetic dataset of :mod:`coreba.data.synthetic` on 2 CPU threads, scores it on a held-out
synthetic split (``metrics.json``), and caches it: a marker holds every parameter, so later calls return at
once and changed parameters retrain. It is a DEMO model: it knows the synthetic task, nothing about real video.
"""

from __future__ import annotations

import json
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from coreba.config import CorebaConfig, TrainConfig
from coreba.data.synthetic import SyntheticPaths, generate_synthetic_dataset
from coreba.evaluate import load_jsonl
from coreba.model import Coreba
from coreba.model.coreba import CONFIG_NAME, WEIGHTS_NAME, architecture_fingerprint
from coreba.predict import build_predict_loader
from coreba.training.data_sources import SyntheticSpec
from coreba.training.loop import evaluate_model
from coreba.training.train import BEST_DIR, train

DEFAULT_CACHE_DIR = "artifacts/demo_checkpoint"
MARKER_NAME = "demo_marker.json"
METRICS_NAME = "metrics.json"
MARKER_VERSION = 1  # bump when the recipe changes in a way the parameters below do not show
NUM_THREADS = 2
HELDOUT_SPLIT = "heldout"
# A strong, low-rank planted signal and a small batch: enough steps in ~2 CPU minutes for the model to learn.
DEMO_DATA = dict(num_queries=200, signal_strength=4.0, topic_dim=4, seed=0, splits=("train", "val", HELDOUT_SPLIT))
DEMO_TRAIN = dict(epochs=6, batch_size=8, lr=5e-4, eval_every=2, seed=0)
# Training-only regularisation (inert at inference): the paper's input dropout 0.5 slows a 2-minute run too
# much. The saved config.json is the default CorebaConfig all the same.
TRAIN_ONLY_OVERRIDES = dict(input_dropout=0.1)
# More data with the demo's planted signal, for checking the trained model (the accuracy gates of reduced-precision
# engines, int8 calibration): new queries and videos from other seeds, the query-clip relation the demo model
# learned (``planted_like``), so no retraining. The gate split has >= 500 queries: one query then moves a
# metric by at most 0.2 points.
DEMO_EXTRA_SPLITS: dict[str, dict[str, int]] = {"gate": dict(num_queries=500, seed=101),
                                                "calibration": dict(num_queries=128, seed=102)}
DEFAULT_EXTRA_DIR = "artifacts/demo_data"
BANNER = ("coreba: building the DEMO checkpoint - the full-size default model trained for ~2 minutes on SYNTHETIC "
          "data (planted signal). It is for trying the export/serving tools, not for real video.")


def demo_parameters() -> dict[str, Any]:
    """Everything the demo checkpoint depends on; the cache marker must equal it."""
    data = {k: list(v) if isinstance(v, tuple) else v for k, v in DEMO_DATA.items()}  # as JSON reads it back
    # the architecture fingerprint changes with any change to the model's parameters or MODEL_REVISION, so a
    # cache trained by older model code is retrained, not loaded
    return {"version": MARKER_VERSION, "model": CorebaConfig().to_dict(),
            "architecture": architecture_fingerprint(CorebaConfig()), "data": data, "train": DEMO_TRAIN,
            "train_only": TRAIN_ONLY_OVERRIDES, "threads": NUM_THREADS, "device": "cpu"}


def _is_cached(cache: Path, params: dict[str, Any]) -> bool:
    marker = cache / MARKER_NAME
    files = [cache / CONFIG_NAME, cache / WEIGHTS_NAME, cache / METRICS_NAME]
    return marker.is_file() and all(f.is_file() for f in files) and json.loads(marker.read_text()) == params


def is_demo_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a demo checkpoint of the current recipe (its marker equals :func:`demo_parameters`), so
    that the demo's held-out data applies to it."""
    return _is_cached(Path(path), demo_parameters())


@contextmanager
def _num_threads(n: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def demo_checkpoint(cache_dir: str | Path = DEFAULT_CACHE_DIR, *, force: bool = False) -> Path:
    """The demo checkpoint's ``save_pretrained`` directory, trained on first use (about 2 minutes on 2 CPU
    threads, with a progress bar), then cached. ``force`` retrains."""
    cache = Path(cache_dir)
    params = demo_parameters()
    if not force and _is_cached(cache, params):
        return cache
    print(BANNER, flush=True)
    with tempfile.TemporaryDirectory(prefix="coreba_demo_") as tmp, _num_threads(NUM_THREADS):
        spec = SyntheticSpec(out_dir=str(Path(tmp) / "data"), **DEMO_DATA)
        data = spec.data_paths()
        default = CorebaConfig()
        if spec.model_config(default) != default:
            raise AssertionError("the demo's synthetic feature dims must be the real ones")
        cfg = TrainConfig(**DEMO_TRAIN, output_dir=str(Path(tmp) / "run"),
                          model=default.replace(**TRAIN_ONLY_OVERRIDES))
        torch.manual_seed(cfg.seed)  # the initial weights train() starts from: the "before" of metrics.json
        untrained = Coreba(default)
        start = time.perf_counter()
        result = train(cfg, data, device="cpu", progress=True)
        seconds = time.perf_counter() - start
        heldout = spec.generate().annotations[HELDOUT_SPLIT]
        loader = build_predict_loader(cfg.model, heldout, data.video_feature_dirs, data.text_feature_dir,
                                      video_cache_size=spec.num_queries)
        restore = {k: getattr(default, k) for k in TRAIN_ONLY_OVERRIDES}
        model = Coreba.from_pretrained(result.output_dir / BEST_DIR, **restore)
        gt = load_jsonl(heldout)
        brief = evaluate_model(model, loader, gt)["brief"]
        before = evaluate_model(untrained, loader, gt)["brief"]
    cache.mkdir(parents=True, exist_ok=True)
    (cache / MARKER_NAME).unlink(missing_ok=True)  # invalid until everything below is written
    model.save_pretrained(cache)
    metrics = {
        "note": "DEMO model trained on synthetic data (coreba.data.synthetic); metrics are on a held-out "
                "synthetic split and say nothing about real QVHighlights performance",
        "heldout": brief, "heldout_untrained": before,
        "best_epoch": result.best_epoch, "val_MR-full-mAP": result.best_metric,
        "train_seconds": round(seconds, 1), "threads": NUM_THREADS,
    }
    (cache / METRICS_NAME).write_text(json.dumps(metrics, indent=2) + "\n")
    (cache / MARKER_NAME).write_text(json.dumps(params, indent=2) + "\n")
    print(f"coreba: demo checkpoint (synthetic data) ready in {cache}: held-out MR R1@0.5 "
          f"{brief['MR-full-R1@0.5']:.1f}, MR mAP {brief['MR-full-mAP']:.1f}, HL VeryGood mAP "
          f"{brief['HL-min-VeryGood-mAP']:.1f} after {seconds:.0f} s of training", flush=True)
    return cache


def demo_split(split: str, cache_dir: str | Path = DEFAULT_EXTRA_DIR) -> SyntheticPaths:
    """One of ``DEMO_EXTRA_SPLITS`` written (once, then cached) under ``cache_dir/<split>``: full feature dims,
    the demo's signal strength and planted relation; ``.annotations[split]`` is its annotation file."""
    if split not in DEMO_EXTRA_SPLITS:
        raise ValueError(f"split must be one of {tuple(DEMO_EXTRA_SPLITS)}, got {split!r}")
    like = {k: DEMO_DATA[k] for k in ("num_queries", "splits", "seed")}
    return generate_synthetic_dataset(Path(cache_dir) / split, splits=(split,), planted_like=like,
                                      signal_strength=DEMO_DATA["signal_strength"], topic_dim=DEMO_DATA["topic_dim"],
                                      **DEMO_EXTRA_SPLITS[split])
