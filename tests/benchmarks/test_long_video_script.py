"""The long-video benchmark in its dry-run mode (``--tiny``): it runs end to end and reports every setting.

No figure is asserted beyond its range (a tiny random model finds nothing); what is asserted is the report's
contract: both files, a 150 s row and a row per stride and NMS threshold for each filler, metrics that are
percentages, and a timed row per engine with a positive multi-query speed-up.
"""

from __future__ import annotations

import json

from benchmarks.long_video import main


def test_dry_run_reports_quality_and_speed(tmp_path):
    out = tmp_path / "long_video"
    assert main(["--tiny", "--queries", "2", "--strides", "30", "15", "--ious", "0.5", "0.7", "--speed",
                 "--speed-queries", "2", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    settings = [(r["videos"], r["stride"], r["iou"]) for r in results["quality"]]
    assert settings == [("150 s", None, None), ("long (noise)", 30, 0.5), ("long (noise)", 15, 0.5),
                        ("long (noise)", 15, 0.7), ("long (videos)", 15, 0.5)]
    for row in results["quality"]:
        assert all(0.0 <= v <= 100.0 for v in row["metrics"].values()), row
    long_rows = [r for r in results["quality"] if r["videos"] != "150 s"]
    assert all(r["windows_per_video"] > 2 for r in long_rows)  # 60..150 clips through windows of 30
    assert all(r["across_border"] >= 1 for r in long_rows)  # every other query is placed across a border
    speed = results["speed"]
    assert {r["engine"] for r in speed} == {"eager PyTorch", "ONNX Runtime CPU"}
    assert all(r["seconds"] > 0 and r["clips_per_s"] > 0 for r in speed)
    assert all(r["speedup"] > 0 for r in speed if r["queries"] > 1)
    table = (out / "results.md").read_text()
    assert "| long (noise) | 15 | 0.7 |" in table and "| ONNX Runtime CPU | one long video |" in table
    assert results["machine"]["load_average_start"] is not None
