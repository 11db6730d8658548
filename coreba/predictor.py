"""One inference API over every engine: features in, moments in seconds and per-clip saliency out.

    predictor = Predictor.from_pretrained("artifacts/coreba.onnx", engine="onnxruntime")
    predictor = Predictor.from_pretrained("artifacts/coreba.onnx", engine="openvino", precision="bf16")
    results = predictor.predict([video_feats], [text_feats], durations=[150.0])
    results[0].moments    # [[start_s, end_s, score], ...] sorted by score, exact times
    results[0].saliency   # one score per valid 2 s clip
    answers = predictor.search(video_feats, [query_a, query_b, query_c])   # many queries, one video

Times are exact by default (``mode="exact"`` of :func:`coreba.postprocess.postprocess`); ``mode="qvhighlights"``
writes them with QD-DETR's QVHighlights submission rule (multiples of the clip length, 4-decimal scores).

Inputs are checked (an :class:`InputError` names the problem), cut into engine rows by :mod:`coreba.schedule`
(videos longer than the model's ``max_video_len``: sliding windows, merged by :mod:`coreba.windows`), padded into
batches with masks (exact: a sample's output does not depend on its padding or batch-mates), run by the engine,
and post-processed by :func:`coreba.postprocess.postprocess` (the same function ``coreba.predict`` uses; the
served end-to-end graph computes its "exact" mode in the engine, and the serving client windows and merges with
the same :mod:`coreba.schedule`). A video within ``max_video_len`` gets exactly the answer it got before windows
existed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from coreba.config import CorebaConfig
from coreba.engines import ENGINE_NAMES, Engine, load_engine, model_file_metadata
from coreba.model.validation import InputError, validate_inputs
from coreba.onnx_io import config_of, graph_of
from coreba.postprocess import DEFAULT_TOP_K, POSTPROCESS_MODES, PostprocessMode, QueryResult, postprocess
from coreba.schedule import Answering, Query, Row, answer_queries, row_durations, shared_window
from coreba.windows import DEFAULT_NMS_IOU, Window, check_window_options, window_features, write_window


def config_for(path: str | Path, engine: str) -> CorebaConfig:
    """The model config behind an artifact: ``config.json`` of a checkpoint directory (torch), the ``config``
    entry of an ONNX file's metadata (onnxruntime, openvino), the ``coreba/config`` rt_info of an OpenVINO IR
    (``.xml``, from export/quantize.py), or the ``<plan>.json`` written beside a TensorRT plan."""
    path = Path(path)
    if engine not in ENGINE_NAMES:
        raise ValueError(f"unknown engine {engine!r}; choose from {ENGINE_NAMES}")
    if engine == "torch":
        return CorebaConfig.load(path / "config.json")
    if engine == "tensorrt":
        sidecar = path.with_suffix(".json")
        if not sidecar.is_file():
            raise FileNotFoundError(f"no {sidecar} beside the TensorRT plan (export/to_tensorrt.py writes it)")
        sidecar_data = json.loads(sidecar.read_text())
        if sidecar_data.get("graph") == "end_to_end":
            raise ValueError(f"{path} is built from an end-to-end graph (its outputs are already the answer, for "
                             "serving); the Predictor runs the raw graph: build the plan from an export without "
                             "--end-to-end")
        return CorebaConfig.from_dict(sidecar_data["config"])
    metadata = model_file_metadata(path)  # an ONNX file, or an OpenVINO IR from export/quantize.py
    if graph_of(metadata) == "end_to_end":
        raise ValueError(f"{path} is an end-to-end graph (its outputs are already the answer, for serving); the "
                         "Predictor runs the raw graph: export it with export/to_onnx.py without --end-to-end")
    return config_of(metadata, path)


REAL_KINDS = "fiu"  # numpy dtype kinds of real numbers: float, signed and unsigned int (bool and complex are not)


def as_samples(name: str, items: Sequence[np.ndarray]) -> list[np.ndarray]:
    """One array per sample, each of real numbers. A stacked array is refused rather than split along its first
    axis: a padded (B, L, D) batch would have its padding taken for clips and tokens, silently."""
    if isinstance(items, (np.ndarray, torch.Tensor)):
        raise InputError(f"{name} must be a list with one (L, D) array per sample, got one array of shape "
                         f"{tuple(items.shape)}: a stacked batch hides each sample's length; pass a list, or a "
                         "padded batch with its masks to predict_padded")
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise InputError(f"{name} must be a list with one (L, D) array per sample, got {type(items).__name__}")
    samples = []
    for i, x in enumerate(items):
        try:
            x = np.asarray(x)
        except (ValueError, TypeError) as err:
            raise InputError(f"{name}[{i}] is not an array of numbers ({err})") from None
        if x.dtype.kind not in REAL_KINDS:
            raise InputError(f"{name}[{i}] must hold real numbers, got dtype {x.dtype}")
        samples.append(x)
    return samples


def check_durations(durations: Sequence[float] | None, batch: int) -> list[float] | None:
    """One finite duration > 0 (seconds) per video, or None (then each video lasts its clips x clip length)."""
    if durations is None:
        return None
    if isinstance(durations, (str, bytes)) or np.ndim(durations) != 1:
        raise InputError(f"durations must be a list of one duration (seconds) per video, got {durations!r}"[:200])
    values = np.asarray(durations)
    if values.dtype.kind not in REAL_KINDS:
        raise InputError(f"durations must be numbers (seconds), got dtype {values.dtype}")
    if len(values) != batch:
        raise InputError(f"got {len(values)} durations for {batch} videos")
    for i, d in enumerate(values.tolist()):
        if not (math.isfinite(d) and d > 0):
            raise InputError(f"durations[{i}] must be a finite number of seconds > 0, got {d!r}")
    return [float(d) for d in values.tolist()]


def check_top_k(top_k: int) -> int:
    """``top_k`` moments per query: an integer >= 1 (0 or a negative number would silently slice the list)."""
    if isinstance(top_k, (bool, np.bool_)) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise InputError(f"top_k must be an integer >= 1 (moments returned per query), got {top_k!r}")
    return int(top_k)


FINITE_CHECK_ELEMENTS = 1 << 20  # checked for NaN/Inf at a time: a 2-hour video's check never allocates its size


def check_arrays(cfg: CorebaConfig, kind: str, items: Sequence[np.ndarray]) -> None:
    """Each of ``items`` (``kind``: "video_feats" or "text_feats") an (L, D) array of finite numbers with L >= 1,
    each query within ``max_text_len`` tokens (videos may be of any length: longer ones are windowed);
    :class:`InputError` names the first bad one."""
    dim = cfg.video_dim if kind == "video_feats" else cfg.text_dim
    for i, x in enumerate(items):
        if x.ndim != 2 or x.shape[-1] != dim:
            raise InputError(f"{kind}[{i}] must have shape (L, {dim}), got {x.shape}")
        if x.shape[0] == 0:
            raise InputError(f"{kind}[{i}] is empty (length 0)")
        step = max(1, FINITE_CHECK_ELEMENTS // dim)
        if not all(np.isfinite(x[r: r + step]).all() for r in range(0, len(x), step)):
            raise InputError(f"{kind}[{i}] contains NaN or Inf values")
        if kind == "text_feats" and len(x) > cfg.max_text_len:
            raise InputError(f"{kind}[{i}] has {len(x)} tokens, more than the supported maximum {cfg.max_text_len}")


def check_samples(cfg: CorebaConfig, videos: Sequence[np.ndarray], texts: Sequence[np.ndarray]) -> None:
    """One query per video, at least one of each, every array checked by :func:`check_arrays`."""
    if len(videos) != len(texts):
        raise InputError(f"got {len(videos)} videos but {len(texts)} queries")
    if not videos:
        raise InputError("nothing to predict: the batch is empty")
    check_arrays(cfg, "video_feats", videos)
    check_arrays(cfg, "text_feats", texts)


def _pad_texts(cfg: CorebaConfig, texts: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    B, Lt = len(texts), max(len(t) for t in texts)
    feats, mask = np.zeros((B, Lt, cfg.text_dim), np.float32), np.zeros((B, Lt), bool)
    for i, t in enumerate(texts):
        feats[i, :len(t)], mask[i, :len(t)] = t, True
    return feats, mask


def row_feeds(cfg: CorebaConfig, batch: Sequence[Row], videos: Sequence[np.ndarray],
              texts: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """The engine's four inputs for a batch of rows, padded with bool masks (True = valid).

    Video features are copied once, into the batch. When every row reads one window (several queries of one
    video), that window is broadcast over the batch instead (a view: the engine makes the one contiguous copy it
    needs, rather than the caller making Q copies first)."""
    B = len(batch)
    if B > 1 and shared_window(batch):
        clip = window_features(videos[batch[0].video], batch[0].window)
        video_feats = np.broadcast_to(clip, (B, *clip.shape))
        video_mask = np.ones((B, len(clip)), bool)
    else:
        Lv = max(row.window.num_clips for row in batch)
        video_feats, video_mask = np.zeros((B, Lv, cfg.video_dim), np.float32), np.zeros((B, Lv), bool)
        for i, row in enumerate(batch):
            write_window(video_feats[i], videos[row.video], row.window)
            video_mask[i, :row.window.num_clips] = True
    text_feats, text_mask = _pad_texts(cfg, [texts[row.text] for row in batch])
    return {"video_feats": video_feats, "video_mask": video_mask, "text_feats": text_feats, "text_mask": text_mask}


def pad_batch(cfg: CorebaConfig, videos: Sequence[np.ndarray], texts: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Check each sample ((L, D) arrays, videos within ``max_video_len``) and pad them into one batch with bool
    masks (True = valid): the input :meth:`Predictor.predict_padded` takes."""
    videos, texts = [np.asarray(v) for v in videos], [np.asarray(t) for t in texts]
    check_samples(cfg, videos, texts)
    for i, v in enumerate(videos):
        if len(v) > cfg.max_video_len:
            raise InputError(f"video_feats[{i}] has {len(v)} clips, more than the supported maximum "
                             f"{cfg.max_video_len} of one batch row (Predictor.predict windows longer videos)")
    rows = [Row(i, i, i, Window(0, len(v), 0.0, len(v) * cfg.clip_length, whole=True)) for i, v in enumerate(videos)]
    return row_feeds(cfg, rows, videos, texts)


class Predictor:
    """Answers queries with an engine: :meth:`predict` (one query per video), :meth:`search` (many queries of one
    video); videos of any length (longer than the model's ``max_video_len``: sliding windows, merged, see
    :mod:`coreba.windows`). ``max_batch_size``: engine rows per batch, and so the activations held at once."""

    def __init__(self, engine: Engine, config: CorebaConfig, max_batch_size: int = 64) -> None:
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ValueError(f"max_batch_size must be an integer >= 1, got {max_batch_size!r}")
        self.engine, self.config, self.max_batch_size = engine, config, max_batch_size

    @classmethod
    def from_pretrained(cls, path: str | Path, engine: str = "torch", device: str = "cpu",
                        max_batch_size: int = 64, **engine_options) -> Predictor:
        """``engine``: "torch" (a ``save_pretrained`` dir), "onnxruntime" (.onnx), "openvino" (.onnx, or an int8
        .xml), "tensorrt" (.plan); ``precision="fp32"|"bf16"|"int8"`` where the engine has it
        (``coreba.engines.ENGINE_PRECISIONS``)."""
        config = config_for(path, engine)
        return cls(load_engine(engine, path, device=device, **engine_options), config, max_batch_size)

    def validate(self, feeds: dict[str, np.ndarray]) -> None:
        t = {k: torch.from_numpy(np.asarray(v)) for k, v in feeds.items()}
        validate_inputs(self.config, t["video_feats"], t["video_mask"], t["text_feats"], t["text_mask"])

    def answering(self, top_k: int, mode: PostprocessMode, stride: int | None, iou_threshold: float) -> Answering:
        """The call's options, checked (an :class:`InputError` names a bad one)."""
        if mode not in POSTPROCESS_MODES:
            raise InputError(f"mode must be one of {POSTPROCESS_MODES}, got {mode!r}")
        window = self.config.max_video_len
        stride, iou_threshold = check_window_options(stride, iou_threshold, window)
        return Answering(check_top_k(top_k), mode, window, stride, iou_threshold, self.config.clip_length)

    def predict(self, video_feats: Sequence[np.ndarray], text_feats: Sequence[np.ndarray],
                durations: Sequence[float] | None = None, top_k: int = DEFAULT_TOP_K,
                mode: PostprocessMode = "exact", *, stride: int | None = None,
                iou_threshold: float = DEFAULT_NMS_IOU) -> list[QueryResult]:
        """One (Lv_i, Dv) video and one (Lt_i, Dt) query per sample; ``durations`` in seconds (default:
        clips x clip length); ``mode``: "exact" times or QD-DETR's "qvhighlights" rule. Videos longer than
        ``max_video_len`` clips: windows ``stride`` clips apart (default half a window), merged with temporal NMS
        at ``iou_threshold``. Anything else than that is an :class:`InputError` naming it."""
        videos, texts = as_samples("video_feats", video_feats), as_samples("text_feats", text_feats)
        check_samples(self.config, videos, texts)
        queries = [Query(video=i, text=i) for i in range(len(videos))]
        return self._answer(videos, texts, durations, queries, self.answering(top_k, mode, stride, iou_threshold))

    def search(self, video_feats: np.ndarray, text_feats: Sequence[np.ndarray], duration: float | None = None,
               top_k: int = DEFAULT_TOP_K, mode: PostprocessMode = "exact", *, stride: int | None = None,
               iou_threshold: float = DEFAULT_NMS_IOU) -> list[QueryResult]:
        """Q queries (a list of (Lt_q, Dt) arrays) over ONE (Lv, Dv) video: one answer per query, the same as
        ``predict([video] * Q, queries)`` but batched per window without Q copies of the video."""
        (video,), texts = as_samples("video_feats", [video_feats]), as_samples("text_feats", text_feats)
        if not texts:
            raise InputError("text_feats is empty: search needs at least one query")
        check_arrays(self.config, "video_feats", [video])  # once, however many queries
        check_arrays(self.config, "text_feats", texts)
        queries = [Query(video=0, text=q) for q in range(len(texts))]
        durations = None if duration is None else [duration]
        return self._answer([video], texts, durations, queries, self.answering(top_k, mode, stride, iou_threshold))

    def _answer(self, videos: list[np.ndarray], texts: list[np.ndarray], durations: Sequence[float] | None,
                queries: list[Query], answering: Answering) -> list[QueryResult]:
        checked = check_durations(durations, len(videos))
        seconds = checked or [len(v) * self.config.clip_length for v in videos]
        return answer_queries([len(v) for v in videos], seconds, queries,
                              lambda batch: self.run_rows(batch, videos, texts, answering), answering,
                              self.max_batch_size)

    def run_rows(self, batch: Sequence[Row], videos: Sequence[np.ndarray], texts: Sequence[np.ndarray],
                 answering: Answering) -> list[QueryResult]:
        """One engine call for a batch of rows, each answered with its top k; whole-video rows in the caller's
        mode, window rows in exact times (for the merge, :mod:`coreba.schedule`)."""
        feeds = row_feeds(self.config, batch, videos, texts)
        out = self.engine.run(feeds)
        durations = row_durations(batch)
        results: list[QueryResult | None] = [None] * len(batch)
        whole = [i for i, row in enumerate(batch) if row.window.whole]
        windowed = [i for i, row in enumerate(batch) if not row.window.whole]
        for index, mode in ((whole, answering.mode), (windowed, "exact")):
            if index:
                answers = postprocess(out["pred_logits"][index], out["pred_spans"][index],
                                      out["saliency_scores"][index], feeds["video_mask"][index], durations[index],
                                      clip_length=answering.clip_length, top_k=answering.top_k, mode=mode)
                for i, answer in zip(index, answers, strict=True):
                    results[i] = answer
        return results  # type: ignore[return-value]

    def predict_padded(self, feeds: dict[str, np.ndarray], durations: Sequence[float] | None = None,
                       top_k: int = DEFAULT_TOP_K, mode: PostprocessMode = "exact") -> list[QueryResult]:
        """An already padded batch (the four named inputs, bool masks), within ``max_video_len`` clips."""
        self.validate(feeds)
        durations = check_durations(durations, len(feeds["video_mask"]))
        top_k = check_top_k(top_k)
        out = self.engine.run(feeds)
        return postprocess(out["pred_logits"], out["pred_spans"], out["saliency_scores"], feeds["video_mask"],
                           durations, clip_length=self.config.clip_length, top_k=top_k, mode=mode)
