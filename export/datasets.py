"""The data the reduced-precision checks read: QVHighlights-format sets on disk (real features a user gives, or
the demo's synthetic ones), as calibration feeds for int8 quantization and as evaluation sets for the accuracy
gates.

``synthetic`` means the demo checkpoint's data (:func:`coreba.pretrained.demo_split`): a calibration split and a
500-query gate split with the planted signal the demo model learned, from seeds its training never saw. For a
model trained on real features, give real ones (e.g. QVHighlights train for calibration, val for the gate).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coreba.config import CorebaConfig
from coreba.evaluate import load_jsonl
from coreba.interface import DURATION
from coreba.predict import batch_samples, build_predict_loader
from coreba.predictor import pad_batch
from coreba.windows import default_stride, plan_windows, window_features

SYNTHETIC = "synthetic"
Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class EvalSet:
    """One labelled QVHighlights-format split: annotations plus the feature folders its videos and queries are in."""

    name: str
    annotations: Path
    video_feature_dirs: tuple[Path, ...]
    text_feature_dir: Path

    def ground_truth(self) -> list[dict]:
        return load_jsonl(self.annotations)

    def num_queries(self) -> int:
        return len(self.ground_truth())

    def loader(self, config: CorebaConfig, batch_size: int):
        """In-order batches of unpadded samples, every clip kept (what ``coreba.predict`` runs over)."""
        return build_predict_loader(config, self.annotations, self.video_feature_dirs, self.text_feature_dir,
                                    batch_size=batch_size)


def synthetic_set(split: str, config: CorebaConfig) -> EvalSet:
    """The demo's ``split`` ("gate" or "calibration"), generated on first use; refused for a model whose feature
    dims are not the demo's (its features could not even be fed)."""
    from coreba.pretrained import DEFAULT_EXTRA_DIR, demo_split

    demo = CorebaConfig()
    if (config.video_dim, config.text_dim) != (demo.video_dim, demo.text_dim):
        raise ValueError(f"the synthetic sets have the demo model's feature dims (video {demo.video_dim}, text "
                         f"{demo.text_dim}); this model takes {config.video_dim} / {config.text_dim}: give a "
                         "QVHighlights-format set of your own features instead")
    paths = demo_split(split, DEFAULT_EXTRA_DIR)
    return EvalSet(f"{SYNTHETIC} {split} ({paths.annotations[split]})", paths.annotations[split],
                   tuple(paths.video_feature_dirs), paths.text_feature_dir)


def user_set(annotations: str | Path, video_feature_dirs: list[Path] | None,
             text_feature_dir: Path | None) -> EvalSet:
    """A set of the user's own features; the folders are the ones the data loader reads (``coreba.data``)."""
    if not video_feature_dirs or text_feature_dir is None:
        raise ValueError(f"{annotations}: a QVHighlights-format set needs --video-feature-dirs and "
                         "--text-feature-dir")
    path = Path(annotations)
    if not path.is_file():
        raise FileNotFoundError(f"no annotation file at {path}")
    return EvalSet(str(path), path, tuple(Path(d) for d in video_feature_dirs), Path(text_feature_dir))


def calibration_feeds(eval_set: EvalSet, config: CorebaConfig, limit: int) -> list[Feeds]:
    """The first ``limit`` queries of ``eval_set``, one query per feed (no padding in the statistics), with the
    video's duration for an end-to-end graph (:func:`export.quantization.quantize` keeps what the graph takes).
    A video longer than the model's ``max_video_len`` gives its first window, what the model sees of it."""
    feeds = []
    window = config.max_video_len
    for batch in eval_set.loader(config, batch_size=1):
        (video,), (text,) = batch_samples(batch)
        first = plan_windows(len(video), batch["meta"][0]["duration"], window, default_stride(window),
                             config.clip_length)[0]
        feeds.append({**pad_batch(config, [window_features(video, first)], [text]),
                      DURATION: np.array([first.duration_s], dtype=np.float32)})
        if len(feeds) == limit:
            break
    return feeds


def resolve_set(spec: str, split: str, config: CorebaConfig, video_feature_dirs: list[Path] | None = None,
                text_feature_dir: Path | None = None) -> EvalSet:
    """A command line's set: ``synthetic`` (the demo's ``split``) or an annotation file of the user's features."""
    if spec == SYNTHETIC:
        return synthetic_set(split, config)
    return user_set(spec, video_feature_dirs, text_feature_dir)
