"""Accuracy gates: a reduced-precision engine is accepted only if its QVHighlights metrics stay within
``MAX_DELTA`` points of the fp32 engine's on the same set.

Output errors alone cannot accept a bf16 or int8 model: a saliency error of 0.1 may reorder no clip or many,
and what a user sees is the ranking. So both engines run :func:`coreba.predict.predict_dataset_with_engine` over
a labelled set and :func:`coreba.evaluate.evaluate` scores them; the gate compares the metrics below. The set
must have at least ``MIN_QUERIES`` queries, so that a single query moves a metric by at most 0.2 points and a
one-point change is a real one, not one flipped query. A change in EITHER direction beyond the tolerance fails:
a model that scores differently is not the model that was validated.

Both engines are scored on their EXACT answers (``mode="exact"`` of :func:`coreba.postprocess.postprocess`), not
on QD-DETR's submission rule: that rule stores saliency through float16, whose step is 1/128 at the demo's
saliency magnitudes (~11), so on the demo's gate set the top two clips of 74% of the queries tie exactly and HL
HIT@1 is decided by the clip order, not the model; any perturbation of the outputs then re-draws it (measured:
every bf16/int8 engine moved HIT@1 by +2.4 to +3.8 points with the rule, each within 1.0 point of every other
metric). The gate compares the models; the rule is for writing leaderboard files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coreba.config import CorebaConfig
from coreba.engines.base import Engine
from coreba.evaluate import evaluate
from coreba.predict import predict_dataset_with_engine
from export.datasets import EvalSet

MAX_DELTA = 1.0  # points (metrics are percentages)
MIN_QUERIES = 500
# label -> key of ``evaluate(...)["brief"]``; HL at the "VeryGood" level, as the QVHighlights papers report it
GATED_METRICS: dict[str, str] = {
    "MR R1@0.5": "MR-full-R1@0.5",
    "MR R1@0.7": "MR-full-R1@0.7",
    "MR mAP": "MR-full-mAP",
    "HL mAP": "HL-min-VeryGood-mAP",
    "HL HIT@1": "HL-min-VeryGood-Hit1",
}
EVAL_BATCH_SIZE = 32


class GateSetTooSmall(ValueError):
    """The evaluation set has too few queries for a one-point gate to mean anything."""


def require_gate_size(eval_set: EvalSet) -> int:
    """The set's query count, or :class:`GateSetTooSmall` under ``MIN_QUERIES``."""
    count = eval_set.num_queries()
    if count < MIN_QUERIES:
        raise GateSetTooSmall(f"{eval_set.name} has {count} queries; an accuracy gate needs at least {MIN_QUERIES} "
                              f"(then one query moves a metric by <= {100 / MIN_QUERIES:.1f} points)")
    return count


def score_engine(engine: Engine, eval_set: EvalSet, config: CorebaConfig,
                 batch_size: int = EVAL_BATCH_SIZE) -> dict[str, float]:
    """The ``brief`` metrics of ``engine`` on ``eval_set`` (raises :class:`GateSetTooSmall` under MIN_QUERIES)."""
    require_gate_size(eval_set)
    ground_truth = eval_set.ground_truth()
    lines = predict_dataset_with_engine(engine, eval_set.loader(config, batch_size), config, mode="exact")
    return evaluate(lines, ground_truth)["brief"]


@dataclass
class GateRow:
    metric: str
    reference: float
    candidate: float
    max_delta: float

    @property
    def delta(self) -> float:
        return self.candidate - self.reference

    @property
    def ok(self) -> bool:
        return abs(self.delta) <= self.max_delta + 1e-9  # metrics carry 2 decimals


@dataclass
class GateReport:
    candidate: str  # e.g. "openvino int8"
    reference: str  # e.g. "openvino fp32"
    eval_set: str
    num_queries: int
    rows: list[GateRow] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def deltas(self) -> dict[str, float]:
        return {r.metric: round(r.delta, 2) for r in self.rows}

    def table(self) -> str:
        lines = [f"accuracy gate: {self.candidate} vs {self.reference} on {self.eval_set} ({self.num_queries} "
                 f"queries); every |delta| must be <= {MAX_DELTA} point",
                 f"{'metric':10s} {self.reference:>16s} {self.candidate:>16s} {'delta':>8s}  ok"]
        for r in self.rows:
            lines.append(f"{r.metric:10s} {r.reference:16.2f} {r.candidate:16.2f} {r.delta:+8.2f}  "
                         f"{'yes' if r.ok else 'NO'}")
        lines.append(f"verdict: {'ACCEPTED' if self.ok else 'REFUSED'}")
        return "\n".join(lines)


def compare_metrics(reference: dict[str, float], candidate: dict[str, float], *, candidate_name: str,
                    reference_name: str, eval_set: str, num_queries: int, max_delta: float = MAX_DELTA) -> GateReport:
    """The gate's verdict on two ``brief`` metric dicts of the same set."""
    missing = [key for key in GATED_METRICS.values() if key not in reference or key not in candidate]
    if missing:
        raise ValueError(f"metrics {missing} are missing: the set needs moment windows and saliency labels")
    rows = [GateRow(label, reference[key], candidate[key], max_delta) for label, key in GATED_METRICS.items()]
    return GateReport(candidate_name, reference_name, eval_set, num_queries, rows)


def accuracy_gate(reference: Engine, candidate: Engine, eval_set: EvalSet, config: CorebaConfig, *,
                  reference_name: str, candidate_name: str,
                  reference_metrics: dict[str, float] | None = None) -> GateReport:
    """Score both engines on ``eval_set`` (the reference's metrics may be passed in, computed once) and compare."""
    ref = reference_metrics if reference_metrics is not None else score_engine(reference, eval_set, config)
    cand = score_engine(candidate, eval_set, config)
    return compare_metrics(ref, cand, candidate_name=candidate_name, reference_name=reference_name,
                           eval_set=eval_set.name, num_queries=eval_set.num_queries())
