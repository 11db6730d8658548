"""Batch inference: a checkpoint and QVHighlights-format features in, the standard submission file out.

:func:`predict_dataset` is the one implementation of "run the model over a loader and post-process"; the
training loop's evaluation calls it too, so the numbers logged during training are the numbers this CLI
would produce. Both write times with QD-DETR's QVHighlights rule (``mode="qvhighlights"`` of
:func:`coreba.postprocess.postprocess`: windows in [0, 150] s on multiples of the 2 s clip, scores to 4
decimals), so the metrics compare with QD-DETR's and the leaderboard's; ``--times exact`` writes exact times
instead. Videos of any length: one longer than the model's ``max_video_len`` is read whole (never cut) and
answered in sliding windows (``--stride``, ``--nms-iou``) by the same code as ``Predictor``
(:mod:`coreba.windows`); under the QVHighlights rule its windows are clamped to its own length, not 150 s.
Usage::

    python -m coreba.predict --checkpoint run/best --annotations highlight_val_release.jsonl \\
        --video-feature-dirs features/slowfast_features features/clip_features \\
        --text-feature-dir features/clip_text_features --out val_submission.jsonl [--evaluate]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from coreba.answer import unpack_answer
from coreba.config import CorebaConfig
from coreba.data import DataConfig, QVHighlightsDataset, collate_samples
from coreba.device import default_device
from coreba.engines.base import Engine
from coreba.engines.torch_engine import TorchEngine
from coreba.evaluate import evaluate, load_jsonl
from coreba.interface import ANSWER_NAMES, DURATION, make_feeds
from coreba.model import Coreba
from coreba.postprocess import DEFAULT_TOP_K, POSTPROCESS_MODES, PostprocessMode
from coreba.predictor import Predictor, pad_batch
from coreba.progress import progress_bar
from coreba.windows import DEFAULT_NMS_IOU

DEFAULT_BATCH_SIZE = 32
SUBMISSION_META = ("qid", "query", "vid")


def data_config_for(model_config: CorebaConfig, annotations: str | Path, video_feature_dirs: Sequence[str | Path],
                    text_feature_dir: str | Path, **overrides: Any) -> DataConfig:
    """A :class:`DataConfig` cut and checked the way ``model_config`` expects its inputs."""
    kwargs: dict[str, Any] = dict(
        max_video_len=model_config.max_video_len, max_text_len=model_config.max_text_len,
        clip_length=model_config.clip_length, video_dim=model_config.video_dim, text_dim=model_config.text_dim,
    )
    kwargs.update(overrides)
    return DataConfig(annotations, list(video_feature_dirs), text_feature_dir, **kwargs)


def batch_samples(batch: dict[str, Any]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each sample's unpadded video and query features: from :func:`~coreba.data.collate_samples`, or cut out of a
    padded :func:`~coreba.data.collate_batch` batch by its masks."""
    if "model_inputs" in batch:
        inputs = {k: v.cpu().numpy() for k, v in batch["model_inputs"].items()}
        videos = [v[m] for v, m in zip(inputs["video_feats"], inputs["video_mask"], strict=True)]
        texts = [t[m] for t, m in zip(inputs["text_feats"], inputs["text_mask"], strict=True)]
        return videos, texts
    return [v.numpy() for v in batch["video_feats"]], [t.numpy() for t in batch["text_feats"]]


def predict_dataset(model: nn.Module, loader: Iterable[dict[str, Any]], *, top_k: int = DEFAULT_TOP_K,
                    progress: bool = False, mode: PostprocessMode = "qvhighlights", stride: int | None = None,
                    iou_threshold: float = DEFAULT_NMS_IOU,
                    max_batch_size: int = DEFAULT_BATCH_SIZE) -> list[dict[str, Any]]:
    """One submission line per query of ``loader`` (batches from :func:`~coreba.data.collate_samples`, or
    padded ones from :func:`~coreba.data.collate_batch`).

    Answered by the :class:`~coreba.predictor.Predictor` over the eager model, so a video longer than the model's
    ``max_video_len`` goes through the same sliding windows (``stride``, ``iou_threshold``) as everywhere else,
    at most ``max_batch_size`` rows an engine batch. Windows are in seconds of each annotation's ``duration``,
    sorted by score (top ``top_k``), written with ``mode`` (default: QD-DETR's QVHighlights rule); saliency has
    one score per clip. The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    predictor = Predictor(TorchEngine(model, next(model.parameters()).device), model.config, max_batch_size)
    lines: list[dict[str, Any]] = []
    try:
        for batch in progress_bar(loader, progress, desc="predict", leave=False):
            meta = batch["meta"]
            videos, texts = batch_samples(batch)
            results = predictor.predict(videos, texts, [m["duration"] for m in meta], top_k, mode, stride=stride,
                                        iou_threshold=iou_threshold)
            lines.extend(r.to_submission(**{k: m[k] for k in SUBMISSION_META})
                         for r, m in zip(results, meta, strict=True))
    finally:
        model.train(was_training)
    return lines


def runs_end_to_end(engine: Engine, config: CorebaConfig) -> bool:
    """Whether ``engine`` runs an END-TO-END graph (its outputs are already the answer). Engines do not say which
    graph they run, so one query of 1 clip and 1 token is run and its outputs' names are read."""
    feeds = {**make_feeds(config, (1,), (1,)), DURATION: np.array([config.clip_length], dtype=np.float32)}
    return ANSWER_NAMES[0] in engine.run(feeds)


def predict_dataset_with_engine(engine: Engine, loader: Iterable[dict[str, Any]], config: CorebaConfig, *,
                                top_k: int = DEFAULT_TOP_K, progress: bool = False,
                                mode: PostprocessMode = "qvhighlights", stride: int | None = None,
                                iou_threshold: float = DEFAULT_NMS_IOU,
                                max_batch_size: int = DEFAULT_BATCH_SIZE) -> list[dict[str, Any]]:
    """:func:`predict_dataset` through any :mod:`coreba.engines` engine (numpy in, numpy out), so an exported,
    quantized or bf16 model is scored by exactly the code that scores the eager one (the accuracy gates): the
    :class:`~coreba.predictor.Predictor`, long videos windowed.

    An engine on an END-TO-END graph (its outputs are the answer, post-processed inside the graph in the "exact"
    mode with its own K) gets each batch padded whole (its videos within ``max_video_len``) and is read with
    :func:`coreba.answer.unpack_answer`; ``top_k``, ``mode`` and the windows then do not apply, so compare such an
    engine only with another end-to-end one."""
    predictor = Predictor(engine, config, max_batch_size)
    end_to_end = runs_end_to_end(engine, config)
    lines: list[dict[str, Any]] = []
    for batch in progress_bar(loader, progress, desc="predict", leave=False):
        meta = batch["meta"]
        videos, texts = batch_samples(batch)
        durations = [m["duration"] for m in meta]
        if end_to_end:
            feeds = {**pad_batch(config, videos, texts), DURATION: np.array(durations, dtype=np.float32)}
            results = unpack_answer(engine.run(feeds))
        else:
            results = predictor.predict(videos, texts, durations, top_k, mode, stride=stride,
                                        iou_threshold=iou_threshold)
        lines += [r.to_submission(**{k: m[k] for k in SUBMISSION_META}) for r, m in zip(results, meta, strict=True)]
    return lines


def write_jsonl(path: str | Path, lines: Iterable[dict[str, Any]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def build_predict_loader(model_config: CorebaConfig, annotations: str | Path,
                         video_feature_dirs: Sequence[str | Path], text_feature_dir: str | Path,
                         batch_size: int = DEFAULT_BATCH_SIZE, num_workers: int = 0,
                         video_cache_size: int = 0) -> DataLoader:
    """An in-order, label-free loader (works for the unlabelled test split too) of unpadded samples with every
    clip: videos longer than the model's ``max_video_len`` are windowed by the Predictor, never cut."""
    config = data_config_for(model_config, annotations, video_feature_dirs, text_feature_dir, load_labels=False,
                             video_cache_size=video_cache_size, max_video_len=None)
    return DataLoader(QVHighlightsDataset(config), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      collate_fn=collate_samples)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coreba.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path, help="a save_pretrained directory")
    parser.add_argument("--annotations", required=True, type=Path, help="QVHighlights JSON lines (any split)")
    parser.add_argument("--video-feature-dirs", required=True, nargs="+", type=Path,
                        help="one folder per video source, SlowFast then CLIP ({vid}.npz, key 'features')")
    parser.add_argument("--text-feature-dir", required=True, type=Path,
                        help="query features (qid{qid}.npz, key 'last_hidden_state')")
    parser.add_argument("--out", required=True, type=Path, help="submission file to write (JSON lines)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default=None, help="default: cuda when present, else cpu")
    parser.add_argument("--times", choices=POSTPROCESS_MODES, default="qvhighlights",
                        help="qvhighlights (default): QD-DETR's submission rule, windows on multiples of the clip "
                             "length within [0, 150] s and scores to 4 decimals; exact: unrounded times")
    parser.add_argument("--stride", type=int, default=None,
                        help="videos longer than the model's max_video_len clips are answered in sliding windows "
                             "this many clips apart (default: half a window)")
    parser.add_argument("--nms-iou", type=float, default=DEFAULT_NMS_IOU,
                        help="temporal NMS threshold for moments of overlapping windows (default: %(default)s)")
    parser.add_argument("--evaluate", action="store_true",
                        help="also score the submission against --annotations (needs a labelled split)")
    args = parser.parse_args(argv)

    device = torch.device(args.device) if args.device else default_device()
    model = Coreba.from_pretrained(args.checkpoint, map_location=device)
    loader = build_predict_loader(model.config, args.annotations, args.video_feature_dirs, args.text_feature_dir,
                                  args.batch_size, args.num_workers)
    lines = predict_dataset(model, loader, progress=True, mode=args.times, stride=args.stride,
                            iou_threshold=args.nms_iou, max_batch_size=args.batch_size)
    write_jsonl(args.out, lines)
    print(f"wrote {len(lines)} predictions to {args.out}")
    if args.evaluate:
        metrics = evaluate(lines, load_jsonl(args.annotations))
        print(json.dumps(metrics["brief"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
