"""COREBA: input projections, Balance Tokens, the recurrent CFC encoder, saliency encoder, moment decoder.

``forward`` returns a dict (DETR style): ``pred_logits`` (B, Q, 2; index 0 = foreground), ``pred_spans``
(B, Q, 2; normalised cx, w), ``saliency_scores`` (B, Lv); in training also ``aux_outputs`` (earlier decoder
layers), ``saliency_scores_neg`` (the negative-pair pass: each video with the next sample's query, as
QD-DETR) and ``video_mask``. Inference and export never run the negative pass.

A sample's outputs depend only on that sample: masks are per sample and batch-major, positions are
computed from the sample's own mask, and padded features are zeroed before use. (QD-DETR's T2V mask is
repeated head-major, so there a sample's output can depend on its batch-mates; not carried over.)

``encoder_type="qd_detr"`` with ``CorebaConfig.preset("qd_detr")`` (or whatever :mod:`coreba.convert` reads
from a checkpoint) IS QD-DETR's model: the same parameters and, on any input where QD-DETR's mask bug does
not act, the same outputs (tested against outputs of QD-DETR's own code, ``tests/data/qd_detr``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from coreba.atomic import atomic_file
from coreba.config import ATTENTION_BACKENDS, ConfigError, CorebaConfig
from coreba.model.attention import MultiHeadAttention, triton_usable
from coreba.model.checkpoint import CheckpointError, check_finite, check_header, expected_tensors, read_header
from coreba.model.decoder import MomentDecoder
from coreba.model.encoder import build_encoder
from coreba.model.layers import InputProjection, TextPositionEmbedding, video_position_embedding
from coreba.model.saliency import SaliencyEncoder
from coreba.model.validation import validate_inputs

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# Bump when forward or initialisation semantics change without changing any parameter's name or shape: caches
# of trained weights (coreba.pretrained) key on architecture_fingerprint(), which includes it.
MODEL_REVISION = 2  # 2 (issue 11): QD-DETR's decoder heads and T2V residual, xavier init, std-1 saliency token


def _is_exporting() -> bool:
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


class Coreba(nn.Module):
    def __init__(self, config: CorebaConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        d = config.hidden_dim
        self.video_proj = InputProjection(config.video_dim, d, config.input_dropout, config.num_input_proj_layers)
        self.text_proj = InputProjection(config.text_dim, d, config.input_dropout, config.num_input_proj_layers)
        self.text_pos = (TextPositionEmbedding(config.max_text_len, d, config.input_dropout)
                         if config.text_position_embedding else None)
        nb = config.num_balance_tokens
        self.balance_tokens = nn.Parameter(torch.randn(nb, d) * 0.02) if nb else None  # F_b, eq. (1)
        self.encoder = build_encoder(config)
        self.saliency = SaliencyEncoder(config)
        self.decoder = MomentDecoder(config)
        self.set_attention_backend(config.attention_backend)

    # ----------------------------------------------------------------------------------------- backends
    def set_attention_backend(self, backend: str) -> None:
        """"math" or "sdpa" everywhere; "triton" puts the VT-block on the fused kernel, the rest on SDPA."""
        if backend not in ATTENTION_BACKENDS:
            raise ValueError(f"unknown attention backend {backend!r}; choose from {ATTENTION_BACKENDS}")
        for module in self.modules():
            if isinstance(module, MultiHeadAttention):
                module.backend = "sdpa" if backend == "triton" else backend
        if backend == "triton":
            for block in self.encoder.vt_blocks():
                block.attn.backend = "triton"
        self.config.attention_backend = backend

    # ------------------------------------------------------------------------------------------ forward
    def forward(self, video_feats: Tensor, video_mask: Tensor, text_feats: Tensor, text_mask: Tensor,
                validate: bool = True) -> dict[str, Tensor]:
        """video_feats (B, Lv, Dv), video_mask (B, Lv) bool, text_feats (B, Lt, Dt), text_mask (B, Lt) bool."""
        if validate and not _is_exporting():
            validate_inputs(self.config, video_feats, video_mask, text_feats, text_mask)
            if self.config.attention_backend == "triton":
                if self.training:
                    raise RuntimeError("the Triton attention backend is forward-only (inference); train with "
                                       "attention_backend='math' or 'sdpa', or call model.eval()")
                if reason := triton_usable(video_feats.device):
                    raise RuntimeError(reason)
        video_pos = video_position_embedding(video_mask, self.config.hidden_dim).to(video_feats.dtype)
        video = self.video_proj(torch.where(video_mask[..., None], video_feats, 0.0))  # F'_v (B, Lv, D)
        text, text_mask, text_pos = self._balanced_text(text_feats, text_mask)
        memory, saliency = self._encode(video, video_mask, video_pos, text, text_mask, text_pos)
        layers = self.decoder(memory, video_mask, video_pos)
        out: dict = dict(layers[-1], saliency_scores=saliency)
        if self.training:
            out["aux_outputs"] = layers[:-1]
            out["video_mask"] = video_mask
            # negative pairs: video i with query i+1 (QD-DETR's order); training only. Text positions travel
            # with their query (QD-DETR reuses the positive query's, which differ only with use_txt_pos).
            neg = [None if x is None else x.roll(-1, dims=0) for x in (text, text_mask, text_pos)]
            out["saliency_scores_neg"] = self._encode(video, video_mask, video_pos, *neg)[1]
        return out

    def _balanced_text(self, text_feats: Tensor, text_mask: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """F~_t = [F'_t || F_b], eq. (1): (B, Lt + Lb, D) with the Balance Tokens always valid; its mask; and
        the text positions (None without ``text_position_embedding``; zero for the Balance Tokens)."""
        text = self.text_proj(torch.where(text_mask[..., None], text_feats, 0.0))
        text_pos = None if self.text_pos is None else self.text_pos(text)
        if self.balance_tokens is None:
            return text, text_mask, text_pos
        B = text.shape[0]
        balance = self.balance_tokens.to(text.dtype).expand(B, -1, -1)
        mask = torch.cat([text_mask, text_mask.new_ones(B, balance.shape[1])], dim=1)
        if text_pos is not None:
            text_pos = torch.cat([text_pos, torch.zeros_like(balance)], dim=1)
        return torch.cat([text, balance], dim=1), mask, text_pos

    def _encode(self, video: Tensor, video_mask: Tensor, video_pos: Tensor, text: Tensor,
                text_mask: Tensor, text_pos: Tensor | None) -> tuple[Tensor, Tensor]:
        f_fine = self.encoder(video, video_mask, video_pos, text, text_mask, text_pos)
        return self.saliency(f_fine, video_mask, video_pos)

    # -------------------------------------------------------------------------------------- checkpoints
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (no pickle: loading never executes code). Each file is
        written atomically (:mod:`coreba.atomic`): an interrupted save leaves the previous one readable."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        with atomic_file(directory / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt", "config": self.config.to_json()})
        with atomic_file(directory / CONFIG_NAME) as tmp:
            self.config.save(tmp)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu",
                        **config_overrides) -> Coreba:
        """Load a ``save_pretrained`` directory; raises :class:`CheckpointError` saying what is wrong.

        Order matters (:mod:`coreba.model.checkpoint`): the config is validated, then checked against the
        weights' header (names, count, shapes, dtypes) on a meta-device model, before anything is allocated;
        then the weights are read and refused if any is NaN/Inf."""
        directory = Path(directory)
        if not directory.is_dir():
            raise CheckpointError(f"checkpoint directory {directory} does not exist")
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (directory / name).is_file():
                raise CheckpointError(f"checkpoint {directory} has no {name}")
        try:
            config = CorebaConfig.from_json((directory / CONFIG_NAME).read_text())
            if config_overrides:
                config = config.replace(**config_overrides)
        except (ConfigError, TypeError) as err:
            raise CheckpointError(f"{directory / CONFIG_NAME}: {err}") from err
        weights = directory / WEIGHTS_NAME
        header = read_header(weights)
        with torch.device("meta"):
            expected = expected_tensors(cls(config))
        check_header(header, expected, str(directory))
        try:
            state = load_file(str(weights), device=str(map_location))
        except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{weights} is not a readable safetensors file: {err}") from err
        check_finite(state, str(directory))
        model = cls(config)
        model.load_state_dict(state)
        return model.to(map_location)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def architecture_fingerprint(config: CorebaConfig) -> str:
    """A digest of the model ``config`` builds: every parameter's name and shape, and :data:`MODEL_REVISION`.

    It changes whenever code changes what a checkpoint holds or means, so a cache of trained weights keyed on
    it is never reused across such a change. Built on the meta device: no memory, no initialisation cost.
    """
    with torch.device("meta"):
        model = Coreba(config.replace(attention_backend="math"))
    shapes = [(name, list(t.shape)) for name, t in model.state_dict().items()]
    return hashlib.sha256(json.dumps([MODEL_REVISION, shapes]).encode()).hexdigest()[:16]
