"""write_report: one self-contained HTML page with metrics, curves and projections of each run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from viz.fake_runs import LEVEL_NAMES, write_fake_run

from hcl.viz import write_report


def _plots(text: str) -> int:
    return text.count("Plotly.newPlot(")


def _plotly_js_copies(text: str) -> int:
    # The bundle's licence banner appears once per inlined copy of plotly.js.
    return len(re.findall(r"\* plotly\.js v\d", text))


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {"HiMulConE": write_fake_run(root / "himulcone", seed=0), "SupCon": write_fake_run(root / "supcon", seed=1)}


def test_report_is_one_self_contained_page(two_runs: dict[str, Path], tmp_path: Path) -> None:
    path = write_report(two_runs, tmp_path / "out" / "report.html", title="demo <report>")
    assert path == tmp_path / "out" / "report.html"
    text = path.read_text()
    assert _plotly_js_copies(text) == 1
    assert re.findall(r"<script\b[^>]*\bsrc=", text) == []
    assert "<title>demo &lt;report&gt;</title>" in text
    # bars + training curves + per run (projection grid + distance box plot)
    assert _plots(text) == 2 + 2 * 2
    for name in ("HiMulConE", "SupCon", *LEVEL_NAMES, "map@r", "knn accuracy", "CPCC", "UMAP of 120 test"):
        assert name in text, name
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]


def test_report_table_holds_the_final_results(tmp_path: Path) -> None:
    runs = {"HiMulConE": write_fake_run(tmp_path / "a"), "SupCon": write_fake_run(tmp_path / "b")}
    results = json.loads((runs["SupCon"] / "results.json").read_text())
    results["retrieval"]["2"]["map@r"] = 0.123456
    results["embedding"] = "projection"
    (runs["SupCon"] / "results.json").write_text(json.dumps(results))
    text = write_report(runs, tmp_path / "r.html", method="pca").read_text()
    assert "HiMulConE: results.json; SupCon: results.json (embedding: projection)" in text  # which embedding
    row = re.search(r"<td class='name'>species</td><td class='name'>map@r</td>(.*?)</tr>", text).group(1)
    cells = re.findall(r"<td class='(\w*)'>([\d.]+)</td>", row)
    assert cells == [("best", "0.4000"), ("", "0.1235")]  # HiMulConE's fake 0.4 wins, in bold
    row = re.search(r"<td class='name'>kingdom</td><td class='name'>map@r</td>(.*?)</tr>", text).group(1)
    assert re.findall(r"<td class='(\w*)'>", row) == ["", ""]  # a tie: nobody in bold


def test_report_falls_back_to_the_last_eval_record_and_notes_gaps(tmp_path: Path) -> None:
    run = write_fake_run(tmp_path / "run", embeddings=False, epochs=2)
    (run / "results.json").unlink()
    text = write_report({"only": run}, tmp_path / "r.html", method="pca").read_text()
    assert "last eval record (epoch 1)" in text
    assert "embeddings_&lt;split&gt;.npz" in text or "has no embeddings" in text
    assert _plots(text) == 2  # bars and curves; no projection without embeddings


def test_report_of_a_run_without_a_log(tmp_path: Path) -> None:
    run = write_fake_run(tmp_path / "run")
    (run / "metrics.jsonl").unlink()
    text = write_report({"run": run}, tmp_path / "r.html", method="pca").read_text()
    assert "run: no metrics.jsonl" in text
    assert _plots(text) == 1 + 2


def test_report_rejects_bad_runs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="runs is empty"):
        write_report({}, tmp_path / "r.html")
    with pytest.raises(FileNotFoundError, match="run 'x'"):
        write_report({"x": tmp_path / "missing"}, tmp_path / "r.html")


def test_report_shows_loss_run_names_by_the_loss_names_proper(tmp_path: Path) -> None:
    """The demo names its runs by config loss names (``himulcone``); the page says ``HiMulConE``."""
    runs = {
        "himulcone": write_fake_run(tmp_path / "a", embeddings=False),
        "supcon": write_fake_run(tmp_path / "b", embeddings=False),
        "cross_entropy": write_fake_run(tmp_path / "c", embeddings=False),
        "my ablation": write_fake_run(tmp_path / "d", embeddings=False),
    }
    text = write_report(runs, tmp_path / "r.html", method="pca").read_text()
    header = re.search(r"<tr><th>level</th><th>metric</th>(.*?)</tr>", text).group(1)
    assert header == "<th>HiMulConE</th><th>SupCon</th><th>cross-entropy</th><th>my ablation</th>"
    for name in ("HiMulConE", "SupCon", "cross-entropy", "my ablation"):
        assert f"<b>{name}</b>" in text and f"Embeddings: {name}</h2>" in text, name
        assert f'"name":"{name}"' in text, name  # the legends of the bars and the curves
    for name in ("himulcone", "supcon", "cross_entropy"):
        assert name not in text, name


def test_report_rejects_two_runs_shown_under_one_name(tmp_path: Path) -> None:
    run = write_fake_run(tmp_path / "run", embeddings=False)
    with pytest.raises(ValueError, match="'supcon' and 'SupCon' would both be shown as 'SupCon'"):
        write_report({"supcon": run, "SupCon": run}, tmp_path / "r.html")


def test_report_shows_precision_at_1_once_not_again_as_recall_at_1(tmp_path: Path) -> None:
    run = write_fake_run(tmp_path / "run")
    results = json.loads((run / "results.json").read_text())
    for per_level in results["retrieval"].values():
        per_level["recall@5"] = 0.9
    (run / "results.json").write_text(json.dumps(results))
    text = write_report({"run": run}, tmp_path / "r.html", method="pca").read_text()
    table = text[text.index("<table class='metrics'>") : text.index("</table>")]
    assert table.count("<td class='name'>precision@1</td>") == len(LEVEL_NAMES)
    assert table.count("<td class='name'>recall@5</td>") == len(LEVEL_NAMES)
    assert "recall@1<" not in table
    assert list((run / "projections").glob("pca-*.npy"))  # the projection is cached with the run
