"""Long videos and many queries: quality of the sliding windows, and speed, on the demo checkpoint.

    python benchmarks/long_video.py --speed --out artifacts/long_video   # demo checkpoint; ~12 min on 2 quiet cores
    python benchmarks/long_video.py --tiny --queries 4 --out /tmp/lv     # dry run: tiny random model, seconds

Quality. The demo checkpoint was trained on the planted-signal synthetic data of :mod:`coreba.data.synthetic`
(:data:`coreba.pretrained.DEMO_DATA`); this regenerates the same data (deterministic) and takes its held-out
split: 150 s videos, each query's moments planted in its own video. Each held-out query then gets a long
video of its own, 10 to 60 minutes (``--clips``, uniform), made of synthetic clips: the query's whole video,
its moments included, at a random clip offset, inside filler clips; for every other query the offset is chosen
so that its first moment straddles a multiple of 75 clips (a border of back-to-back windows). Two fillers:

* ``noise``: clips that no query of the split is about (the generator's background noise), drawn at random;
* ``videos``: other held-out videos whole, in random order: every one brings the planted moments of its own
  queries, so the long video holds dozens of moments about other topics (hard negatives, as in a real long
  video; the demo's topics live in 4 dimensions, so some are close to the query's).

Both are scored with the official metrics (:func:`coreba.evaluate.evaluate`: R1@0.5, R1@0.7, mAP) against
the same queries on their own 150 s videos, through the same ``Predictor`` (eager PyTorch), for each stride
(``--strides``) and NMS threshold (``--ious``), with QD-DETR's submission rule for times (``mode="qvhighlights"``).

Speed (``--speed``): clips per second of a 30-minute and a 2-hour video (900 and 3,600 clips, one query, default
stride) per engine (eager PyTorch, ONNX Runtime CPU), and the speed-up of ``Predictor.search`` (Q queries of one
video, one batched call) over Q separate ``predict`` calls, at 150 s and at 30 minutes.

Outputs (``--out``): ``results.json`` (every number, the machine, the settings) and ``results.md`` (the tables);
the tables are printed too. The machine's load average is recorded: on a shared box the speed figures move.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.machine import describe_machine, load_average  # noqa: E402
from coreba import Coreba, CorebaConfig, Predictor  # noqa: E402
from coreba.data.qvhighlights import QVHighlightsDataset, temporal_endpoint_features  # noqa: E402
from coreba.engines.onnxruntime_engine import OnnxRuntimeEngine  # noqa: E402
from coreba.engines.torch_engine import TorchEngine  # noqa: E402
from coreba.evaluate import evaluate  # noqa: E402
from coreba.pretrained import DEMO_DATA, HELDOUT_SPLIT, demo_checkpoint  # noqa: E402
from coreba.training.data_sources import SyntheticSpec  # noqa: E402
from coreba.windows import DEFAULT_NMS_IOU, default_stride, num_windows  # noqa: E402
from export.onnx_export import export_onnx  # noqa: E402

FILLERS = ("noise", "videos")
METRICS = ("MR-full-R1@0.5", "MR-full-R1@0.7", "MR-full-mAP", "HL-min-VeryGood-mAP")
TINY_DATA = dict(num_queries=8, slowfast_dim=24, clip_dim=16, text_dim=16, signal_strength=4.0, topic_dim=4, seed=0,
                 splits=(HELDOUT_SPLIT,))
TWO_HOURS_CLIPS = 3600


@dataclass
class Settings:
    out: Path
    checkpoint: Path | None
    tiny: bool
    queries: int | None
    clips: tuple[int, int]
    strides: tuple[int, ...]
    ious: tuple[float, ...]
    fillers: tuple[str, ...]
    speed: bool
    num_queries_speed: int
    max_batch_size: int
    seed: int


@dataclass
class Case:
    """One query over one video: the features the Predictor gets, and the ground truth the metrics read."""

    video: np.ndarray  # (L, Dv) with the video's endpoint features
    text: np.ndarray
    gt: dict[str, Any]
    border: bool = False  # its first moment straddles a multiple of the window


@dataclass
class QualityRow:
    videos: str  # "150 s" or "long (noise)" / "long (videos)"
    stride: int | None
    iou: float | None
    windows_per_video: float
    metrics: dict[str, float]
    seconds: float
    across_border: int | None = None  # queries whose first moment straddles a multiple of the window


@dataclass
class SpeedRow:
    engine: str
    what: str
    clips: int
    queries: int
    seconds: float
    clips_per_s: float | None = None
    speedup: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- data


def synthetic_spec(settings: Settings) -> SyntheticSpec:
    """The demo checkpoint's training data (same parameters, so the same files), or a tiny one for the dry run."""
    params = TINY_DATA if settings.tiny else DEMO_DATA
    return SyntheticSpec(out_dir=str(settings.out / "data"), **params)  # type: ignore[arg-type]


def model_and_config(settings: Settings, spec: SyntheticSpec) -> tuple[Path, CorebaConfig]:
    if not settings.tiny:
        path = settings.checkpoint or demo_checkpoint()
        return Path(path), CorebaConfig.load(Path(path) / "config.json")
    torch.manual_seed(0)
    cfg = spec.model_config(CorebaConfig(hidden_dim=32, num_heads=4, ffn_dim=64, num_balance_tokens=3,
                                         num_recurrent=2, max_video_len=30, max_text_len=32))
    path = settings.out / "tiny_checkpoint"
    Coreba(cfg).eval().save_pretrained(path)
    return path, cfg


def load_split(spec: SyntheticSpec, max_video_len: int | None) -> tuple[list[dict], dict[str, np.ndarray],
                                                                         dict[int, np.ndarray], np.ndarray]:
    """Held-out records; each video's clips (normalised, no endpoint features) and each query's tokens, as the
    dataset reads them; the pool of background clips (in no query's moments)."""
    paths = spec.generate()
    dataset = QVHighlightsDataset(paths.data_config(HELDOUT_SPLIT, max_video_len=max_video_len))
    records = dataset.records
    clips = {r["vid"]: dataset.video_features(r["vid"]) for r in records}
    texts = {r["qid"]: dataset.text_features(r["qid"]) for r in records}
    background = []
    for vid, video in clips.items():
        busy = np.zeros(len(video), bool)
        for r in records:
            if r["vid"] == vid:
                busy[[c for c in r["relevant_clip_ids"] if c < len(video)]] = True
        background.append(video[~busy])
    return records, clips, texts, np.concatenate(background)


def with_tef(clips: np.ndarray) -> np.ndarray:
    """A video's clips with its endpoint features, as the dataset builds a video."""
    return np.concatenate([clips, temporal_endpoint_features(len(clips))], axis=1).astype(np.float32)


def short_cases(records: list[dict], clips: dict[str, np.ndarray], texts: dict[int, np.ndarray]) -> list[Case]:
    return [Case(with_tef(clips[r["vid"]]), texts[r["qid"]], r) for r in records]


def _offset(rng: np.random.Generator, record: dict, own: int, total: int, window: int, border: bool) -> int:
    """Where the query's video goes: at random, or so that its first moment's middle falls on a window border."""
    if not border:
        return int(rng.integers(0, total - own + 1))
    start, end = (int(t // 2) for t in record["relevant_windows"][0])
    middle = (start + end) // 2
    borders = [k * window for k in range(1, total // window + 1) if 0 <= k * window - middle <= total - own]
    return int(rng.choice(borders)) - middle if borders else int(rng.integers(0, total - own + 1))


def long_case(record: dict, clips: dict[str, np.ndarray], texts: dict[int, np.ndarray], background: np.ndarray,
              filler: str, total: int, window: int, border: bool, rng: np.random.Generator) -> Case:
    """One query's long video (see the module docstring) and its ground truth, shifted to the long video."""
    own = clips[record["vid"]]
    total = max(total, len(own) + window)
    need = total - len(own)
    if filler == "noise":
        fill = background[rng.integers(0, len(background), need)]
    else:
        others = [v for v in clips if v != record["vid"]]
        parts, have = [], 0
        while have < need:
            vid = others[int(rng.integers(0, len(others)))]
            parts.append(clips[vid])
            have += len(clips[vid])
        fill = np.concatenate(parts)[:need]
    offset = _offset(rng, record, len(own), total, window, border)
    video = np.concatenate([fill[:offset], own, fill[offset:]])
    shift = offset * 2  # seconds: 2 s clips
    gt = {**record, "vid": f"long_{record['vid']}_{record['qid']}", "duration": total * 2,
          "relevant_windows": [[s + shift, e + shift] for s, e in record["relevant_windows"]],
          "relevant_clip_ids": [c + offset for c in record["relevant_clip_ids"]]}
    start, end = (t // 2 + offset for t in record["relevant_windows"][0])
    crosses = any(start < k * window < end for k in range(1, total // window + 1))
    return Case(with_tef(video), texts[record["qid"]], gt, border=crosses)


# ---------------------------------------------------------------------------------------- quality


def score(predictor: Predictor, cases: list[Case], stride: int | None, iou: float, group: int = 4) -> dict[str, float]:
    """The official metrics of the cases' answers, videos sent ``group`` at a time (their windows batched)."""
    lines = []
    for i in range(0, len(cases), group):
        part = cases[i: i + group]
        answers = predictor.predict([c.video for c in part], [c.text for c in part], [c.gt["duration"] for c in part],
                                    mode="qvhighlights", stride=stride, iou_threshold=iou)
        lines += [a.to_submission(qid=c.gt["qid"], query=c.gt["query"], vid=c.gt["vid"]) for c, a in zip(part, answers)]
    brief = evaluate(lines, [c.gt for c in cases])["brief"]
    return {k: brief[k] for k in METRICS}


def quality(settings: Settings, checkpoint: Path, cfg: CorebaConfig, spec: SyntheticSpec) -> list[QualityRow]:
    records, clips, texts, background = load_split(spec, max_video_len=None)
    records = records[: settings.queries]
    predictor = Predictor(TorchEngine(Coreba.from_pretrained(checkpoint)), cfg, settings.max_batch_size)
    rows = []
    start = time.perf_counter()
    metrics = score(predictor, short_cases(records, clips, texts), None, DEFAULT_NMS_IOU)
    rows.append(QualityRow("150 s", None, None, 1.0, metrics, time.perf_counter() - start))
    print(_quality_line(rows[-1]), flush=True)
    window = cfg.max_video_len
    for filler in settings.fillers:
        rng = np.random.default_rng(settings.seed)
        cases = [long_case(r, clips, texts, background, filler, int(rng.integers(*settings.clips, endpoint=True)),
                           window, border=i % 2 == 1, rng=rng) for i, r in enumerate(records)]
        crossing = sum(c.border for c in cases)
        settings_grid = [(s, DEFAULT_NMS_IOU) for s in settings.strides]
        settings_grid += [(default_stride(window), iou) for iou in settings.ious if iou != DEFAULT_NMS_IOU]
        if filler != FILLERS[0]:  # the harder filler at the default only
            settings_grid = [(default_stride(window), DEFAULT_NMS_IOU)]
        for stride, iou in settings_grid:
            start = time.perf_counter()
            metrics = score(predictor, cases, stride, iou)
            windows = statistics.mean(num_windows(len(c.video), window, stride) for c in cases)
            rows.append(QualityRow(f"long ({filler})", stride, iou, windows, metrics, time.perf_counter() - start,
                                   across_border=crossing))
            print(_quality_line(rows[-1]), flush=True)
    return rows


def _quality_line(row: QualityRow) -> str:
    return f"{row.videos} stride {row.stride} iou {row.iou}: {row.metrics} ({row.seconds:.0f} s)"


# ---------------------------------------------------------------------------------------- speed


def _timed(step, repeats: int) -> float:
    step()  # warm-up: first-call allocations, ONNX Runtime's first run
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def speed(settings: Settings, checkpoint: Path, cfg: CorebaConfig) -> list[SpeedRow]:
    model = Coreba.from_pretrained(checkpoint).eval()
    onnx_path = settings.out / "coreba.onnx"
    if not onnx_path.is_file():
        export_onnx(model, onnx_path)
    engines = {"eager PyTorch": TorchEngine(model), "ONNX Runtime CPU": OnnxRuntimeEngine(onnx_path)}
    rng = np.random.default_rng(settings.seed)
    window = cfg.max_video_len
    long_clips = window * 48 if settings.tiny else TWO_HOURS_CLIPS
    mid_clips = window * 12
    video = rng.standard_normal((long_clips, cfg.video_dim), dtype=np.float32) / np.sqrt(cfg.video_dim)
    texts = [rng.standard_normal((int(rng.integers(8, 25)), cfg.text_dim), dtype=np.float32) for _ in
             range(settings.num_queries_speed)]
    repeats = 1 if settings.tiny else 3
    rows = []
    for name, engine in engines.items():
        predictor = Predictor(engine, cfg, settings.max_batch_size)
        for clips in (mid_clips, long_clips):  # the same clips/s at both lengths: time linear in the length
            part = video[:clips]
            seconds = _timed(lambda: predictor.predict([part], texts[:1]), repeats)  # noqa: B023
            rows.append(SpeedRow(name, "one long video", clips, 1, seconds, clips_per_s=clips / seconds,
                                 extra={"windows": num_windows(clips, window, default_stride(window))}))
            print(rows[-1], flush=True)
        Q = len(texts)
        for clips in (window, mid_clips):
            part = video[:clips]
            together = _timed(lambda: predictor.search(part, texts), repeats)  # noqa: B023
            apart = _timed(lambda: [predictor.predict([part], [t]) for t in texts], repeats)  # noqa: B023
            rows.append(SpeedRow(name, f"{Q} queries, search vs {Q} predict calls", clips, Q, together,
                                 clips_per_s=clips * Q / together, speedup=apart / together,
                                 extra={"separate_s": apart}))
            print(rows[-1], flush=True)
    return rows


# ---------------------------------------------------------------------------------------- report


def _fmt(x: float | None, digits: int = 1) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def markdown(quality_rows: list[QualityRow], speed_rows: list[SpeedRow]) -> str:
    lines = []
    if quality_rows:
        lines += ["| videos | stride (clips) | NMS IoU | windows / video | moment across a border | R1@0.5 | R1@0.7 | "
                  "mAP | HL VeryGood mAP |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in quality_rows:
            m = r.metrics
            lines.append(f"| {r.videos} | {r.stride or ''} | {r.iou if r.iou is not None else ''} | "
                         f"{r.windows_per_video:.1f} | {'' if r.across_border is None else r.across_border} | "
                         f"{m['MR-full-R1@0.5']:.1f} | {m['MR-full-R1@0.7']:.1f} | {m['MR-full-mAP']:.1f} | "
                         f"{m['HL-min-VeryGood-mAP']:.1f} |")
        lines.append("")
    if speed_rows:
        lines += ["| engine | what | clips | queries | seconds | clips/s | speed-up |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for r in speed_rows:
            lines.append(f"| {r.engine} | {r.what} | {r.clips} | {r.queries} | {r.seconds:.2f} | "
                         f"{_fmt(r.clips_per_s, 0)} | {_fmt(r.speedup, 2)}{'x' if r.speedup else ''} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(prog="python benchmarks/long_video.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("artifacts/long_video"), help="default: %(default)s")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the demo checkpoint")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model on tiny data: a dry run")
    parser.add_argument("--queries", type=int, default=None, help="held-out queries scored (default: all)")
    parser.add_argument("--clips", type=int, nargs=2, default=None, metavar=("MIN", "MAX"),
                        help="long-video length in 2 s clips (default: 300 1800, 10 to 60 min; --tiny: 60 150)")
    parser.add_argument("--strides", type=int, nargs="+", default=None,
                        help="strides in clips (default: the window, 2/3 and 1/2 of it: 75 50 37)")
    parser.add_argument("--ious", type=float, nargs="+", default=[0.3, 0.5, 0.7],
                        help="NMS thresholds tried at the default stride (default: %(default)s)")
    parser.add_argument("--fillers", nargs="+", choices=FILLERS, default=list(FILLERS))
    parser.add_argument("--no-quality", action="store_true", help="speed only")
    parser.add_argument("--speed", action="store_true", help="also measure clips/s and the multi-query speed-up")
    parser.add_argument("--speed-queries", type=int, default=16, help="Q of the multi-query speed-up (default: 16)")
    parser.add_argument("--max-batch-size", type=int, default=64, help="engine rows per batch (default: 64)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    window = 30 if args.tiny else 75
    strides = tuple(args.strides or (window, window * 2 // 3, window // 2))
    clips = tuple(args.clips or ((60, 150) if args.tiny else (300, 1800)))
    return Settings(out=args.out, checkpoint=args.checkpoint, tiny=args.tiny, queries=args.queries,
                    clips=clips, strides=strides, ious=tuple(args.ious),
                    fillers=() if args.no_quality else tuple(args.fillers),
                    speed=args.speed, num_queries_speed=args.speed_queries, max_batch_size=args.max_batch_size,
                    seed=args.seed)


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    settings.out.mkdir(parents=True, exist_ok=True)
    machine = describe_machine(torch.device("cpu"))
    spec = synthetic_spec(settings)
    checkpoint, cfg = model_and_config(settings, spec)
    quality_rows = quality(settings, checkpoint, cfg, spec) if settings.fillers else []
    speed_rows = speed(settings, checkpoint, cfg) if settings.speed else []
    machine.load_average_end = load_average()
    table = markdown(quality_rows, speed_rows)
    payload = {"machine": asdict(machine), "settings": {k: str(v) if isinstance(v, Path) else v
                                                        for k, v in asdict(settings).items()},
               "checkpoint": str(checkpoint), "quality": [asdict(r) for r in quality_rows],
               "speed": [asdict(r) for r in speed_rows]}
    (settings.out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    (settings.out / "results.md").write_text(table)
    print(table)
    print(f"load average: {machine.load_average_start} at the start, {machine.load_average_end} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
