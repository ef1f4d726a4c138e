"""The loss benchmark's tables: its rows as a console table, the summary lines and the README block.

A row of ``bench_losses.py`` is one method at one (threads, views, dtype, CUDA graph) setting;
rows of records written before the dtype and graph settings existed lack those keys and count
as fp32 without a graph. A record whose rows are all fp32 without a graph renders as it always
has; any other record gets dtype and graph columns in its table and the setting in its summary
lines.
"""

from __future__ import annotations

from typing import Any

import torch
from _record import describe

__all__ = [
    "DTYPES",
    "GRAPHS",
    "LIMIT",
    "LOOP",
    "NOT_CAPTURED",
    "PML",
    "SUPCON",
    "format_table",
    "readme_block",
    "setting",
    "summary",
]

SUPCON = "flat SupCon (hcl)"
LIMIT = "limit: 2 GEMMs + exp (no loss)"
PML = "flat SupCon (PML)"
LOOP = "loop formulation (reference HMLC, hmce)"
# The feature dtypes and CUDA-graph settings a run can time, in the order tables list them.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
GRAPHS = ("off", "on")
_DEFAULT = ("fp32", "off")

# README columns: short names of the methods, in this order (those a record lacks are left out).
_COLUMNS = {
    SUPCON: "flat SupCon, ms",
    LIMIT: "limit (GEMMs + exp)",
    "HiMulConE hinge (hcl, default)": "HiMulConE hinge (default)",
    "HiMulConE pair (hcl, paper)": "HiMulConE pair (paper)",
    "HiMulConE pair_held (hcl)": "HiMulConE pair_held",
    "HiMulConE level_max (hcl)": "HiMulConE level_max",
    "HiMulCon paper (hcl)": "HiMulCon",
    "HiMulConE reference (hcl)": "HiMulConE reference mode",
    PML: "SupCon (pytorch-metric-learning)",
    LOOP: "loop formulation",
}
FAILED = "failed"  # a skipped row's reason starts with it when the method raised in the warm-up
NOT_CAPTURED = "not captured as a CUDA graph (its dense form does not fit), so not timed with a graph"


def setting(row: dict[str, Any]) -> tuple[str, str]:
    """The row's (dtype, graph); rows from before these settings were fp32 without a graph."""
    return row.get("dtype", "fp32"), row.get("graph", "off")


def _setting_order(key: tuple[str, str]) -> tuple[int, int]:
    dtype, graph = key
    return list(DTYPES).index(dtype) if dtype in DTYPES else len(DTYPES), GRAPHS.index(graph)


def _labelled(rows: list[dict[str, Any]]) -> bool:
    """Whether the rows need their setting shown: any of them is not fp32 without a graph."""
    return any(setting(row) != _DEFAULT for row in rows)


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| method | views (B*V) | threads | dtype | CUDA graph | ms (median) | ms (min) | x flat SupCon (hcl) "
        "| x limit | x flat SupCon (PML) | peak MiB |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]

    def ratio(value: object) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    for row in rows:
        dtype, graph = setting(row)
        head = f"| {row['method']} | {row['views']} | {row['threads']} | {dtype} | {graph} |"
        if "skipped" in row:
            lines.append(f"{head} {row['skipped']} | | | | | |")
            continue
        peak = "-" if row["peak_mib"] is None else f"{row['peak_mib']:.1f}"
        lines.append(
            f"{head} {row['ms']:.2f} | {row['ms_min']:.2f} | {ratio(row['vs_hcl'])} | {ratio(row['vs_limit'])} | "
            f"{ratio(row['vs_pml'])} | {peak} |"
        )
    return "\n".join(lines)


def summary(rows: list[dict[str, Any]]) -> str:
    """Per (dtype, graph) setting, each HiMulConE reading's worst ratios against flat SupCon
    (every size) and the limit (4,096 views and more), of medians and of minima (the steadier
    figure on a shared machine), and its peak memory against SupCon's at the largest size. The
    setting is named only where a row is not fp32 without a graph."""
    timed = [row for row in rows if "skipped" not in row]
    labelled = _labelled(timed)
    lines = []
    for key in sorted({setting(row) for row in timed}, key=_setting_order):
        group = [row for row in timed if setting(row) == key]
        label = f" [{key[0]}, CUDA graph {key[1]}]" if labelled else ""
        lines += _summary_lines(group, label)
    return "\n".join(lines)


def _summary_lines(timed: list[dict[str, Any]], label: str) -> list[str]:
    """The summary lines of one setting's rows, each method's name followed by ``label``."""
    himulcone = [row for row in timed if row["method"].startswith("HiMulConE") and "reference" not in row["method"]]
    lines = []

    def where(row: dict[str, Any]) -> str:
        return f"{row['views']:,} views, {row['threads']} thread{'' if row['threads'] == 1 else 's'}"

    for name in sorted({row["method"] for row in himulcone}):
        mine = [row for row in himulcone if row["method"] == name]
        worst = max(mine, key=lambda row: row["vs_hcl"])
        worst_min = max(mine, key=lambda row: row["vs_hcl_min"])
        text = (
            f"- {name}{label}: at most {worst['vs_hcl']:.2f}x flat SupCon by medians ({where(worst)}), "
            f"{worst_min['vs_hcl_min']:.2f}x by minima ({where(worst_min)})"
        )
        large = [row for row in mine if row["views"] >= 4096 and row["vs_limit"] is not None]
        if large:
            worst_limit = max(large, key=lambda row: row["vs_limit"])
            worst_limit_min = max(large, key=lambda row: row["vs_limit_min"])
            text += (
                f"; at >= 4,096 views at most {worst_limit['vs_limit']:.2f}x the limit by medians, "
                f"{worst_limit_min['vs_limit_min']:.2f}x by minima"
            )
        largest = max(mine, key=lambda row: (row["peak_mib"] is not None, row["views"]))
        supcon = [
            row
            for row in timed
            if row["method"] == SUPCON
            and row["views"] == largest["views"]
            and row["peak_mib"] is not None
            and largest["peak_mib"] is not None
        ]
        if supcon:
            text += (
                f"; peak memory at {largest['views']:,} views {largest['peak_mib']:.0f} MiB = "
                f"{largest['peak_mib'] / supcon[0]['peak_mib']:.2f}x SupCon's"
            )
        lines.append(text)
    return lines


def readme_block(record: dict[str, Any]) -> str:
    """The README's loss table from a saved record: median ms of flat SupCon, and every other
    method as median ms with its ratio to flat SupCon of the same setting in the same run; then
    the summary lines and the provenance line. Records with other settings than fp32 without a
    graph get a dtype and a CUDA-graph column."""
    rows = [row for row in record["rows"] if "skipped" not in row]
    labelled = _labelled(rows)
    present = {row["method"] for row in rows}
    columns = [name for name in _COLUMNS if name in present]
    settings_head, settings_rule = ("dtype | CUDA graph | ", "---|---|") if labelled else ("", "")
    lines = [
        f"| views | threads | {settings_head}" + " | ".join(_COLUMNS[name] for name in columns) + " |",
        f"|---:|---:|{settings_rule}" + "---:|" * len(columns),
    ]
    cells = {(row["views"], row["threads"], *setting(row), row["method"]): row for row in rows}
    keys = {(row["views"], row["threads"], *setting(row)) for row in rows}
    for views, threads, dtype, graph in sorted(keys, key=lambda k: (k[1], k[0], _setting_order(k[2:]))):
        values = []
        for name in columns:
            row = cells.get((views, threads, dtype, graph, name))
            if row is None:
                values.append("–")
            elif name == SUPCON or row["vs_hcl"] is None:
                values.append(f"{row['ms']:,.2f}")
            else:
                values.append(f"{row['ms']:,.2f} ({row['vs_hcl']:.2f}×)")
        shown = f"{dtype} | {graph} | " if labelled else ""
        lines.append(f"| {views:,} | {threads} | {shown}" + " | ".join(values) + " |")
    notes = [_not_captured(record["rows"])]
    notes += [
        f"{row['method']} at {row['views']:,} views was left out: it {row['skipped']}."
        for row in record["rows"]
        if str(row.get("skipped", "")).startswith(FAILED)
    ]
    table = "\n\n".join(["\n".join(lines), *filter(None, notes)])
    return table + "\n\n" + summary(record["rows"]) + "\n\n" + describe(record)


def _not_captured(rows: list[dict[str, Any]]) -> str:
    """A line naming the losses left out of the CUDA-graph rounds, and at which sizes ("" if none)."""
    missing: dict[str, list[str]] = {}
    for row in rows:
        if row.get("skipped") == NOT_CAPTURED:
            sizes = missing.setdefault(row["method"], [])
            if f"{row['views']:,}" not in sizes:
                sizes.append(f"{row['views']:,}")
    if not missing:
        return ""
    where = "; ".join(f"{name} at {', '.join(sizes)} views" for name, sizes in missing.items())
    return (
        f"Not captured as CUDA graphs, so absent from the graph rows: {where} (there the dense form's "
        "(L, N, N) tensors exceed its 2^27-element bound and `CUDAGraphLoss` calls the loss directly)."
    )
