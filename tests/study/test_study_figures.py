"""The study's figures drawn from a fabricated study.json: every marker sits at its JSON number,
every error bar spans its interval, and the paired differences are marked by their reading."""

from __future__ import annotations

from pathlib import Path

import pytest
from study.helpers import SEEDS, fabricated_study

from hcl.study import (
    cell_rows,
    headline_metrics,
    paired_difference_figure,
    tradeoff_figure,
    variant_colors,
    verdict,
)


@pytest.fixture
def study(tmp_path: Path) -> dict:
    return fabricated_study(tmp_path)


def _of(rows: list[dict], protocol: str = "all") -> list[dict]:
    return [r for r in rows if r["protocol"] == protocol and r["embedding"] == "features"]


def test_paired_difference_figure_marks_each_interval_by_its_reading(study: dict) -> None:
    paired = _of(study["paired"])
    metrics = headline_metrics(study)
    fig = paired_difference_figure(paired, variants=list(study["config"]["variants"]), metrics=metrics)
    assert [a.text for a in fig.layout.annotations] == ["CPCC", "MAP@R group", "MAP@R class"]
    seen = set()
    for trace in fig.data:
        col = 1 if trace.xaxis == "x" else int(trace.xaxis[1:])
        level, metric, _ = metrics[col - 1]
        for i, variant in enumerate(trace.y):
            assert variant != "Base"  # the baseline has no difference from itself
            p = next(p for p in paired if (p["variant"], p["level"], p["metric"]) == (variant, level, metric))
            assert trace.x[i] == p["mean_diff"]
            assert trace.x[i] - trace.error_x.arrayminus[i] == pytest.approx(p["ci_low"], abs=1e-12)
            assert trace.x[i] + trace.error_x.array[i] == pytest.approx(p["ci_high"], abs=1e-12)
            reading = verdict(p["ci_low"], p["ci_high"])
            assert trace.name.startswith(reading)
            seen.add((variant, metric if level == "(all)" else f"{metric} {level}", reading))
    assert ("Deep", "cpcc", "helps") in seen and ("Flat", "map@r class", "hurts") in seen
    assert ("Flat", "cpcc", "no detectable difference") in seen and len(seen) == 6
    colors = {t.name.split(" (")[0]: t.marker.color for t in fig.data}
    assert colors["helps"] != colors["hurts"] != colors["no detectable difference"]
    assert {t.marker.symbol for t in fig.data if t.name.startswith("no detectable")} == {"circle-open"}
    assert sum(t.showlegend for t in fig.data) == 3  # one legend entry per reading
    assert len([s for s in fig.layout.shapes if s.x0 == 0 == s.x1]) == 3  # a line at 0 in every panel
    with pytest.raises(ValueError, match="at least one"):
        paired_difference_figure(paired, variants=["Deep"], metrics=[])


def test_tradeoff_figure_puts_every_run_and_mean_at_its_numbers(study: dict) -> None:
    rows = _of([r for cell in study["cells"] for r in cell_rows(cell)])
    summary = _of(study["summary"])
    variants = list(study["config"]["variants"])
    fig = tradeoff_figure(rows, summary, variants=variants, finest="class", coarsest="group")
    value = {(r["variant"], r["seed"], r["level"], r["metric"]): r["value"] for r in rows}
    runs = [t for t in fig.data if t.marker.size == 7]
    means = [t for t in fig.data if t.marker.size == 13]
    assert len(runs) == len(means) == 2 * len(variants)
    colors = variant_colors(variants)
    for trace in runs:
        variant = trace.name
        x = ("(all)", "cpcc") if trace.xaxis == "x" else ("group", "map@r")
        assert list(trace.x) == [value[(variant, s, *x)] for s in SEEDS]
        assert list(trace.y) == [value[variant, s, "class", "map@r"] for s in SEEDS]
        assert trace.marker.color == colors[variant]
    for trace in means:
        cpcc = next(s for s in summary if (s["variant"], s["metric"]) == (trace.name, "cpcc"))
        finest = next(s for s in summary if (s["variant"], s["level"], s["metric"]) == (trace.name, "class", "map@r"))
        if trace.xaxis == "x":
            assert trace.x[0] == cpcc["mean"] and trace.x[0] + trace.error_x.array[0] == pytest.approx(cpcc["ci_high"])
        assert trace.y[0] == finest["mean"]
        assert trace.y[0] - trace.error_y.arrayminus[0] == pytest.approx(finest["ci_low"])
