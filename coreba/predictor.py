"""One inference API over every engine: features in, moments in seconds and per-clip saliency out.

    predictor = Predictor.from_pretrained("artifacts/coreba.onnx", engine="onnxruntime")
    predictor = Predictor.from_pretrained("artifacts/coreba.onnx", engine="openvino", precision="bf16")
    results = predictor.predict([video_feats], [text_feats], durations=[150.0])
    results[0].moments    # [[start_s, end_s, score], ...] sorted by score, exact times
    results[0].saliency   # one score per valid 2 s clip

Times are exact by default (``mode="exact"`` of :func:`coreba.postprocess.postprocess`); ``mode="qvhighlights"``
writes them with QD-DETR's QVHighlights submission rule (multiples of the clip length, 4-decimal scores).

Inputs of different lengths are validated, padded into one batch with masks (exact: a sample's output
does not depend on its padding or batch-mates), run by the engine, and post-processed by
:func:`coreba.postprocess.postprocess` (the same function ``coreba.predict`` and the server use).
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
from coreba.postprocess import DEFAULT_TOP_K, PostprocessMode, QueryResult, postprocess


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


def pad_batch(cfg: CorebaConfig, videos: Sequence[np.ndarray], texts: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Validate each sample ((L, D) arrays) and pad them into one batch with bool masks (True = valid)."""
    if len(videos) != len(texts):
        raise InputError(f"got {len(videos)} videos but {len(texts)} queries")
    if not videos:
        raise InputError("nothing to predict: the batch is empty")
    for kind, items, dim in (("video_feats", videos, cfg.video_dim), ("text_feats", texts, cfg.text_dim)):
        for i, x in enumerate(items):
            x = np.asarray(x)
            if x.ndim != 2 or x.shape[-1] != dim:
                raise InputError(f"{kind}[{i}] must have shape (L, {dim}), got {x.shape}")
            if x.shape[0] == 0:
                raise InputError(f"{kind}[{i}] is empty (length 0)")
    B = len(videos)
    Lv, Lt = max(len(v) for v in videos), max(len(t) for t in texts)
    feeds = {
        "video_feats": np.zeros((B, Lv, cfg.video_dim), np.float32),
        "video_mask": np.zeros((B, Lv), bool),
        "text_feats": np.zeros((B, Lt, cfg.text_dim), np.float32),
        "text_mask": np.zeros((B, Lt), bool),
    }
    for i, (v, t) in enumerate(zip(videos, texts)):
        feeds["video_feats"][i, :len(v)], feeds["video_mask"][i, :len(v)] = v, True
        feeds["text_feats"][i, :len(t)], feeds["text_mask"][i, :len(t)] = t, True
    return feeds


class Predictor:
    def __init__(self, engine: Engine, config: CorebaConfig, max_batch_size: int = 64) -> None:
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

    def predict(self, video_feats: Sequence[np.ndarray], text_feats: Sequence[np.ndarray],
                durations: Sequence[float] | None = None, top_k: int = DEFAULT_TOP_K,
                mode: PostprocessMode = "exact") -> list[QueryResult]:
        """One (Lv_i, Dv) video and one (Lt_i, Dt) query per sample; ``durations`` in seconds (default:
        valid clips x clip length); ``mode``: "exact" times or QD-DETR's "qvhighlights" rule. Anything else than
        that is an :class:`InputError` naming it."""
        video_feats, text_feats = as_samples("video_feats", video_feats), as_samples("text_feats", text_feats)
        durations = check_durations(durations, len(video_feats))
        top_k = check_top_k(top_k)
        results: list[QueryResult] = []
        for start in range(0, len(video_feats), self.max_batch_size):
            stop = start + self.max_batch_size
            feeds = pad_batch(self.config, video_feats[start:stop], text_feats[start:stop])
            results += self.predict_padded(feeds, None if durations is None else durations[start:stop], top_k, mode)
        return results

    def predict_padded(self, feeds: dict[str, np.ndarray], durations: Sequence[float] | None = None,
                       top_k: int = DEFAULT_TOP_K, mode: PostprocessMode = "exact") -> list[QueryResult]:
        """An already padded batch (the four named inputs, bool masks)."""
        self.validate(feeds)
        durations = check_durations(durations, len(feeds["video_mask"]))
        top_k = check_top_k(top_k)
        out = self.engine.run(feeds)
        return postprocess(out["pred_logits"], out["pred_spans"], out["saliency_scores"], feeds["video_mask"],
                           durations, clip_length=self.config.clip_length, top_k=top_k, mode=mode)
