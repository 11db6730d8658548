"""The QVHighlights dataset as QD-DETR reads it: annotations, pre-extracted features, training labels.

On-disk layout (what the QVHighlights release and QD-DETR use, and what :mod:`coreba.data.synthetic` writes):

* annotations: JSON Lines, one query a line: ``qid, query, duration, vid`` and, except in the test split,
  ``relevant_windows`` ([start_s, end_s] pairs), ``relevant_clip_ids`` (2 s clips) and ``saliency_scores``
  (3 annotator scores, 0..4, per relevant clip);
* video features: ``{dir}/{vid}.npz`` with key ``features``, ``(L, D_i)``, one directory per source
  (SlowFast, then CLIP);
* text features: ``{text_dir}/qid{qid}.npz`` with key ``last_hidden_state``, ``(L_t, D_t)``.

One sample is a dict; :func:`collate_batch` pads samples into the model's inputs (``video_feats, video_mask,
text_feats, text_mask``, masks bool with True = valid) and the criterion's targets.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset, get_worker_info

from coreba.ops.span_ops import span_xx_to_cxw

VIDEO_FEATURE_KEY = "features"
TEXT_FEATURE_KEY = "last_hidden_state"
NUM_TEF = 2  # temporal-endpoint features appended to every clip: [i / L, (i + 1) / L]
L2_EPS = 1e-5  # as QD-DETR's l2_normalize_np_array: an all-zero row stays zero instead of NaN
NUM_ANNOTATORS = 3  # saliency_scores has one score per annotator
NUM_SALIENCY_PAIRS = 2  # QD-DETR's max_n: hard and easy pairs each give this many positives/negatives

REQUIRED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "qid": int, "query": str, "duration": (int, float), "vid": str,
}
LABEL_FIELDS = ("relevant_windows", "relevant_clip_ids", "saliency_scores")


class AnnotationError(ValueError):
    """A malformed annotation line; the message names the file and the line number."""


class FeatureFileError(ValueError):
    """A feature file that is missing or unusable; the message names the file and the problem."""


# ---------------------------------------------------------------- annotations


def _check_record(record: Any) -> str | None:
    """The problem with one annotation record, or None. Label fields are checked only when present."""
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    for name, kind in REQUIRED_FIELDS.items():
        if name not in record:
            return f"missing field {name!r}"
        if not isinstance(record[name], kind) or isinstance(record[name], bool):
            return f"field {name!r} has type {type(record[name]).__name__}"
    present = [name for name in LABEL_FIELDS if name in record]
    if not present:
        return None
    if len(present) != len(LABEL_FIELDS):
        return f"has {present} but not all of {list(LABEL_FIELDS)}"
    windows, clip_ids, scores = (record[name] for name in LABEL_FIELDS)
    if not windows or not all(isinstance(w, list) and len(w) == 2 and w[0] < w[1] for w in windows):
        return f"relevant_windows must be a non-empty list of [start, end] with start < end, got {windows}"
    if not clip_ids or len(clip_ids) != len(scores):
        return f"{len(clip_ids)} relevant_clip_ids but {len(scores)} saliency_scores"
    if any(not isinstance(c, int) or c < 0 for c in clip_ids):
        return "relevant_clip_ids must be non-negative integers"
    if any(not isinstance(s, list) or len(s) != NUM_ANNOTATORS for s in scores):
        return f"each saliency_scores entry must hold {NUM_ANNOTATORS} annotator scores"
    return None


def has_labels(record: dict[str, Any]) -> bool:
    """Whether a record carries moment/saliency labels (the test split does not)."""
    return "relevant_windows" in record


def load_annotations(path: str | Path, *, require_labels: bool = False) -> list[dict[str, Any]]:
    """Read a QVHighlights JSON Lines file; blank lines (and a missing final newline) are fine."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no annotation file at {path}")
    records = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise AnnotationError(f"{path}:{line_no}: not valid JSON ({err.msg})") from err
            problem = _check_record(record)
            if problem is None and require_labels and not has_labels(record):
                problem = "no labels (relevant_windows); unlabelled splits need load_labels=False"
            if problem is not None:
                raise AnnotationError(f"{path}:{line_no}: {problem}")
            records.append(record)
    return records


def write_annotations(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Write records as JSON Lines like the release files (no newline after the last line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(record) for record in records), encoding="utf-8")


# ---------------------------------------------------------------- feature files


def video_feature_path(feature_dir: str | Path, vid: str) -> Path:
    return Path(feature_dir) / f"{vid}.npz"


def text_feature_path(feature_dir: str | Path, qid: int) -> Path:
    return Path(feature_dir) / f"qid{qid}.npz"


def _read_npz_member(path: Path, key: str) -> np.ndarray:
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError as err:
        raise FeatureFileError(f"{path}: feature file not found") from err
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as err:
        raise FeatureFileError(f"{path}: unreadable ({err})") from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise FeatureFileError(f"{path}: not an .npz archive")
    with archive:
        if key not in archive.files:
            raise FeatureFileError(f"{path}: no key {key!r} (keys: {sorted(archive.files)})")
        try:
            return archive[key]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise FeatureFileError(f"{path}: {key!r} is unreadable ({err})") from err


def load_feature_array(path: Path, key: str, expected_dim: int | None = None) -> np.ndarray:
    """One ``(L, D)`` float32 array from an ``.npz`` file, checked so that bad data fails here, by name."""
    array = _read_npz_member(path, key)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise FeatureFileError(f"{path}: {key!r} must be a 2-D numeric (L, D) array, got {array.dtype} "
                               f"of shape {array.shape}")
    if 0 in array.shape:
        raise FeatureFileError(f"{path}: {key!r} is empty, shape {array.shape}")
    if expected_dim is not None and array.shape[1] != expected_dim:
        raise FeatureFileError(f"{path}: {key!r} has feature dim {array.shape[1]}, expected {expected_dim}")
    if not np.isfinite(array).all():
        raise FeatureFileError(f"{path}: {key!r} holds NaN or Inf values")
    return array.astype(np.float32, copy=False)


def l2_normalize(array: np.ndarray) -> np.ndarray:
    """Unit rows (along the feature dim), as QD-DETR normalises each feature source."""
    return array / (np.linalg.norm(array, axis=-1, keepdims=True) + L2_EPS)


def temporal_endpoint_features(length: int) -> np.ndarray:
    """``(L, 2)`` ``[i / L, (i + 1) / L]`` for clip i: QD-DETR's TEF, the clip's place in the video."""
    start = np.arange(length, dtype=np.float32) / length
    return np.stack([start, start + 1.0 / length], axis=1)


# ---------------------------------------------------------------- labels


def span_labels(windows: Sequence[Sequence[float]], num_clips: int, clip_length: float) -> Tensor:
    """``(n, 2)`` normalised ``[center, width]`` of windows in seconds, clamped to the video's clips.

    As QD-DETR, the normaliser is the feature length in seconds (``L_v * clip_length``), not ``duration``.
    """
    xx = torch.tensor(windows, dtype=torch.float32) / (num_clips * clip_length)
    return span_xx_to_cxw(xx.clamp(0.0, 1.0))


def saliency_labels(clip_ids: Sequence[int], scores: Sequence[Sequence[int]], num_clips: int,
                    rng: np.random.Generator, num_pairs: int = NUM_SALIENCY_PAIRS,
                    ) -> tuple[list[int], list[int], np.ndarray]:
    """Positive and negative clip indices for the margin loss, and every clip's summed score.

    As QD-DETR's ``get_saliency_labels_all``: ``num_pairs`` hard positives/negatives (highest/lowest summed
    score among the relevant clips), then ``num_pairs`` easy positives (random relevant clips) and easy
    negatives (random clips outside the relevant set); the easy ones fall back to the hard ones when fewer
    than ``num_pairs`` clips lie outside. Indices are clamped to ``num_clips - 1`` (features can be shorter
    than ``duration`` or truncated); clips beyond the features get no score.

    Returns:
        ``(pos, neg, all_scores)``: two lists of ``2 * num_pairs`` indices and a ``(num_clips,)`` float32
        array, 0 outside the relevant clips.
    """
    clip_ids = np.asarray(clip_ids, dtype=np.int64)
    summed = np.asarray(scores, dtype=np.float32).sum(axis=1)  # (#relevant,)
    all_scores = np.zeros(num_clips, dtype=np.float32)
    inside = clip_ids < num_clips
    all_scores[clip_ids[inside]] = summed[inside]

    order = clip_ids[np.argsort(summed, kind="stable")]  # relevant clips, increasing score
    # np.resize repeats a list shorter than num_pairs, so a single relevant clip still gives num_pairs.
    hard_pos = np.resize(order[-num_pairs:], num_pairs)
    hard_neg = np.resize(order[:num_pairs], num_pairs)
    outside = np.setdiff1d(np.arange(num_clips), clip_ids)
    if len(outside) >= num_pairs:
        easy_pos = rng.choice(clip_ids, size=num_pairs, replace=len(clip_ids) < num_pairs)
        easy_neg = rng.choice(outside, size=num_pairs, replace=False)
    else:
        easy_pos, easy_neg = hard_pos, hard_neg
    pos = np.minimum(np.concatenate([hard_pos, easy_pos]), num_clips - 1)
    neg = np.minimum(np.concatenate([hard_neg, easy_neg]), num_clips - 1)
    return pos.tolist(), neg.tolist(), all_scores


# ---------------------------------------------------------------- dataset


@dataclass
class DataConfig:
    """Where one split's annotations and features are, and how samples are cut.

    ``video_dim``/``text_dim`` are optional expectations (``CorebaConfig.video_dim`` counts the 2 TEF
    columns); when given, a file that does not fit fails when it is read instead of inside the model.
    """

    annotation_path: str | Path
    video_feature_dirs: Sequence[str | Path]  # SlowFast first, then CLIP: their order is the column order
    text_feature_dir: str | Path
    max_video_len: int = 75  # clips
    max_text_len: int = 32  # tokens
    clip_length: float = 2.0  # seconds a clip
    video_dim: int | None = None  # sum of source dims + NUM_TEF
    text_dim: int | None = None
    load_labels: bool = True
    # QD-DETR's --max_windows default: a query with more ground-truth windows trains on a random 5 of them
    max_windows: int = 5
    video_cache_size: int = 0  # videos kept in memory (several queries share one video); 0 = none

    def __post_init__(self) -> None:
        self.annotation_path = Path(self.annotation_path)
        self.video_feature_dirs = [Path(d) for d in self.video_feature_dirs]
        self.text_feature_dir = Path(self.text_feature_dir)
        if not self.video_feature_dirs:
            raise ValueError("DataConfig.video_feature_dirs needs at least one feature directory")
        for name in ("max_video_len", "max_text_len", "max_windows"):
            if getattr(self, name) < 1:
                raise ValueError(f"DataConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.clip_length <= 0:
            raise ValueError(f"DataConfig.clip_length must be > 0, got {self.clip_length}")
        if self.video_dim is not None and self.video_dim <= NUM_TEF:
            raise ValueError(f"DataConfig.video_dim counts {NUM_TEF} TEF columns, got {self.video_dim}")


class QVHighlightsDataset(Dataset):
    """One split of QVHighlights-format data; ``dataset[i]`` is one query's sample dict.

    Sample keys: ``meta`` (qid, query, vid, duration and, when labelled, relevant_windows), ``video_feats``
    ``(L_v, D_v)`` float32, ``text_feats`` ``(L_t, D_t)`` float32 and, with ``config.load_labels``,
    ``span_labels`` ``(n, 2)`` normalised [center, width], ``saliency_pos_labels`` / ``saliency_neg_labels``
    ``(4,)`` long, ``saliency_all_labels`` ``(L_v,)`` float32 (summed annotator scores).

    The random parts of the labels (easy pairs, windows beyond ``max_windows``) come from a numpy generator
    seeded by ``seed`` (and, in a DataLoader worker, by the worker's torch seed too).
    """

    def __init__(self, config: DataConfig, seed: int = 0) -> None:
        self.config = config
        self.seed = seed
        self.records = load_annotations(config.annotation_path, require_labels=config.load_labels)
        self._rng = np.random.default_rng(seed)
        self._rng_worker: int | None = None
        self._source_dims: list[tuple[int, Path] | None] = [None] * len(config.video_feature_dirs)
        self._text_dim_seen: tuple[int, Path] | None = None
        self._video_cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        meta = {name: record[name] for name in REQUIRED_FIELDS}
        video = self.video_features(record["vid"])
        num_clips = len(video)
        video = np.concatenate([video, temporal_endpoint_features(num_clips)], axis=1)
        sample: dict[str, Any] = {
            "meta": meta,
            "video_feats": torch.from_numpy(video),
            "text_feats": torch.from_numpy(self.text_features(record["qid"])),
        }
        if self.config.load_labels:
            meta["relevant_windows"] = record["relevant_windows"]
            sample.update(self._labels(record, num_clips))
        return sample

    @property
    def rng(self) -> np.random.Generator:
        # A worker holds a fresh copy of the dataset every epoch; seeding from torch's per-worker seed (drawn
        # from the main process's torch generator) gives each worker and epoch its own draws, reproducibly.
        worker = get_worker_info()
        if worker is not None and self._rng_worker != worker.seed:
            self._rng = np.random.default_rng([self.seed, worker.seed])
            self._rng_worker = worker.seed
        return self._rng

    def _labels(self, record: dict[str, Any], num_clips: int) -> dict[str, Tensor]:
        windows = record["relevant_windows"]
        if len(windows) > self.config.max_windows:
            keep = np.sort(self.rng.choice(len(windows), self.config.max_windows, replace=False))
            windows = [windows[i] for i in keep]
        pos, neg, all_scores = saliency_labels(record["relevant_clip_ids"], record["saliency_scores"],
                                               num_clips, self.rng)
        return {
            "span_labels": span_labels(windows, num_clips, self.config.clip_length),
            "saliency_pos_labels": torch.tensor(pos, dtype=torch.long),
            "saliency_neg_labels": torch.tensor(neg, dtype=torch.long),
            "saliency_all_labels": torch.from_numpy(all_scores),
        }

    def _check_dim(self, seen: tuple[int, Path] | None, array: np.ndarray, path: Path) -> tuple[int, Path]:
        # Without an expected dim, the first file of a source sets it, so one odd file still fails by name.
        if seen is not None and array.shape[1] != seen[0]:
            raise FeatureFileError(f"{path}: feature dim {array.shape[1]} differs from {seen[0]} "
                                   f"in {seen[1]}")
        return seen or (array.shape[1], path)

    def video_features(self, vid: str) -> np.ndarray:
        """``(L_v, sum D_i)``: each source L2-normalised, cut to the shortest source and ``max_video_len``."""
        if vid in self._video_cache:
            self._video_cache.move_to_end(vid)
            return self._video_cache[vid]
        paths = [video_feature_path(d, vid) for d in self.config.video_feature_dirs]
        sources = []
        for i, path in enumerate(paths):
            array = load_feature_array(path, VIDEO_FEATURE_KEY)
            self._source_dims[i] = self._check_dim(self._source_dims[i], array, path)
            sources.append(l2_normalize(array[: self.config.max_video_len]))
        total = sum(a.shape[1] for a in sources) + NUM_TEF
        if self.config.video_dim is not None and total != self.config.video_dim:
            dims = ", ".join(f"{p} has dim {a.shape[1]}" for p, a in zip(paths, sources, strict=True))
            raise FeatureFileError(f"video features of {vid!r}: {dims}; with {NUM_TEF} TEF that is {total}, "
                                   f"expected video_dim {self.config.video_dim}")
        length = min(len(a) for a in sources)
        video = np.concatenate([a[:length] for a in sources], axis=1)
        if self.config.video_cache_size > 0:
            self._video_cache[vid] = video
            if len(self._video_cache) > self.config.video_cache_size:
                self._video_cache.popitem(last=False)
        return video

    def text_features(self, qid: int) -> np.ndarray:
        """``(L_t, D_t)`` query token features, L2-normalised, cut to ``max_text_len``."""
        path = text_feature_path(self.config.text_feature_dir, qid)
        array = load_feature_array(path, TEXT_FEATURE_KEY, self.config.text_dim)
        self._text_dim_seen = self._check_dim(self._text_dim_seen, array, path)
        return l2_normalize(array[: self.config.max_text_len])


# ---------------------------------------------------------------- batching


def _pad(sequences: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Right-pad ``(L_i, ...)`` to ``(B, L_max, ...)`` with zeros; mask ``(B, L_max)`` bool, True = valid."""
    lengths = torch.tensor([len(s) for s in sequences])
    padded = pad_sequence(sequences, batch_first=True)
    mask = torch.arange(padded.shape[1])[None, :] < lengths[:, None]
    return padded, mask


def collate_batch(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pad samples into ``{"meta", "model_inputs", "targets"}`` (``targets`` only when labelled).

    ``model_inputs``: ``video_feats (B, L_v, D_v)``, ``video_mask (B, L_v)`` bool,
    ``text_feats (B, L_t, D_t)``, ``text_mask (B, L_t)`` bool, True = valid.
    ``targets``: ``span_labels``, a list of ``{"spans": (n, 2)}`` (DETR's target format);
    ``saliency_pos_labels``/``saliency_neg_labels`` ``(B, 4)`` long;
    ``saliency_all_labels`` ``(B, L_v)`` float32, 0 on padding.
    """
    if not samples:
        raise ValueError("collate_batch got no samples")
    video_feats, video_mask = _pad([s["video_feats"] for s in samples])
    text_feats, text_mask = _pad([s["text_feats"] for s in samples])
    batch: dict[str, Any] = {
        "meta": [s["meta"] for s in samples],
        "model_inputs": {"video_feats": video_feats, "video_mask": video_mask,
                         "text_feats": text_feats, "text_mask": text_mask},
    }
    labelled = ["span_labels" in s for s in samples]
    if any(labelled) and not all(labelled):
        raise ValueError("collate_batch got labelled and unlabelled samples in one batch")
    if all(labelled):
        batch["targets"] = {
            "span_labels": [{"spans": s["span_labels"]} for s in samples],
            "saliency_pos_labels": torch.stack([s["saliency_pos_labels"] for s in samples]),
            "saliency_neg_labels": torch.stack([s["saliency_neg_labels"] for s in samples]),
            "saliency_all_labels": _pad([s["saliency_all_labels"] for s in samples])[0],
        }
    return batch
