"""Parity of any engine against eager PyTorch, on random inputs at several shapes, padded and unpadded.

Optimum-style: every case and output is checked, every failure collected, then one :class:`ParityError`
lists them all. Used by the ONNX and TensorRT exporters before they report success, by the tests and by
the benchmarks (a fast wrong engine is not a result).

Two harnesses on the same cases: :func:`check_parity` compares the raw outputs with eager PyTorch;
:func:`check_answer_parity` compares an end-to-end graph's answer with eager PyTorch followed by
:func:`coreba.postprocess.postprocess`, the one post-processing (durations drawn per case).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from coreba.answer import pack_answer
from coreba.config import CorebaConfig
from coreba.interface import make_durations, make_feeds
from coreba.model import Coreba
from coreba.postprocess import foreground_probability, postprocess
from export.spec import DURATION, FP32_ANSWER_TOLERANCE, FP32_TOLERANCE, OUTPUT_NAMES, AnswerTolerance, Tolerance

RunFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class ParityError(AssertionError):
    """An engine's outputs differ from eager PyTorch by more than the tolerance."""


@dataclass(frozen=True)
class ParityCase:
    name: str
    video_lens: tuple[int, ...]
    text_lens: tuple[int, ...]


def parity_cases(cfg: CorebaConfig) -> list[ParityCase]:
    """B 1 and 4+; Lv 1, max (75), and lengths not traced at export; Lt 1 and max (32); padded and not."""
    V, T = cfg.max_video_len, cfg.max_text_len
    unseen = max(1, min(V, 47) - 1)  # not among the export's example lengths
    cases = [
        ParityCase(f"B1 Lv{V} Lt{T}", (V,), (T,)),
        ParityCase("B1 Lv1 Lt1", (1,), (1,)),
        ParityCase(f"B4 padded Lv<= {V}", (V, max(1, V // 2), 1, unseen), (T, 7 % T + 1, 1, max(1, T - 5))),
        ParityCase(f"B5 Lv{unseen} unpadded", (unseen,) * 5, (T,) * 5),
        ParityCase(f"B6 Lv{V} text padded", (V,) * 6, (1, T, max(1, T // 3), 5 % T + 1, T, 3 % T + 1)),
    ]
    return cases


@torch.inference_mode()
def eager_outputs(model: Coreba, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    device = next(model.parameters()).device
    t = {k: torch.from_numpy(v).to(device) for k, v in feeds.items()}
    out = model.eval()(t["video_feats"], t["video_mask"], t["text_feats"], t["text_mask"])
    return {k: out[k].float().cpu().numpy() for k in OUTPUT_NAMES}


@dataclass
class ParityRow:
    case: str
    output: str
    max_abs: float
    max_rel: float  # max |a - b| / max |b|
    tolerance: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs)) and self.max_abs <= self.tolerance


@dataclass
class ParityReport:
    engine: str
    rows: list[ParityRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def worst(self) -> dict[str, float]:
        """The largest absolute error per output over every case (for metadata and READMEs)."""
        worst: dict[str, float] = {}
        for r in self.rows:
            worst[r.output] = max(worst.get(r.output, 0.0), r.max_abs)
        return worst

    def table(self) -> str:
        lines = [f"parity of {self.engine} vs eager PyTorch",
                 f"{'case':28s} {'output':18s} {'max abs':>10s} {'max rel':>10s} {'tol':>8s}  ok"]
        for r in self.rows:
            lines.append(f"{r.case:28s} {r.output:18s} {r.max_abs:10.2e} {r.max_rel:10.2e} {r.tolerance:8.0e}  "
                         f"{'yes' if r.ok else 'NO'}")
        return "\n".join(lines + [f"note: {note}" for note in self.notes])


def _compare(case: str, name: str, got: np.ndarray, want: np.ndarray, tol: float) -> ParityRow:
    if got.shape != want.shape:
        return ParityRow(case, f"{name} shape {got.shape}!={want.shape}", float("inf"), float("inf"), tol)
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    max_abs = float(err.max()) if err.size else 0.0
    if not np.isfinite(got).all():
        max_abs = float("nan")
    scale = float(np.abs(want).max()) if want.size else 1.0
    return ParityRow(case, name, max_abs, max_abs / max(scale, 1e-12), tol)


def check_parity(run: RunFn, model: Coreba, engine_name: str, tolerance: Tolerance = FP32_TOLERANCE,
                 score_tolerance: float | None = None, cases: list[ParityCase] | None = None,
                 seed: int = 0, raise_on_failure: bool = True) -> ParityReport:
    """Run ``run`` and eager ``model`` on every case; compare each output (and, if ``score_tolerance``, the
    foreground probabilities). Raises :class:`ParityError` listing every failure."""
    cfg = model.config
    report = ParityReport(engine_name)
    for i, case in enumerate(cases or parity_cases(cfg)):
        feeds = make_feeds(cfg, case.video_lens, case.text_lens, seed=seed + i)
        want = eager_outputs(model, feeds)
        got = run(feeds)
        for name in OUTPUT_NAMES:
            report.rows.append(_compare(case.name, name, np.asarray(got[name]), want[name], tolerance.of(name)))
        if score_tolerance is not None:
            report.rows.append(_compare(case.name, "fg_probability", foreground_probability(got["pred_logits"]),
                                        foreground_probability(want["pred_logits"]), score_tolerance))
    if raise_on_failure:
        _raise_failures(report)
    return report


def _raise_failures(report: ParityReport) -> None:
    if not report.ok:
        failed = "\n".join(f"  {r.case}: {r.output} max abs {r.max_abs:.3e} > {r.tolerance:.0e}"
                           for r in report.rows if not r.ok)
        raise ParityError(f"{report.engine} does not match eager PyTorch:\n{failed}\n\n{report.table()}")


def answer_feeds(cfg: CorebaConfig, case: ParityCase, seed: int) -> dict[str, np.ndarray]:
    """The case's random inputs plus ``duration`` (B,) float32 seconds: what an end-to-end graph takes."""
    return {**make_feeds(cfg, case.video_lens, case.text_lens, seed=seed),
            DURATION: make_durations(cfg, case.video_lens, seed=seed)}


def reference_answer(model: Coreba, feeds: dict[str, np.ndarray], top_k: int) -> dict[str, np.ndarray]:
    """Eager PyTorch, then :func:`coreba.postprocess.postprocess` (exact mode), packed as the graph returns it."""
    out = eager_outputs(model, {k: v for k, v in feeds.items() if k != DURATION})
    results = postprocess(out["pred_logits"], out["pred_spans"], out["saliency_scores"], feeds["video_mask"],
                          durations=feeds[DURATION], clip_length=model.config.clip_length, top_k=top_k)
    return pack_answer(results, top_k, num_slots=feeds["video_mask"].shape[1])


def align_moments(got: np.ndarray, want: np.ndarray, score_tolerance: float) -> tuple[np.ndarray, int]:
    """The reference moment each of ``got``'s (B, K, 3) stands for, and how many are not at their own position.

    ``want`` (B, Q, 3) is the reference's whole sorted list (K <= Q). If every score is within
    ``score_tolerance`` of its reference, two moments can only trade places when their reference scores are
    within twice that: inside such a group (a chain of near-equal scores, which may cross the top-k cut, so a
    near-tied moment just below it may come in) the rows are matched one to one, least total time difference
    first (Hungarian). Elsewhere each moment must be the reference's at its position, so a misplaced moment
    shows up as a large error on its times.
    """
    from scipy.optimize import linear_sum_assignment

    K = got.shape[1]
    matched, moved = want[:, :K].copy(), 0
    for b in range(want.shape[0]):
        start = 0
        while start < K:
            stop = start + 1
            while stop < want.shape[1] and want[b, stop - 1, 2] - want[b, stop, 2] <= 2 * score_tolerance:
                stop += 1
            if stop - start > 1:
                mine = slice(start, min(stop, K))
                cost = np.abs(got[b, mine, None, :2] - want[b, None, start:stop, :2]).max(-1)  # (got, reference)
                rows, cols = linear_sum_assignment(cost)
                matched[b, start + rows] = want[b, start + cols]
                moved += int((rows != cols).sum())
            start = stop
    return matched, moved


def compare_answer(case: str, got: dict[str, np.ndarray], want: dict[str, np.ndarray], durations: np.ndarray,
                   tolerance: AnswerTolerance) -> tuple[list[ParityRow], int]:
    """Rows for the moment times, scores, saliency and num_clips; and how many moments moved within ties.
    ``want`` holds the reference's whole sorted moment list (every query), ``got`` its top k."""
    moments = np.asarray(got["moments"], dtype=np.float64)
    reference = want["moments"].astype(np.float64)
    if moments.ndim != 3 or moments.shape[0] != reference.shape[0] or not moments.shape[1] <= reference.shape[1]:
        return [_compare(case, "moments", moments, reference, tolerance.times)], 0
    K = moments.shape[1]
    matched, moved = align_moments(moments, reference, tolerance.scores)
    times, want_times, name = moments[..., :2], matched[..., :2], "moment times (s)"
    if tolerance.times_per_duration:
        scale = durations.astype(np.float64)[:, None, None]
        times, want_times, name = times / scale, want_times / scale, "times / duration"
    rows = [_compare(case, name, times, want_times, tolerance.times),
            _compare(case, "moment scores", moments[..., 2], reference[:, :K, 2], tolerance.scores),
            _compare(case, "saliency", np.asarray(got["saliency"]), want["saliency"], tolerance.saliency),
            _compare(case, "num_clips", np.asarray(got["num_clips"]), want["num_clips"], 0.0)]
    return rows, moved


def check_answer_parity(run: RunFn, model: Coreba, engine_name: str, top_k: int,
                        tolerance: AnswerTolerance = FP32_ANSWER_TOLERANCE, cases: list[ParityCase] | None = None,
                        seed: int = 0, raise_on_failure: bool = True) -> ParityReport:
    """Run an end-to-end engine ``run`` (inputs + duration -> answer) on every case and compare its answer with
    eager ``model`` + ``postprocess``. Moments that trade places within near-equal scores are noted, not failed
    (see :func:`align_moments`). Raises :class:`ParityError` listing every failure."""
    cfg = model.config
    report = ParityReport(engine_name)
    moved = 0
    for i, case in enumerate(cases or parity_cases(cfg)):
        feeds = answer_feeds(cfg, case, seed + i)
        got = run(feeds)
        if np.asarray(got["moments"]).shape[1:] != (top_k, 3):
            raise ParityError(f"{engine_name} returned moments of shape {np.shape(got['moments'])}, expected "
                              f"(B, {top_k}, 3)")
        want = reference_answer(model, feeds, cfg.num_queries)  # every moment: near-ties may cross the top-k cut
        rows, swaps = compare_answer(case.name, got, want, feeds[DURATION], tolerance)
        report.rows += rows
        moved += swaps
    if moved:
        report.notes.append(f"{moved} moment(s) in another order than the reference's among scores within "
                            f"{2 * tolerance.scores:.0e} of each other (rounding decides their order)")
    if raise_on_failure:
        _raise_failures(report)
    return report
