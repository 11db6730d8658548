"""The benchmark's outputs: one :class:`Row` per (engine, point), written as CSV, JSON, a plot and a table."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

OK, FAILED, SKIPPED = "ok", "failed", "skipped"


@dataclass
class Row:
    """One engine at one point (B, Lv, Lt); ``batch`` is None for a verdict about the whole engine."""

    engine: str
    family: str
    precision: str
    io: str
    status: str  # ok | failed | skipped
    reason: str = ""
    accuracy: str = ""  # bf16/int8: the accuracy gate's metric deltas vs eager fp32, or why it was not gated
    batch: int | None = None
    num_clips: int | None = None
    num_tokens: int | None = None
    runs: int = 0
    median_ms: float = math.nan
    p90_ms: float = math.nan
    p99_ms: float = math.nan
    mean_ms: float = math.nan
    min_ms: float = math.nan
    queries_per_s: float = math.nan  # B / median
    setup_s: float = math.nan  # bind + first call: device copies, CUDA-graph capture, compile
    max_abs_err: float = math.nan  # against eager PyTorch fp32 at this point's inputs
    parity_output: str = ""
    tolerance: float = math.nan
    parity_ok: bool | None = None
    gflop_per_query: float = math.nan
    floor_ms: float = math.nan  # FLOPs of the batch / the measured GEMM rate of this precision
    pct_of_floor: float = math.nan  # floor_ms / median_ms: 100 % = at the matrix-multiply limit


def _clean(value):
    """JSON has no NaN: unknown numbers become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_csv(rows: list[Row], path: Path) -> None:
    names = [f.name for f in fields(Row)]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v)
                             for k, v in asdict(row).items()})


def write_json(payload: dict, path: Path) -> None:
    path.write_text(json.dumps(_clean(payload), indent=2, default=str) + "\n")


# ------------------------------------------------------------------------------------------------ plot


def plot(rows: list[Row], path: Path, num_clips: int, floors: dict[str, dict[int, float]], title: str) -> None:
    """Latency vs batch (log-log) and throughput vs batch, one line per engine, at ``num_clips`` clips.

    ``floors`` maps a precision to {batch: floor ms}: drawn dashed, the matrix-multiply limit.
    """
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_lat, ax_qps) = plt.subplots(1, 2, figsize=(13, 5.2))
    engines = sorted({r.engine for r in rows if r.status == OK and r.num_clips == num_clips})
    for engine in engines:
        points = sorted((r.batch, r.median_ms, r.queries_per_s) for r in rows
                        if r.engine == engine and r.status == OK and r.num_clips == num_clips)
        batches = [p[0] for p in points]
        ax_lat.plot(batches, [p[1] for p in points], marker="o", label=engine)
        ax_qps.plot(batches, [p[2] for p in points], marker="o", label=engine)
    for precision, floor in floors.items():
        if not floor:
            continue
        batches = sorted(floor)
        ax_lat.plot(batches, [floor[b] for b in batches], "k--" if precision == "fp32" else "k:", linewidth=1,
                    label=f"floor ({precision} GEMM rate)")
        ax_qps.plot(batches, [b / floor[b] * 1e3 for b in batches], "k--" if precision == "fp32" else "k:",
                    linewidth=1, label=f"ceiling ({precision} GEMM rate)")
    ax_lat.set(xscale="log", yscale="log", xlabel="batch size", ylabel="median latency per batch (ms)",
               title=f"latency, Lv={num_clips}")
    ax_qps.set(xscale="log", yscale="log", xlabel="batch size", ylabel="queries / s",
               title=f"throughput, Lv={num_clips}")
    all_batches = sorted({r.batch for r in rows if r.status == OK and r.num_clips == num_clips})
    for ax in (ax_lat, ax_qps):
        ax.grid(True, which="both", alpha=0.3)
        if all_batches:  # label the measured batch sizes, not powers of ten
            ax.set_xticks(all_batches, [str(b) for b in all_batches])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax_lat.legend(fontsize=7, loc="upper left")
    ax_qps.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------- table


def _fmt(value: float | None) -> str:
    """Three significant digits or so, thousands separated: 0.123, 1.23, 12.3, 123, 1,234."""
    if value is None or not math.isfinite(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"


def markdown_table(rows: list[Row]) -> str:
    """Timed and failed rows as a table; skipped ones after it, one line per engine and reason."""
    lines = ["| engine | prec | B | Lv | median ms | p99 ms | q/s | % of floor | parity max abs |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.status == OK:
            lines.append(f"| {r.engine} | {r.precision} | {r.batch} | {r.num_clips} | {_fmt(r.median_ms)} | "
                         f"{_fmt(r.p99_ms)} | {_fmt(r.queries_per_s)} | {_fmt(r.pct_of_floor)} | "
                         f"{r.max_abs_err:.1e} |")
        elif r.status == FAILED:
            where = f"{r.batch} | {r.num_clips}" if r.batch is not None else "- | -"
            lines.append(f"| {r.engine} | {r.precision} | {where} | FAILED: {r.reason[:80]} | | | | |")
    skipped: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        if r.status == SKIPPED:
            skipped.setdefault((r.engine, r.reason), []).append(
                "all" if r.batch is None else f"B{r.batch}/Lv{r.num_clips}")
    if skipped:
        lines += ["", "SKIPPED:"]
        for (engine, reason), where in skipped.items():
            lines.append(f"- {engine} ({', '.join(where)}): {reason}")
    return "\n".join(lines)
