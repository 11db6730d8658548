"""Every way to run COREBA that the latency benchmark times, behind one interface.

A :class:`Runner` is built once per engine (load a session, build a plan, start a server) and then
``bind(feeds)`` prepares one benchmark point (device copies, a CUDA-graph capture, a compile) and returns
the zero-argument ``step`` that is timed. ``arrays(step())`` gives the outputs as numpy for the parity
check that comes before any timing. Anything that makes an engine or a point impossible here raises
:class:`Skip` with the reason, which the report lists: an engine is never dropped silently.

Why bind/step rather than the ``coreba.engines`` ``run(feeds)`` interface: a CUDA graph replays on
static buffers, a compiled module must see its shapes before it is timed, and torch engines on a GPU
should be timed on device-resident inputs; ``run`` (numpy in, numpy out, copies included) is what the
ONNX Runtime and TensorRT engines expose, and their rows say so (``io``).

Reduced precision (bf16, int8) cannot meet the fp32 tolerance by design: what accepts it is the accuracy gate run
before timing (``gate="accuracy"`` in :mod:`benchmarks.latency`); after it, the per-point check asks only for
finite outputs (the random timing inputs lie far outside an int8 model's calibrated ranges). Without a gate set
(a random-weight model, calibrated on random inputs like the timing ones) the per-point check is a sanity bound,
``export.spec.REDUCED_PRECISION_SANITY`` of each output's range, which catches a broken engine. int8 models are
quantized here, from the benchmark's ONNX graph, by the same library as ``export/quantize.py``.
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from coreba.engines.base import EngineUnavailable
from coreba.model import Coreba
from export.spec import (
    FP16_TOLERANCE,
    FP32_TOLERANCE,
    INPUT_NAMES,
    OUTPUT_NAMES,
    REDUCED_PRECISION_SANITY,
    REDUCED_PRECISIONS,
    Tolerance,
)

ANY_FINITE = float(np.finfo(np.float32).max)  # a tolerance only NaN/Inf exceed (finite, so errors still rank)


class Skip(Exception):  # noqa: N818 - it is a verdict, not an error
    """This engine (or this point of it) cannot run here; ``str(skip)`` says why."""


class ExportFailed(RuntimeError):
    """The ONNX export that an engine needs failed: the engine's row is FAILED, never skipped (an export
    regression must not pass as "not available here")."""


@dataclass
class Context:
    """What every engine may need; built once by the driver."""

    model: Coreba  # the reference: eval, fp32, math attention, on ``device``
    device: torch.device
    artifacts: Path  # scratch space for ONNX files, TensorRT plans, the model repository
    onnx_path: Path | None  # the exported graph (fp32), or None ...
    onnx_error: str = ""  # ... and why
    onnx_export_failed: bool = False  # True: the exporter ran and failed (a failure), not "not installed" (a skip)
    native_max_video_len: int = 75  # the checkpoint's own max_video_len (``model`` may allow more)
    checkpoint: Path | None = None  # the save_pretrained directory ``model`` was loaded from
    max_batch: int = 1  # the largest batch / clip count of the sweep (TensorRT profile, serving batcher)
    max_clips: int = 75
    base_clips: int = 75
    num_tokens: int = 32
    compile_batches: tuple[int, ...] = (1,)  # torch.compile recompiles per shape: measured at these only
    threads: int | None = None  # ONNX Runtime / OpenVINO threads (torch's are set globally)
    calibration: list[dict[str, np.ndarray]] = field(default_factory=list)  # int8 calibration feeds ...
    calibration_name: str = ""  # ... and where they came from
    gate_set: object | None = None  # an export.datasets.EvalSet for the accuracy gate, or None ...
    gate_note: str = ""  # ... and why there is none
    reference_metrics: dict | None = None  # eager fp32 metrics on gate_set, computed once by the first gate


Outputs = dict[str, np.ndarray]


@dataclass
class Comparison:
    max_abs: float
    output: str  # the output with the largest error relative to its tolerance
    tolerance: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs)) and self.max_abs <= self.tolerance


def compare(got: Outputs, want: Outputs, tolerance: Callable[[str], float]) -> Comparison:
    """Max-abs error per output (as ``export.validate.check_parity``); returns the worst against its tolerance."""
    first = next(iter(want))
    worst = Comparison(0.0, first, tolerance(first))
    for name, expected in want.items():
        actual = np.asarray(got[name])
        if actual.shape != expected.shape:
            return Comparison(float("inf"), f"{name} shape {actual.shape} != {expected.shape}", tolerance(name))
        err = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
        max_abs = float(err.max()) if err.size else 0.0
        if not np.isfinite(actual).all():
            max_abs = float("nan")
        candidate = Comparison(max_abs, name, tolerance(name))
        if not candidate.ok or (worst.ok and candidate.max_abs / candidate.tolerance > worst.max_abs / worst.tolerance):
            worst = candidate
            if not candidate.ok:
                break
    return worst


class Runner:
    """Base: subclasses implement ``bind``; ``arrays`` and ``compare`` fit the three raw model outputs."""

    precision = "fp32"

    def bind(self, feeds: Outputs) -> Callable[[], object]:
        raise NotImplementedError

    def arrays(self, out: object) -> Outputs:
        return {name: np.asarray(out[name], dtype=np.float32) for name in OUTPUT_NAMES}  # type: ignore[index]

    def tolerance(self) -> Tolerance:
        return FP16_TOLERANCE if self.precision == "fp16" else FP32_TOLERANCE

    def compare(self, got: Outputs, reference: Outputs, feeds: Outputs) -> Comparison:
        want = {k: reference[k] for k in OUTPUT_NAMES}
        if self.precision in REDUCED_PRECISIONS and getattr(self, "gated", False):
            # accepted on the gate set's real features; the timing inputs are random, far outside an int8
            # model's calibrated ranges, so only finite outputs of the right shape are asked of them
            return compare(got, want, lambda name: ANY_FINITE)
        if self.precision in REDUCED_PRECISIONS:  # a sanity bound scaled to each output's range
            scale = {k: max(float(np.abs(v).max()) if v.size else 0.0, 1e-3) for k, v in want.items()}
            return compare(got, want, lambda name: REDUCED_PRECISION_SANITY * scale[name])
        return compare(got, want, self.tolerance().of)

    def run_numpy(self, feeds: Outputs) -> Outputs:
        """``coreba.engines``-style ``run``: what ``export.validate.check_parity`` calls."""
        return self.arrays(self.bind(feeds)())

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------------------ torch


def device_inputs(feeds: Outputs, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """The four inputs as device tensors, features in ``dtype`` (masks stay bool)."""
    out = []
    for name in INPUT_NAMES:
        t = torch.from_numpy(np.ascontiguousarray(feeds[name])).to(device)
        out.append(t.to(dtype) if t.is_floating_point() else t)
    return tuple(out)


class TorchRunner(Runner):
    """Eager PyTorch on its own copy of the model (backend and precision are per engine).

    ``validate=False``: input validation costs host synchronisations on a GPU, and every engine here is
    given inputs that are valid by construction (as the exported graphs are).
    """

    def __init__(self, ctx: Context, backend: str, precision: str = "fp32") -> None:
        self.precision, self.device = precision, ctx.device
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
        if precision == "bf16" and ctx.device.type == "cpu":
            from coreba.engines.isa import PrecisionUnavailable, cpu_isa

            try:
                cpu_isa().require("bf16", "PyTorch")
            except PrecisionUnavailable as err:
                raise Skip(str(err)) from err
        self.model = copy.deepcopy(ctx.model).to(self.dtype).eval()
        self.model.set_attention_backend(backend)

    def forward(self, inputs: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            return self.model(*inputs, validate=False)

    def bind(self, feeds: Outputs) -> Callable[[], object]:
        inputs = device_inputs(feeds, self.device, self.dtype)
        return lambda: self.forward(inputs)

    def arrays(self, out: object) -> Outputs:
        return {name: out[name].float().cpu().numpy() for name in OUTPUT_NAMES}  # type: ignore[index]


class CompiledRunner(TorchRunner):
    """``torch.compile`` of the eager model (SDPA attention), static shapes: one compile per benchmark shape.

    ``dynamic=False``: a dynamic-shape graph still specialises size-1 dims, so B=1 and B=8 compile twice
    anyway, and each static graph is specialised to its shape; the compile time of each shape is reported
    (``setup_s``: bind + first call).
    """

    def __init__(self, ctx: Context, mode: str, precision: str = "fp32", batches: tuple[int, ...] = ()) -> None:
        super().__init__(ctx, "sdpa", precision)
        self.mode, self.base_clips = mode, ctx.base_clips
        self.batches = batches or ctx.compile_batches
        self.cudagraphs = mode in ("reduce-overhead", "max-autotune")
        self.compiled = torch.compile(self.model, mode=None if mode == "default" else mode, dynamic=False)

    def forward(self, inputs: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            if self.cudagraphs:  # outputs of the previous replay may be overwritten from here on
                torch.compiler.cudagraph_mark_step_begin()
            return self.compiled(*inputs, validate=False)

    def bind(self, feeds: Outputs) -> Callable[[], object]:
        B, Lv = feeds["video_mask"].shape
        if B not in self.batches or Lv != self.base_clips:
            raise Skip(f"torch.compile recompiles for every shape (tens of seconds each); measured at B in "
                       f"{list(self.batches)}, Lv {self.base_clips} only")
        return super().bind(feeds)

    def close(self) -> None:
        torch._dynamo.reset()


class CudaGraphRunner(TorchRunner):
    """Eager SDPA captured once per point with ``torch.cuda.CUDAGraph`` on static input buffers; replayed.

    The step is the replay alone: copying a new request into the static buffers is not timed (it is the
    same for every engine that keeps its inputs on the device).
    """

    def __init__(self, ctx: Context, precision: str = "fp32") -> None:
        if ctx.device.type != "cuda":
            raise Skip("CUDA graphs need a CUDA device (--device cuda)")
        super().__init__(ctx, "sdpa", precision)
        self.graph: torch.cuda.CUDAGraph | None = None

    def bind(self, feeds: Outputs) -> Callable[[], object]:
        self.graph = None  # free the previous point's graph and its memory pool first
        torch.cuda.empty_cache()
        static = device_inputs(feeds, self.device, self.dtype)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(3):  # warm up outside the capture: cuBLAS handles, SDPA kernel choice
                self.model(*static, validate=False)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph):
            out = self.model(*static, validate=False)
        self.graph, self.static = graph, static

        def step() -> dict[str, torch.Tensor]:
            graph.replay()
            return out

        return step

    def close(self) -> None:
        self.graph = None


class TritonAttentionRunner(TorchRunner):
    """Eager PyTorch with the VT-block on the fused Triton kernel (``set_attention_backend("triton")``)."""

    def __init__(self, ctx: Context) -> None:
        if ctx.device.type != "cuda":
            raise Skip("the Triton kernel needs a CUDA device; on the CPU it runs only under Triton's "
                       "interpreter, which is a correctness tool, not a benchmark")
        from coreba.model.attention import triton_usable

        reason = triton_usable(ctx.device)
        if reason:
            raise Skip(reason)
        super().__init__(ctx, "triton")


# ------------------------------------------------------------------------------ ONNX Runtime, TensorRT


def _require_onnx(ctx: Context) -> Path:
    if ctx.onnx_path is None:
        if ctx.onnx_export_failed:
            raise ExportFailed(f"no ONNX graph: {ctx.onnx_error}")
        raise Skip(f"no ONNX graph: {ctx.onnx_error}")
    return ctx.onnx_path


class NumpyRunner(Runner):
    """An engine of ``coreba.engines`` (numpy in, numpy out): the step is ``engine.run(feeds)``."""

    engine: object

    def bind(self, feeds: Outputs) -> Callable[[], object]:
        feeds = {name: np.ascontiguousarray(feeds[name]) for name in INPUT_NAMES}
        return lambda: self.engine.run(feeds)  # type: ignore[attr-defined]


def quantized_model(ctx: Context, backend: str) -> Path:
    """The benchmark's ONNX graph quantized to int8 by ``backend`` (export.quantization, as export/quantize.py)."""
    from export.quantization import quantize

    path = _require_onnx(ctx)
    if not ctx.calibration:
        raise Skip("no calibration data")
    output = ctx.artifacts / f"coreba-int8-{backend}.{'xml' if backend == 'openvino' else 'onnx'}"
    work = ctx.artifacts / f"quantize-{backend}"
    work.mkdir(parents=True, exist_ok=True)
    report = quantize(path, backend, ctx.calibration, output, ctx.calibration_name, work)
    print(f"  {report.summary()}", flush=True)
    return output


class OrtRunner(NumpyRunner):
    def __init__(self, ctx: Context, provider: str, graph_optimization: str = "all",
                 provider_options: dict | None = None, precision: str = "fp32") -> None:
        if importlib.util.find_spec("onnxruntime") is None:
            raise Skip("onnxruntime is not installed (pip install coreba[export])")
        path = quantized_model(ctx, "onnxruntime") if precision == "int8" else _require_onnx(ctx)
        from coreba.engines.onnxruntime_engine import OnnxRuntimeEngine

        self.precision = precision
        try:
            self.engine = OnnxRuntimeEngine(path, provider=provider, graph_optimization=graph_optimization,
                                            threads=ctx.threads, provider_options=provider_options,
                                            precision=precision)
        except EngineUnavailable as err:
            raise Skip(str(err)) from err


class OpenVINORunner(NumpyRunner):
    """OpenVINO on the CPU: the ONNX graph at fp32 or bf16 (inference precision hint), or its NNCF int8 IR."""

    def __init__(self, ctx: Context, precision: str) -> None:
        if ctx.device.type != "cpu":
            raise Skip("OpenVINO runs on the CPU here: benchmarked in CPU runs (--device cpu)")
        if importlib.util.find_spec("openvino") is None:
            raise Skip("openvino is not installed (pip install coreba[export])")
        if precision == "int8" and importlib.util.find_spec("nncf") is None:
            raise Skip("nncf is not installed (pip install coreba[export])")
        from coreba.engines.openvino_engine import OpenVINOEngine

        self.precision = precision
        try:
            if precision == "bf16":  # refuse before any work when the CPU has no bf16
                from coreba.engines.isa import cpu_isa

                cpu_isa().require("bf16", "OpenVINO")
            path = quantized_model(ctx, "openvino") if precision == "int8" else _require_onnx(ctx)
            self.engine = OpenVINOEngine(path, precision=precision, threads=ctx.threads)
        except EngineUnavailable as err:
            raise Skip(str(err)) from err


class TensorRTRunner(NumpyRunner):
    """A plan built here (``export.tensorrt_build.build_engine``), one profile over the sweep, strongly typed
    (TensorRT 10 and 11): fp32 from the fp32 graph (TF32 off), fp16 from an fp16 export made here."""

    def __init__(self, ctx: Context, precision: str) -> None:
        from coreba.engines.tensorrt_engine import TensorRTEngine, require_cuda, require_tensorrt

        try:
            require_tensorrt()
            require_cuda(str(ctx.device) if ctx.device.type == "cuda" else "cuda:0")
        except EngineUnavailable as err:
            raise Skip(str(err)) from err
        path = _require_onnx(ctx)
        from coreba.onnx_io import read_model_config
        from export.tensorrt_build import ShapeProfile, build_engine, model_dims

        self.precision = "fp16" if precision == "fp16" else "fp32"
        if self.precision == "fp16":  # strongly typed: the precision comes from the graph's own types
            from export.onnx_export import export_onnx

            path = export_onnx(copy.deepcopy(ctx.model).cpu(), ctx.artifacts / "coreba-fp16.onnx", fp16=True,
                               check=False).path
        dims = model_dims(read_model_config(path))
        profile = ShapeProfile.for_model(dims, min_batch=1, opt_batch=min(8, ctx.max_batch), max_batch=ctx.max_batch,
                                         min_clips=1, opt_clips=ctx.base_clips, max_clips=ctx.max_clips,
                                         min_tokens=1, opt_tokens=ctx.num_tokens, max_tokens=ctx.num_tokens)
        plan = build_engine(path, ctx.artifacts / f"coreba.{precision}.plan", profile, self.precision,
                            timing_cache=ctx.artifacts / "tensorrt.timing_cache")
        self.engine = TensorRTEngine(plan, device=str(ctx.device))


# ---------------------------------------------------------------------------------------------- served


def serving_unavailable() -> str | None:
    """Why the served model cannot be benchmarked here, or None."""
    for module in ("serving.launcher", "serving.client", "serving.build_repository", "serving.model_configs",
                   "tritonclient.http"):
        try:
            if importlib.util.find_spec(module) is None:
                return f"{module} is not available"
        except ModuleNotFoundError as err:
            return f"{module} is not available ({err})"
    try:
        from serving.launcher import TritonServer, pytriton_root

        binary = pytriton_root() / "bin" / "tritonserver"
    except Exception as err:  # the serving package is being written: any import problem means "not usable"
        return f"serving.launcher does not import ({type(err).__name__}: {err})"
    if not binary.is_file():
        return f"no tritonserver binary at {binary} (pip install coreba[serving])"
    from serving.client import CorebaClient

    for name, obj, attr in (("TritonServer", TritonServer, "start"), ("CorebaClient", CorebaClient, "infer")):
        if not hasattr(obj, attr):
            return f"serving's {name} has no {attr}()"
    return None


@dataclass
class ServedRunner(Runner):
    """The served model ``coreba`` (one step: the end-to-end graph on ONNX Runtime CPU in the Python backend),
    called through the HTTP client with one request per batch. Its answers are compared with
    ``coreba.postprocess`` of the eager outputs: scores and saliency at the fp32 tolerance, windows at the
    tolerance times the duration."""

    ctx: Context
    clip_length: float = 2.0
    server: object = field(init=False, default=None)
    client: object = field(init=False, default=None)

    def __post_init__(self) -> None:
        reason = serving_unavailable()
        if reason:
            raise Skip(f"served model unavailable: {reason}")
        _require_onnx(self.ctx)
        model = self.ctx.model
        if model.config.max_video_len != self.ctx.native_max_video_len:
            # The server pads every request to its model's max_video_len: serve the checkpoint's own length,
            # not the long-video variant, which would pad Lv 75 to the longest video.
            if self.ctx.checkpoint is None:
                raise Skip("the served model needs the checkpoint's own export, and no checkpoint path was given")
            model = Coreba.from_pretrained(self.ctx.checkpoint).eval()
        from export.onnx_export import export_onnx
        from serving.build_repository import build_repository
        from serving.client import CorebaClient
        from serving.launcher import ServerStartError, TritonServer
        from serving.model_configs import Batching

        # the served graph: the post-processing inside (its answer is checked at every point below)
        path = export_onnx(model, self.ctx.artifacts / "coreba-e2e.onnx", check=False, end_to_end=True).path
        # one request carries the whole batch: no queue delay (there is no other request to wait for)
        batching = Batching(max_batch_size=self.ctx.max_batch, preferred_batch_sizes=(self.ctx.max_batch,),
                            max_queue_delay_us=0)
        repo = self.ctx.artifacts / "model_repository"
        build_repository(path, repo, batching=batching, intra_op_threads=self.ctx.threads or 0)
        self.clip_length = self.ctx.model.config.clip_length
        try:
            self.server = TritonServer(repo).start()
        except ServerStartError as err:  # the environment (binary, backends, ports), not the model: say so
            raise Skip(f"the Triton server did not start here: {str(err).splitlines()[0][:300]}") from err
        try:
            self.client = CorebaClient(self.server.http_url)
        except Exception:
            self.server.stop()
            raise

    def bind(self, feeds: Outputs) -> Callable[[], object]:
        B, Lv = feeds["video_mask"].shape
        if Lv != self.client.layout.max_clips:
            raise Skip(f"the served model takes requests padded to {self.client.layout.max_clips} clips (its "
                       "max_video_len)")
        arrays = {name: np.ascontiguousarray(feeds[name]) for name in INPUT_NAMES}
        arrays["duration"] = (feeds["video_mask"].sum(1, keepdims=True) * self.clip_length).astype(np.float32)
        return lambda: self.client.infer(arrays)

    def arrays(self, out: object) -> Outputs:
        return answers_to_arrays(out)  # type: ignore[arg-type]

    def compare(self, got: Outputs, reference: Outputs, feeds: Outputs) -> Comparison:
        from coreba.postprocess import postprocess

        durations = feeds["video_mask"].sum(1) * self.clip_length
        want = answers_to_arrays(postprocess(reference["pred_logits"], reference["pred_spans"],
                                             reference["saliency_scores"], feeds["video_mask"], durations,
                                             self.clip_length, top_k=got["moments"].shape[1]))
        scale = durations.astype(np.float64)[:, None, None]
        got = {"windows_over_duration": got["moments"][..., :2] / scale, "scores": got["moments"][..., 2],
               "saliency": got["saliency"]}
        want = {"windows_over_duration": want["moments"][..., :2] / scale, "scores": want["moments"][..., 2],
                "saliency": want["saliency"]}
        return compare(got, want, lambda _name: FP32_TOLERANCE.saliency_scores)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.server is not None:
            self.server.stop()


def answers_to_arrays(results) -> Outputs:
    """A list of ``QueryResult`` as arrays: moments (B, K, 3) and saliency (B, max clips, zero-padded)."""
    width = max(len(r.saliency) for r in results)
    saliency = np.zeros((len(results), width), dtype=np.float64)
    for b, r in enumerate(results):
        saliency[b, : len(r.saliency)] = r.saliency
    return {"moments": np.asarray([r.moments for r in results], dtype=np.float64), "saliency": saliency}


# --------------------------------------------------------------------------------------------- catalogue


@dataclass(frozen=True)
class EngineSpec:
    """One row family of the report: how to build the engine and how to describe it."""

    name: str
    family: str  # torch | onnxruntime | tensorrt | served
    precision: str  # fp32 | fp16
    io: str  # what a timed step includes: device tensors in/out, or host numpy copies
    build: Callable[[Context], Runner]
    gpu_only: bool = False
    gate: str = "padded"  # before any timing: check_parity on padded | first-point; accuracy (metrics); none
    host_compute: bool = False  # computes on the CPU even in a GPU run (gets the host engine budget there)
    needs_s: float = 0.0  # wall time it needs at least (compiles, autotuning): not started with less left
    note: str = ""


def catalogue(gpu: bool = False) -> list[EngineSpec]:
    """Every engine, the most informative for the device first: a time limit cuts from the end.

    On the CPU the compiles (tens of seconds per shape) go last; in a GPU run the CPU engines (ONNX Runtime
    CPU, the served model, which runs ONNX Runtime on the CPU) go last, after every GPU engine.
    """
    device_io, host_io = "torch tensors on the device", "host numpy (copies timed)"
    ort_trt_options = {"trt_fp16_enable": False}
    specs = [
        EngineSpec("eager-math", "torch", "fp32", device_io, lambda c: TorchRunner(c, "math")),
        EngineSpec("eager-sdpa", "torch", "fp32", device_io, lambda c: TorchRunner(c, "sdpa")),
        EngineSpec("cuda-graphs", "torch", "fp32", device_io, lambda c: CudaGraphRunner(c), gpu_only=True),
        EngineSpec("cuda-graphs-fp16", "torch", "fp16", device_io, lambda c: CudaGraphRunner(c, "fp16"),
                   gpu_only=True),
        EngineSpec("triton-attention", "torch", "fp32", device_io, lambda c: TritonAttentionRunner(c), gpu_only=True),
        EngineSpec("compile-reduce-overhead-fp16", "torch", "fp16", device_io,
                   lambda c: CompiledRunner(c, "reduce-overhead", "fp16"), gpu_only=True, gate="first-point",
                   needs_s=45),
        EngineSpec("ort-cpu-noopt", "onnxruntime", "fp32", host_io, lambda c: OrtRunner(c, "cpu", "disabled"),
                   host_compute=True, note="graph optimizations disabled"),
        EngineSpec("ort-cpu", "onnxruntime", "fp32", host_io, lambda c: OrtRunner(c, "cpu", "all"),
                   host_compute=True, note="graph optimizations all"),
        EngineSpec("ort-cuda", "onnxruntime", "fp32", host_io, lambda c: OrtRunner(c, "cuda", "all"), gpu_only=True),
        EngineSpec("ort-tensorrt", "onnxruntime", "fp32", host_io,
                   lambda c: OrtRunner(c, "tensorrt", "all", {**ort_trt_options, "trt_engine_cache_enable": True,
                                                              "trt_engine_cache_path": str(c.artifacts / "ort_trt")}),
                   gpu_only=True),
        EngineSpec("tensorrt-fp32", "tensorrt", "fp32", host_io, lambda c: TensorRTRunner(c, "fp32"), gpu_only=True),
        EngineSpec("tensorrt-fp16", "tensorrt", "fp16", host_io, lambda c: TensorRTRunner(c, "fp16"), gpu_only=True),
        EngineSpec("openvino", "openvino", "fp32", host_io, lambda c: OpenVINORunner(c, "fp32"),
                   host_compute=True, note="exported ONNX read directly, f32 inference precision"),
        EngineSpec("openvino-bf16", "openvino", "bf16", host_io, lambda c: OpenVINORunner(c, "bf16"),
                   host_compute=True, gate="accuracy", note="bf16 inference precision hint"),
        EngineSpec("openvino-int8", "openvino", "int8", host_io, lambda c: OpenVINORunner(c, "int8"),
                   host_compute=True, gate="accuracy", needs_s=60, note="NNCF static int8, heads fp32"),
        EngineSpec("ort-cpu-int8", "onnxruntime", "int8", host_io,
                   lambda c: OrtRunner(c, "cpu", "all", precision="int8"), host_compute=True, gate="accuracy",
                   needs_s=30, note="quantize_static QDQ U8S8, heads fp32"),
        EngineSpec("eager-bf16", "torch", "bf16", device_io, lambda c: TorchRunner(c, "sdpa", "bf16"),
                   gate="accuracy", note="weights and features cast to bf16"),
        EngineSpec("served", "served", "fp32", "HTTP client (serialization, server, graph with post-processing)",
                   lambda c: ServedRunner(c), gate="none", host_compute=True),
        EngineSpec("compile-default", "torch", "fp32", device_io, lambda c: CompiledRunner(c, "default"),
                   gate="first-point", needs_s=45),
        EngineSpec("compile-reduce-overhead", "torch", "fp32", device_io,
                   lambda c: CompiledRunner(c, "reduce-overhead", batches=(1,)), gpu_only=True, gate="first-point",
                   needs_s=45),
        EngineSpec("compile-max-autotune", "torch", "fp32", device_io,
                   lambda c: CompiledRunner(c, "max-autotune", batches=(1,)), gpu_only=True, gate="first-point",
                   needs_s=90),
    ]
    compiles = [s for s in specs if s.name.startswith("compile-")]
    if gpu:
        host = [s for s in specs if s.host_compute]
        return [s for s in specs if not s.host_compute] + host
    return [s for s in specs if s not in compiles] + compiles
