"""The held-out protocol end to end. It needs hcl.metrics' held-out helpers and the TrainConfig key
``heldout_classes`` (written on another branch); until they are merged these tests are skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from study.helpers import FAST_CONFIG, heldout_available

from hcl.study import load_study_config, plan_study, run_study

pytestmark = pytest.mark.skipif(
    not heldout_available(), reason="needs hcl.metrics' held-out helpers and TrainConfig.heldout_classes"
)


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
    for embedding in ("features", "projection"):
        assert record["metrics"][embedding]["heldout"], embedding
    metrics = {s["metric"] for s in result.summary if s["protocol"] == "heldout"}
    assert any(m.startswith("heldout/") for m in metrics) and "map@r" in metrics
    document = json.loads((out / "study.json").read_text())
    assert document["counts"]["ok"] == 2
    assert "Protocol 'heldout', features embedding" in (out / "study.html").read_text()
