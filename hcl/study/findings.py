"""What a study found: each variant against the baseline on the headline metrics, in words.

The headline metrics are CPCC and MAP@R at the coarsest and the finest level (higher is better
for all three). A variant *helps* a metric when the 95% t-interval of its paired difference from
the baseline lies entirely above 0, *hurts* it when the interval lies entirely below 0, and
otherwise shows *no detectable difference*; a difference over fewer than two seeds has no
interval and is *too few seeds*. Null results are findings too: every variant and headline metric
gets one, whatever it says.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from hcl.study.runner import read_study
from hcl.study.stats import ALL_LEVELS, verdict

__all__ = ["FINDINGS_RULE", "headline_metrics", "metric_label", "study_findings", "study_levels"]

FINDINGS_RULE = (
    "A variant **helps** a metric when the 95% t-interval of its paired difference from the baseline "
    "(same seeds) lies entirely above 0, **hurts** it when the interval lies entirely below 0, and "
    "otherwise shows **no detectable difference** (which is not evidence of no difference: the interval "
    "says how large a difference the seeds could have missed). Higher is better for every metric here. "
    "The comparisons are not corrected for their number: among 20 true nulls, about one is expected "
    "to show up as an effect."
)
_NAMES = {"map@r": "MAP@R", "precision@1": "precision@1", "knn_accuracy": "k-NN accuracy", "cpcc": "CPCC"}


def study_levels(study: Mapping[str, Any]) -> list[str]:
    """The level names of a study document, coarsest first: as the finished cells' evaluations name
    them, else in the order the summary rows first show them.

    Raises:
        ValueError: no finished cell and no summary row name a level.
    """
    for cell in study["cells"]:
        for results in (cell.get("metrics") or {}).values():
            if results and results.get("levels"):
                return list(results["levels"])
    levels: list[str] = []
    for row in study["summary"]:
        if (
            row["level"] != ALL_LEVELS
            and not row["metric"].startswith(f"{row['protocol']}/")
            and row["level"] not in levels
        ):
            levels.append(row["level"])
    if not levels:
        raise ValueError("the study has no finished cell, so no levels to report")
    return levels


def metric_label(level: str, metric: str) -> str:
    """``"MAP@R class"``, ``"CPCC"``, ``"heldout/seen MAP@R class"``: a metric as the reports name it."""
    prefix, _, name = metric.rpartition("/")
    for key, pretty in _NAMES.items():  # also inside a longer name: seen_map@r -> seen MAP@R
        if name == key or name.endswith("_" + key):
            name = name[: len(name) - len(key)] + pretty
            break
    text = (prefix + "/" if prefix else "") + name.replace("_", " ")
    return text if level == ALL_LEVELS else f"{text} {level}"


def headline_metrics(study: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``[(level, metric, label)]`` of CPCC, coarsest-level MAP@R and finest-level MAP@R (one MAP@R
    when the hierarchy has one level)."""
    levels = study_levels(study)
    chosen = [(ALL_LEVELS, "cpcc")] + [(level, "map@r") for level in dict.fromkeys((levels[0], levels[-1]))]
    return [(level, metric, metric_label(level, metric)) for level, metric in chosen]


def study_findings(
    study: Mapping[str, Any] | str | os.PathLike[str],
    *,
    protocol: str | None = None,
    embedding: str | None = None,
) -> list[dict[str, Any]]:
    """One finding per variant (baseline excepted), protocol, embedding and headline metric.

    Args:
        study: a study document (:func:`hcl.study.read_study`), or its folder or ``study.json``.
        protocol, embedding: only these (None: every one the study has, in config order).

    Returns:
        The paired rows (``variant, baseline, protocol, embedding, level, metric, n, mean_diff,
        ci_low, ci_high, p_t, p_wilcoxon, seeds``) with ``label`` (e.g. ``"MAP@R class"``) and
        ``verdict`` (:func:`hcl.study.verdict`) added, ordered by protocol, embedding, variant (config order)
        and headline metric. A variant without a paired row for a metric (no seed finished by
        both it and the baseline) gets ``verdict`` ``"not measured"`` and None numbers.
    """
    if not isinstance(study, Mapping):
        study = read_study(study)
    config = study["config"]
    paired = {(p["protocol"], p["embedding"], p["variant"], p["level"], p["metric"]): p for p in study["paired"]}
    headline = headline_metrics(study)
    found = []
    for proto in config["protocols"]:
        if protocol is not None and proto != protocol:
            continue
        for emb in config["embeddings"]:
            if embedding is not None and emb != embedding:
                continue
            for variant in config["variants"]:
                if variant == config["baseline"]:
                    continue
                for level, metric, label in headline:
                    row = paired.get((proto, emb, variant, level, metric))
                    if row is None:
                        row = {
                            "variant": variant,
                            "baseline": config["baseline"],
                            "protocol": proto,
                            "embedding": emb,
                            "level": level,
                            "metric": metric,
                            "n": 0,
                            "mean_diff": None,
                            "ci_low": None,
                            "ci_high": None,
                            "p_t": None,
                            "p_wilcoxon": None,
                            "seeds": [],
                        }
                        found.append({**row, "label": label, "verdict": "not measured"})
                    else:
                        found.append({**row, "label": label, "verdict": verdict(row["ci_low"], row["ci_high"])})
    return found
