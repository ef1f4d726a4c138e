"""Choosing a default from a study: the rule, applied to ``study.json``, and its account in words.

The rule (what the demo's and ``HiMulConE()``'s constraint reading were chosen by): among the
candidate variants, keep those whose CPCC paired difference from the baseline has its 95%
interval entirely above 0 on *every* embedding the study evaluated (all classes trained); of
those, choose the one whose finest-level MAP@R paired difference, averaged over the embeddings,
is largest (the smallest cost at the finest level). No candidate kept: no choice.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from typing import Any

from hcl.study.findings import headline_metrics, study_findings
from hcl.study.markdown_tables import format_interval, format_signed, join_words

__all__ = ["CHOICE_RULE", "choice_sentence", "choose_variant"]

CHOICE_RULE = (
    "among the candidates whose CPCC gain over the baseline has its 95% interval above 0 on every "
    "embedding with all classes trained, the one with the smallest mean cost in finest-level MAP@R"
)


def choose_variant(study: Mapping[str, Any], candidates: Sequence[str], *, protocol: str = "all") -> dict[str, Any]:
    """Apply the rule of this module to a study document (:func:`hcl.study.read_study`).

    Args:
        study: the study document.
        candidates: variant names or shell patterns (``"HiMulConE*"``); the baseline never counts.
        protocol: the protocol whose paired differences decide.

    Returns:
        ``{"chosen": name or None, "kept": [names, best first], "dropped": [names], "rows": {name:
        {"cpcc": {embedding: paired row}, "finest": {embedding: paired row}}}}`` where a paired row is
        one of :func:`hcl.study.study_findings`'s.

    Raises:
        ValueError: no variant matches ``candidates``, or the study lacks ``protocol``.
    """
    config = study["config"]
    if protocol not in config["protocols"]:
        raise ValueError(f"the study has no protocol {protocol!r}; it has {config['protocols']}")
    names = [
        name
        for name in config["variants"]
        if name != config["baseline"] and any(fnmatch.fnmatchcase(name, pattern) for pattern in candidates)
    ]
    if not names:
        raise ValueError(
            f"no variant of the study matches {list(candidates)} (the baseline {config['baseline']!r} never counts); "
            f"its variants: {list(config['variants'])}"
        )
    finest_level = headline_metrics(study)[-1][0]
    rows: dict[str, dict[str, dict[str, Any]]] = {name: {"cpcc": {}, "finest": {}} for name in names}
    for row in study_findings(study, protocol=protocol):
        if row["variant"] not in rows:
            continue
        if row["metric"] == "cpcc":
            rows[row["variant"]]["cpcc"][row["embedding"]] = row
        elif row["metric"] == "map@r" and row["level"] == finest_level:
            rows[row["variant"]]["finest"][row["embedding"]] = row
    embeddings = config["embeddings"]

    def raises_cpcc(name: str) -> bool:
        found = rows[name]["cpcc"]
        return all(e in found and found[e]["verdict"] == "helps" for e in embeddings)

    def finest_cost(name: str) -> float:
        found = rows[name]["finest"]
        values = [found[e]["mean_diff"] for e in embeddings if e in found and found[e]["mean_diff"] is not None]
        return sum(values) / len(values) if values else float("-inf")

    kept = sorted((name for name in names if raises_cpcc(name)), key=finest_cost, reverse=True)
    return {
        "chosen": kept[0] if kept else None,
        "kept": kept,
        "dropped": [name for name in names if name not in kept],
        "rows": rows,
    }


def choice_sentence(study: Mapping[str, Any], candidates: Sequence[str], *, protocol: str = "all") -> str:
    """The rule's outcome as one Markdown paragraph, every number from the study's paired rows."""
    choice = choose_variant(study, candidates, protocol=protocol)
    baseline = study["config"]["baseline"]
    finest_label = headline_metrics(study)[-1][2]

    def numbers(name: str) -> str:
        parts = []
        for part, label in (("cpcc", "CPCC"), ("finest", finest_label)):
            values = [
                f"{format_signed(row['mean_diff'])} {format_interval(row)} ({embedding})"
                for embedding, row in choice["rows"][name][part].items()
            ]
            parts.append(f"{label} {', '.join(values)}")
        return "; ".join(parts)

    lines = [f"By the rule ({CHOICE_RULE}), with differences from {baseline} on the same seeds as mean [95% CI]:"]
    if choice["chosen"] is None:
        lines.append(f"no candidate qualifies; none of {join_words(choice['dropped'])} raises CPCC on every embedding.")
        return " ".join(lines) + "\n"
    lines.append(f"**{choice['chosen']}** is chosen: {numbers(choice['chosen'])}.")
    for name in choice["kept"][1:]:
        lines.append(f"{name} also qualifies but costs more: {numbers(name)}.")
    if choice["dropped"]:
        lines.append(f"Not raising CPCC on every embedding: {join_words(choice['dropped'])}.")
    return " ".join(lines) + "\n"
