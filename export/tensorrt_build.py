"""Build a TensorRT engine from the exported ONNX file, and prove it right before reporting success.

Steps: the profile is checked against the model's max lengths (ONNX metadata ``config``); the graph is
checked statically against TensorRT's operator table (``export.tensorrt_ops``, so an unsupported op fails
with a readable message before the builder runs); ``OnnxParser`` parses the file (every parser error is
collected, with its node and description); the builder gets the precision flags, one optimization profile
over (B, Lv, Lt) and the timing cache (loaded before, saved after, so rebuilds skip tactic timing); the
plan is written; then the engine runs the parity harness of ``export.validate`` against eager PyTorch
on the cases that fit the profile.

Precision: ``fp32`` clears TF32 (strict IEEE fp32 matmuls, checked at the fp32 tolerance); ``tf32`` (TensorRT's
default for fp32 layers), ``fp16`` and ``bf16`` are checked at the fp16 tolerances of ``export.spec`` (bf16 has
fewer mantissa bits than fp16; if it misses them, that is a finding, not a reason to loosen them here).

``trtexec_command`` prints the equivalent ``trtexec`` line, for building the same engine without Python.

An end-to-end graph (``export/to_onnx.py --end-to-end``, metadata ``graph``) gets ``duration`` (B,) in its
profile and its answer checked by ``export.validate.check_answer_parity``; the sidecar records ``graph`` and
``top_k``. TensorRT does not promise an order among exactly equal scores in TopK (ONNX Runtime does).
"""

from __future__ import annotations

import contextlib
import json
import shlex
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import onnx

from coreba.config import CorebaConfig
from coreba.engines.tensorrt_engine import require_cuda, require_tensorrt, trt_logger
from export.spec import (
    DURATION,
    FP16_ANSWER_TOLERANCE,
    FP16_SCORE_TOLERANCE,
    FP16_TOLERANCE,
    FP32_ANSWER_TOLERANCE,
    FP32_TOLERANCE,
    INPUT_NAMES,
    Tolerance,
)
from export.tensorrt_ops import check_tensorrt_compatibility
from export.validate import ParityCase, ParityReport, check_answer_parity, check_parity, parity_cases

PRECISIONS = ("fp32", "tf32", "fp16", "bf16")


class TensorRTBuildError(RuntimeError):
    """The ONNX graph could not be parsed or built into an engine; the message lists every reason."""


class ProfileError(ValueError):
    """An optimization profile that cannot describe valid inputs of the model."""


@dataclass(frozen=True)
class ModelDims:
    """What a profile must fit: feature widths and max lengths (from the ONNX file)."""

    video_dim: int
    text_dim: int
    max_video_len: int
    max_text_len: int


@dataclass(frozen=True)
class ShapeProfile:
    """min <= opt <= max for the batch (B), clips (Lv) and query tokens (Lt); opt is what TensorRT tunes for.

    Defaults: batches of 1..64 tuned for 8 (a serving mix), every length up to the paper's 75 clips and
    32 tokens, tuned for the full lengths (padded batches run at the max length of their longest sample).
    """

    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 64
    min_clips: int = 1
    opt_clips: int = 75
    max_clips: int = 75
    min_tokens: int = 1
    opt_tokens: int = 32
    max_tokens: int = 32

    def __post_init__(self) -> None:
        problems = []
        for axis in ("batch", "clips", "tokens"):
            lo, opt, hi = (getattr(self, f"{k}_{axis}") for k in ("min", "opt", "max"))
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, opt, hi)):
                problems.append(f"{axis}: min/opt/max must be integers, got {lo!r}/{opt!r}/{hi!r}")
            elif lo < 1:
                problems.append(f"{axis}: min must be >= 1, got {lo}")
            elif not lo <= opt <= hi:
                problems.append(f"{axis}: need min <= opt <= max, got {lo}/{opt}/{hi}")
        if problems:
            raise ProfileError("invalid shape profile: " + "; ".join(problems))

    def axis(self, axis: str) -> tuple[int, int, int]:
        return tuple(getattr(self, f"{k}_{axis}") for k in ("min", "opt", "max"))  # type: ignore[return-value]

    def check_fits(self, dims: ModelDims) -> None:
        """Lengths beyond the model's max are not valid inputs (the position tables end there)."""
        problems = []
        if self.max_clips > dims.max_video_len:
            problems.append(f"max clips {self.max_clips} > the model's max_video_len {dims.max_video_len}")
        if self.max_tokens > dims.max_text_len:
            problems.append(f"max tokens {self.max_tokens} > the model's max_text_len {dims.max_text_len}")
        if problems:
            raise ProfileError("shape profile does not fit the model: " + "; ".join(problems))

    def contains(self, batch: int, clips: int, tokens: int) -> bool:
        return (self.min_batch <= batch <= self.max_batch and self.min_clips <= clips <= self.max_clips
                and self.min_tokens <= tokens <= self.max_tokens)

    def input_shapes(self, dims: ModelDims, end_to_end: bool = False
                     ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """input name -> (min, opt, max) shapes, in ``export.spec.INPUT_NAMES`` order (then ``duration`` (B,) for an
        end-to-end graph)."""
        def at(k: int) -> dict[str, tuple[int, ...]]:
            b, v, t = self.axis("batch")[k], self.axis("clips")[k], self.axis("tokens")[k]
            return {"video_feats": (b, v, dims.video_dim), "video_mask": (b, v),
                    "text_feats": (b, t, dims.text_dim), "text_mask": (b, t), DURATION: (b,)}

        lo, opt, hi = at(0), at(1), at(2)
        names = (*INPUT_NAMES, DURATION) if end_to_end else INPUT_NAMES
        return {name: (lo[name], opt[name], hi[name]) for name in names}

    @classmethod
    def for_model(cls, dims: ModelDims, **values: int | None) -> ShapeProfile:
        """Defaults with the length axes capped at the model's max lengths; ``None`` values keep the default."""
        given = {k: v for k, v in values.items() if v is not None}
        unknown = set(given) - {f.name for f in fields(cls)}
        if unknown:
            raise ProfileError(f"unknown profile field(s): {sorted(unknown)}")
        base = {f.name: f.default for f in fields(cls)}
        for axis, cap in (("clips", dims.max_video_len), ("tokens", dims.max_text_len)):
            for k in ("opt", "max"):
                base[f"{k}_{axis}"] = min(base[f"{k}_{axis}"], cap)
        return cls(**{**base, **given})


def _metadata(onnx_path: str | Path) -> dict[str, str]:
    proto = onnx.load(str(onnx_path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def end_to_end_top_k(onnx_path: str | Path) -> int | None:
    """K of an end-to-end graph (its metadata ``top_k``), or None for the raw graph."""
    meta = _metadata(onnx_path)
    return int(meta["top_k"]) if meta.get("graph") == "end_to_end" else None


def read_model_config(onnx_path: str | Path) -> CorebaConfig:
    """The ``CorebaConfig`` the exporter stored in the ONNX metadata (key ``config``)."""
    meta = _metadata(onnx_path)
    if "config" not in meta:
        raise TensorRTBuildError(f"{onnx_path} has no 'config' metadata: export it with export/to_onnx.py, which "
                                 "records the model config the profile and the parity check need")
    return CorebaConfig.from_json(meta["config"])


def model_dims(config: CorebaConfig) -> ModelDims:
    return ModelDims(config.video_dim, config.text_dim, config.max_video_len, config.max_text_len)


def tolerance_for(precision: str) -> tuple[Tolerance, float | None]:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return (FP32_TOLERANCE, None) if precision == "fp32" else (FP16_TOLERANCE, FP16_SCORE_TOLERANCE)


def _shape_arg(shapes: dict[str, tuple[int, ...]]) -> str:
    return ",".join(f"{name}:{'x'.join(map(str, shape))}" for name, shape in shapes.items())


def trtexec_command(onnx_path: str | Path, plan_path: str | Path, profile: ShapeProfile, precision: str,
                    dims: ModelDims, timing_cache: str | Path | None = None,
                    workspace_gb: float | None = None, end_to_end: bool = False) -> str:
    """The ``trtexec`` line that builds the same engine (same profile, precision and timing cache)."""
    tolerance_for(precision)  # validates the name
    shapes = profile.input_shapes(dims, end_to_end)
    args = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={plan_path}"]
    for k, flag in enumerate(("--minShapes", "--optShapes", "--maxShapes")):
        args.append(f"{flag}={_shape_arg({name: s[k] for name, s in shapes.items()})}")
    args += {"fp32": ["--noTF32"], "tf32": [], "fp16": ["--fp16"], "bf16": ["--bf16"]}[precision]
    if timing_cache is not None:
        args.append(f"--timingCacheFile={timing_cache}")
    if workspace_gb is not None:
        args.append(f"--memPoolSize=workspace:{round(workspace_gb * 1024)}")  # MiB, trtexec's default unit
    return " ".join(shlex.quote(a) for a in args)


def _parser_errors(parser) -> list[str]:
    errors = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        where = f"node {err.node()}"
        with contextlib.suppress(AttributeError):  # node_name/node_operator exist from TensorRT 9.1
            where += f" '{err.node_name()}' ({err.node_operator()})"
        errors.append(f"{where}: {err.desc()} [{err.code()}]")
    return errors


def _set_precision(trt, config, precision: str) -> None:
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)
    elif precision == "tf32":
        config.set_flag(trt.BuilderFlag.TF32)
    elif precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)


def build_engine(onnx_path: str | Path, plan_path: str | Path, profile: ShapeProfile | None = None,
                 precision: str = "fp16", timing_cache: str | Path | None = None,
                 workspace_gb: float | None = None) -> Path:
    """Parse ``onnx_path``, build an engine for ``profile`` at ``precision`` and write it to ``plan_path``."""
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"no ONNX file at {onnx_path}")
    tolerance_for(precision)
    dims = model_dims(read_model_config(onnx_path))
    profile = profile or ShapeProfile.for_model(dims)
    profile.check_fits(dims)
    problems = check_tensorrt_compatibility(onnx_path)
    if problems:
        raise TensorRTBuildError(f"{onnx_path} uses what TensorRT does not support:\n  " + "\n  ".join(problems))
    trt = require_tensorrt()
    require_cuda()

    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = _parser_errors(parser)
        raise TensorRTBuildError(f"TensorRT's ONNX parser rejected {onnx_path} ({len(errors)} error(s)):\n  "
                                 + "\n  ".join(errors))

    config = builder.create_builder_config()
    _set_precision(trt, config, precision)
    if workspace_gb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    trt_profile = builder.create_optimization_profile()
    top_k = end_to_end_top_k(onnx_path)
    for name, (lo, opt, hi) in profile.input_shapes(dims, top_k is not None).items():
        trt_profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(trt_profile)

    cache_path = Path(timing_cache) if timing_cache is not None else None
    if cache_path is not None:
        blob = cache_path.read_bytes() if cache_path.is_file() else b""
        cache = config.create_timing_cache(blob)
        if not config.set_timing_cache(cache, False):  # ignore_mismatch=False: a cache from another GPU is refused
            raise TensorRTBuildError(f"TensorRT refused the timing cache {cache_path} (another GPU or TensorRT "
                                     "version?); delete it to start a new one")

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTBuildError(f"TensorRT failed to build an engine from {onnx_path} at {precision} "
                                 "(the builder's errors are in the TensorRT log above)")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(serialized))
    # The plan carries no model config; the Predictor and serving read it from this sidecar.
    plan_path.with_suffix(".json").write_text(json.dumps({
        "config": read_model_config(onnx_path).to_dict(), "precision": precision,
        "profile": asdict(profile), "onnx": str(onnx_path),
        "graph": "raw" if top_k is None else "end_to_end", "top_k": top_k}, indent=2))
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    return plan_path


def profile_cases(config: CorebaConfig, profile: ShapeProfile) -> list[ParityCase]:
    """The standard parity cases that fit the profile, plus one at the opt shapes and one at the max shapes
    (padded: lengths spread over the profile's range, the longest at the max)."""
    cases = [c for c in parity_cases(config)
             if profile.contains(len(c.video_lens), max(c.video_lens), max(c.text_lens))]

    def spread(k: int, lo: int, hi: int, n: int) -> tuple[int, ...]:
        return tuple(hi if i == 0 else lo + (hi - lo) * ((i * 7 + k) % n) // max(n - 1, 1) for i in range(n))

    for label, b, v, t in (("opt", profile.opt_batch, profile.opt_clips, profile.opt_tokens),
                           ("max", profile.max_batch, profile.max_clips, profile.max_tokens)):
        cases.append(ParityCase(f"{label} B{b} Lv{v} Lt{t} padded", spread(0, profile.min_clips, v, b),
                                spread(3, profile.min_tokens, t, b)))
    return cases


def check_engine_parity(plan_path: str | Path, model, profile: ShapeProfile, precision: str,
                        device: str = "cuda:0", raise_on_failure: bool = True) -> ParityReport:
    """Run the engine and eager PyTorch (fp32, on the CPU: the reference) on every case inside the profile."""
    from coreba.engines.tensorrt_engine import TensorRTEngine

    engine = TensorRTEngine(plan_path, device=device)
    tolerance, score_tol = tolerance_for(precision)
    model = model.eval().float().cpu()
    cases = profile_cases(model.config, profile)
    sidecar = json.loads(Path(plan_path).with_suffix(".json").read_text())
    if sidecar.get("graph") == "end_to_end":
        answer_tol = FP32_ANSWER_TOLERANCE if precision == "fp32" else FP16_ANSWER_TOLERANCE
        return check_answer_parity(engine.run, model, f"TensorRT {precision} end-to-end", sidecar["top_k"],
                                   answer_tol, cases=cases, raise_on_failure=raise_on_failure)
    return check_parity(engine.run, model, f"TensorRT {precision}", tolerance, score_tol, cases=cases,
                        raise_on_failure=raise_on_failure)


def load_checkpoint(checkpoint: str | Path | None, onnx_config: CorebaConfig):
    """The eager model to compare against: ``checkpoint``, else the demo checkpoint when that module exists.
    Refuses a checkpoint whose config differs from the one the ONNX file was exported from."""
    from coreba.model import Coreba

    if checkpoint is None:
        try:
            from coreba.pretrained import demo_checkpoint
        except ImportError as err:
            raise TensorRTBuildError("the parity check needs the eager model: pass --checkpoint (a save_pretrained "
                                     "directory) of the model the ONNX file was exported from") from err
        checkpoint = demo_checkpoint()
    model = Coreba.from_pretrained(checkpoint)
    ours = {k: v for k, v in model.config.to_dict().items() if k != "attention_backend"}
    theirs = {k: v for k, v in onnx_config.to_dict().items() if k != "attention_backend"}
    if ours != theirs:
        diff = {k: (ours.get(k), theirs.get(k)) for k in sorted(set(ours) | set(theirs))
                if ours.get(k) != theirs.get(k)}
        raise TensorRTBuildError(f"checkpoint {checkpoint} is not the model of the ONNX file; config differs "
                                 f"(checkpoint, onnx): {json.dumps(diff)}")
    return model
