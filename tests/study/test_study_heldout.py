"""The held-out protocol end to end: cells trained without their held-out classes, and the held-out
report of every embedding in the records, the summary and the page."""

from __future__ import annotations

import html
import json
from pathlib import Path

from study.helpers import FAST_CONFIG

from hcl.study import load_study_config, plan_study, run_study


def test_heldout_cells_leave_their_classes_out_and_add_heldout_metrics(tmp_path: Path) -> None:
    out = tmp_path / "study"
    overrides = [f"output_dir={out}", "protocols=[all, heldout]", "seeds=[0]", "variants={SupCon: {loss: supcon}}"]
    plan = plan_study(load_study_config(FAST_CONFIG, overrides))
    held = plan.configs[next(c for c in plan.cells if c.protocol == "heldout")].heldout_classes
    assert len(held) == 2
    assert all(not cfg.heldout_classes for cell, cfg in plan.configs.items() if cell.protocol == "all")

    result = run_study(FAST_CONFIG, overrides=overrides, progress=False)
    record = next(r for r in result.records if r["cell"]["protocol"] == "heldout")
    assert record["config"]["heldout_classes"] == list(held)
    saved = json.loads((Path(record["run_dir"]) / "results.json").read_text())
    assert sorted(saved["heldout"]["heldout_class_names"]) == sorted(held)
    levels = ["family", "class", "variant"]
    for embedding in ("features", "projection"):
        table = record["metrics"][embedding]["heldout"]
        assert table["classes"] == saved["heldout"]["heldout_class_names"], embedding
        assert set(table["map@r"]) == set(table["seen_map@r"]) == {"0", "1", "2"}
        assert set(table["ancestor_knn_accuracy"]) == {"0", "1"} and set(table["knn_accuracy"]) == {"2"}
        rows = {
            (s["level"], s["metric"])
            for s in result.summary
            if s["protocol"] == "heldout" and s["embedding"] == embedding
        }
        for level in levels:
            assert {(level, "heldout/map@r"), (level, "heldout/seen_map@r"), (level, "map@r")} <= rows, level
        assert ("class", "heldout/ancestor_knn_accuracy") in rows and ("variant", "heldout/knn_accuracy") in rows
        assert not any(
            m.startswith("heldout/")
            for _, m in {(s["level"], s["metric"]) for s in result.summary if s["protocol"] == "all"}
        )
    # the configured embedding's held-out report is fit's own, as in results.json
    features = record["metrics"][record["config"]["embedding"]]["heldout"]
    assert features["map@r"] == {lv: m["map@r"] for lv, m in saved["heldout"]["heldout"]["retrieval"].items()}
    document = json.loads((out / "study.json").read_text())
    assert document["counts"]["ok"] == 2
    page = html.unescape((out / "study.html").read_text())
    assert "Protocol 'heldout', features embedding" in page and "heldout MAP@R" in page
