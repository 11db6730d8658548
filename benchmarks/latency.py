"""COREBA inference latency and throughput, engine by engine, against the machine's matrix-multiply floor.

    python benchmarks/latency.py                               # demo checkpoint, CPU, full sweep
    python benchmarks/latency.py --quick --random-weights      # full-size, < 2 min on 2 quiet CPU cores
    python benchmarks/latency.py --quick --tiny --out /tmp/b   # CI: tiny random model, ~1 min (cold compile)
    python benchmarks/latency.py --device cuda --random-weights --out $OUT/latency   # GPU, ~3-4 min

What is measured: the same model and the same random inputs through every engine of
:mod:`benchmarks.engines` -- eager PyTorch (math and SDPA attention), ``torch.compile`` (default; on a GPU
also reduce-overhead and max-autotune), CUDA graphs (fp32 and fp16), the Triton attention kernel, ONNX
Runtime (CPU with graph optimizations off and all, and int8; CUDA and TensorRT providers), OpenVINO (fp32, bf16,
int8), eager bf16, TensorRT plans (fp32, fp16) and the served model (one step) through its HTTP client -- over
batch sizes at Lv 75 and over long videos
(Lv 300, 1200) at a few batch sizes, always Lt 32. An engine that cannot run here is SKIPPED with the
reason.

How, per point: the engine's outputs are compared with eager PyTorch fp32 at that point's inputs
(max-abs, 1e-4 for fp32 engines, ``export.spec.FP16_TOLERANCE`` for fp16 ones); only an engine that
passes is timed (and before its first point, ``export.validate.check_parity`` runs it on a padded batch).
Then warm-up, as many timed runs as fit a budget, and the median, p90, p99 and queries/s = B / median.
Each engine is built, checked and timed in its own block and closed before the next starts (ONNX Runtime's idle
threads spin, and would slow an engine timed beside them).

Reduced precision (bf16, int8): before timing, the accuracy gate of ``export.accuracy`` scores the engine and
eager fp32 on the demo checkpoint's 500-query synthetic gate split; an engine outside 1 point on any gated metric
is FAILED and not timed, and each row carries the metric deltas. int8 models are calibrated on the demo's
calibration split. With another model (``--tiny``, ``--random-weights``, ``--checkpoint``) there is no labelled
set: int8 is calibrated on random inputs and the rows say "not gated".

The floor: the model's matrix-product FLOPs per query, counted from the ONNX graph (``benchmarks.flops``),
divided by the GEMM rate measured in the same run (``benchmarks.machine``) is the least time a query can
take; "% of floor" = floor / measured, so 100 % would be a model running at the speed of one big GEMM.

Long videos: the checkpoint is loaded again with ``max_video_len`` raised (``Coreba.from_pretrained(dir,
max_video_len=1200)``), which is the same model: no parameter depends on ``max_video_len`` (the strict
load proves the tensors match, and the outputs at Lv 75 are checked to be identical).

Outputs (``--out``): ``results.csv``, ``results.json`` (every row + machine, settings, FLOPs, GEMM rates),
``latency.png``; a markdown table is printed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.engines import Context, EngineSpec, Runner, Skip, catalogue  # noqa: E402
from benchmarks.flops import FlopModel, analytic_fallback, onnx_flop_model, torch_matmul_flops  # noqa: E402
from benchmarks.machine import Machine, MachineRates, describe_machine, load_average, measure_matmul  # noqa: E402
from benchmarks.report import FAILED, OK, SKIPPED, Row, markdown_table, plot, write_csv, write_json  # noqa: E402
from benchmarks.timing import Stats, Timer, TimingPlan, measure  # noqa: E402
from coreba.config import CorebaConfig  # noqa: E402
from coreba.model import Coreba  # noqa: E402
from export.spec import FP16_SCORE_TOLERANCE  # noqa: E402
from export.validate import ParityCase, check_parity, eager_outputs, make_feeds  # noqa: E402

# GPU targets the report is held against (a deployment goal, not a property of this machine)
TARGET_BATCH1_MS = 0.5
TARGET_QPS = 20_000


# ------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Point:
    batch: int
    num_clips: int
    num_tokens: int

    def __str__(self) -> str:
        return f"B={self.batch} Lv={self.num_clips} Lt={self.num_tokens}"


@dataclass
class Settings:
    device: str
    out: Path
    checkpoint: Path | None
    quick: bool
    tiny: bool
    random_weights: bool
    batches: tuple[int, ...]  # swept at the base length
    video_lens: tuple[int, ...]  # the first is the base length; the others are swept at long_batches
    long_batches: tuple[int, ...]
    num_tokens: int
    compile_batches: tuple[int, ...]
    timing: TimingPlan
    engine_budget_s: float  # an engine that has used this much wall time skips its remaining points
    host_engine_budget_s: float  # the same for engines computing on the CPU (less, in a GPU run)
    time_limit_s: float | None  # no new engine starts after this
    engines: tuple[str, ...] | None
    skip: tuple[str, ...]
    threads: int | None  # torch and ONNX Runtime intra-op threads; None: their defaults (all cores)
    keep_artifacts: bool
    accuracy_gate: bool = True  # score reduced-precision engines on the demo's gate split before timing them
    time_outside_gate: bool = False  # time an engine the accuracy gate refused anyway (its rows say OUTSIDE)
    seed: int = 0

    @property
    def base_clips(self) -> int:
        return self.video_lens[0]

    def points(self) -> list[Point]:
        pts = [Point(b, self.base_clips, self.num_tokens) for b in self.batches]
        pts += [Point(b, lv, self.num_tokens) for lv in self.video_lens[1:] for b in self.long_batches]
        return pts


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def parse_args(argv: list[str] | None) -> Settings:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, help="a save_pretrained directory (default: the demo checkpoint)")
    p.add_argument("--quick", action="store_true", help="few points and runs: B 1 and 8 (GPU: 1, 8, 256), Lv 75")
    p.add_argument("--tiny", action="store_true", help="a tiny random config (CI): no checkpoint, no training")
    p.add_argument("--random-weights", action="store_true",
                   help="the full-size default config with random weights (no demo-checkpoint training)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--out", type=Path, default=Path("artifacts/benchmarks/latency"))
    p.add_argument("--batches", type=_ints, help="batch sizes at the base length, e.g. 1,8,32")
    p.add_argument("--video-lens", type=_ints, help="clip counts; the first is the base, e.g. 75,300,1200")
    p.add_argument("--long-batches", type=_ints, help="batch sizes of the longer videos, e.g. 1,8")
    p.add_argument("--num-tokens", type=int, default=32)
    p.add_argument("--engines", type=lambda s: tuple(x for x in s.split(",") if x),
                   help="only these engines (comma-separated names; the others are listed as skipped)")
    p.add_argument("--skip", type=lambda s: tuple(x for x in s.split(",") if x), default=(),
                   help="leave out these engines (listed as skipped), e.g. compile-default")
    p.add_argument("--threads", type=int, help="torch and ONNX Runtime intra-op threads (default: all cores; "
                                               "1 with --tiny)")
    p.add_argument("--time-limit", type=float, help="seconds after which no new engine starts")
    p.add_argument("--engine-budget", type=float, help="seconds per engine, compile and builds included")
    p.add_argument("--keep-artifacts", action="store_true", help="keep the ONNX file etc. under OUT/artifacts")
    p.add_argument("--time-outside-gate", action="store_true",
                   help="time bf16/int8 engines even when the accuracy gate refuses them (rows marked OUTSIDE)")
    p.add_argument("--no-accuracy-gate", action="store_true",
                   help="do not score bf16/int8 engines on the demo's gate split before timing (rows say so)")
    args = p.parse_args(argv)
    if args.checkpoint is not None and (args.tiny or args.random_weights):
        p.error("--checkpoint excludes --tiny and --random-weights")
    return defaults(args)


def defaults(args: argparse.Namespace) -> Settings:
    """The sweep per device and mode. CPU quick must finish in < 2 min on 2 cores; a GPU run in ~3 min."""
    gpu = args.device == "cuda"
    if gpu:
        batches, lens, long_batches = ((1, 8, 256), (75,), ()) if args.quick else ((1, 8, 32, 256, 1024),
                                                                                     (75, 300, 1200), (1, 32))
        timing = TimingPlan(warmup=5, min_runs=10, max_runs=300, budget_s=0.3)
        compile_batches, budget, limit = (1, max(batches)), 60.0, (120.0 if args.quick else 180.0)
        host_budget = 20.0
    else:
        batches, lens, long_batches = ((1, 8), (75,), ()) if args.quick else ((1, 8, 32, 128), (75, 300, 1200),
                                                                             (1, 8))
        timing = (TimingPlan(warmup=2, min_runs=5, max_runs=20, budget_s=0.5) if args.quick
                  else TimingPlan(warmup=3, min_runs=10, max_runs=100, budget_s=3.0))
        compile_batches, budget, limit = ((1,) if args.quick else (1, 8)), (90.0 if args.quick else 300.0), None
        host_budget = budget
    batches = args.batches or batches
    lens = args.video_lens or lens
    return Settings(device=args.device, out=args.out, checkpoint=args.checkpoint, quick=args.quick, tiny=args.tiny,
                    random_weights=args.random_weights, batches=batches, video_lens=lens,
                    long_batches=args.long_batches or long_batches, num_tokens=args.num_tokens,
                    compile_batches=tuple(b for b in compile_batches if b in batches) or batches[:1],
                    timing=timing, engine_budget_s=args.engine_budget or budget,
                    host_engine_budget_s=args.engine_budget or host_budget,
                    time_limit_s=args.time_limit if args.time_limit is not None else limit,
                    engines=args.engines, skip=args.skip, keep_artifacts=args.keep_artifacts,
                    accuracy_gate=not args.no_accuracy_gate, time_outside_gate=args.time_outside_gate,
                    # a toy model gains nothing from a second thread, and on a busy CI box every OpenMP barrier
                    # of a multi-threaded eager forward can wait out a scheduler slice (100x slower)
                    threads=args.threads or (1 if args.tiny else None))


# ------------------------------------------------------------------------------------------------ model


def tiny_config() -> CorebaConfig:
    """Every block of the architecture at toy widths, one recurrent turn: fast to export and to compile."""
    return CorebaConfig(video_dim=64, text_dim=32, hidden_dim=32, num_heads=4, ffn_dim=64, num_balance_tokens=3,
                        num_recurrent=1, num_saliency_layers=1, num_decoder_layers=1, max_video_len=75,
                        max_text_len=32)


def resolve_checkpoint(settings: Settings, scratch: Path) -> tuple[Path, str]:
    """The save_pretrained directory to benchmark, and a word on where it came from."""
    if settings.checkpoint is not None:
        return settings.checkpoint, f"checkpoint {settings.checkpoint}"
    if settings.tiny or settings.random_weights:
        torch.manual_seed(settings.seed)
        cfg = tiny_config() if settings.tiny else CorebaConfig()
        directory = Coreba(cfg).save_pretrained(scratch / ("tiny" if settings.tiny else "random"))
        return directory, "tiny config, random weights" if settings.tiny else "full-size config, random weights"
    from coreba.pretrained import demo_checkpoint

    return demo_checkpoint(), DEMO_SOURCE


@dataclass
class LengthOverride:
    """How the long-video model was obtained, and the proof that it is the same model."""

    native_max_video_len: int
    max_video_len: int
    same_tensors: bool = True
    max_abs_diff_at_native_length: float = 0.0


def load_reference(checkpoint: Path, settings: Settings, device: torch.device) -> tuple[Coreba, LengthOverride]:
    """The checkpoint in eval mode, math attention, fp32, with max_video_len raised to the sweep's longest."""
    native = Coreba.from_pretrained(checkpoint).eval()
    cfg = native.config
    if settings.num_tokens > cfg.max_text_len:
        raise SystemExit(f"--num-tokens {settings.num_tokens} > the model's max_text_len {cfg.max_text_len}")
    longest = max(cfg.max_video_len, max(settings.video_lens))
    info = LengthOverride(cfg.max_video_len, longest)
    model = native
    if longest != cfg.max_video_len:
        # strict load: from_pretrained refuses missing, unexpected or reshaped tensors
        model = Coreba.from_pretrained(checkpoint, max_video_len=longest).eval()
        a, b = native.state_dict(), model.state_dict()
        info.same_tensors = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        feeds = make_feeds(cfg, (cfg.max_video_len, cfg.max_video_len // 2), (settings.num_tokens, 5), seed=7)
        want, got = eager_outputs(native, feeds), eager_outputs(model, feeds)
        info.max_abs_diff_at_native_length = max(float(np.abs(want[k] - got[k]).max()) for k in want)
        if not info.same_tensors or info.max_abs_diff_at_native_length > 0:
            raise SystemExit(f"raising max_video_len changed the model: {info}")
    model.set_attention_backend("math")
    return model.float().to(device), info


def export_graph(model: Coreba, artifacts: Path) -> tuple[Path | None, str, dict]:
    """The fp32 ONNX graph of ``model`` (traced on the CPU), or None and the reason.

    Only missing packages (onnx, onnxscript not installed) make the ONNX engines skip; an export that
    runs and fails is reported by ``info["failed"]`` and turns their rows into failures.
    """
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        return None, f"{', '.join(missing)} not installed (pip install coreba[export])", {}
    try:
        from export.onnx_export import export_onnx
    except ImportError as err:  # the packages are there: the exporter itself is broken
        return None, f"the ONNX exporter does not import: {_short(err)}", {"failed": True}
    cpu_model = model if next(model.parameters()).device.type == "cpu" else _cpu_copy(model)
    try:
        t0 = time.perf_counter()
        result = export_onnx(cpu_model, artifacts / "coreba.onnx", check=False)
        info = {"seconds": round(time.perf_counter() - t0, 1), "file_mb": round(result.file_bytes / 1e6, 2),
                "export_parity_ok": result.parity.ok, "export_parity_worst": result.parity.worst()}
        return result.path, "", info
    except Exception as err:
        traceback.print_exc()
        return None, f"export failed: {_short(err)}", {"failed": True}


def _cpu_copy(model: Coreba) -> Coreba:
    import copy

    return copy.deepcopy(model).cpu()


DEMO_SOURCE = "demo checkpoint (trained on synthetic data)"
RANDOM_CALIBRATION = 32
CALIBRATION_SIZE = 128  # as export/quantize.py's default


def prepare_accuracy_data(ctx: Context, settings: Settings, source: str, clock: Clock) -> None:
    """int8 calibration feeds and the accuracy-gate set: the demo's synthetic splits for a demo checkpoint (by
    default, or given with --checkpoint); random inputs and no gate for any other model (no labelled set is known
    for it)."""
    from coreba.pretrained import is_demo_checkpoint

    config = ctx.model.config
    if ctx.checkpoint is not None and is_demo_checkpoint(ctx.checkpoint):
        from export.datasets import calibration_feeds, synthetic_set

        calibration = synthetic_set("calibration", config)
        ctx.calibration = calibration_feeds(calibration, config, CALIBRATION_SIZE)
        ctx.calibration_name = calibration.name
        if settings.accuracy_gate:
            ctx.gate_set = synthetic_set("gate", config)
        else:
            ctx.gate_note = "--no-accuracy-gate"
    else:
        ctx.calibration = [make_feeds(config, (int(n),), (settings.num_tokens,), seed=100 + i)
                           for i, n in enumerate(np.linspace(settings.base_clips // 2, settings.base_clips,
                                                             RANDOM_CALIBRATION))]
        ctx.calibration_name = "random inputs"
        ctx.gate_note = f"{source}: no labelled set for this model"
    log(clock, f"int8 calibration: {len(ctx.calibration)} queries of {ctx.calibration_name}; accuracy gate: "
               f"{ctx.gate_set.name if ctx.gate_set is not None else ctx.gate_note}")


def count_flops(model: Coreba, onnx_path: Path | None, settings: Settings) -> tuple[FlopModel, dict]:
    """FLOPs from the ONNX graph, cross-checked against PyTorch's FlopCounterMode at B=1, the base length."""
    base = make_feeds(model.config, (settings.base_clips,), (settings.num_tokens,))
    counted = torch_matmul_flops(model, base)
    check = {"torch_flop_counter_b1_base": counted}
    if onnx_path is not None:
        try:
            flop_model = onnx_flop_model(onnx_path)
            onnx_b1 = flop_model.per_query(settings.base_clips, settings.num_tokens)
            check.update(onnx_b1_base=onnx_b1, relative_difference=abs(onnx_b1 - counted) / counted)
            return flop_model, check
        except Exception as err:  # no ORT symbolic shape tool, sympy, ...: fall back, and say so
            check["onnx_count_error"] = f"{type(err).__name__}: {err}"
    return analytic_fallback(model, list(settings.video_lens), settings.num_tokens), check


# ------------------------------------------------------------------------------------------- the sweep


class PointData:
    """Each point's inputs (one padded batch, generated once) and the eager fp32 reference outputs."""

    def __init__(self, model: Coreba, seed: int) -> None:
        self.model, self.seed = model, seed
        self._feeds: dict[Point, dict[str, np.ndarray]] = {}
        self._reference: dict[Point, dict[str, np.ndarray]] = {}

    def lengths(self, p: Point) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Sample 0 at the full lengths (so the batch has the point's shape), the others shorter: padding is
        exercised wherever B > 1, and masks never change the work, so the timing is that of full lengths."""
        rng = np.random.default_rng(self.seed + 7919 * p.batch + p.num_clips)
        video = [p.num_clips] + rng.integers(max(1, p.num_clips // 2), p.num_clips + 1, p.batch - 1).tolist()
        text = [p.num_tokens] + rng.integers(max(1, p.num_tokens // 4), p.num_tokens + 1, p.batch - 1).tolist()
        return tuple(video), tuple(text)

    def seed_of(self, p: Point) -> int:
        return self.seed + 1000 * p.batch + p.num_clips

    def feeds(self, p: Point) -> dict[str, np.ndarray]:
        if p not in self._feeds:
            self._feeds[p] = make_feeds(self.model.config, *self.lengths(p), seed=self.seed_of(p))
        return self._feeds[p]

    def reference(self, p: Point) -> dict[str, np.ndarray]:
        if p not in self._reference:
            self._reference[p] = eager_outputs(self.model, self.feeds(p))
        return self._reference[p]


@dataclass
class Floors:
    """FLOPs per query per length, and the GEMM rate per precision: the least time a batch can take."""

    flop_model: FlopModel
    rates: MachineRates
    cache: dict[tuple[int, int], float] = field(default_factory=dict)

    def gflop_per_query(self, p: Point) -> float:
        key = (p.num_clips, p.num_tokens)
        if key not in self.cache:
            self.cache[key] = self.flop_model.per_query(p.num_clips, p.num_tokens) / 1e9
        return self.cache[key]

    def floor_ms(self, p: Point, precision: str) -> float:
        return p.batch * self.gflop_per_query(p) / self.rates.tflops(precision)  # GFLOP / TFLOP/s = ms


class Clock:
    def __init__(self, limit_s: float | None) -> None:
        self.start, self.limit_s = time.perf_counter(), limit_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def expired(self) -> bool:
        return self.limit_s is not None and self.elapsed() > self.limit_s

    def remaining(self) -> float:
        return math.inf if self.limit_s is None else self.limit_s - self.elapsed()


def log(clock: Clock, message: str) -> None:
    print(f"[{clock.elapsed():7.1f}s] {message}", flush=True)


def _row(spec: EngineSpec, status: str, reason: str = "", point: Point | None = None, **values) -> Row:
    where = {} if point is None else {"batch": point.batch, "num_clips": point.num_clips,
                                      "num_tokens": point.num_tokens}
    return Row(spec.name, spec.family, spec.precision, spec.io, status, reason, **where, **values)


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}"


def _free_device_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def gate(spec: EngineSpec, runner: Runner, ctx: Context, points: list[Point], data: PointData) -> str | None:
    """``export.validate.check_parity`` on one case before anything is timed; the failure text, or None.

    "padded": a batch of 4 with padded videos and queries (lengths 1 included) at the base length.
    "first-point": the inputs of the engine's first point (a compiled engine would recompile for any
    other shape). "none": the per-point check only (the served model returns answers, not raw outputs).
    "accuracy" (bf16, int8): :func:`accuracy_gate`, the QVHighlights metrics within 1 point of eager fp32's.
    """
    if spec.gate == "none":
        return None
    if spec.gate == "accuracy":
        return accuracy_gate(spec, runner, ctx).failure
    L, T = ctx.base_clips, ctx.num_tokens
    if spec.gate == "first-point":
        first = next((p for p in points if p.num_clips == L and p.batch in getattr(runner, "batches", (p.batch,))),
                     points[0])
        video, text = data.lengths(first)
        case, seed = ParityCase(f"first point {first}", video, text), data.seed_of(first)
    else:
        video, text = (L, max(1, L // 2), 1, max(1, L - 29)), (T, 7 % T + 1, 1, max(1, T - 5))
        case, seed = ParityCase(f"B4 padded Lv<={L}", video, text), 11
    report = check_parity(runner.run_numpy, ctx.model, spec.name, runner.tolerance(),
                          FP16_SCORE_TOLERANCE if runner.precision == "fp16" else None, cases=[case], seed=seed,
                          raise_on_failure=False)
    if report.ok:
        return None
    bad = [r for r in report.rows if not r.ok]
    return "parity gate (check_parity): " + "; ".join(f"{r.case} {r.output} max abs {r.max_abs:.2e} > {r.tolerance:.0e}"
                                                      for r in bad[:3])


@dataclass
class AccuracyVerdict:
    failure: str | None  # why the engine is refused, or None
    summary: str  # the metric deltas, or why the engine was not gated


OUTSIDE = "OUTSIDE the gate: "


class _RunnerEngine:
    """A benchmark runner seen as a ``coreba.engines`` engine (``run(feeds)``), for the accuracy gate."""

    def __init__(self, name: str, run) -> None:
        self.name, self.run = name, run


def accuracy_gate(spec: EngineSpec, runner: Runner, ctx: Context) -> AccuracyVerdict:
    """``export.accuracy``: the engine's metrics on ``ctx.gate_set`` within 1 point of eager fp32's."""
    if ctx.gate_set is None:
        verdict = AccuracyVerdict(None, f"not gated: {ctx.gate_note}")
    else:
        from export.accuracy import compare_metrics, score_engine

        config = ctx.model.config
        if ctx.reference_metrics is None:
            eager = _RunnerEngine("eager fp32", lambda feeds: eager_outputs(ctx.model, feeds))
            ctx.reference_metrics = score_engine(eager, ctx.gate_set, config)
        metrics = score_engine(_RunnerEngine(spec.name, runner.run_numpy), ctx.gate_set, config)
        report = compare_metrics(ctx.reference_metrics, metrics, candidate_name=spec.name,
                                 reference_name="eager fp32", eval_set=ctx.gate_set.name,
                                 num_queries=ctx.gate_set.num_queries())
        print(report.table(), flush=True)
        deltas = ", ".join(f"{k} {v:+.2f}" for k, v in report.deltas().items())
        verdict = AccuracyVerdict(None if report.ok else f"accuracy gate: {deltas}",
                                  f"{'' if report.ok else OUTSIDE}{deltas} ({report.num_queries} queries)")
    runner.accuracy = verdict.summary  # type: ignore[attr-defined]
    runner.gated = ctx.gate_set is not None  # type: ignore[attr-defined]
    return verdict


def run_point(spec: EngineSpec, runner: Runner, p: Point, data: PointData, timer: Timer, plan: TimingPlan) -> Row:
    """Bind, check parity against eager at this point's inputs, then time; a failure is reported, not timed."""
    feeds = data.feeds(p)
    reference = data.reference(p)
    t0 = time.perf_counter()
    try:
        step = runner.bind(feeds)
        out = step()
        timer.sync()
        setup_s = time.perf_counter() - t0
        got = runner.arrays(out)
    except Skip as skip:
        return _row(spec, SKIPPED, str(skip), p)
    except torch.cuda.OutOfMemoryError as err:
        return _row(spec, FAILED, f"out of memory: {_short(err)}", p)
    except Exception as err:
        return _row(spec, FAILED, f"run failed: {_short(err)}", p)
    verdict = runner.compare(got, reference, feeds)
    parity = dict(max_abs_err=verdict.max_abs, parity_output=verdict.output, tolerance=verdict.tolerance,
                  parity_ok=verdict.ok, setup_s=setup_s)
    if not verdict.ok:
        return _row(spec, FAILED, f"parity: {verdict.output} max abs {verdict.max_abs:.2e} > {verdict.tolerance:.0e}",
                    p, **parity)
    try:
        stats: Stats = measure(step, timer, plan)
    except Exception as err:
        return _row(spec, FAILED, f"timing failed: {_short(err)}", p, **parity)
    return _row(spec, OK, "", p, accuracy=getattr(runner, "accuracy", ""), runs=stats.runs,
                median_ms=stats.median_ms, p90_ms=stats.p90_ms,
                p99_ms=stats.p99_ms, mean_ms=stats.mean_ms, min_ms=stats.min_ms,
                queries_per_s=p.batch / (stats.median_ms * 1e-3), **parity)


def apply_floors(rows: list[Row], floors: Floors) -> None:
    """FLOPs, floor and % of floor of every timed row, once the GEMM rate has been measured at both ends."""
    for r in rows:
        if r.status == OK:
            p = Point(r.batch, r.num_clips, r.num_tokens)
            r.gflop_per_query = floors.gflop_per_query(p)
            r.floor_ms = floors.floor_ms(p, r.precision)
            r.pct_of_floor = 100.0 * r.floor_ms / r.median_ms


def run_engine(spec: EngineSpec, ctx: Context, settings: Settings, data: PointData, clock: Clock) -> list[Row]:
    """Build the engine, gate it, and run every point within the engine's time budget."""
    points = settings.points()
    if spec.gpu_only and ctx.device.type != "cuda":
        return [_row(spec, SKIPPED, "a GPU engine: run with --device cuda")]
    if settings.engines is not None and spec.name not in settings.engines:
        return [_row(spec, SKIPPED, "not selected (--engines)")]
    if spec.name in settings.skip:
        return [_row(spec, SKIPPED, "left out (--skip)")]
    if clock.expired():
        return [_row(spec, SKIPPED, f"run time limit ({settings.time_limit_s:.0f} s) reached before this engine")]
    left = clock.remaining()
    if spec.needs_s > left:
        return [_row(spec, SKIPPED, f"needs ~{spec.needs_s:.0f} s (compile/autotune); {left:.0f} s left of the run "
                                    f"time limit ({settings.time_limit_s:.0f} s, --time-limit)")]
    started = time.perf_counter()
    log(clock, f"{spec.name}: building")
    try:
        runner = spec.build(ctx)
    except Skip as skip:
        log(clock, f"{spec.name}: SKIPPED ({skip})")
        return [_row(spec, SKIPPED, str(skip))]
    except Exception as err:
        traceback.print_exc()
        return [_row(spec, FAILED, f"build failed: {_short(err)}")]
    timer = Timer(torch.device("cpu") if spec.host_compute else ctx.device)
    rows: list[Row] = []
    try:
        try:
            failure = gate(spec, runner, ctx, points, data)
        except Skip:  # the gate's shape is not one this engine runs: the per-point checks still apply
            failure = None
        except Exception as err:
            failure = f"parity gate could not run: {_short(err)}"
        if failure and spec.gate == "accuracy" and settings.time_outside_gate:
            log(clock, f"{spec.name}: outside the accuracy gate, timed anyway (--time-outside-gate): {failure}")
        elif failure:
            log(clock, f"{spec.name}: FAILED {failure}")
            return [_row(spec, FAILED, failure, accuracy=getattr(runner, "accuracy", ""))]
        if spec.gate == "accuracy":  # scoring 500 queries is not the engine's build: its time budget starts now
            started = time.perf_counter()
        budget = settings.host_engine_budget_s if spec.host_compute else settings.engine_budget_s
        for p in points:
            if time.perf_counter() - started > budget:
                rows.append(_row(spec, SKIPPED, f"engine time budget ({budget:.0f} s) spent", p))
                continue
            row = run_point(spec, runner, p, data, timer, settings.timing)
            rows.append(row)
            if row.status == OK:
                log(clock, f"{spec.name:30s} {p}: median {row.median_ms:9.3f} ms  p99 {row.p99_ms:9.3f} ms  "
                           f"{row.queries_per_s:10.1f} q/s  (max abs err {row.max_abs_err:.1e}, {row.runs} runs, "
                           f"setup {row.setup_s:.1f} s)")
            else:
                log(clock, f"{spec.name:30s} {p}: {row.status.upper()} {row.reason}")
            if row.status == FAILED and "out of memory" in row.reason:
                _free_device_memory(ctx.device)
    finally:
        with contextlib.suppress(Exception):
            runner.close()
        del runner
        _free_device_memory(ctx.device)
    return rows


# ------------------------------------------------------------------------------------------------ main


def targets(rows: list[Row], base_clips: int, device: str) -> list[str]:
    """The deployment targets (batch-1 latency, large-batch throughput) against the best timed engine."""
    ok = [r for r in rows if r.status == OK and r.num_clips == base_clips]
    lines = []
    b1 = [r for r in ok if r.batch == 1]
    if b1:
        best = min(b1, key=lambda r: r.median_ms)
        verdict = "MET" if best.median_ms < TARGET_BATCH1_MS else "not met"
        lines.append(f"batch-1 latency target < {TARGET_BATCH1_MS} ms: best {best.engine} {best.median_ms:.3f} ms "
                     f"-> {verdict}")
    if ok:
        best = max(ok, key=lambda r: r.queries_per_s)
        verdict = "MET" if best.queries_per_s >= TARGET_QPS else "not met"
        lines.append(f"throughput target >= {TARGET_QPS:,} q/s: best {best.engine} at B={best.batch} "
                     f"{best.queries_per_s:,.0f} q/s -> {verdict}")
    if device != "cuda":
        lines.append("(the targets are for a GPU; this run is on the CPU)")
    return lines


REDUCED_TARGET_SPEEDUP = 2.0  # issue 14: the best bf16/int8 engine inside the gate vs eager fp32, at B=1 and B=8
EAGER_FP32 = "eager-math"


def speedup_summary(rows: list[Row], base_clips: int) -> list[str]:
    """Per batch at the base length: each timed engine's speed-up over eager fp32, the fastest fp32 engine, and
    the best reduced-precision engine inside the accuracy gate against the 2x target."""
    ok = [r for r in rows if r.status == OK and r.num_clips == base_clips]
    lines = []
    for batch in sorted({r.batch for r in ok}):
        at = [r for r in ok if r.batch == batch]
        eager = next((r for r in at if r.engine == EAGER_FP32), None)
        if eager is None:
            continue
        fp32 = min((r for r in at if r.precision == "fp32"), key=lambda r: r.median_ms)
        lines.append(f"B={batch}: eager fp32 {eager.median_ms:.1f} ms; fastest fp32: {fp32.engine} "
                     f"{fp32.median_ms:.1f} ms ({eager.median_ms / fp32.median_ms:.2f}x)")
        reduced = sorted((r for r in at if r.precision in ("bf16", "int8")), key=lambda r: r.median_ms)
        for r in reduced:
            lines.append(f"  {r.engine:16s} {r.median_ms:8.1f} ms  {eager.median_ms / r.median_ms:5.2f}x eager fp32; "
                         f"accuracy vs eager fp32: {r.accuracy or 'n/a'}")
        gated = [r for r in reduced if r.accuracy and not r.accuracy.startswith(("not gated", OUTSIDE))]
        if gated:
            best = gated[0]
            speedup = eager.median_ms / best.median_ms
            verdict = "MET" if speedup >= REDUCED_TARGET_SPEEDUP else "not met"
            lines.append(f"  target >= {REDUCED_TARGET_SPEEDUP:.0f}x inside the gate: best {best.engine} "
                         f"{speedup:.2f}x -> {verdict}")
        elif reduced:
            lines.append(f"  target >= {REDUCED_TARGET_SPEEDUP:.0f}x inside the gate: no reduced-precision engine "
                         "timed inside the gate")
    return lines


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    unknown = (set(settings.engines or ()) | set(settings.skip)) - {spec.name for spec in catalogue()}
    if unknown:
        raise SystemExit(f"unknown engine(s) {sorted(unknown)}; known: {[spec.name for spec in catalogue()]}")
    device = torch.device(settings.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is False")
    torch.set_float32_matmul_precision("highest")  # fp32 engines are strict fp32: the 1e-4 parity needs it
    if settings.threads:
        torch.set_num_threads(settings.threads)
    clock = Clock(settings.time_limit_s)
    settings.out.mkdir(parents=True, exist_ok=True)
    machine: Machine = describe_machine(device)
    log(clock, f"machine: {machine.cpu}, {machine.usable_cores} cores, torch {torch.__version__} "
               f"({machine.torch_threads} threads), GPU {machine.gpu}, load {machine.load_average_start}; "
               f"CPU ISA: {machine.cpu_isa}")

    scratch_holder = None
    if settings.keep_artifacts:
        scratch = settings.out / "artifacts"
        scratch.mkdir(parents=True, exist_ok=True)
    else:
        scratch_holder = tempfile.TemporaryDirectory(prefix="coreba_latency_")
        scratch = Path(scratch_holder.name)
    try:
        return _run(settings, device, machine, clock, scratch)
    finally:
        if scratch_holder is not None:
            scratch_holder.cleanup()


def _run(settings: Settings, device: torch.device, machine: Machine, clock: Clock, scratch: Path) -> int:
    checkpoint, source = resolve_checkpoint(settings, scratch)
    model, length_info = load_reference(checkpoint, settings, device)
    log(clock, f"model: {source}, {model.num_parameters():,} parameters, max_video_len {length_info.max_video_len}"
               f" (checkpoint's {length_info.native_max_video_len}; same tensors: {length_info.same_tensors})")

    onnx_path, onnx_error, export_info = export_graph(model, scratch)
    log(clock, f"ONNX export: {onnx_path or onnx_error} {export_info}")
    flop_model, flop_check = count_flops(model, onnx_path, settings)
    rates = measure_matmul(device, settings.quick)
    floors = Floors(flop_model, rates)
    for name, rate in rates.rates.items():
        log(clock, f"GEMM {rate.size}^3 {name}: best {rate.best_ms:.3f} ms = {rate.tflops:.2f} TFLOP/s "
                   f"(median {rate.median_ms:.3f} ms)")
    for lv in settings.video_lens:
        gflop = floors.gflop_per_query(Point(1, lv, settings.num_tokens))
        log(clock, f"FLOPs per query at Lv={lv}, Lt={settings.num_tokens}: {gflop:.3f} GFLOP ({flop_model.method}) "
                   f"-> floor {gflop / rates.tflops('fp32') * 1e3:.2f} us (fp32)"
                   + (f", {gflop / rates.tflops('fp16') * 1e3:.2f} us (fp16)" if "fp16" in rates.rates else ""))

    points = settings.points()
    ctx = Context(model=model, device=device, artifacts=scratch, onnx_path=onnx_path, onnx_error=onnx_error,
                  onnx_export_failed=bool(export_info.get("failed")),
                  native_max_video_len=length_info.native_max_video_len, checkpoint=checkpoint,
                  max_batch=max(p.batch for p in points), max_clips=max(p.num_clips for p in points),
                  base_clips=settings.base_clips, num_tokens=settings.num_tokens,
                  compile_batches=settings.compile_batches, threads=settings.threads)
    prepare_accuracy_data(ctx, settings, source, clock)
    data = PointData(model, settings.seed)
    rows: list[Row] = []
    for spec in catalogue(gpu=device.type == "cuda"):
        rows += run_engine(spec, ctx, settings, data, clock)
        write_csv(rows, settings.out / "results.csv")  # partial results, in case the run is cut short

    floors.rates.merge(measure_matmul(device, settings.quick))  # again: the faster of the two ends counts
    apply_floors(rows, floors)
    machine.load_average_end = load_average()
    write_outputs(settings, machine, rows, floors, flop_check, length_info, export_info, source, model, clock)
    failed = [r for r in rows if r.status == FAILED]
    for r in failed:
        where = f" B={r.batch} Lv={r.num_clips}" if r.batch else ""
        print(f"FAILED: {r.engine}{where}: {r.reason}", file=sys.stderr)
    return 1 if failed else 0


def write_outputs(settings: Settings, machine: Machine, rows: list[Row], floors: Floors, flop_check: dict,
                  length_info: LengthOverride, export_info: dict, source: str, model: Coreba, clock: Clock) -> None:
    out = settings.out
    write_csv(rows, out / "results.csv")
    floor_lines = {
        precision: {p.batch: floors.floor_ms(p, precision) for p in settings.points()
                    if p.num_clips == settings.base_clips}
        for precision in ("fp32", "fp16", "bf16") if precision in floors.rates.rates
    }
    title = (f"COREBA ({source}), Lt={settings.num_tokens}; {machine.gpu or machine.cpu}, "
             f"torch {torch.__version__}, {machine.torch_threads} threads")
    try:
        plot(rows, out / "latency.png", settings.base_clips, floor_lines, title)
    except Exception as err:  # a plot is not worth losing the numbers for
        print(f"plot failed: {_short(err)}", file=sys.stderr)
    payload = {
        "machine": asdict(machine),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()},
        "model": {"source": source, "parameters": model.num_parameters(), "config": model.config.to_dict(),
                  "length_override": asdict(length_info), "onnx_export": export_info},
        "flops": {"method": floors.flop_model.method, "expression": floors.flop_model.expression,
                  "gflop_per_query": {str(lv): floors.gflop_per_query(Point(1, lv, settings.num_tokens))
                                      for lv in settings.video_lens}, "cross_check": flop_check},
        "matmul_rates": {k: asdict(v) for k, v in floors.rates.rates.items()},
        "targets": targets(rows, settings.base_clips, settings.device),
        "speedups": speedup_summary(rows, settings.base_clips),
        "elapsed_s": round(clock.elapsed(), 1),
        "rows": [asdict(r) for r in rows],
    }
    write_json(payload, out / "results.json")
    print()
    print(f"## COREBA latency ({source}; {machine.gpu or machine.cpu}; Lt={settings.num_tokens}; "
          f"{'quick' if settings.quick else 'full'}; {clock.elapsed():.0f} s)")
    print()
    rate_text = ", ".join(f"{k} {v.tflops:.2f} TFLOP/s" for k, v in floors.rates.rates.items())
    print(f"Floor: {floors.gflop_per_query(Point(1, settings.base_clips, settings.num_tokens)):.3f} GFLOP/query at "
          f"Lv={settings.base_clips} ({floors.flop_model.method}) over the measured GEMM rate ({rate_text}); "
          "'% of floor' = floor / median.")
    print()
    print(markdown_table(rows))
    print()
    for line in speedup_summary(rows, settings.base_clips):
        print(line)
    for line in targets(rows, settings.base_clips, settings.device):
        print(line)
    print(f"\nwrote {out / 'results.csv'}, {out / 'results.json'}, {out / 'latency.png'}")


if __name__ == "__main__":
    sys.exit(main())
