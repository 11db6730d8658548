"""Configuration dataclasses: one per part (model, losses, training).

Every hyper-parameter of the COREBA paper (Sec. IV-B) and of QD-DETR, on which it is built, has a
field here with the paper's value as its default, so a checkpoint's ``config.json`` rebuilds the
model exactly and no other module holds a magic number.

Every row of the paper's ablation tables (II-V) is a named preset: ``CorebaConfig.preset("table5_a")``
(:data:`PRESETS` lists them with the paper row and what each changes). ``CorebaConfig.preset("qd_detr")`` is
QD-DETR's own released configuration, what :mod:`coreba.convert` builds for a default QD-DETR checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

AttentionBackend = Literal["math", "sdpa", "triton"]
ATTENTION_BACKENDS: tuple[str, ...] = ("math", "sdpa", "triton")


class ConfigError(ValueError):
    """A configuration value that cannot describe a valid model."""


@dataclass(frozen=True)
class Range:
    """The allowed values of a numeric field: ``lo <= x <= hi`` (``<`` at an open end), and why the bounds."""

    lo: float
    hi: float
    why: str = ""
    open_lo: bool = False
    open_hi: bool = False

    def contains(self, x: float) -> bool:
        above = x > self.lo if self.open_lo else x >= self.lo
        below = x < self.hi if self.open_hi else x <= self.hi
        return above and below

    def __str__(self) -> str:
        text = f"{'(' if self.open_lo else '['}{self.lo:g}, {self.hi:g}{')' if self.open_hi else ']'}"
        return f"{text} ({self.why})" if self.why else text


# A field the table of its class does not list: integers are counts (layers, heads, ...) in DEFAULT_INT_RANGE,
# floats must be finite. So a field added later is checked without anyone remembering to list it.
DEFAULT_INT_RANGE = Range(1, 256, "a count of layers, heads or tokens")


def _kind(annotation: Any) -> tuple[str, tuple]:
    """("bool" | "int" | "float" | "str" | "choice" | "other", choices) of a field's resolved annotation."""
    if typing.get_origin(annotation) is Literal:
        return "choice", typing.get_args(annotation)
    names = {bool: "bool", int: "int", float: "float", str: "str"}
    return names.get(annotation, "other"), ()


def check_fields(obj: Any, ranges: dict[str, Range]) -> None:
    """Check each dataclass field of ``obj`` against its type annotation and its range; raise
    :class:`ConfigError` naming the first bad field. Bools are not integers here, and NaN/inf are refused."""
    cls = type(obj)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(obj):
        name, value = f"{cls.__name__}.{f.name}", getattr(obj, f.name)
        kind, choices = _kind(hints[f.name])
        if kind == "choice":
            if not any(type(value) is type(c) and value == c for c in choices):
                raise ConfigError(f"{name} must be one of {choices}, got {value!r}")
        elif kind == "bool":
            if not isinstance(value, bool):
                raise ConfigError(f"{name} must be true or false, got {value!r}")
        elif kind == "str":
            if not isinstance(value, str):
                raise ConfigError(f"{name} must be a string, got {value!r}")
        elif kind in ("int", "float"):
            is_int = isinstance(value, int) and not isinstance(value, bool)
            if kind == "int" and not is_int:
                raise ConfigError(f"{name} must be an integer, got {value!r}")
            if kind == "float" and not (is_int or isinstance(value, float)):
                raise ConfigError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ConfigError(f"{name} must be finite, got {value!r}")
            bound = ranges.get(f.name, DEFAULT_INT_RANGE if kind == "int" else None)
            if bound is not None and not bound.contains(value):
                raise ConfigError(f"{name} must be in {bound}, got {value!r}")


def _from_dict(cls: type, data: dict[str, Any]):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    obj = cls(**data)
    return obj


class _JsonMixin:
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[arg-type]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        return _from_dict(cls, data)

    @classmethod
    def from_json(cls, text: str):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{cls.__name__}: not valid JSON ({err})") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{cls.__name__}: no config file at {path}")
        return cls.from_json(path.read_text())


_WIDTH = "wider layers would need gigabytes per weight matrix"
# Why each bound: the model is built, exported and served at these sizes, and the checkpoint loader checks a
# config.json against them before allocating anything (a typo like max_video_len: 10**9 fails here, not in the
# allocator).
COREBA_RANGES: dict[str, Range] = {
    "video_dim": Range(1, 65536, "feature width; " + _WIDTH),
    "text_dim": Range(1, 65536, "feature width; " + _WIDTH),
    "max_video_len": Range(1, 4096, "clips; exports, TensorRT profiles and serving configs size buffers by it, "
                                    "attention memory grows with its square; 4096 clips = 2.3 h at 2 s"),
    "max_text_len": Range(1, 1024, "query tokens; CLIP's text encoder has 77"),
    "clip_length": Range(0, 3600, "seconds per clip", open_lo=True),
    "hidden_dim": Range(2, 16384, _WIDTH),
    "num_heads": Range(1, 256, "attention heads"),
    "ffn_dim": Range(1, 65536, _WIDTH),
    "dropout": Range(0, 1, "a probability below 1", open_hi=True),
    "input_dropout": Range(0, 1, "a probability below 1", open_hi=True),
    "num_balance_tokens": Range(0, 1024, "0 turns Balance Tokens off"),
    "num_queries": Range(1, 1024, "moment queries"),
}


@dataclass
class CorebaConfig(_JsonMixin):
    """The model's architecture. Defaults are the paper's (Sec. IV-B) and QD-DETR's."""

    # input features: SlowFast 2304 + CLIP 512 + 2 temporal-endpoint features; CLIP text 512
    video_dim: int = 2818
    text_dim: int = 512
    max_video_len: int = 75  # clips (150 s at 2 s a clip)
    max_text_len: int = 32  # query tokens
    clip_length: float = 2.0  # seconds per clip

    # transformer
    hidden_dim: int = 256
    num_heads: int = 8
    ffn_dim: int = 1024
    dropout: float = 0.1
    input_dropout: float = 0.5
    activation: Literal["prelu", "relu", "gelu"] = "prelu"  # QD-DETR's layers use PReLU
    # input MLPs (LayerNorm, dropout, Linear, ReLU blocks): the paper's "3-layer MLPs"; QD-DETR's n_input_proj is 2
    num_input_proj_layers: int = 3
    # QD-DETR's use_txt_pos: a learned position per query token, added to the text keys of the T2V layers
    text_position_embedding: bool = False

    # Balance Tokens (Sec. III-A)
    num_balance_tokens: int = 7

    # CFC module + Recurrent Alignment Mechanism (Sec. III-B, III-C)
    encoder_type: Literal["cfc", "qd_detr"] = "cfc"
    num_recurrent: int = 3  # N_r: turns (recurrent) or modules (stacked)
    recurrent_mode: Literal["recurrent", "stacked"] = "recurrent"
    use_tv_block: bool = True
    share_vt_block: bool = True
    self_attention: Literal["shared", "separate", "none"] = "shared"
    num_qd_layers: int = 1  # cross-attention layers of the QD-DETR-style encoder (encoder_type="qd_detr")

    # saliency encoder and moment decoder (Sec. III-D, as QD-DETR)
    num_saliency_layers: int = 2
    num_decoder_layers: int = 2
    num_queries: int = 10

    # inference
    attention_backend: AttentionBackend = "sdpa"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Every field's type (from its annotation) and range (:data:`COREBA_RANGES`), then the relations between
        fields; raises :class:`ConfigError` naming the field. A config.json is read through here, so a bad value
        is refused before any tensor is allocated."""
        check_fields(self, COREBA_RANGES)
        if self.hidden_dim % self.num_heads:
            raise ConfigError(f"hidden_dim {self.hidden_dim} is not divisible by num_heads {self.num_heads}")
        if self.hidden_dim % 2:
            raise ConfigError(f"hidden_dim must be even for the sine position embedding, got {self.hidden_dim}")
        if self.text_position_embedding and self.encoder_type != "qd_detr":
            raise ConfigError("CorebaConfig.text_position_embedding (QD-DETR's use_txt_pos) exists only for "
                              f"encoder_type='qd_detr', got encoder_type={self.encoder_type!r}")

    def replace(self, **changes: Any) -> CorebaConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> CorebaConfig:
        """The config of a paper row (see :data:`PRESETS`), with ``overrides`` (e.g. feature dims) on top."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name].changes, **overrides})


@dataclass(frozen=True)
class Preset:
    """A named config: the paper row it reproduces and its changes from the defaults (the paper's model)."""

    row: str
    changes: Mapping[str, Any]


# Rows of Table V keep everything outside the fusion part as COREBA's (3-block input MLPs, 2 saliency-encoder
# layers, 2 decoder layers), so two rows differ only in the designs the table names. "qd_detr" rows use
# QD-DETR's text-to-video cross-attention layers (Sec. IV-E4: "a QD-DETR baseline model with one cross-modal
# fusion layer"). Table III qd3/qd4 ("3 and 4 fusion layers introduced in QD-DETR, along with the same number of
# Balance Tokens") are single passes: QD-DETR has no recurrence, and the rows compare parameter counts, which
# recurrence would not change.
_QD = {"encoder_type": "qd_detr", "num_qd_layers": 1}
_CFC = {"encoder_type": "cfc"}
_NB, _NR = "num_balance_tokens", "num_recurrent"
PRESETS: dict[str, Preset] = {
    "coreba": Preset("Table I COREBA (= Table II N_b=7, III (e), IV REC_3, V (i))", {}),
    **{f"table2_nb{n}": Preset(f"Table II, N_b = {n}", {_NB: n}) for n in (0, 1, 3, 5, 7, 9)},
    "table3_qd3": Preset("Table III (qd3): N_tv=0, N_vt=3, N_s=0", {**_QD, "num_qd_layers": 3, _NR: 1, _NB: 7}),
    "table3_qd4": Preset("Table III (qd4): N_tv=0, N_vt=4, N_s=0", {**_QD, "num_qd_layers": 4, _NR: 1, _NB: 7}),
    "table3_a": Preset("Table III (a): no TV-block", {"use_tv_block": False}),
    "table3_b": Preset("Table III (b): no self-attention block", {"self_attention": "none"}),
    "table3_c": Preset("Table III (c): two VT-blocks", {"share_vt_block": False}),
    "table3_d": Preset("Table III (d): two self-attention blocks", {"self_attention": "separate"}),
    "table3_e": Preset("Table III (e): one TV, one shared VT, one shared SA (COREBA)", {}),
    **{f"table4_rec{n}": Preset(f"Table IV REC_{n}: 1 CFC module, {n} recurrent turns",
                                {_NR: n, "recurrent_mode": "recurrent"}) for n in (2, 3, 4, 5)},
    **{f"table4_mod{n}": Preset(f"Table IV MOD_{n}: {n} CFC modules, no recurrence",
                                {_NR: n, "recurrent_mode": "stacked"}) for n in (2, 3, 4, 5)},
    "table5_a": Preset("Table V (a): QD-DETR baseline (no RAM, CFC or BAT)", {**_QD, _NR: 1, _NB: 0}),
    "table5_b": Preset("Table V (b): RAM", {**_QD, _NR: 3, _NB: 0}),
    "table5_c": Preset("Table V (c): CFC", {**_CFC, _NR: 1, _NB: 0}),
    "table5_d": Preset("Table V (d): BAT", {**_QD, _NR: 1, _NB: 7}),
    "table5_e": Preset("Table V (e): RAM + CFC", {**_CFC, _NR: 3, _NB: 0}),
    "table5_f": Preset("Table V (f): RAM + BAT", {**_QD, _NR: 3, _NB: 7}),
    "table5_g": Preset("Table V (g): CFC + BAT", {**_CFC, _NR: 1, _NB: 7}),
    "table5_i": Preset("Table V (i): RAM + CFC + BAT (COREBA)", {**_CFC, _NR: 3, _NB: 7}),
    # Not a paper row: QD-DETR's released model (its enc_layers = 2 sets both the T2V and the saliency encoder).
    "qd_detr": Preset("QD-DETR as released (not a paper row)",
                      {**_QD, "num_qd_layers": 2, "num_saliency_layers": 2, _NR: 1, _NB: 0,
                       "num_input_proj_layers": 2}),
}


@dataclass
class LossConfig(_JsonMixin):
    """Loss weights and matching costs, as QD-DETR (and the paper, Sec. IV-B)."""

    # Hungarian matching costs
    cost_span: float = 10.0
    cost_giou: float = 1.0
    cost_class: float = 4.0
    # moment retrieval losses
    span_weight: float = 10.0  # L1 on (cx, w)
    giou_weight: float = 1.0
    label_weight: float = 4.0  # cross-entropy
    background_weight: float = 0.1  # class weight of "background" in the cross-entropy
    # highlight detection losses
    margin_weight: float = 1.0
    saliency_margin: float = 0.2
    contrastive_weight: float = 1.0
    contrastive_tau: float = 0.5
    max_rank: int = 12  # saliency labels are sums of 3 annotator scores, 0..12
    negative_weight: float = 1.0
    aux_loss: bool = True


@dataclass
class TrainConfig(_JsonMixin):
    """Optimisation and bookkeeping, as QD-DETR's released training recipe."""

    epochs: int = 200
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-4
    grad_clip: float = 0.1
    eval_every: int = 5  # epochs
    seed: int = 2018
    num_workers: int = 0
    output_dir: str = "artifacts/run"
    model: CorebaConfig = field(default_factory=CorebaConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        model = CorebaConfig.from_dict(data.pop("model", {}))
        loss = LossConfig.from_dict(data.pop("loss", {}))
        obj = _from_dict(cls, data)
        obj.model, obj.loss = model, loss
        return obj
