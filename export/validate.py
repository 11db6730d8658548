"""Parity of any engine against eager PyTorch, on random inputs at several shapes, padded and unpadded.

Optimum-style: every case and output is checked, every failure collected, then one :class:`ParityError`
lists them all. Used by the ONNX and TensorRT exporters before they report success, by the tests and by
the benchmarks (a fast wrong engine is not a result).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from coreba.config import CorebaConfig
from coreba.interface import make_feeds
from coreba.model import Coreba
from coreba.postprocess import foreground_probability
from export.spec import FP32_TOLERANCE, OUTPUT_NAMES, Tolerance

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
        return "\n".join(lines)


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
    if raise_on_failure and not report.ok:
        failed = "\n".join(f"  {r.case}: {r.output} max abs {r.max_abs:.3e} > {r.tolerance:.0e}"
                           for r in report.rows if not r.ok)
        raise ParityError(f"{engine_name} does not match eager PyTorch:\n{failed}\n\n{report.table()}")
    return report
