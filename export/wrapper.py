"""The modules the exporter traces: eager COREBA with export-only choices, returning a fixed tuple.

Two graphs from one wrapper: :class:`ExportWrapper` returns the raw outputs (``export.spec.OUTPUT_NAMES``:
what the evaluator, training and research tools need); :class:`EndToEndWrapper` is the same wrapper with the
post-processing (:class:`export.answer_graph.AnswerGraph`) after it, taking the video's duration too and
returning the user's answer (``export.spec.ANSWER_NAMES``): what serving runs, in one engine call.

* The attention core is the explicit math path (a finite mask fill value, no SDPA kernel selection).
* Inputs are taken as float32 (and bool masks) whatever the graph's precision; an fp16 graph casts them
  inside and returns float32, so every engine and the serving config keep one interface.
* The training-only negative-pair pass and dropout are absent (eval mode).
* Input validation is the caller's job (engines see validated inputs); the graph has no data-dependent
  control flow, so the recurrent turns unroll into N_r copies of the CFC subgraph that share one copy of
  each weight.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from coreba.model import Coreba
from export.answer_graph import AnswerGraph
from export.spec import OUTPUT_NAMES


class ExportWrapper(nn.Module):
    def __init__(self, model: Coreba, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        model = copy.deepcopy(model).eval().to(dtype)
        model.set_attention_backend("math")
        self.model, self.dtype = model, dtype

    def forward(self, video_feats: Tensor, video_mask: Tensor, text_feats: Tensor,
                text_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.model(video_feats.to(self.dtype), video_mask, text_feats.to(self.dtype), text_mask,
                         validate=False)
        return tuple(out[name].float() for name in OUTPUT_NAMES)


class EndToEndWrapper(ExportWrapper):
    """The raw wrapper followed by the post-processing: inputs + ``duration`` (B,) seconds -> moments (B, K, 3),
    saliency (B, Lv), num_clips (B, 1) int32, as :func:`coreba.postprocess.postprocess` computes them."""

    def __init__(self, model: Coreba, dtype: torch.dtype = torch.float32, top_k: int = 10) -> None:
        super().__init__(model, dtype)
        self.answer = AnswerGraph(top_k)

    def forward(self, video_feats: Tensor, video_mask: Tensor, text_feats: Tensor, text_mask: Tensor,
                duration: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        raw = super().forward(video_feats, video_mask, text_feats, text_mask)
        return self.answer(*raw, video_mask, duration)
