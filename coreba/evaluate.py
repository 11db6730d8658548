"""The standard QVHighlights evaluation: moment retrieval (MR) and highlight detection (HL).

Reproduces the numbers of the official QVHighlights evaluation (Moment-DETR's ``standalone_eval``) to the
reported two decimals, so coreba's results compare directly with the paper tables and other models:

* MR: R1@IoU (top-1 window only) and COCO/ActivityNet-style interpolated AP per query, averaged over queries,
  at IoU 0.5:0.05:0.95, for the full set and for short (<=10 s), middle (10-30 s) and long (>30 s) GT windows.
* HL: per annotator, clips scoring >= 2/3/4 (Fair/Good/VeryGood) are positives; mAP averages the AP over the
  3 annotators and the queries, HIT@1 asks whether the top-scored clip is positive for any annotator.

Usage::

    python -m coreba.evaluate --submission val_preds.jsonl --gt highlight_val_release.jsonl [--out m.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.5 ... 0.95
MAX_PRED_WINDOWS = 10  # only the first 10 submitted windows count for mAP, as on the official server
CLIP_LENGTH = 2  # seconds per QVHighlights clip
# (lo, hi]: a query joins a split if one of its GT windows has lo < length <= hi; None = every window.
LENGTH_RANGES: dict[str, tuple[float, float] | None] = {
    "short": (0, 10),
    "middle": (10, 30),
    "long": (30, 150),
    "full": None,
}
SALIENCY_LEVELS = {"Fair": 2, "Good": 3, "VeryGood": 4}  # minimum annotator score of a positive clip
# Feature extractors can yield one clip more or fewer than duration / 2 (the official QD-DETR and Moment-DETR
# val predictions have 13 such queries); the official evaluation pads with 0 / truncates, and so do we.
SALIENCY_LEN_SLACK = 1

Metrics = dict[str, Any]


# ----------------------------------------------------------------------------- temporal IoU (pure numpy)
def _cross_iou(spans1: np.ndarray, spans2: np.ndarray) -> np.ndarray:
    """IoU of every ``[start, end]`` in ``spans1`` (N, 2) with every one in ``spans2`` (M, 2) -> (N, M)."""
    left = np.maximum(spans1[:, None, 0], spans2[None, :, 0])  # (N, M)
    right = np.minimum(spans1[:, None, 1], spans2[None, :, 1])  # (N, M)
    inter = np.clip(right - left, 0, None)
    union = (spans1[:, 1] - spans1[:, 0])[:, None] + (spans2[:, 1] - spans2[:, 0])[None, :] - inter
    return inter / union


def _paired_iou(spans1: np.ndarray, spans2: np.ndarray) -> np.ndarray:
    """IoU of ``spans1[i]`` with ``spans2[i]`` (both (N, 2)) -> (N,).

    The union is taken as the hull ``max(end) - min(start)``: equal to the true union whenever the spans
    overlap (and the IoU is 0 otherwise), and it is the float expression the official R1 uses.
    """
    inter = np.maximum(0, np.minimum(spans1[:, 1], spans2[:, 1]) - np.maximum(spans1[:, 0], spans2[:, 0]))
    hull = np.maximum(spans1[:, 1], spans2[:, 1]) - np.minimum(spans1[:, 0], spans2[:, 0])
    return np.divide(inter, hull, out=np.zeros_like(inter), where=hull != 0)


# ----------------------------------------------------------------------------- moment retrieval
def _greedy_match(iou: np.ndarray, gt_order: np.ndarray, threshold: float) -> np.ndarray:
    """True positives (P,) of score-sorted predictions: each takes its best still-free GT with IoU >= thr."""
    taken = np.zeros(iou.shape[1], dtype=bool)
    tp = np.zeros(iou.shape[0], dtype=bool)
    for p, order in enumerate(gt_order):
        for g in order:
            if iou[p, g] < threshold:
                break
            if not taken[g]:
                taken[g] = tp[p] = True
                break
    return tp


def _interpolated_ap(tp: np.ndarray, num_gt: int) -> float:
    """ActivityNet AP: area under the precision-recall curve with precision made monotone from the right."""
    tp_cum = np.cumsum(tp)
    precision = np.r_[0.0, tp_cum / np.arange(1, len(tp) + 1), 0.0]
    recall = np.r_[0.0, tp_cum / num_gt, 1.0]
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def _query_ap(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """AP of one query's windows ``pred`` (P, 3) [start, end, score] vs ``gt`` (G, 2) at each IoU threshold."""
    pred = pred[np.argsort(-pred[:, 2], kind="stable")]  # ties keep submission order
    iou = _cross_iou(pred[:, :2], gt)  # (P, G)
    gt_order = np.argsort(iou, axis=1, kind="stable")[:, ::-1]  # best GT first
    return np.array([_interpolated_ap(_greedy_match(iou, gt_order, t), len(gt)) for t in IOU_THRESHOLDS])


def _percent(value: float) -> float:
    """The official rounding: a percentage to 2 decimals."""
    return float(f"{100 * value:.2f}")


def _eval_mr_split(preds: dict[Any, np.ndarray], gts: dict[Any, np.ndarray]) -> Metrics:
    """MR-mAP and MR-R1 (keyed by str(IoU threshold)) over the queries in ``gts`` (a split)."""
    qids = [q for q in preds if q in gts]
    ap = np.array([_query_ap(preds[q][:MAX_PRED_WINDOWS], gts[q]) for q in qids])  # (Q, T)
    ap_per_thd = ap.mean(0)
    mr_map = {str(t): _percent(v) for t, v in zip(IOU_THRESHOLDS, ap_per_thd)}
    mr_map["average"] = _percent(np.mean(ap_per_thd))

    # R1 scores the first submitted window against the GT window it overlaps most.
    top1 = np.array([preds[q][0, :2] for q in qids])  # (Q, 2)
    best_gt = np.array([gts[q][np.argmax(_cross_iou(top1[i : i + 1], gts[q])[0])] for i, q in enumerate(qids)])
    iou = _paired_iou(top1, best_gt)
    mr_r1 = {str(t): _percent(np.mean(iou >= t)) for t in IOU_THRESHOLDS}
    return {"MR-mAP": mr_map, "MR-R1": mr_r1}


def _windows_in_range(gts: dict[Any, np.ndarray], length_range: tuple[float, float] | None) -> dict:
    """Keep only GT windows whose length is in ``(lo, hi]``, and only queries left with one."""
    if length_range is None:
        return gts
    lo, hi = length_range
    kept = {q: w[(w[:, 1] - w[:, 0] > lo) & (w[:, 1] - w[:, 0] <= hi)] for q, w in gts.items()}
    return {q: w for q, w in kept.items() if len(w)}


# ----------------------------------------------------------------------------- highlight detection
def _binary_ap(labels: np.ndarray, scores: np.ndarray) -> float:
    """AP of clip ``scores`` for 0/1 ``labels`` (video2gif / vlfeat interpolated AP, as the official HL-mAP).

    One operating point per distinct score (tied clips are ranked together); the precision at each recall
    level is the best precision at that recall or higher; AP is its mean over the recall levels reached.
    A query with all-positive (all-negative) labels scores 1 (0), as the official evaluation defines it.
    """
    if labels.min() == labels.max():
        return float(labels[0])
    order = np.argsort(-scores, kind="stable")
    ends = np.r_[np.flatnonzero(np.diff(scores[order])), len(scores) - 1]  # last clip of each score tie
    tps = np.cumsum(labels[order])[ends]
    precision = np.maximum.accumulate((tps / (ends + 1))[::-1])  # from the lowest threshold up
    recall_changes = np.flatnonzero(np.diff(np.r_[tps[::-1], 0]))
    return float(np.mean(precision[recall_changes]))


def _eval_hl(saliency: dict[Any, np.ndarray], gt_scores: dict[Any, np.ndarray]) -> Metrics:
    """HL-mAP and HL-Hit1 at each level of ``SALIENCY_LEVELS``; ``gt_scores[qid]`` is (#clips, 3)."""
    qids = list(saliency)
    metrics = {}
    for name, min_score in SALIENCY_LEVELS.items():
        ap = np.zeros((len(qids), 3))
        hit = np.zeros((len(qids), 3))
        for i, q in enumerate(qids):
            labels = (gt_scores[q] >= min_score).astype(float)  # (#clips, 3)
            pred = saliency[q]
            top = int(np.argmax(pred))
            if top < len(labels):
                hit[i] = labels[top]
            padded = np.zeros(len(labels))  # the official pad-with-0 / truncate to the GT clip count
            padded[: min(len(pred), len(labels))] = pred[: len(labels)]
            ap[i] = [_binary_ap(labels[:, a], padded) for a in range(3)]
        metrics[f"HL-min-{name}"] = {"HL-mAP": _percent(np.mean(ap)), "HL-Hit1": _percent(np.mean(hit.max(1)))}
    return metrics


def _gt_saliency(gt: dict) -> np.ndarray:
    """(#clips, 3) annotator scores over the whole video; clips outside ``relevant_clip_ids`` score 0."""
    scores = np.zeros((_num_clips(gt), 3))
    if "relevant_clip_ids" not in gt:
        raise ValueError(f"{_label(gt, 'ground truth')}: saliency_scores without relevant_clip_ids")
    ids = _as_array(gt["relevant_clip_ids"], gt, "ground truth", "relevant_clip_ids", 1, allow_empty=True)
    labels = _as_array(gt["saliency_scores"], gt, "ground truth", "saliency_scores", 2, allow_empty=True)
    if ids.size and ((ids != np.round(ids)).any() or (ids < 0).any() or (ids >= len(scores)).any()):
        raise ValueError(f"{_label(gt, 'ground truth')}: relevant_clip_ids must be clip indices in "
                         f"0..{len(scores) - 1} (a {gt['duration']} s video)")
    if labels.shape != (len(ids), 3) and ids.size:
        raise ValueError(f"{_label(gt, 'ground truth')}: saliency_scores must hold 3 scores for each of the "
                         f"{len(ids)} relevant_clip_ids, got shape {labels.shape}")
    if ids.size:
        scores[ids.astype(int)] = labels
    return scores


# ----------------------------------------------------------------------------- validation
class JsonLine(dict):
    """A record read by :func:`load_jsonl`, which remembers where it came from (``where``: "file:line"), so
    every error about it can name the file and the line."""

    where: str | None = None


def _label(record: Any, what: str) -> str:
    """"file:line: submission qid 3" (or without the location for records not read from a file)."""
    where = getattr(record, "where", None)
    qid = record.get("qid") if isinstance(record, dict) else None
    return (f"{where}: " if where else "") + f"{what} qid {qid!r}"


def _has_key(records: Sequence[dict], key: str, what: str) -> bool:
    """Whether every record has ``key`` (False if none does); a partial presence is an error."""
    missing = [r for r in records if key not in r]
    if missing and len(missing) < len(records):
        raise ValueError(f"{_label(missing[0], what)}: no {key!r} although other entries have it")
    return not missing


def _as_array(value: Any, record: dict, what: str, key: str, ndim: int, allow_empty: bool = False) -> np.ndarray:
    """``value`` as a finite float array of ``ndim`` dims, or a ValueError naming the record."""
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{_label(record, what)}: {key} is not numeric ({e})") from None
    if arr.size == 0 and allow_empty:
        return arr.reshape((0,) * ndim)
    if arr.ndim != ndim or arr.size == 0 or not np.isfinite(arr).all():
        raise ValueError(f"{_label(record, what)}: {key} must be a non-empty {ndim}-D list of finite numbers")
    return arr


def _num_clips(gt: dict) -> int:
    """Clips of the video, from its ``duration`` (seconds)."""
    duration = gt.get("duration")
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not 0 < duration < float("inf"):
        raise ValueError(f"{_label(gt, 'ground truth')}: duration must be a finite number of seconds > 0, "
                         f"got {duration!r}")
    return int(duration / CLIP_LENGTH)


def _check_qids(submission: Sequence[dict], ground_truth: Sequence[dict]) -> dict[Any, dict]:
    """GT by qid, after checking that both sides hold the same queries, each once, with a usable qid."""
    for what, records in (("submission", submission), ("ground truth", ground_truth)):
        seen = set()
        for i, r in enumerate(records):
            if not isinstance(r, dict):
                where = getattr(r, "where", None) or f"{what} entry {i}"
                raise ValueError(f"{where}: expected a JSON object, got {type(r).__name__}")
            if "qid" not in r:
                raise ValueError(f"{_label(r, what)}: entry without 'qid': {str(r)[:80]}")
            qid = r["qid"]
            if isinstance(qid, bool) or not isinstance(qid, (int, str)):
                raise ValueError(f"{_label(r, what)}: qid must be a string or an integer, got "
                                 f"{type(qid).__name__}")
            if qid in seen:
                raise ValueError(f"{_label(r, what)}: {what} has qid {qid!r} more than once")
            seen.add(qid)
    gt_by_qid = {g["qid"]: g for g in ground_truth}
    pred_by_qid = {s["qid"]: s for s in submission}
    missing = [q for q in gt_by_qid if q not in pred_by_qid]
    extra = [q for q in pred_by_qid if q not in gt_by_qid]
    if missing:
        raise ValueError(f"{_label(gt_by_qid[missing[0]], 'ground truth')}: submission misses {len(missing)} "
                         f"ground-truth qids, e.g. {missing[:5]}")
    if extra:
        raise ValueError(f"{_label(pred_by_qid[extra[0]], 'submission')}: submission has {len(extra)} qids not in "
                         f"the ground truth, e.g. {extra[:5]}")
    return gt_by_qid


def _pred_windows(entry: dict) -> np.ndarray:
    """(P, 3) [start, end, score] of one submission entry, validated."""
    windows = _as_array(entry["pred_relevant_windows"], entry, "submission", "pred_relevant_windows", 2)
    if windows.shape[1] != 3 or (windows[:, 1] < windows[:, 0]).any():
        raise ValueError(f"{_label(entry, 'submission')}: pred_relevant_windows must be [start, end, score] with "
                         "start <= end")
    return windows


def _gt_windows(gt: dict) -> np.ndarray:
    """(G, 2) [start, end] of one ground-truth entry, validated."""
    windows = _as_array(gt["relevant_windows"], gt, "ground truth", "relevant_windows", 2, allow_empty=True)
    if not windows.size:
        raise ValueError(f"{_label(gt, 'ground truth')} has no relevant_windows")
    if windows.shape[1] != 2 or (windows[:, 1] < windows[:, 0]).any():
        raise ValueError(f"{_label(gt, 'ground truth')}: relevant_windows must be [start, end] with start <= end")
    return windows


def _pred_saliency(entry: dict, gt: dict) -> np.ndarray:
    """(#clips,) saliency of one submission entry, validated against the video's clip count."""
    scores = _as_array(entry["pred_saliency_scores"], entry, "submission", "pred_saliency_scores", 1)
    if "duration" in gt:
        num_clips = _num_clips(gt)
        if abs(len(scores) - num_clips) > SALIENCY_LEN_SLACK:
            raise ValueError(
                f"{_label(entry, 'submission')}: {len(scores)} pred_saliency_scores, expected "
                f"{num_clips} (one per {CLIP_LENGTH} s clip of a {gt['duration']} s video)"
            )
    return scores


# ----------------------------------------------------------------------------- entry points
def evaluate(submission: list[dict], ground_truth: list[dict], verbose: bool = False) -> Metrics:
    """Official QVHighlights metrics of ``submission`` against ``ground_truth`` (lists of JSON-lines dicts).

    MR is scored when the submission has ``pred_relevant_windows`` and the GT ``relevant_windows``; HL when
    it has ``pred_saliency_scores`` and the GT ``saliency_scores`` (the test split has neither label).
    Returns ``{"brief": {...}, "HL-min-Fair": ..., "full": {"MR-mAP": ..., "MR-R1": ...}, ...}``, keys
    ordered as the official evaluation writes them; a length split with no query (possible only on small
    custom sets) is left out rather than reported as NaN. Raises ValueError naming the qid of a bad entry.
    """
    gt_by_qid = _check_qids(submission, ground_truth)
    do_mr = _has_key(submission, "pred_relevant_windows", "submission") and _has_key(
        ground_truth, "relevant_windows", "ground truth"
    )
    do_hl = _has_key(submission, "pred_saliency_scores", "submission") and _has_key(
        ground_truth, "saliency_scores", "ground truth"
    )
    metrics: Metrics = {}
    brief: dict[str, float] = {}
    if do_mr:
        preds = {s["qid"]: _pred_windows(s) for s in submission}
        gts = {q: _gt_windows(g) for q, g in gt_by_qid.items()}
        for name, length_range in LENGTH_RANGES.items():
            start = time.perf_counter()
            split = _windows_in_range(gts, length_range)
            if split:  # a split without queries has no defined metric: it and its brief key are left out
                metrics[name] = _eval_mr_split(preds, split)
            if verbose:
                print(
                    f"[evaluate] MR {name}: {len(split)}/{len(gts)} queries, {time.perf_counter() - start:.2f} s",
                    file=sys.stderr,
                )
        mr_brief = {f"MR-{n}-mAP": metrics[n]["MR-mAP"]["average"] for n in LENGTH_RANGES if n in metrics}
        mr_brief |= {f"MR-full-mAP@{t}": metrics["full"]["MR-mAP"][t] for t in ("0.5", "0.75")}
        mr_brief |= {f"MR-full-R1@{t}": metrics["full"]["MR-R1"][t] for t in ("0.5", "0.7")}
        brief.update(sorted(mr_brief.items()))
    if do_hl:
        start = time.perf_counter()
        saliency = {s["qid"]: _pred_saliency(s, gt_by_qid[s["qid"]]) for s in submission}
        hl = _eval_hl(saliency, {q: _gt_saliency(g) for q, g in gt_by_qid.items()})
        metrics.update(hl)
        brief.update({f"{level}-{k[3:]}": v for level, d in hl.items() for k, v in d.items()})
        if verbose:
            print(f"[evaluate] HL: {time.perf_counter() - start:.2f} s", file=sys.stderr)
    elif verbose:
        print("[evaluate] HL skipped: no saliency in the submission or the ground truth", file=sys.stderr)
    return {"brief": brief, **dict(sorted(metrics.items()))}


def load_jsonl(path: str | Path) -> list[JsonLine]:
    """One dict per non-empty line (QVHighlights files end without a newline), each remembering its file and
    line; a line that is not a JSON object is a ValueError naming both."""
    records = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(f"{where}: not UTF-8 text ({err.reason} at byte {err.start})") from None
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(value, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(value).__name__}")
            record = JsonLine(value)
            record.where = where
            records.append(record)
    return records


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: print the metrics JSON, or write it to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submission", required=True, type=Path, help="predictions, JSON lines")
    parser.add_argument("--gt", required=True, type=Path, help="QVHighlights annotations, JSON lines")
    parser.add_argument("--out", type=Path, default=None, help="metrics JSON path (default: stdout)")
    parser.add_argument("--verbose", action="store_true", help="per-split timing on stderr")
    args = parser.parse_args(argv)
    try:
        metrics = evaluate(load_jsonl(args.submission), load_jsonl(args.gt), verbose=args.verbose)
    except (ValueError, OSError) as err:  # bad content (named by file and line), unreadable file
        print("error: " + " ".join(str(err).split()), file=sys.stderr)  # one line, whatever the message holds
        return 1
    text = json.dumps(metrics, indent=4)
    if args.out is None:
        print(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
