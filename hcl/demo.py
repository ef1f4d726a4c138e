"""``make demo``: SupCon, HiMulCon and HiMulConE on Fashion-MNIST's 3-level hierarchy.

The three runs use ``hcl/configs/fashion_mnist_{supcon,himulcon,himulcone}.yaml`` (shipped in the
package, :func:`find_configs_dir`): same data, backbone, batches, budget and seed; only the loss
differs (the demo checks it). Each trained model is evaluated per level on both embeddings, the
backbone ``features`` and the ``projection`` head's output (:func:`hcl.train.evaluate_embeddings`).
The demo writes into its folder:

* ``<loss>/``: the three run directories;
* ``metrics.json``: every number, both embeddings, with the commit, threads and wall time;
* ``demo_table.md``: the per-level tables, one per embedding, made from those numbers
  (:func:`demo_table`);
* ``report.html``: :func:`hcl.viz.write_report` of the three runs.

``hcl demo --update-readme README.md`` (:func:`update_readme`) writes the numbers the table needs,
with the commit, machine, threads and time of the run, into ``docs/demo_results.json`` beside the
README (:func:`demo_results`; committed) and regenerates the README's ``<!-- demo-table:start -->``
... ``<!-- demo-table:end -->`` block from that file, so a test can check that the two agree.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from hcl import rundir
from hcl.atomic import write_text_atomic
from hcl.extras import requires_extra
from hcl.losses import loss_display_name
from hcl.losses.constraints import DEFAULT_CONSTRAINT_WEIGHT, resolve_constraint
from hcl.study.cell import cpu_model, provenance
from hcl.textblock import replace_marked_block
from hcl.train import EMBEDDINGS, TrainConfig, evaluate_embeddings, fit, load_config, resolve_device
from hcl.train.faults import check_output_dir

__all__ = [
    "DEMO_LOSSES",
    "README_BLOCK",
    "RESULTS_FILE",
    "TABLE_FILE",
    "demo_results",
    "demo_table",
    "find_configs_dir",
    "find_project_folder",
    "run_demo",
    "run_name",
    "update_readme",
]

DEMO_LOSSES = ("supcon", "himulcon", "himulcone")  # the baseline first; table columns in this order
SUMMARY_FILE = "metrics.json"
TABLE_FILE = "demo_table.md"
README_BLOCK = "demo-table"  # the README's <!-- demo-table:start --> ... <!-- demo-table:end -->
RESULTS_FILE = Path("docs", "demo_results.json")  # beside the README: the committed numbers of its table
# The config keys that may differ between the demo runs: the loss and its constraint reading.
_LOSS_KEYS = frozenset({"loss", "bound_gradient", "constraint", "constraint_weight", "output_dir"})
_EMBEDDING_TITLES = {"features": "Backbone features", "projection": "Projection head output"}
_METRICS = (("precision@1", "precision@1"), ("map@r", "MAP@R"))


def find_configs_dir() -> Path:
    """The shipped configs, ``hcl/configs/`` inside the installed package (the checkout's top-level
    ``configs`` is a link to it), so the demo and the notebooks run from any folder.

    Raises:
        FileNotFoundError: the package lacks a demo config (an install without its package data).
    """
    configs = Path(__file__).resolve().parent / "configs"
    missing = [
        f"fashion_mnist_{loss}.yaml" for loss in DEMO_LOSSES if not (configs / f"fashion_mnist_{loss}.yaml").is_file()
    ]
    if missing:
        raise FileNotFoundError(
            f"the installed hcl package has no {', '.join(missing)} in {configs}; reinstall hcl-contrastive "
            "or pass --configs FOLDER"
        )
    return configs


def find_project_folder(relative: str | os.PathLike[str]) -> Path | None:
    """``relative`` (``runs/demo``, ``studies/fashion_mnist``) where a person's runs are: under the working
    folder, its parent (a notebook in ``notebooks/``) or the checkout hcl is imported from; None if absent."""
    checkout = Path(__file__).resolve().parents[1]
    for root in (Path.cwd(), Path.cwd().parent, checkout):
        if (root / relative).is_dir():
            return root / relative
    return None


def run_name(cfg: TrainConfig) -> str:
    """The name a run is shown under: the loss's proper name, and for a constrained loss the
    constraint's reading (``"HiMulConE (pair_held)"``, ``"HiMulConE (hinge, beta=0.5)"``)."""
    name = loss_display_name(cfg.loss)
    if not cfg.loss_spec.constrained:
        return name
    if cfg.loss_mode != "paper":
        return f"{name} ({cfg.loss_mode})"
    default = getattr(cfg.loss_spec.module_class, "default_constraint", "pair")
    reading = resolve_constraint(cfg.constraint, cfg.bound_gradient, default)
    if reading == "hinge":
        weight = DEFAULT_CONSTRAINT_WEIGHT if cfg.constraint_weight is None else cfg.constraint_weight
        reading = f"hinge, beta={weight:g}"
    return f"{name} ({reading})"


def run_demo(
    out: str | Path,
    *,
    configs_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
    report: bool = True,
    print_table: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train and evaluate the demo losses; write ``metrics.json``, ``demo_table.md``, ``report.html``.

    Args:
        out: the demo folder; each loss trains into ``<out>/<loss>/`` (replacing earlier runs).
        configs_dir: where the demo configs are (default :func:`find_configs_dir`).
        overrides: ``key=value`` overrides applied to every config (``output_dir`` is set here).
        report: write ``report.html`` with :func:`hcl.viz.write_report`.
        print_table: called with the text of ``demo_table.md`` once it is written.

    Returns:
        The content of ``metrics.json``.

    Raises:
        ValueError: the configs differ in more than the loss (the keys named), or one trains
            another loss than its file name says.
        RuntimeError: the run was interrupted.
        ImportError: ``report`` without the ``notebooks`` extra (plotly, umap-learn), before any training.
    """
    out = Path(out)
    configs_dir = Path(configs_dir) if configs_dir is not None else find_configs_dir()
    configs = {
        loss: load_config(configs_dir / f"fashion_mnist_{loss}.yaml", [*overrides, f"output_dir={out / loss}"])
        for loss in DEMO_LOSSES
    }
    _check_only_the_loss_differs(configs, configs_dir)
    check_output_dir(out)
    if report:  # fail now, not after the training
        with requires_extra("the demo's report.html (hcl demo --no-report skips it)"):
            import umap  # noqa: F401  (the report's UMAPs)

            from hcl.viz import write_report
    threads = torch.get_num_threads()
    started = time.perf_counter()
    runs: dict[str, dict[str, Any]] = {}
    for loss, cfg in configs.items():
        print(
            f"== training {run_name(cfg)} ({cfg.backbone}, {cfg.train_subset or 'all'} images, {cfg.epochs} epochs) "
            f"into {cfg.output_dir}",
            file=sys.stderr,
            flush=True,
        )
        run_started = time.perf_counter()
        result = fit(cfg, overwrite=True)
        if result.interrupted:
            raise RuntimeError(f"the demo was interrupted during {loss}; rerun `make demo` to start again")
        evaluated = evaluate_embeddings(
            result.run_dir,
            cfg=cfg,
            model=result.model,
            step=result.step,
            fit_results=result.results,
            device=next(result.model.parameters()).device,
        )
        runs[loss] = _run_summary(cfg, result.run_dir, evaluated, time.perf_counter() - run_started)

    first = configs[DEMO_LOSSES[0]]
    hierarchy = rundir.read_hierarchy(Path(first.output_dir))
    summary = {
        "dataset": first.dataset,
        "levels": list(hierarchy.level_names),
        "level_sizes": [hierarchy.num_nodes(level) for level in range(hierarchy.num_levels)],
        "embeddings": list(EMBEDDINGS),
        "setup": {key: getattr(first, key) for key in ("seed", "train_subset", "eval_subset", "epochs", "backbone")},
        "num_test_images": runs[DEMO_LOSSES[0]]["num_samples"],
        "device": str(resolve_device(first.device)),
        "threads": threads,
        "cpu_cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "provenance": provenance(),
        "seconds_train_and_evaluate": time.perf_counter() - started,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "runs": runs,
    }
    table = demo_table(summary)
    write_text_atomic(out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    write_text_atomic(out / TABLE_FILE, table)
    if print_table is not None:
        print_table(table)
    print(f"wrote {out / SUMMARY_FILE} and {out / TABLE_FILE}", file=sys.stderr)
    if report:
        run_dirs = {runs[loss]["name"]: Path(runs[loss]["run_dir"]) for loss in DEMO_LOSSES}
        title = "hcl demo: " + ", ".join(run_dirs) + " on Fashion-MNIST (3 levels)"
        print(f"wrote {write_report(run_dirs, out / 'report.html', title=title)}", file=sys.stderr)
    summary["seconds_total"] = time.perf_counter() - started
    write_text_atomic(out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    print(f"demo finished in {summary['seconds_total']:.0f} s", file=sys.stderr)
    return summary


def _check_only_the_loss_differs(configs: Mapping[str, TrainConfig], configs_dir: Path) -> None:
    baseline, *others = DEMO_LOSSES
    reference = configs[baseline].to_dict()
    for loss in DEMO_LOSSES:
        path = configs_dir / f"fashion_mnist_{loss}.yaml"
        if configs[loss].loss != loss:
            raise ValueError(f"{path} trains loss {configs[loss].loss!r}; the demo needs {loss!r} there")
        if loss in others:
            data = configs[loss].to_dict()
            differing = sorted(
                k for k in reference.keys() | data.keys() if k not in _LOSS_KEYS and reference.get(k) != data.get(k)
            )
            if differing:
                raise ValueError(
                    f"{path} differs from fashion_mnist_{baseline}.yaml in {differing}; the demo runs may differ "
                    "only in the loss"
                )


def _run_summary(cfg: TrainConfig, run_dir: Path, evaluated: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    """One run in ``metrics.json``: its name, loss keys, folder, time and metrics per embedding, levels by name."""
    embeddings: dict[str, Any] = {}
    num_samples = None
    for which, results in evaluated["metrics"].items():
        if results is None:
            embeddings[which] = None
            continue
        names = results["levels"]
        num_samples = results["num_samples"]
        embeddings[which] = {
            "cpcc": results["cpcc"],
            "retrieval": {names[int(level)]: values for level, values in results["retrieval"].items()},
            "knn_accuracy": {names[int(level)]: value for level, value in results["knn_accuracy"].items()},
        }
    return {
        "name": run_name(cfg),
        "loss": cfg.loss,
        "constraint": cfg.constraint,
        "bound_gradient": cfg.bound_gradient,
        "run_dir": str(run_dir),
        "train_and_eval_seconds": seconds,
        "num_samples": num_samples,
        "embeddings": embeddings,
        "absent": dict(evaluated["absent"]),
    }


def demo_table(summary: Mapping[str, Any]) -> str:
    """The demo's per-level tables as Markdown, one per embedding, from ``metrics.json``'s content.

    A header line names the commit, the time the runs finished, the torch threads, the device, the
    machine (CPU model, architecture, cores; those ``summary`` lacks are left out) and the wall
    time; then per
    embedding a table with rows level x (precision@1, MAP@R, kNN accuracy) and CPCC, and one
    column per run in :data:`DEMO_LOSSES` order. Numbers are rounded to 3 decimals; an embedding
    a run lacks shows ``–``, with the reason below the table.
    """
    provenance = summary.get("provenance", {})
    commit = provenance.get("git_commit")
    commit_text = f"commit `{commit[:10]}`" if commit else "an unknown commit (not a git checkout)"
    if provenance.get("git_dirty"):
        commit_text += " with uncommitted changes in hcl/"
    if summary.get("finished"):
        commit_text += " on " + datetime.fromisoformat(summary["finished"]).strftime("%Y-%m-%d at %H:%M UTC")
    machine = [summary.get("cpu_model"), provenance.get("machine"), f"{summary['cpu_cores']} CPU cores"]
    setup = summary["setup"]
    epochs = setup["epochs"]
    header = (
        f"Written by `hcl demo` (`make demo`) at {commit_text}: {summary['threads']} torch threads on "
        f"{summary['device']} ({', '.join(part for part in machine if part)}), "
        f"{summary['seconds_train_and_evaluate']:.0f} s "
        f"wall time to train and evaluate the three runs. Seed {setup['seed']}, {_count(setup['train_subset'])} "
        f"training images, {epochs} epoch{'s' if epochs != 1 else ''}, `{setup['backbone']}`; measured per level "
        f"on {_count(summary['num_test_images'])} test images. One seed: small differences can change sign with "
        "the seed (`hcl study` measures them over seeds)."
    )
    lines = [header]
    runs = [summary["runs"][loss] for loss in DEMO_LOSSES]
    levels = list(zip(summary["levels"], summary["level_sizes"], strict=True))
    for which in summary["embeddings"]:
        lines += ["", f"**{_EMBEDDING_TITLES[which]}** (`embedding: {which}`)", ""]
        lines.append("| level | metric | " + " | ".join(run["name"] for run in runs) + " |")
        lines.append("|---|---|" + "---:|" * len(runs))
        for level, size in levels:
            for key, label in _METRICS:
                values = [_value(run, which, lambda e, k=key, lv=level: e["retrieval"][lv][k]) for run in runs]
                lines.append(f"| {level} ({size}) | {label} | " + " | ".join(values) + " |")
            values = [_value(run, which, lambda e, lv=level: e["knn_accuracy"][lv]) for run in runs]
            lines.append(f"| {level} ({size}) | kNN accuracy | " + " | ".join(values) + " |")
        values = [_value(run, which, lambda e: e["cpcc"]) for run in runs]
        lines.append("| all levels | CPCC | " + " | ".join(values) + " |")
        lines += [f"\n{run['name']}: no {which} ({run['absent'][which]})." for run in runs if which in run["absent"]]
    return "\n".join(lines) + "\n"


def _value(run: Mapping[str, Any], which: str, pick: Callable[[Mapping[str, Any]], float]) -> str:
    metrics = run["embeddings"].get(which)
    return "–" if metrics is None else f"{pick(metrics):.3f}"


def _count(value: int | None) -> str:
    return "all" if value is None else f"{value:,}"


def demo_results(summary: Mapping[str, Any]) -> dict[str, Any]:
    """What :func:`demo_table` needs of ``metrics.json``'s content, and where and when it was measured.

    This is ``docs/demo_results.json``: small enough to commit, and ``demo_table`` of it is
    ``demo_table`` of the whole summary. Keys an older ``metrics.json`` lacks (``cpu_model``,
    ``finished``) are ``None``, and the table leaves them out.
    """
    keys = ("dataset", "levels", "level_sizes", "embeddings", "setup", "num_test_images", "device", "threads")
    results = {key: summary[key] for key in keys}
    results |= {key: summary.get(key) for key in ("cpu_cores", "cpu_model", "finished")}
    results["seconds_train_and_evaluate"] = summary["seconds_train_and_evaluate"]
    provenance = summary.get("provenance", {})
    results["provenance"] = {
        key: provenance.get(key) for key in ("git_commit", "git_dirty", "hcl", "python", "torch", "machine")
    }
    results["runs"] = {
        loss: {
            "name": run["name"],
            "loss": run["loss"],
            "embeddings": {which: _table_metrics(metrics) for which, metrics in run["embeddings"].items()},
            "absent": run["absent"],
        }
        for loss, run in summary["runs"].items()
    }
    return results


def _table_metrics(metrics: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """One embedding's metrics as the table shows them: CPCC, kNN accuracy and :data:`_METRICS` per level."""
    if metrics is None:
        return None
    retrieval = {level: {key: values[key] for key, _ in _METRICS} for level, values in metrics["retrieval"].items()}
    return {"cpcc": metrics["cpcc"], "retrieval": retrieval, "knn_accuracy": metrics["knn_accuracy"]}


def update_readme(readme: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Write ``docs/demo_results.json`` beside ``readme`` from ``<out>/metrics.json`` and regenerate the
    README's ``demo-table`` block from that file (both atomically). Returns the results file's path.

    Raises:
        FileNotFoundError: no ``metrics.json`` in ``out`` (run the demo first), or no ``readme``.
        ValueError: ``readme`` lacks the block's markers (see :func:`hcl.textblock.replace_marked_block`).
    """
    metrics = Path(out) / SUMMARY_FILE
    if not metrics.is_file():
        raise FileNotFoundError(f"{metrics} does not exist: run `hcl demo --out {out}` first")
    if not Path(readme).is_file():
        raise FileNotFoundError(f"{readme} does not exist")
    results = Path(readme).parent / RESULTS_FILE
    results.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(
        results, json.dumps(demo_results(json.loads(metrics.read_text(encoding="utf-8"))), indent=2) + "\n"
    )
    replace_marked_block(readme, README_BLOCK, demo_table(json.loads(results.read_text(encoding="utf-8"))))
    return results
