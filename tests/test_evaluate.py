"""The QVHighlights evaluation must give the official numbers: reference runs, hand-checked cases, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from coreba.evaluate import _binary_ap, _cross_iou, _paired_iou, evaluate, load_jsonl, main

REPO = Path(__file__).resolve().parents[1]
REFERENCE_RUNS = ["qd_detr_val", "moment_detr_val"]


@pytest.fixture(scope="module")
def shared_data() -> Path:
    """``shared/data``: COREBA_SHARED_DIR if set, else ``../shared`` beside the repository."""
    shared = Path(os.environ.get("COREBA_SHARED_DIR", REPO.parent / "shared"))
    data = shared / "data"
    if not (data / "qvhighlights" / "highlight_val_release.jsonl").is_file():
        pytest.skip(f"QVHighlights data not found under {data} (set COREBA_SHARED_DIR)")
    return data


@pytest.fixture(scope="module")
def val_gt(shared_data: Path) -> list[dict]:
    return load_jsonl(shared_data / "qvhighlights" / "highlight_val_release.jsonl")


@pytest.mark.parametrize("run", REFERENCE_RUNS)
def test_reproduces_reference_metrics(shared_data: Path, val_gt: list[dict], run: str) -> None:
    """Every official number, brief and per split, to 2 decimals; key order as the official file."""
    run_dir = shared_data / "reference_predictions" / run
    expected = json.loads((run_dir / "val_preds_metrics.json").read_text())
    got = evaluate(load_jsonl(run_dir / "val_preds.jsonl"), val_gt)
    assert got["brief"] == expected["brief"]
    assert list(got["brief"]) == list(expected["brief"])
    for key in expected:
        assert got[key] == expected[key], key


def _gt(qid: int, windows: list[list[float]], duration: int = 40) -> dict:
    """A small GT entry whose clips inside ``windows`` score 4 for every annotator, others 0."""
    clips = sorted({c for s, e in windows for c in range(int(s) // 2, int(e) // 2)})
    return {
        "qid": qid,
        "query": "q",
        "vid": f"v{qid}",
        "duration": duration,
        "relevant_windows": windows,
        "relevant_clip_ids": clips,
        "saliency_scores": [[4, 4, 4]] * len(clips),
    }


def _pred(qid: int, windows: list[list[float]], saliency: list[float] | None = None) -> dict:
    return {
        "qid": qid,
        "query": "q",
        "vid": f"v{qid}",
        "pred_relevant_windows": windows,
        "pred_saliency_scores": saliency if saliency is not None else [0.0] * 20,
    }


def _perfect(gt: dict) -> dict:
    """Windows equal to the GT and saliency equal to the GT scores."""
    saliency = np.zeros(gt["duration"] // 2)
    saliency[gt["relevant_clip_ids"]] = 1.0
    return _pred(
        gt["qid"], [[s, e, 1.0 - 0.1 * i] for i, (s, e) in enumerate(gt["relevant_windows"])], saliency.tolist()
    )


def test_perfect_predictions_score_100() -> None:
    gts = [_gt(1, [[0, 6]]), _gt(2, [[4, 24]]), _gt(3, [[0, 36]]), _gt(4, [[2, 8], [24, 30]])]
    metrics = evaluate([_perfect(g) for g in gts], gts)
    assert set(metrics["brief"].values()) == {100.0}
    assert len(metrics["brief"]) == 14
    for split in ("full", "short", "middle", "long"):
        assert set(metrics[split]["MR-mAP"].values()) == {100.0}
        assert set(metrics[split]["MR-R1"].values()) == {100.0}


def test_split_keeps_all_predictions() -> None:
    """A split drops out-of-range GT windows but not predictions: here [2, 8] becomes a false positive."""
    gt = _gt(1, [[2, 8], [10, 30]])
    metrics = evaluate([_perfect(gt)], [gt])
    assert metrics["brief"]["MR-full-mAP"] == 100.0 and metrics["brief"]["MR-short-mAP"] == 100.0
    assert metrics["brief"]["MR-middle-mAP"] == 50.0  # fp then tp: AP = 1 * 1/2
    assert metrics["middle"]["MR-R1"]["0.5"] == 0.0  # the top-1 window [2, 8] misses [10, 30]


def test_iou_helpers() -> None:
    pred = np.array([[0.0, 20.0], [5.0, 15.0], [30.0, 40.0]])
    gt = np.array([[0.0, 10.0]])
    np.testing.assert_allclose(_cross_iou(pred, gt)[:, 0], [0.5, 5 / 15, 0.0])
    np.testing.assert_allclose(_paired_iou(pred, np.repeat(gt, 3, axis=0)), [0.5, 5 / 15, 0.0])


def test_known_iou_case() -> None:
    """Top-1 [0, 20] vs GT [0, 10] has IoU exactly 0.5: a hit at 0.5 only, so mAP = 1/10 of 100."""
    metrics = evaluate([_pred(1, [[0, 20, 0.9]])], [_gt(1, [[0, 10]])])
    assert metrics["brief"]["MR-full-R1@0.5"] == 100.0
    assert metrics["brief"]["MR-full-R1@0.7"] == 0.0
    assert metrics["full"]["MR-mAP"]["0.5"] == 100.0
    assert metrics["full"]["MR-mAP"]["0.55"] == 0.0
    assert metrics["brief"]["MR-full-mAP"] == 10.0
    assert metrics["brief"]["MR-short-mAP"] == 10.0  # the 10 s GT window makes it a short query
    assert "middle" not in metrics and "MR-middle-mAP" not in metrics["brief"]  # no 10-30 s GT window


def test_interpolated_ap_by_hand() -> None:
    """Hits at ranks 1 and 3 of 2 GTs: AP = 0.5 * 1 + 0.5 * 2/3; order of submission is irrelevant."""
    gt = _gt(1, [[0, 10], [20, 30]])
    windows = [[50, 60, 0.8], [20, 30, 0.7], [0, 10, 0.9]]
    metrics = evaluate([_pred(1, windows)], [gt])
    assert set(metrics["full"]["MR-mAP"].values()) == {83.33}
    assert metrics["full"]["MR-R1"]["0.95"] == 0.0  # R1 takes the first submitted window, [50, 60]


def test_highlight_ap_and_hit1_by_hand() -> None:
    assert _binary_ap(np.array([1.0, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1])) == pytest.approx(5 / 6)
    assert _binary_ap(np.array([1.0, 1, 1]), np.array([0.0, 1, 2])) == 1.0
    assert _binary_ap(np.array([0.0, 0, 0]), np.array([0.0, 1, 2])) == 0.0
    gt = _gt(1, [[0, 4]])  # clips 0 and 1 positive at every level
    saliency = [0.5, 0.2, 0.9] + [0.0] * 17  # clip 2 (negative) on top, then clips 0, 1
    brief = evaluate([_pred(1, [[0, 4, 1.0]], saliency)], [gt])["brief"]
    assert brief["HL-min-Fair-Hit1"] == 0.0
    # precision 1/2 at recall 1/2 is lifted to the 2/3 reached at recall 1 (interpolation)
    assert brief["HL-min-Fair-mAP"] == 66.67


def test_ground_truth_without_saliency_skips_highlights() -> None:
    gts = [{k: v for k, v in _gt(1, [[0, 10]]).items() if k not in ("relevant_clip_ids", "saliency_scores")}]
    metrics = evaluate([_pred(1, [[0, 10, 1.0]])], gts)
    assert not any(k.startswith("HL") for k in metrics) and not any(k.startswith("HL") for k in metrics["brief"])
    assert metrics["brief"]["MR-full-mAP"] == 100.0


@pytest.mark.parametrize(
    ("submission", "message"),
    [
        ([_pred(1, [[0, 10, 1.0]])], "misses 1 ground-truth qids, e.g. \\[2\\]"),
        ([_pred(1, [[0, 10, 1.0]]), _pred(2, [[10, 0, 1.0]])], "qid 2: pred_relevant_windows"),
        ([_pred(1, [[0, 10, 1.0]]), _pred(2, [[0, 10]])], "qid 2: pred_relevant_windows"),
        ([_pred(1, [[0, 10, 1.0]]), _pred(2, [])], "qid 2: pred_relevant_windows"),
        ([_pred(1, [[0, 10, 1.0]]), _pred(2, [[0, 10, 1.0]], [0.0] * 7)], "qid 2: 7 pred_saliency_scores"),
        ([_pred(1, [[0, 10, 1.0]]), _pred(1, [[0, 10, 1.0]])], "qid 1 more than once"),
    ],
)
def test_bad_submission_names_the_qid(submission: list[dict], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate(submission, [_gt(1, [[0, 10]]), _gt(2, [[0, 10]])])


def test_cli_writes_out(tmp_path: Path) -> None:
    gts = [_gt(1, [[0, 6]]), _gt(2, [[4, 24]])]
    for name, records in (("gt.jsonl", gts), ("sub.jsonl", [_perfect(g) for g in gts])):
        (tmp_path / name).write_text("\n".join(json.dumps(r) for r in records))  # no final newline
    out = tmp_path / "metrics" / "m.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "coreba.evaluate",
            "--submission",
            str(tmp_path / "sub.jsonl"),
            "--gt",
            str(tmp_path / "gt.jsonl"),
            "--out",
            str(out),
        ],
        cwd=REPO,
        check=True,
    )
    metrics = json.loads(out.read_text())
    assert metrics["brief"]["MR-full-mAP"] == 100.0 and metrics["brief"]["HL-min-VeryGood-Hit1"] == 100.0


def _lines(records: list) -> str:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records)


@pytest.mark.parametrize(
    ("side", "line", "bad", "message"),
    [
        ("sub", 2, '{"qid": 2, "pred_relevant_windows": [[0, 10, 1.0]]', "not valid JSON"),
        ("sub", 2, "[1, 2, 3]", "expected a JSON object, got list"),
        ("sub", 2, {**_pred(2, [[0, 10, 1.0]]), "qid": [2]}, "qid must be a string or an integer, got list"),
        ("sub", 2, {**_pred(2, [[0, 10, 1.0]]), "qid": {"a": 1}}, "qid must be a string or an integer, got dict"),
        ("sub", 2, _pred(2, [[0, 10, 1.0]], [0.0] * 7), "7 pred_saliency_scores"),
        ("sub", 2, _pred(2, [["a", 10, 1.0]]), "pred_relevant_windows is not numeric"),
        ("sub", 2, _pred(1, [[0, 10, 1.0]]), "qid 1 more than once"),
        ("gt", 2, _gt(3, [[0, 10]]), "submission misses 1 ground-truth qids"),
        ("gt", 2, {**_gt(2, [[0, 10]]), "duration": "long"}, "duration must be a finite number"),
        ("gt", 2, {**_gt(2, [[0, 10]]), "relevant_windows": [[0, 10, 5]]}, "relevant_windows must be"),
        ("gt", 2, {**_gt(2, [[0, 10]]), "relevant_clip_ids": [0, 99]}, "relevant_clip_ids must be clip indices"),
        ("gt", 2, {**_gt(2, [[0, 10]]), "saliency_scores": [[1, 2]]}, "saliency_scores must hold 3 scores"),
        ("gt", 2, "\xff", "not valid JSON"),
    ],
)
def test_every_bad_line_is_named_by_file_and_line(tmp_path, capsys, side, line, bad, message) -> None:
    """The CLI prints one line naming the file and the line, and exits 1 (no traceback)."""
    gts, subs = [_gt(1, [[0, 10]]), _gt(2, [[0, 10]])], [_pred(1, [[0, 10, 1.0]]), _pred(2, [[0, 10, 1.0]])]
    (gts if side == "gt" else subs)[line - 1] = bad
    paths = {"gt": tmp_path / "gt.jsonl", "sub": tmp_path / "sub.jsonl"}
    paths["gt"].write_text(_lines(gts))
    paths["sub"].write_text(_lines(subs))
    code = main(["--submission", str(paths["sub"]), "--gt", str(paths["gt"])])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith(f"error: {paths[side]}:{line}: ") and message in err, err


def test_bytes_that_are_not_utf8_are_named(tmp_path) -> None:
    path = tmp_path / "sub.jsonl"
    path.write_bytes(b'{"qid": 1}\n{"qid": "\xff"}\n')
    with pytest.raises(ValueError, match=rf"{path}:2: not UTF-8 text"):
        load_jsonl(path)
