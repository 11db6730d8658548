"""Eager PyTorch as an engine: the reference every other engine is compared with.

``precision="bf16"`` casts the model's weights and the input features to bfloat16 (masks stay bool, outputs come
back as float32). A cast model rather than autocast: autocast re-casts every weight on every call, and keeps
LayerNorm and Softmax in fp32 only by its own op lists. On the CPU, bf16 is refused where the CPU lacks
AVX512_BF16 / AMX (:mod:`coreba.engines.isa`): PyTorch would emulate it, slower than fp32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from coreba.engines.isa import PrecisionUnavailable, cpu_isa
from coreba.interface import OUTPUT_NAMES
from coreba.model import Coreba

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


class TorchEngine:
    name = "torch"

    def __init__(self, model: Coreba, device: str | torch.device = "cpu", precision: str = "fp32") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
        self.device = torch.device(device)
        if precision == "bf16":
            if self.device.type == "cpu":
                cpu_isa().require(precision, "PyTorch")
            elif self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
                raise PrecisionUnavailable(f"this GPU ({torch.cuda.get_device_name(self.device)}) has no bf16")
        self.precision, self.dtype = precision, PRECISIONS[precision]
        self.model = model.to(self.device, self.dtype).eval()
        self.config = model.config

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", attention_backend: str | None = None,
                        precision: str = "fp32"):
        model = Coreba.from_pretrained(path, map_location=device)
        if attention_backend is not None:
            model.set_attention_backend(attention_backend)
        return cls(model, device, precision)

    @torch.inference_mode()
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = {k: torch.as_tensor(np.ascontiguousarray(v), device=self.device) for k, v in feeds.items()}
        video, text = inputs["video_feats"].to(self.dtype), inputs["text_feats"].to(self.dtype)
        out = self.model(video, inputs["video_mask"], text, inputs["text_mask"])
        return {k: out[k].float().cpu().numpy() for k in OUTPUT_NAMES}
