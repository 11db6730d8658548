"""One inference API over every engine: features in, moments in seconds and per-clip saliency out.

    predictor = Predictor.from_pretrained("artifacts/coreba.onnx", engine="onnxruntime")
    predictor = Predictor.from_pretrained("artifacts/coreba.onnx", engine="openvino", precision="bf16")
    results = predictor.predict([video_feats], [text_feats], durations=[150.0])
    results[0].moments    # [[start_s, end_s, score], ...] sorted by score
    results[0].saliency   # one score per valid 2 s clip

Inputs of different lengths are validated, padded into one batch with masks (exact: a sample's output
does not depend on its padding or batch-mates), run by the engine, and post-processed by
:func:`coreba.postprocess.postprocess` (the same function ``coreba.predict`` and the server use).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from coreba.config import CorebaConfig
from coreba.engines import ENGINE_NAMES, Engine, load_engine
from coreba.model.validation import InputError, validate_inputs
from coreba.postprocess import DEFAULT_TOP_K, QueryResult, postprocess


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
        return CorebaConfig.from_dict(json.loads(sidecar.read_text())["config"])
    if not path.is_file():
        raise FileNotFoundError(f"no {'OpenVINO IR' if path.suffix == '.xml' else 'ONNX model'} at {path}")
    if path.suffix == ".xml":
        from coreba.engines.openvino_engine import read_rt_info

        text = read_rt_info(path, "config")
        if text is None:
            raise ValueError(f"{path} has no coreba/config rt_info: write it with export/quantize.py")
        return CorebaConfig.from_json(text)
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if "config" not in meta:
        raise ValueError(f"{path} has no 'config' metadata: export it with export/to_onnx.py")
    return CorebaConfig.from_json(meta["config"])


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
                durations: Sequence[float] | None = None, top_k: int = DEFAULT_TOP_K) -> list[QueryResult]:
        """One (Lv_i, Dv) video and one (Lt_i, Dt) query per sample; ``durations`` in seconds (default:
        valid clips x clip length)."""
        if durations is not None and len(durations) != len(video_feats):
            raise InputError(f"got {len(durations)} durations for {len(video_feats)} videos")
        results: list[QueryResult] = []
        for start in range(0, len(video_feats), self.max_batch_size):
            stop = start + self.max_batch_size
            feeds = pad_batch(self.config, video_feats[start:stop], text_feats[start:stop])
            results += self.predict_padded(feeds, None if durations is None else durations[start:stop], top_k)
        return results

    def predict_padded(self, feeds: dict[str, np.ndarray], durations: Sequence[float] | None = None,
                       top_k: int = DEFAULT_TOP_K) -> list[QueryResult]:
        """An already padded batch (the four named inputs, bool masks)."""
        self.validate(feeds)
        out = self.engine.run(feeds)
        return postprocess(out["pred_logits"], out["pred_spans"], out["saliency_scores"], feeds["video_mask"],
                           durations, clip_length=self.config.clip_length, top_k=top_k)
