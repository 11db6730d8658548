"""Where a training run's data lives: real QVHighlights features, or a cached synthetic stand-in.

:class:`TrainConfig` holds optimisation only; the data a run reads is this small record instead, so the same
config trains on real features, on synthetic ones in a test, or on the demo data of :mod:`coreba.pretrained`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from coreba.config import CorebaConfig
from coreba.data.qvhighlights import NUM_TEF
from coreba.data.synthetic import SyntheticPaths, generate_synthetic_dataset

DEFAULT_SYNTHETIC_DIR = "artifacts/synthetic"


@dataclass
class DataPaths:
    """Annotation files of the splits and the feature folders they share (QVHighlights layout)."""

    train_annotations: Path
    val_annotations: Path | None
    video_feature_dirs: list[Path]  # SlowFast first, then CLIP
    text_feature_dir: Path
    video_cache_size: int = 0  # videos kept in memory per dataset (0: read every sample from disk)

    def __post_init__(self) -> None:
        self.train_annotations = Path(self.train_annotations)
        self.val_annotations = Path(self.val_annotations) if self.val_annotations is not None else None
        self.video_feature_dirs = [Path(d) for d in self.video_feature_dirs]
        self.text_feature_dir = Path(self.text_feature_dir)

    def to_dict(self) -> dict[str, Any]:
        return {k: [str(p) for p in v] if isinstance(v, list) else (str(v) if isinstance(v, Path) else v)
                for k, v in asdict(self).items()}


@dataclass(frozen=True)
class SyntheticSpec:
    """A synthetic QVHighlights-layout dataset with a planted query-clip signal (see
    :mod:`coreba.data.synthetic`). Defaults are the real feature dims, so the default model trains on it."""

    out_dir: str = DEFAULT_SYNTHETIC_DIR
    num_queries: int = 200  # per split
    slowfast_dim: int = 2304
    clip_dim: int = 512
    text_dim: int = 512
    signal_strength: float = 2.0
    topic_dim: int = 16
    seed: int = 0
    splits: tuple[str, ...] = ("train", "val")

    def generate(self) -> SyntheticPaths:
        """Write the dataset under ``out_dir``; a no-op when the same one is already there (cached)."""
        return generate_synthetic_dataset(
            self.out_dir, num_queries=self.num_queries, splits=self.splits, seed=self.seed,
            slowfast_dim=self.slowfast_dim, clip_dim=self.clip_dim, text_dim=self.text_dim,
            signal_strength=self.signal_strength, topic_dim=self.topic_dim,
        )

    def data_paths(self, train_split: str = "train", val_split: str | None = "val") -> DataPaths:
        """Generate if needed, then the :class:`DataPaths` of two splits; every video is cached in memory."""
        paths = self.generate()
        return DataPaths(
            train_annotations=paths.annotations[train_split],
            val_annotations=paths.annotations[val_split] if val_split is not None else None,
            video_feature_dirs=list(paths.video_feature_dirs), text_feature_dir=paths.text_feature_dir,
            video_cache_size=self.num_queries,  # at most one video per query: everything stays in memory
        )

    @property
    def video_dim(self) -> int:
        return self.slowfast_dim + self.clip_dim + NUM_TEF  # + the temporal-endpoint columns the dataset adds

    def model_config(self, base: CorebaConfig | None = None) -> CorebaConfig:
        """``base`` (default: the paper's config) with the input dims of this data."""
        return (base or CorebaConfig()).replace(video_dim=self.video_dim, text_dim=self.text_dim)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "splits": list(self.splits)}
