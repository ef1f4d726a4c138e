"""A study's Markdown against a fabricated study.json: the numbers are the JSON's, the findings
rule flips where the interval crosses 0, and null results are reported."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from study.helpers import LEVELS, fabricated_study

from hcl.cli import main
from hcl.study import (
    headline_metrics,
    metric_label,
    read_study,
    study_findings,
    study_headline,
    study_markdown,
    verdict,
    write_study_markdown,
)


@pytest.fixture
def study(tmp_path: Path) -> dict:
    return fabricated_study(tmp_path)


def _table_line(text: str, section: str, *cells: str) -> str:
    """The one line, in the tables under heading ``section`` before its first subheading, whose
    leading cells are ``cells``."""
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    prefix = "| " + " | ".join(cells) + " |"
    found = [line for line in body.splitlines() if line.startswith(prefix)]
    assert len(found) == 1, (prefix, found)
    return found[0]


def _paired_line(text: str, section: str, variant: str, label: str) -> str:
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0].split("### Paired differences from Base\n")[1]
    found = [line for line in body.splitlines() if line.startswith(f"| {variant} | {label} |")]
    assert len(found) == 1, (variant, label, found)
    return found[0]


def _finding_line(text: str, heading: str, variant: str) -> str:
    block = text.split(f"**{heading}**\n", 1)[1].lstrip("\n").split("\n\n", 1)[0]
    found = [line for line in block.splitlines() if line.startswith(f"- {variant} vs Base:")]
    assert len(found) == 1, (heading, variant, block)
    return found[0]


def test_the_fabricated_study_has_the_intended_effects(study: dict) -> None:
    """The fixture itself: Deep's CPCC interval lies above 0, Flat's class MAP@R below, the rest hold 0."""
    verdicts = {(f["protocol"], f["variant"], f["label"]): f["verdict"] for f in study_findings(study)}
    assert verdicts[("all", "Deep", "CPCC")] == "helps" and verdicts[("all", "Flat", "MAP@R class")] == "hurts"
    others = [v for k, v in verdicts.items() if k[1:] not in (("Deep", "CPCC"), ("Flat", "MAP@R class"))]
    assert len(others) == 8 and set(others) == {"no detectable difference"}


def test_mean_tables_hold_the_json_numbers(study: dict) -> None:
    text = study_markdown(study)
    header = _table_line(text, "All classes trained, features embedding", "variant", "seeds")
    assert header == ("| variant | seeds | MAP@R group | MAP@R category | MAP@R class | CPCC | k-NN accuracy class |")
    columns = [(lv, "map@r") for lv in LEVELS] + [("(all)", "cpcc"), ("class", "knn_accuracy")]
    for protocol, section in (("all", "All classes trained"), ("heldout", "Held-out classes (Pullover, Sandal)")):
        for variant in ("Base", "Deep", "Flat"):
            name = "Base (baseline)" if variant == "Base" else variant
            line = _table_line(text, f"{section}, features embedding", name, "5")
            rows = {
                (s["level"], s["metric"]): s
                for s in study["summary"]
                if s["protocol"] == protocol and s["variant"] == variant and s["embedding"] == "features"
            }
            expected = [f"{rows[c]['mean']:.3f} [{rows[c]['ci_low']:.3f}, {rows[c]['ci_high']:.3f}]" for c in columns]
            assert line == f"| {name} | 5 | " + " | ".join(expected) + " |"


def test_heldout_metrics_get_their_own_tables(study: dict) -> None:
    text = study_markdown(study)
    section = text.split("## Held-out classes (Pullover, Sandal), features embedding\n", 1)[1]
    own = section.split("### Metrics of the held-out classes\n", 1)[1]
    means, differences = own.split("Paired differences from Base", 1)

    def summary(variant: str, metric: str) -> dict:
        return next(
            s for s in study["summary"] if (s["protocol"], s["variant"], s["metric"]) == ("heldout", variant, metric)
        )

    def paired(variant: str, metric: str) -> dict:
        return next(
            p for p in study["paired"] if (p["protocol"], p["variant"], p["metric"]) == ("heldout", variant, metric)
        )

    assert "| metric | Base | Deep | Flat |" in means and "| metric | Deep | Flat |" in differences
    for metric, label in (("heldout/map@r", "MAP@R class"), ("heldout/seen_knn_accuracy", "seen k-NN accuracy class")):
        cells = [
            f"{summary(v, metric)['mean']:.3f} [{summary(v, metric)['ci_low']:.3f}, "
            f"{summary(v, metric)['ci_high']:.3f}]"
            for v in ("Base", "Deep", "Flat")
        ]
        assert f"| {label} | {' | '.join(cells)} |" in means
        deep, flat = paired("Deep", metric), paired("Flat", metric)
        assert verdict(deep["ci_low"], deep["ci_high"]) == "no detectable difference"
        deep_text = f"{deep['mean_diff']:+.3f} [{deep['ci_low']:+.3f}, {deep['ci_high']:+.3f}]"
        flat_text = f"{flat['mean_diff']:+.3f} [{flat['ci_low']:+.3f}, {flat['ci_high']:+.3f}]"
        if metric == "heldout/map@r":  # Flat is 0.05 worse on every seed: an effect, in bold
            assert verdict(flat["ci_low"], flat["ci_high"]) == "hurts" and flat_text == "-0.050 [-0.050, -0.050]"
            flat_text = f"**{flat_text}**"
        assert f"| {label} | {deep_text} | {flat_text} |" in differences
    # the protocol's own metrics stay out of the headline findings and of the all-classes sections
    assert "heldout/" not in text.split("## Findings")[1].split("## All classes")[0].replace("`heldout/", "")
    assert "seen k-NN" not in text.split("## Held-out classes (Pullover")[0]


def test_metric_labels() -> None:
    assert metric_label("class", "map@r") == "MAP@R class" and metric_label("(all)", "cpcc") == "CPCC"
    assert metric_label("class", "heldout/seen_map@r") == "heldout/seen MAP@R class"
    assert metric_label("group", "ancestor_knn_accuracy") == "ancestor k-NN accuracy group"
    assert metric_label("(all)", "heldout/odd_name") == "heldout/odd name"


def test_paired_table_holds_the_json_numbers(study: dict) -> None:
    text = study_markdown(study)
    section = "All classes trained, features embedding"
    labels = {label: (level, metric) for level, metric, label in headline_metrics(study)}
    assert list(labels) == ["CPCC", "MAP@R group", "MAP@R class"]
    for variant in ("Deep", "Flat"):
        for label, (level, metric) in labels.items():
            p = next(
                p
                for p in study["paired"]
                if (p["protocol"], p["variant"], p["level"], p["metric"]) == ("all", variant, level, metric)
            )
            line = _paired_line(text, section, variant, label)
            p_t = f"{p['p_t']:.3f}" if p["p_t"] >= 0.001 else "<0.001"
            assert line == (
                f"| {variant} | {label} | {p['mean_diff']:+.3f} [{p['ci_low']:+.3f}, {p['ci_high']:+.3f}] "
                f"| {p_t} | {p['p_wilcoxon']:.3f} | 5 | {verdict(p['ci_low'], p['ci_high'])} |"
            )
    assert "| Base |" not in text.split("### Paired differences from Base")[1].split("\n## ")[0]


def test_findings_state_the_rule_and_every_result_nulls_included(study: dict) -> None:
    text = study_markdown(study)
    assert "95% t-interval of its paired difference" in text and "entirely above 0" in text
    deep = _finding_line(text, "all classes trained, features embedding", "Deep")
    cpcc = next(p for p in study["paired"] if (p["protocol"], p["variant"], p["metric"]) == ("all", "Deep", "cpcc"))
    assert deep.startswith(
        f"- Deep vs Base: helps CPCC ({cpcc['mean_diff']:+.3f} [{cpcc['ci_low']:+.3f}, {cpcc['ci_high']:+.3f}], p_t "
    )
    assert "; no detectable difference on MAP@R group (" in deep and ") and MAP@R class (" in deep
    flat = _finding_line(text, "all classes trained, features embedding", "Flat")
    assert "hurts MAP@R class (-0.04" in flat and "no detectable difference on CPCC (" in flat
    # every variant, protocol and headline metric is there, null or not
    for protocol in ("all classes trained", "held-out classes (Pullover, Sandal)"):
        for variant in ("Deep", "Flat"):
            line = _finding_line(text, f"{protocol}, features embedding", variant)
            assert all(label in line for label in ("CPCC", "MAP@R group", "MAP@R class")), line


@pytest.mark.parametrize(
    ("low", "high", "word"),
    [
        (0.0005, 0.02, "helps"),
        (-0.0005, 0.02, "no detectable difference"),
        (0.0, 0.02, "no detectable difference"),
        (-0.02, -0.0005, "hurts"),
        (-0.02, 0.0, "no detectable difference"),
        (None, None, "too few seeds"),
    ],
)
def test_the_findings_rule_flips_where_the_interval_crosses_zero(study: dict, low, high, word: str) -> None:
    changed = copy.deepcopy(study)
    row = next(p for p in changed["paired"] if (p["protocol"], p["variant"], p["metric"]) == ("all", "Flat", "cpcc"))
    row.update(ci_low=low, ci_high=high, mean_diff=0.01)
    assert verdict(low, high) == word
    line = _finding_line(study_markdown(changed), "all classes trained, features embedding", "Flat")
    clause = next(c for c in line.split("; ") if "CPCC" in c)
    assert re.match(rf"(- Flat vs Base: )?{word}( on)? CPCC \(\+0\.010 ", clause), clause
    assert verdict(float("nan"), 0.1) == "too few seeds"


def test_header_says_how_the_numbers_were_made(study: dict) -> None:
    head = study_markdown(study).split("## Findings")[0]
    assert head.startswith("# A fabricated study\n")
    assert "- **Command:** `hcl study --config configs/x.yaml --workers 4`" in head
    assert (
        "git `aaaaaaaaaaaa` (clean) (20 cells); git `bbbbbbbbbbbb` (with uncommitted changes in hcl/) (10 cells)"
        in head
    )
    assert "hcl 0.1.0, torch 2.14.1, python 3.11.7" in head
    assert "- **Cells:** 30 of 30 finished (3 variants x 5 seeds x 2 protocols, baseline Base)" in head
    assert "- **Workers:** 4 at once, 2 threads each, executor process" in head
    # cells start at 10:00:00 .. 10:29:00 and take 30 s each: 30 x 30 s while cells ran, 29 min 30 s
    # from first start to last finish; their times 60..89 s sum to 2235 s
    assert "15 min 00 s wall while cells ran (the idle time between reruns left out, 29 min 30 s from" in head
    assert "37 min 15 s of cell time summed" in head
    assert "1 h 14 min CPU-core time" in head  # 2 threads each: 4470 s
    assert "- **Machine:** node1 (x86_64, 16 CPUs, no GPU)" in head


def test_overlapping_cells_count_their_wall_time_once(study: dict) -> None:
    changed = copy.deepcopy(study)
    for i, cell in enumerate(changed["cells"]):  # 2 at a time, each 2 min, back to back: 15 x 2 min
        cell.update(started=f"2026-01-01T10:{2 * (i // 2):02d}:00", finished=f"2026-01-01T10:{2 * (i // 2) + 2:02d}:00")
    head = study_markdown(changed).split("## Findings")[0]
    assert "30 min 00 s wall while cells ran (the idle time between reruns left out); " in head


def test_unfinished_cells_are_listed(study: dict) -> None:
    changed = copy.deepcopy(study)
    changed["cells"][3].update(status="failed", error="ValueError: boom")
    head = study_markdown(changed).split("## Findings")[0]
    assert (
        "- **Cells:** 29 of 30 finished" in head
        and f"  - `{changed['cells'][3]['key']}` failed: ValueError: boom" in head
    )


def test_headline_names_the_effects_and_the_nulls(study: dict) -> None:
    text = study_headline(study)
    cpcc = next(p for p in study["paired"] if (p["protocol"], p["variant"], p["metric"]) == ("all", "Deep", "cpcc"))
    assert text.startswith("**A fabricated study**: 2 variants against Base, paired over 5 seeds (all classes trained")
    assert f"Deep helps CPCC: {cpcc['mean_diff']:+.3f} [{cpcc['ci_low']:+.3f}, {cpcc['ci_high']:+.3f}]" in text
    effects = text.split("- Largest effects: ")[1].split("\n")[0]
    assert effects.index("Deep helps CPCC") < effects.index("Flat hurts MAP@R class")  # larger first
    assert "- No detectable difference: Deep on MAP@R group and MAP@R class; Flat on CPCC and MAP@R group." in text
    assert len(text.strip().splitlines()) == 4 + 1 + 4  # intro, blank, two lines; blank; the effects table
    assert "1 more in the full report" in study_headline(study, top=1)
    held = study_headline(study, protocol="heldout")
    assert "held-out classes (Pullover, Sandal)" in held


def test_headline_without_effects_says_so(study: dict) -> None:
    changed = copy.deepcopy(study)
    for p in changed["paired"]:
        p.update(ci_low=-0.1, ci_high=0.1)
    text = study_headline(changed)
    assert "- No variant differs detectably from Base on CPCC, MAP@R group and MAP@R class." in text


def test_cli_writes_and_prints_from_study_json_alone(study: dict, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "study.json").write_text(json.dumps(study))
    out = tmp_path / "results.md"
    assert main(["study-report", str(folder), "--markdown", str(out)]) == 0
    assert out.read_text() == study_markdown(study) == study_markdown(folder / "study.json")
    capsys.readouterr()
    assert main(["study-report", str(folder / "study.json"), "--headline"]) == 0
    assert capsys.readouterr().out == study_headline(study)
    assert write_study_markdown(folder, tmp_path / "again.md").read_text() == out.read_text()
    assert main(["study-report", str(tmp_path / "nowhere")]) == 2
    assert "no study file at" in capsys.readouterr().err
    (folder / "study.json").write_text(json.dumps({"config": {}}))
    with pytest.raises(ValueError, match=r"is not a study.json \(it lacks cells, summary, paired\)"):
        read_study(folder)


def test_cli_puts_the_results_and_the_headline_between_markers(study: dict, tmp_path: Path) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "study.json").write_text(json.dumps(study))
    page = tmp_path / "page.md"
    page.write_text(
        "# before\n<!-- study-summary:start -->\nold\n<!-- study-summary:end -->\nmiddle\n"
        "<!-- study-results:start -->\nold\n<!-- study-results:end -->\nafter\n"
    )
    assert main(["study-report", str(folder), "--headline", "--into", str(page)]) == 0
    assert main(["study-report", str(folder), "--into", str(page)]) == 0
    text = page.read_text()
    assert text.startswith("# before\n<!-- study-summary:start -->\n") and text.endswith(
        "<!-- study-results:end -->\nafter\n"
    )
    assert study_headline(study).strip() in text and study_markdown(study, heading_level=2).strip() in text
    assert "\nold\n" not in text
    assert main(["study-report", str(folder), "--into", str(tmp_path / "nomarkers.md")]) == 2
    # --block names other markers, so that one page can hold several studies.
    page.write_text("<!-- other:start -->\nold\n<!-- other:end -->\n")
    assert main(["study-report", str(folder), "--headline", "--into", str(page), "--block", "other"]) == 0
    assert page.read_text() == f"<!-- other:start -->\n{study_headline(study)}<!-- other:end -->\n"


def test_effects_table_shows_every_paired_difference_bold_where_the_ci_excludes_zero(study: dict) -> None:
    from hcl.study import study_effects_table

    lines = study_effects_table(study)
    assert lines[0].startswith("| vs Base | CPCC (features) |") and len(lines) == 2 + 2  # header, rule, Deep, Flat
    for finding in study_findings(study, protocol="all", embedding="features"):
        row = next(line for line in lines if line.startswith(f"| {finding['variant']} |"))
        text = f"{finding['mean_diff']:+.3f} [{finding['ci_low']:+.3f}, {finding['ci_high']:+.3f}]"
        assert (f"**{text}**" in row) == (finding["verdict"] in ("helps", "hurts")) and text in row
    assert "\n".join(lines) in study_headline(study)
