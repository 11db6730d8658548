"""Eager PyTorch as an engine: the reference every other engine is compared with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from coreba.interface import OUTPUT_NAMES
from coreba.model import Coreba


class TorchEngine:
    name = "torch"

    def __init__(self, model: Coreba, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = model.config

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", attention_backend: str | None = None):
        model = Coreba.from_pretrained(path, map_location=device)
        if attention_backend is not None:
            model.set_attention_backend(attention_backend)
        return cls(model, device)

    @torch.inference_mode()
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = {k: torch.as_tensor(np.ascontiguousarray(v), device=self.device) for k, v in feeds.items()}
        out = self.model(inputs["video_feats"], inputs["video_mask"], inputs["text_feats"], inputs["text_mask"])
        return {k: out[k].float().cpu().numpy() for k in OUTPUT_NAMES}
