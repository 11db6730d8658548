"""Build a TensorRT engine from the exported ONNX file, and prove it right before reporting success.

Steps: the profile is checked against the model's max lengths (ONNX metadata ``config``); the graph is
checked statically against TensorRT's operator table (``export.tensorrt_ops``, so an unsupported op fails
with a readable message before the builder runs); ``OnnxParser`` parses the file (every parser error is
collected, with its node and description); the builder gets the precision, one optimization profile
over (B, Lv, Lt) and the timing cache (loaded before, saved after, so rebuilds skip tactic timing); the
plan is written; then the engine runs the parity harness of ``export.validate`` against eager PyTorch
on the cases that fit the profile.

TensorRT 10 and 11, strongly and weakly typed (:func:`plan_build`):

* **Strongly typed** (the default, and the only kind TensorRT 11 builds): the network is created with
  ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` and every tensor keeps the type the ONNX graph gives
  it, so the precision IS the graph's: the fp32 export builds an fp32 engine (``fp32``: TF32 cleared,
  strict IEEE; ``tf32``: TF32 allowed, TensorRT's default for fp32 layers), the fp16 export
  (``python export/to_onnx.py --fp16``) an fp16 engine. ``BuilderFlag.TF32`` exists in both versions.
* **Weakly typed** (``typing="weak"``, TensorRT 10 only): an fp32 graph with ``BuilderFlag.FP16``/``BF16``,
  letting TensorRT pick reduced-precision kernels layer by layer. TensorRT 11 removed those flags; asking
  for them there is a :class:`PrecisionError` that says what to do instead, never an AttributeError.

``fp32`` is checked at the fp32 tolerance; ``tf32``, ``fp16`` and ``bf16`` at the fp16 tolerances of
``export.spec`` (bf16 has fewer mantissa bits than fp16; if it misses them, that is a finding, not a
reason to loosen them here).

The TensorRT calls are written against the ``tensorrt`` module as a type checker sees it (the
``tensorrt-stubs`` description of 10.x; ``tests/export/test_tensorrt_static.py`` runs mypy on this file),
and those that differ between 10 and 11 are spelled out below, each reached only where it exists.

``trtexec_command`` prints the equivalent ``trtexec`` line, for building the same engine without Python.

An end-to-end graph (``export/to_onnx.py --end-to-end``, metadata ``graph``) gets ``duration`` (B,) in its
profile and its answer checked by ``export.validate.check_answer_parity``; the sidecar records ``graph`` and
``top_k``. TensorRT does not promise an order among exactly equal scores in TopK (ONNX Runtime does).
"""

from __future__ import annotations

import contextlib
import json
import shlex
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import onnx

from coreba.atomic import atomic_file, check_output_path
from coreba.config import CorebaConfig
from coreba.engines.tensorrt_engine import require_cuda, require_tensorrt, tensorrt_major, trt_logger
from coreba.onnx_io import end_to_end_top_k, read_model_config, read_onnx
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

if TYPE_CHECKING:
    import tensorrt

PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
TYPINGS = ("strong", "weak")
_GRAPH_TYPES = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.BFLOAT16: "bf16"}


class TensorRTBuildError(RuntimeError):
    """The ONNX graph could not be parsed or built into an engine; the message lists every reason."""


class PrecisionError(ValueError):
    """A precision / typing this graph or this TensorRT version cannot build; the message says what can."""


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
        lo, opt, hi = (getattr(self, f"{k}_{axis}") for k in ("min", "opt", "max"))
        return lo, opt, hi

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
        base: dict[str, Any] = {f.name: f.default for f in fields(cls)}
        for axis, cap in (("clips", dims.max_video_len), ("tokens", dims.max_text_len)):
            for k in ("opt", "max"):
                base[f"{k}_{axis}"] = min(base[f"{k}_{axis}"], cap)
        return cls(**{**base, **given})


def model_dims(config: CorebaConfig) -> ModelDims:
    return ModelDims(config.video_dim, config.text_dim, config.max_video_len, config.max_text_len)


def tolerance_for(precision: str) -> tuple[Tolerance, float | None]:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return (FP32_TOLERANCE, None) if precision == "fp32" else (FP16_TOLERANCE, FP16_SCORE_TOLERANCE)


def graph_precision(onnx_path: str | Path | onnx.ModelProto) -> str:
    """"fp32", "fp16" or "bf16": the float type holding most of the graph's weights (its initializers).

    The fp16 export keeps fp32 inputs and outputs (casts at the edges) and a few fp32 constants, so the
    weights, not the I/O, say what precision a strongly typed engine of this graph computes in.
    """
    proto = onnx_path if isinstance(onnx_path, onnx.ModelProto) else read_onnx(onnx_path, load_weights=False)
    elements: Counter[str] = Counter()
    for init in proto.graph.initializer:
        kind = _GRAPH_TYPES.get(init.data_type)
        if kind is not None:
            count = 1
            for d in init.dims:
                count *= d
            elements[kind] += count
    return elements.most_common(1)[0][0] if elements else "fp32"


@dataclass(frozen=True)
class BuildPlan:
    """How to build: strongly or weakly typed, which builder flags to set / clear, the resulting precision."""

    precision: str  # what the engine computes in: fp32 | tf32 | fp16 | bf16 (the parity tolerance follows)
    typing: str  # strong | weak
    graph_precision: str  # the ONNX graph's own float type
    set_flags: tuple[str, ...] = ()  # BuilderFlag names
    clear_flags: tuple[str, ...] = ()

    @property
    def strongly_typed(self) -> bool:
        return self.typing == "strong"


def plan_build(graph: str, precision: str = "auto", typing: str = "strong") -> BuildPlan:
    """The build for a graph of float type ``graph`` at ``precision`` ("auto": the graph's own) and ``typing``.

    Version independent: :func:`check_supported` then says whether the installed TensorRT can do it.
    """
    if typing not in TYPINGS:
        raise PrecisionError(f"typing must be one of {TYPINGS}, got {typing!r}")
    if precision != "auto" and precision not in PRECISIONS:
        raise PrecisionError(f"precision must be 'auto' or one of {PRECISIONS}, got {precision!r}")
    if graph not in ("fp32", "fp16", "bf16"):
        raise PrecisionError(f"unknown graph precision {graph!r}")
    if typing == "strong":
        precision = graph if precision == "auto" else precision
        allowed = ("fp32", "tf32") if graph == "fp32" else (graph,)
        if precision not in allowed:
            hint = ("export the fp16 graph (`python export/to_onnx.py --fp16`) and build that; or, on TensorRT 10 "
                    "only, build this fp32 graph weakly typed (--typing weak)" if graph == "fp32" and precision in
                    ("fp16", "bf16") else f"build it as {' or '.join(allowed)}")
            raise PrecisionError(f"a strongly typed build computes in the graph's own types, and this is an {graph} "
                                 f"graph, so it cannot be built as {precision}: {hint}")
        if precision == "fp32":
            return BuildPlan("fp32", "strong", graph, clear_flags=("TF32",))
        if precision == "tf32":
            return BuildPlan("tf32", "strong", graph, set_flags=("TF32",))
        return BuildPlan(precision, "strong", graph)
    if graph != "fp32" or precision not in ("fp16", "bf16"):
        raise PrecisionError(f"weak typing only lets TensorRT 10 choose fp16/bf16 kernels for an fp32 graph; got "
                             f"precision {precision} on an {graph} graph: use --typing strong")
    return BuildPlan(precision, "weak", graph, set_flags=(precision.upper(),))


def check_supported(trt: ModuleType, plan: BuildPlan) -> None:
    """Raise :class:`PrecisionError` if the installed TensorRT cannot build ``plan`` (weak typing on 11)."""
    missing = [name for name in plan.set_flags + plan.clear_flags if not hasattr(trt.BuilderFlag, name)]
    if plan.strongly_typed and not hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED") \
            and tensorrt_major(trt) < 11:
        missing.append("NetworkDefinitionCreationFlag.STRONGLY_TYPED")
    if not missing:
        return
    if not plan.strongly_typed:
        raise PrecisionError(f"TensorRT {trt.__version__} has no weakly typed builds (BuilderFlag.FP16 and BF16 were "
                             "removed in TensorRT 11): export the fp16 graph with `python export/to_onnx.py --fp16` "
                             "and build it strongly typed (the default)")
    raise PrecisionError(f"TensorRT {trt.__version__} lacks {', '.join(missing)}, which this build needs")


def _shape_arg(shapes: dict[str, tuple[int, ...]]) -> str:
    return ",".join(f"{name}:{'x'.join(map(str, shape))}" for name, shape in shapes.items())


def trtexec_command(onnx_path: str | Path, plan_path: str | Path, profile: ShapeProfile, plan: BuildPlan,
                    dims: ModelDims, timing_cache: str | Path | None = None,
                    workspace_gb: float | None = None, end_to_end: bool = False) -> str:
    """The ``trtexec`` line that builds the same engine (same profile, typing, precision and timing cache);
    ``end_to_end``: the profile covers ``duration`` too.

    ``--stronglyTyped`` is what TensorRT 10 needs for a strongly typed build; TensorRT 11 accepts it and
    always builds strongly typed. ``--fp16``/``--bf16`` (weak typing) exist in TensorRT 10 only.
    """
    shapes = profile.input_shapes(dims, end_to_end)
    args = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={plan_path}"]
    for k, flag in enumerate(("--minShapes", "--optShapes", "--maxShapes")):
        args.append(f"{flag}={_shape_arg({name: s[k] for name, s in shapes.items()})}")
    if plan.strongly_typed:
        args.append("--stronglyTyped")
    if "TF32" in plan.clear_flags:
        args.append("--noTF32")
    args += [f"--{flag.lower()}" for flag in plan.set_flags if flag in ("FP16", "BF16")]
    if timing_cache is not None:
        args.append(f"--timingCacheFile={timing_cache}")
    if workspace_gb is not None:
        args.append(f"--memPoolSize=workspace:{round(workspace_gb * 1024)}")  # MiB, trtexec's default unit
    return " ".join(shlex.quote(a) for a in args)


def _parser_errors(parser: tensorrt.OnnxParser) -> list[str]:
    errors = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        where = f"node {err.node()}"
        with contextlib.suppress(AttributeError):  # node_name/node_operator exist from TensorRT 9.1
            where += f" '{err.node_name()}' ({err.node_operator()})"
        errors.append(f"{where}: {err.desc()} [{err.code()}]")
    return errors


def builder_flag(name: str) -> tensorrt.BuilderFlag:
    """``tensorrt.BuilderFlag.<name>``, written out per flag so that a type checker checks each spelling;
    only the flag asked for is looked up (FP16/BF16 do not exist in TensorRT 11)."""
    if TYPE_CHECKING:
        import tensorrt as trt
    else:
        trt = require_tensorrt()
    lookups = {"TF32": lambda: trt.BuilderFlag.TF32, "FP16": lambda: trt.BuilderFlag.FP16,
               "BF16": lambda: trt.BuilderFlag.BF16}
    return lookups[name]()


def network_flags(plan: BuildPlan) -> int:
    """``create_network`` flags: STRONGLY_TYPED for a strongly typed plan (TensorRT 11 ignores it, and may
    drop it one day: there every network is strongly typed, so 0 is the same)."""
    if TYPE_CHECKING:
        import tensorrt as trt
    else:
        trt = require_tensorrt()
    if not plan.strongly_typed:
        return 0
    if not hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):  # check_supported allowed it: 11+
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def _apply_flags(config: tensorrt.IBuilderConfig, plan: BuildPlan) -> None:
    for name in plan.clear_flags:
        config.clear_flag(builder_flag(name))
    for name in plan.set_flags:
        config.set_flag(builder_flag(name))


def build_engine(onnx_path: str | Path, plan_path: str | Path, profile: ShapeProfile | None = None,
                 precision: str = "auto", timing_cache: str | Path | None = None,
                 workspace_gb: float | None = None, typing: str = "strong",
                 check: Callable[[Path], object] | None = None) -> Path:
    """Parse ``onnx_path``, build an engine for ``profile`` and write it to ``plan_path``.

    ``precision`` "auto" is the graph's own (fp32 export: strict fp32; fp16 export: fp16); see
    :func:`plan_build` for what each precision and ``typing`` mean and what TensorRT 10 / 11 allow.
    The plan and its sidecar are written atomically (:mod:`coreba.atomic`); ``check`` (e.g. the parity run)
    gets the plan under its temporary name, and an exception from it leaves the previous plan in place.
    """
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"no ONNX file at {onnx_path}")
    check_output_path(plan_path)
    plan = plan_build(graph_precision(onnx_path), precision, typing)
    dims = model_dims(read_model_config(onnx_path))
    top_k = end_to_end_top_k(onnx_path)  # an end-to-end graph takes ``duration`` too
    profile = profile or ShapeProfile.for_model(dims)
    profile.check_fits(dims)
    problems = check_tensorrt_compatibility(onnx_path)
    if problems:
        raise TensorRTBuildError(f"{onnx_path} uses what TensorRT does not support:\n  " + "\n  ".join(problems))
    if TYPE_CHECKING:  # a type checker sees the API description; at run time the version-checked module
        import tensorrt as trt
    else:
        trt = require_tensorrt()
    check_supported(trt, plan)
    require_cuda()

    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(plan))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = _parser_errors(parser)
        raise TensorRTBuildError(f"TensorRT's ONNX parser rejected {onnx_path} ({len(errors)} error(s)):\n  "
                                 + "\n  ".join(errors))

    config = builder.create_builder_config()
    _apply_flags(config, plan)
    if workspace_gb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    trt_profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile.input_shapes(dims, top_k is not None).items():
        # the bindings convert tuples to Dims (pybind11 implicit conversion); the stubs only name Dims
        trt_profile.set_shape(name, lo, opt, hi)  # type: ignore[arg-type]
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
        raise TensorRTBuildError(f"TensorRT failed to build an engine from {onnx_path} ({plan.typing}ly typed, "
                                 f"{plan.precision}; the builder's errors are in the TensorRT log above)")
    if cache_path is not None:  # timing data stays valid whatever the checks below decide
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(cache_path) as tmp:
            tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    # The plan carries no model config; the Predictor and serving read it from this sidecar.
    with atomic_file(plan_path) as tmp_plan, atomic_file(plan_path.with_suffix(".json")) as tmp_sidecar:
        tmp_plan.write_bytes(bytes(serialized))
        tmp_sidecar.write_text(json.dumps({
            "config": read_model_config(onnx_path).to_dict(), "precision": plan.precision, "typing": plan.typing,
            "graph_precision": plan.graph_precision, "tensorrt": str(trt.__version__),
            "profile": asdict(profile), "onnx": str(onnx_path),
            "graph": "raw" if top_k is None else "end_to_end", "top_k": top_k}, indent=2))
        if check is not None:
            check(tmp_plan)
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
                        device: str = "cuda:0", raise_on_failure: bool = True,
                        top_k: int | None = None) -> ParityReport:
    """Run the engine and eager PyTorch (fp32, on the CPU: the reference) on every case inside the profile.

    An engine of an end-to-end graph (it takes ``duration``) has its answer checked against eager PyTorch +
    ``postprocess`` at ``top_k`` moments: pass ``top_k`` (the graph's, :func:`coreba.onnx_io.end_to_end_top_k`)
    for a plan under its temporary name (``build_engine``'s ``check``); otherwise it is read from the plan's
    sidecar."""
    from coreba.engines.tensorrt_engine import TensorRTEngine

    engine = TensorRTEngine(plan_path, device=device)
    tolerance, score_tol = tolerance_for(precision)
    model = model.eval().float().cpu()
    cases = profile_cases(model.config, profile)
    sidecar = Path(plan_path).with_suffix(".json")
    if top_k is None and sidecar.is_file():
        top_k = json.loads(sidecar.read_text()).get("top_k")
    if DURATION in engine.input_names:
        if top_k is None:
            raise TensorRTBuildError(f"{plan_path} is an end-to-end engine (it takes {DURATION!r}): pass its top_k "
                                     "(the ONNX file's metadata) to check its answer")
        answer_tol = FP32_ANSWER_TOLERANCE if precision == "fp32" else FP16_ANSWER_TOLERANCE
        return check_answer_parity(engine.run, model, f"TensorRT {precision} end-to-end", top_k,
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
