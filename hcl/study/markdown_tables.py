"""The pieces of the study's Markdown: tables of means and paired differences, the findings as
lines, and the number formats they share (3 decimals, signed differences, intervals, p-values).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from hcl.study.findings import metric_label
from hcl.study.stats import verdict

__all__ = [
    "count_noun",
    "finding_lines",
    "format_interval",
    "format_p",
    "format_plain",
    "format_signed",
    "is_missing",
    "join_words",
    "markdown_table",
    "mean_table",
    "own_table",
    "paired_table",
    "sentence",
]


def own_table(
    rows: Sequence[Mapping[str, Any]],
    config: Mapping[str, Any],
    shown: Sequence[tuple[str, str]],
    protocol: str,
    *,
    paired: bool,
) -> list[str]:
    """A protocol's own metrics, one row per metric and level, one column per variant (there may be
    many such metrics: the held-out protocol reports a dozen and more)."""
    by_key = {(r["variant"], r["level"], r["metric"]): r for r in rows}
    variants = [v for v in config["variants"] if any(r["variant"] == v for r in rows)]
    if not variants:
        return [f"No variant shares a finished seed with {config['baseline']}."]
    body = []
    for level, metric in shown:
        cells = []
        for variant in variants:
            r = by_key.get((variant, level, metric))
            if r is None:
                cells.append("–")
            elif paired:
                text = f"{format_signed(r['mean_diff'])} {format_interval(r)}"
                cells.append(f"**{text}**" if verdict(r["ci_low"], r["ci_high"]) in ("helps", "hurts") else text)
            else:
                cells.append(f"{format_plain(r['mean'])} {format_interval(r)}")
        body.append([metric_label(level, metric.removeprefix(f"{protocol}/")), *cells])
    return markdown_table(["metric", *variants], body)


def mean_table(
    summary: Sequence[Mapping[str, Any]], config: Mapping[str, Any], columns: Sequence[tuple[str, str]]
) -> list[str]:
    by_key = {(s["variant"], s["level"], s["metric"]): s for s in summary}
    header = ["variant", "seeds", *(metric_label(level, metric) for level, metric in columns)]
    rows = []
    for variant in config["variants"]:
        stats = [by_key.get((variant, level, metric)) for level, metric in columns]
        if not any(stats):
            continue
        counts = sorted({s["n"] for s in stats if s})
        name = f"{variant} (baseline)" if variant == config["baseline"] else variant
        rows.append(
            [
                name,
                "-".join(map(str, dict.fromkeys((counts[0], counts[-1])))),
                *("–" if s is None else f"{format_plain(s['mean'])} {format_interval(s)}" for s in stats),
            ]
        )
    return markdown_table(header, rows)


def paired_table(
    paired: Sequence[Mapping[str, Any]], config: Mapping[str, Any], shown: Sequence[tuple[str, str]]
) -> list[str]:
    by_key = {(p["variant"], p["level"], p["metric"]): p for p in paired}
    rows = []
    for variant in config["variants"]:
        for level, metric in dict.fromkeys(shown):
            p = by_key.get((variant, level, metric))
            if p is not None:
                rows.append(
                    [
                        variant,
                        metric_label(level, metric),
                        f"{format_signed(p['mean_diff'])} {format_interval(p)}",
                        format_p(p["p_t"]),
                        format_p(p["p_wilcoxon"]),
                        str(p["n"]),
                        verdict(p["ci_low"], p["ci_high"]),
                    ]
                )
    if not rows:
        return [f"No variant shares a finished seed with {config['baseline']}."]
    return markdown_table(["variant", "metric", "difference [95% CI]", "p_t", "p_W", "n", "reading"], rows)


def finding_lines(found: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per variant, its metrics grouped by verdict: ``- B vs A: helps X (+d [lo, hi], p_t,
    n); no detectable difference on Y (...) and Z (...).``"""
    by_variant: dict[str, dict[str, list[str]]] = {}
    for f in found:
        numbers = (
            ""
            if f["verdict"] == "not measured"
            else f" ({format_signed(f['mean_diff'])} {format_interval(f)}, p_t {format_p(f['p_t'])}, n {f['n']})"
        )
        verdicts = by_variant.setdefault(f"{f['variant']} vs {f['baseline']}", {})
        verdicts.setdefault(f["verdict"], []).append(f["label"] + numbers)
    lines = []
    for name, verdicts in by_variant.items():
        clauses = [
            f"{word}{'' if word in ('helps', 'hurts') else ' on'} {join_words(items)}"
            for word, items in verdicts.items()
        ]
        lines.append(f"- {name}: {'; '.join(clauses)}.")
    return lines


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return [line(header), "|" + "|".join("---" for _ in header) + "|", *(line(r) for r in rows)]


def is_missing(value: Any) -> bool:
    return value is None or math.isnan(value)


def format_plain(value: Any) -> str:
    return "–" if is_missing(value) else f"{value:.3f}"


def format_signed(value: Any) -> str:
    return "–" if is_missing(value) else f"{value:+.3f}"


def format_interval(row: Mapping[str, Any]) -> str:
    """``[low, high]`` (signed for a difference), or ``(n=1)`` when there is no interval."""
    low, high = row["ci_low"], row["ci_high"]
    if is_missing(low) or is_missing(high):
        return f"(n={row['n']}, no interval)"
    fmt = format_signed if "mean_diff" in row else format_plain
    return f"[{fmt(low)}, {fmt(high)}]"


def format_p(value: Any) -> str:
    if is_missing(value):
        return "–"
    return f"{value:.3f}" if value >= 0.001 else "<0.001"


def sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def count_noun(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def join_words(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"
