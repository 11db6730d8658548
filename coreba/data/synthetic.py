"""Synthetic QVHighlights-format data with a planted signal, for tests and CPU training runs.

The real SlowFast/CLIP features are not on these machines; this writes files in exactly the layout
:mod:`coreba.data.qvhighlights` reads (``annotations/{split}.jsonl``, ``features/{slowfast,clip}/{vid}.npz``,
``features/text/qid{qid}.npz``), from the real annotation files or from generated ones.

The planted signal: every query draws a latent topic ``z`` (``topic_dim``); a fixed random orthonormal map per
feature space turns it into one unit direction per space. Text tokens are that direction plus noise; video
clips are noise, and the clips of a query's relevant windows get ``+ strength * direction``, the strength
growing with the clip's summed saliency score (so highlight detection is learnable as well as retrieval).
Directions are tied across spaces through ``z`` because independent random directions would leave nothing to
learn between a query and its clips. Noise rows have norm ~1, so ``signal_strength`` is in noise norms.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coreba.data.qvhighlights import (
    LABEL_FIELDS,
    NUM_ANNOTATORS,
    NUM_TEF,
    TEXT_FEATURE_KEY,
    VIDEO_FEATURE_KEY,
    DataConfig,
    has_labels,
    load_annotations,
    text_feature_path,
    video_feature_path,
    write_annotations,
)

SPLITS = ("train", "val", "test")
UNLABELLED_SPLITS = frozenset({"test"})  # as the QVHighlights release: features, but no labels
VIDEO_SOURCES = ("slowfast", "clip")  # column order of the video features
CLIP_LENGTH_S = 2
DURATION_RANGE_S = (120, 150)
MAX_GENERATED_WINDOWS = 3
WINDOW_CLIPS_RANGE = (2, 20)
MAX_SCORE = 4  # annotator scores are 0..4
SALIENCY_FLOOR = 0.5  # strength of a relevant clip with summed score 0, in units of signal_strength
DEFAULT_NUM_QUERIES = 200  # per split, for generated annotations
QUERIES_PER_VIDEO = 1.25  # generated: about a fifth of the videos get a second query, as in the real data
MARKER_NAME = "synthetic_params.json"
FORMAT_VERSION = 1  # bump when the written data changes for the same parameters


@dataclass(frozen=True)
class SyntheticPaths:
    """Where :func:`generate_synthetic_dataset` wrote each part, and the dims it wrote."""

    root: Path
    annotations: dict[str, Path]  # split -> JSON Lines file
    video_feature_dirs: tuple[Path, ...]  # SlowFast, CLIP
    text_feature_dir: Path
    video_dim: int  # including the TEF columns, as CorebaConfig.video_dim
    text_dim: int

    def data_config(self, split: str, **overrides: Any) -> DataConfig:
        """A :class:`DataConfig` for one split, expecting the written dims; unlabelled splits load none."""
        kwargs: dict[str, Any] = {
            "video_dim": self.video_dim, "text_dim": self.text_dim,
            "load_labels": has_labels(load_annotations(self.annotations[split])[0]),
        }
        kwargs.update(overrides)
        return DataConfig(self.annotations[split], self.video_feature_dirs, self.text_feature_dir, **kwargs)


# ---------------------------------------------------------------- annotations


def _infer_split(path: Path) -> str:
    """``highlight_val_release.jsonl`` -> ``val``; a name without a split word keeps its stem."""
    found = [part for part in path.stem.split("_") if part in SPLITS]
    return found[0] if len(found) == 1 else path.stem


def _random_windows(rng: np.random.Generator, num_clips: int) -> list[tuple[int, int]]:
    """1..3 disjoint ``[start, end)`` clip ranges, at least one free clip apart as real separate windows."""
    wanted = int(rng.integers(1, MAX_GENERATED_WINDOWS + 1))
    taken = np.zeros(num_clips, dtype=bool)
    windows: list[tuple[int, int]] = []
    for _ in range(100 * wanted):  # rejection sampling; the first try always fits
        length = int(rng.integers(WINDOW_CLIPS_RANGE[0], WINDOW_CLIPS_RANGE[1] + 1))
        start = int(rng.integers(0, num_clips - length + 1))
        if taken[max(start - 1, 0): start + length + 1].any():
            continue
        taken[start: start + length] = True
        windows.append((start, start + length))
        if len(windows) == wanted:
            break
    return sorted(windows)


def generate_annotations(rng: np.random.Generator, num_queries: int, num_videos: int, split: str,
                         first_qid: int = 0) -> list[dict[str, Any]]:
    """Labelled records with the release's fields: 2 s clips, 120-150 s videos, 1-3 windows, scores 0-4."""
    if not 1 <= num_videos <= num_queries:
        raise ValueError(f"need 1 <= num_videos <= num_queries, got {num_videos} videos, {num_queries} queries")
    clip_range = (DURATION_RANGE_S[0] // CLIP_LENGTH_S, DURATION_RANGE_S[1] // CLIP_LENGTH_S)
    videos = []
    for i in range(num_videos):
        duration = int(rng.integers(clip_range[0], clip_range[1] + 1)) * CLIP_LENGTH_S
        videos.append((f"syn{split}{i:05d}_0.0_{duration}.0", duration))
    # every video gets one query, the rest go to random videos
    video_of_query = np.concatenate([np.arange(num_videos), rng.integers(0, num_videos, num_queries - num_videos)])
    records = []
    for offset, video_index in enumerate(video_of_query):
        vid, duration = videos[video_index]
        windows = _random_windows(rng, duration // CLIP_LENGTH_S)
        clip_ids, scores = [], []
        for start, end in windows:
            base = int(rng.integers(1, MAX_SCORE + 1))  # one level per moment, annotators disagree by +-1
            for clip in range(start, end):
                clip_ids.append(clip)
                scores.append(np.clip(base + rng.integers(-1, 2, NUM_ANNOTATORS), 0, MAX_SCORE).tolist())
        qid = first_qid + offset
        records.append({
            "qid": qid, "query": f"synthetic query {qid}", "duration": duration, "vid": vid,
            "relevant_clip_ids": clip_ids, "saliency_scores": scores,
            "relevant_windows": [[s * CLIP_LENGTH_S, e * CLIP_LENGTH_S] for s, e in windows],
        })
    return records


# ---------------------------------------------------------------- features


def _noise(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    """Gaussian rows of norm ~1 (std 1/sqrt(dim)), the unit the signal strength is measured in."""
    return rng.standard_normal((rows, dim), dtype=np.float32) / np.float32(math.sqrt(dim))


def _topic_maps(rng: np.random.Generator, dims: Mapping[str, int], topic_dim: int) -> dict[str, np.ndarray]:
    """Per space a fixed ``(dim, topic_dim)`` map with orthonormal columns: what a model must learn."""
    return {name: np.linalg.qr(rng.standard_normal((dim, topic_dim)))[0].astype(np.float32)
            for name, dim in dims.items()}


def _num_clips(records: Sequence[dict[str, Any]]) -> int:
    """Clips of a video: its duration in 2 s clips, at least enough for every labelled clip."""
    needed = [math.ceil(r["duration"] / CLIP_LENGTH_S) for r in records]
    needed += [max(r["relevant_clip_ids"]) + 1 for r in records if has_labels(r)]
    return max(needed)


def _write_features(records: Sequence[dict[str, Any]], paths: SyntheticPaths, dims: Mapping[str, int],
                    rng: np.random.Generator, num_text_tokens: tuple[int, int], signal_strength: float,
                    topic_dim: int, maps: Mapping[str, np.ndarray] | None = None) -> None:
    if maps is None:
        maps = _topic_maps(rng, dims, topic_dim)
    topics: dict[int, dict[str, np.ndarray]] = {}
    by_vid: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        latent = rng.standard_normal(topic_dim).astype(np.float32)
        latent /= np.linalg.norm(latent)  # orthonormal maps keep it a unit vector in every space
        topics[record["qid"]] = {name: m @ latent for name, m in maps.items()}
        num_tokens = int(rng.integers(num_text_tokens[0], num_text_tokens[1] + 1))
        tokens = topics[record["qid"]]["text"] + _noise(rng, num_tokens, dims["text"])
        np.savez(text_feature_path(paths.text_feature_dir, record["qid"]), **{TEXT_FEATURE_KEY: tokens})
        by_vid.setdefault(record["vid"], []).append(record)

    for vid, video_records in by_vid.items():
        num_clips = _num_clips(video_records)
        for source, feature_dir in zip(VIDEO_SOURCES, paths.video_feature_dirs, strict=True):
            clips = _noise(rng, num_clips, dims[source])
            for record in filter(has_labels, video_records):  # each query plants its own direction
                summed = np.asarray(record["saliency_scores"], dtype=np.float32).sum(axis=1)
                strength = signal_strength * (SALIENCY_FLOOR + summed / (MAX_SCORE * NUM_ANNOTATORS))
                clips[record["relevant_clip_ids"]] += strength[:, None] * topics[record["qid"]][source]
            np.savez(video_feature_path(feature_dir, vid), **{VIDEO_FEATURE_KEY: clips})


def _generated_records(rng: np.random.Generator, split_names: Sequence[str], num_queries: int | None,
                       num_videos: int | None) -> dict[str, list[dict[str, Any]]]:
    """Generated annotations of every split, drawn from ``rng`` in split order."""
    count = DEFAULT_NUM_QUERIES if num_queries is None else num_queries
    videos = num_videos if num_videos is not None else max(1, round(count / QUERIES_PER_VIDEO))
    return {split: generate_annotations(rng, count, videos, split, first_qid=i * count)
            for i, split in enumerate(split_names)}


def planted_topic_maps(like: Mapping[str, Any], dims: Mapping[str, int], topic_dim: int) -> dict[str, np.ndarray]:
    """The topic maps (the planted query-clip relation) of a GENERATED dataset with the generation parameters
    ``like`` (``seed``, ``splits``, ``num_queries``, ``num_videos``; missing ones take the defaults), replayed
    from its seed: its annotations are drawn first, then the maps, exactly as :func:`generate_synthetic_dataset`
    draws them."""
    unknown = set(like) - {"seed", "splits", "num_queries", "num_videos"}
    if unknown:
        raise ValueError(f"planted_like takes seed, splits, num_queries, num_videos; got also {sorted(unknown)}")
    rng = np.random.default_rng(like.get("seed", 0))
    _generated_records(rng, list(like.get("splits", SPLITS)), like.get("num_queries"), like.get("num_videos"))
    return _topic_maps(rng, dims, topic_dim)


# ---------------------------------------------------------------- entry point


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def generate_synthetic_dataset(
    out_dir: str | Path,
    *,
    annotations: str | Path | Mapping[str, str | Path] | None = None,
    num_queries: int | None = None,
    num_videos: int | None = None,
    splits: Sequence[str] = SPLITS,
    seed: int = 0,
    slowfast_dim: int = 2304,
    clip_dim: int = 512,
    text_dim: int = 512,
    num_text_tokens: tuple[int, int] = (8, 24),
    signal_strength: float = 2.0,
    topic_dim: int = 16,
    planted_like: Mapping[str, Any] | None = None,
) -> SyntheticPaths:
    """Write a QVHighlights-layout dataset under ``out_dir``; a no-op when the same one is already there.

    Args:
        annotations: real annotation file(s): one path (split named from the file, e.g. ``..._val_...``) or
            ``{split: path}``. Their queries, windows and scores are kept; unlabelled files (test) get
            features only. None generates ``splits`` instead (``test`` written without labels).
        num_queries: with ``annotations``, keep the first N queries of each file (None: all); otherwise the
            queries generated per split (None: ``DEFAULT_NUM_QUERIES``).
        num_videos: generated videos per split (None: ``num_queries / QUERIES_PER_VIDEO``).
        num_text_tokens: inclusive range of tokens per query.
        signal_strength: planted strength, in noise norms, of a relevant clip with an average score; it runs
            from ``0.5x`` (summed score 0) to ``1.5x`` (summed score 12).
        topic_dim: dimension of the latent topic shared by all feature spaces (<= every dim).
        planted_like: the generation parameters (``seed``, ``splits``, ``num_queries``, ``num_videos``) of
            another generated dataset with the same dims and ``topic_dim`` whose planted relation to reuse
            (:func:`planted_topic_maps`): new queries and videos (from ``seed``) that a model trained on that
            dataset has learned to read, e.g. a larger held-out set for a model already trained. None: this
            dataset's own relation, drawn from ``seed``.
    """
    out = Path(out_dir)
    dims = {"slowfast": slowfast_dim, "clip": clip_dim, "text": text_dim}
    if not 1 <= topic_dim <= min(dims.values()):
        raise ValueError(f"topic_dim must be in 1..{min(dims.values())} (the smallest dim), got {topic_dim}")
    if not 1 <= num_text_tokens[0] <= num_text_tokens[1]:
        raise ValueError(f"num_text_tokens must be a range (low, high) with 1 <= low <= high, got {num_text_tokens}")
    if annotations is None:
        sources = None
    elif isinstance(annotations, Mapping):
        sources = {split: Path(p) for split, p in annotations.items()}
    else:
        sources = {_infer_split(Path(annotations)): Path(annotations)}
    split_names = list(sources) if sources is not None else list(splits)

    paths = SyntheticPaths(
        root=out,
        annotations={split: out / "annotations" / f"{split}.jsonl" for split in split_names},
        video_feature_dirs=tuple(out / "features" / source for source in VIDEO_SOURCES),
        text_feature_dir=out / "features" / "text",
        video_dim=slowfast_dim + clip_dim + NUM_TEF, text_dim=text_dim,
    )
    params = {
        "format_version": FORMAT_VERSION, "seed": seed, "dims": dims, "splits": split_names,
        "annotations": None if sources is None else {s: _file_digest(p) for s, p in sources.items()},
        "num_queries": num_queries, "num_videos": num_videos, "num_text_tokens": list(num_text_tokens),
        "signal_strength": signal_strength, "topic_dim": topic_dim,
    }
    if planted_like is not None:  # only then: markers written before this option stay valid
        params["planted_like"] = {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(planted_like.items())}
    marker = out / MARKER_NAME
    if marker.is_file():
        if json.loads(marker.read_text()) == params:
            return paths
        # the marker proves these folders are ours: clear them so no stale file outlives its parameters
        marker.unlink()
        for folder in (out / "annotations", out / "features"):
            shutil.rmtree(folder, ignore_errors=True)

    rng = np.random.default_rng(seed)
    records_by_split: dict[str, list[dict[str, Any]]] = {}
    if sources is not None:
        for split, path in sources.items():
            records_by_split[split] = load_annotations(path)[:num_queries]
    else:
        records_by_split = _generated_records(rng, split_names, num_queries, num_videos)

    for folder in (*paths.video_feature_dirs, paths.text_feature_dir):
        folder.mkdir(parents=True, exist_ok=True)
    for split, records in records_by_split.items():
        unlabelled = sources is None and split in UNLABELLED_SPLITS
        written = [{k: v for k, v in r.items() if k not in LABEL_FIELDS} for r in records] if unlabelled else records
        write_annotations(paths.annotations[split], written)
    all_records = [r for records in records_by_split.values() for r in records]
    maps = None if planted_like is None else planted_topic_maps(planted_like, dims, topic_dim)
    _write_features(all_records, paths, dims, rng, num_text_tokens, signal_strength, topic_dim, maps)
    marker.write_text(json.dumps(params, indent=2) + "\n")  # last, so an interrupted run is redone
    return paths


def main(argv: Sequence[str] | None = None) -> SyntheticPaths:
    parser = argparse.ArgumentParser(prog="python -m coreba.data.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--from-annotations", nargs="+", type=Path, default=None, metavar="PATH",
                        help="real annotation files (split named from each file name); default: generate")
    parser.add_argument("--num-queries", type=int, default=None,
                        help="first N queries of each file, or queries per generated split "
                             f"(default: all, or {DEFAULT_NUM_QUERIES})")
    parser.add_argument("--num-videos", type=int, default=None, help="videos per generated split")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), help="generated splits (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slowfast-dim", type=int, default=2304)
    parser.add_argument("--clip-dim", type=int, default=512)
    parser.add_argument("--text-dim", type=int, default=512)
    parser.add_argument("--text-tokens", type=int, nargs=2, default=(8, 24), metavar=("MIN", "MAX"))
    parser.add_argument("--signal-strength", type=float, default=2.0, help="in noise norms (default: 2.0)")
    parser.add_argument("--topic-dim", type=int, default=16)
    args = parser.parse_args(argv)
    annotations = None
    if args.from_annotations:
        annotations = {_infer_split(p): p for p in args.from_annotations}
        if len(annotations) != len(args.from_annotations):
            parser.error("--from-annotations files must name distinct splits")
    paths = generate_synthetic_dataset(
        args.out, annotations=annotations, num_queries=args.num_queries, num_videos=args.num_videos,
        splits=args.splits, seed=args.seed, slowfast_dim=args.slowfast_dim, clip_dim=args.clip_dim,
        text_dim=args.text_dim, num_text_tokens=tuple(args.text_tokens), signal_strength=args.signal_strength,
        topic_dim=args.topic_dim,
    )
    print(f"annotations: {', '.join(f'{s}={p}' for s, p in paths.annotations.items())}")
    print(f"video features: {', '.join(map(str, paths.video_feature_dirs))} (video_dim {paths.video_dim})")
    print(f"text features: {paths.text_feature_dir} (text_dim {paths.text_dim})")
    return paths


if __name__ == "__main__":
    main()
