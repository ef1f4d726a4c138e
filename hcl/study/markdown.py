"""A study's results as Markdown, from ``study.json`` alone: for a README, a results page, a PR.

:func:`study_markdown` gives the whole account (how the numbers were made, what they say in
words, and the tables behind the words); :func:`study_headline` a few lines of it. Both read only
``study.json``, so they can be redrawn for an existing study folder without training anything::

    hcl study-report studies/fashion_mnist --markdown docs/results.md
"""

from __future__ import annotations

import datetime
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hcl.atomic import write_text_atomic
from hcl.study.choice import choice_sentence
from hcl.study.findings import (
    FINDINGS_RULE,
    headline_metrics,
    study_findings,
    study_levels,
)
from hcl.study.markdown_tables import (
    count_noun,
    finding_lines,
    format_interval,
    format_signed,
    is_missing,
    join_words,
    markdown_table,
    mean_table,
    own_table,
    paired_table,
    sentence,
)
from hcl.study.runner import read_study
from hcl.study.stats import ALL_LEVELS

__all__ = ["study_effects_table", "study_headline", "study_markdown", "write_study_markdown"]

StudyLike = Mapping[str, Any] | str | os.PathLike[str]


def study_markdown(study: StudyLike, *, heading_level: int = 1) -> str:
    """The study's results as Markdown.

    In order: the title and how the numbers were made (the command, git commit(s) and whether hcl/
    had uncommitted changes, cells finished, workers and threads, wall and core time, versions,
    machine); the findings in words (every variant against the baseline on CPCC and coarsest- and
    finest-level MAP@R: helps, hurts or no detectable difference, with the rule and the numbers);
    then per protocol and embedding, each variant's mean [95% CI] of MAP@R per level, CPCC and
    finest-level k-NN accuracy (and the protocol's own metrics, e.g. the held-out classes'), and
    the paired differences from the baseline with both p-values.

    Args:
        study: a study document (:func:`hcl.study.read_study`), or its folder or ``study.json``.
        heading_level: the level of the title heading (sections are one level below), so the text
            can sit inside a larger document.

    Raises:
        FileNotFoundError / ValueError: as :func:`hcl.study.read_study`; a study without any
            finished cell (ValueError).
    """
    if not isinstance(study, Mapping):
        study = read_study(study)
    if not 1 <= heading_level <= 5:
        raise ValueError(f"heading_level must be between 1 and 5, got {heading_level!r}")
    config = study["config"]
    h1, h2, h3 = ("#" * (heading_level + i) for i in range(3))
    lines = [f"{h1} {_title(config)}", "", *_provenance(study), ""]
    lines += [f"{h2} Findings", "", FINDINGS_RULE, ""]
    for protocol in config["protocols"]:
        for embedding in config["embeddings"]:
            found = study_findings(study, protocol=protocol, embedding=embedding)
            if found:
                lines += [
                    f"**{_protocol_title(study, protocol)}, {embedding} embedding**",
                    "",
                    *finding_lines(found),
                    "",
                ]
    for protocol in config["protocols"]:
        for embedding in config["embeddings"]:
            lines += [f"{h2} {sentence(_protocol_title(study, protocol))}, {embedding} embedding", ""]
            lines += _section(study, protocol, embedding, h3)
    return "\n".join(lines).rstrip("\n") + "\n"


def study_headline(
    study: StudyLike,
    *,
    protocol: str | None = None,
    embedding: str | None = None,
    top: int = 3,
    choose_among: Sequence[str] = (),
) -> str:
    """A few Markdown lines for a README: the largest effects on the headline metrics, each with its
    95% CI, the null results, and with ``choose_among`` the rule's choice among those variants
    (:func:`hcl.study.choice_sentence`).

    Args:
        study: a study document, or its folder or ``study.json``.
        protocol: the protocol to sum up (default: ``"all"`` when the study has it, else its first).
        embedding: the embedding to sum up (default: the study's first).
        top: the most effects listed (largest absolute difference first); every null is listed.
        choose_among: variant names or shell patterns (``"HiMulConE*"``) to choose a default from.
    """
    if not isinstance(study, Mapping):
        study = read_study(study)
    config = study["config"]
    protocol = protocol or ("all" if "all" in config["protocols"] else config["protocols"][0])
    embedding = embedding or config["embeddings"][0]
    found = study_findings(study, protocol=protocol, embedding=embedding)
    seeds = sorted({f["n"] for f in found if f["n"]})
    over = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}" if seeds else "no"
    intro = (
        f"**{_title(config)}**: {count_noun(len(config['variants']) - 1, 'variant')} against {config['baseline']}, "
        f"paired over {over} seeds ({_protocol_title(study, protocol)}, {embedding} embedding; "
        "mean difference [95% CI], an effect where the CI excludes 0):"
    )
    lines = [intro, ""]
    effects = sorted((f for f in found if f["verdict"] in ("helps", "hurts")), key=lambda f: -abs(f["mean_diff"]))
    if effects:
        shown = [
            f"{f['variant']} {f['verdict']} {f['label']}: {format_signed(f['mean_diff'])} {format_interval(f)}"
            for f in effects[:top]
        ]
        more = f" ({len(effects) - top} more in the full report)" if len(effects) > top else ""
        lines.append(f"- Largest effects: {'; '.join(shown)}{more}.")
    else:
        lines.append(
            f"- No variant differs detectably from {config['baseline']} on "
            f"{join_words([label for _, _, label in headline_metrics(study)])}."
        )
    for word, heading in (
        ("no detectable difference", "No detectable difference"),
        ("too few seeds", "Too few seeds to tell"),
        ("not measured", "Not measured"),
    ):
        by_variant: dict[str, list[str]] = {}
        for f in found:
            if f["verdict"] == word:
                by_variant.setdefault(f["variant"], []).append(f["label"])
        if by_variant and (effects or word != "no detectable difference"):
            lines.append(
                f"- {heading}: " + "; ".join(f"{v} on {join_words(labels)}" for v, labels in by_variant.items()) + "."
            )
    lines += ["", *study_effects_table(study, protocol=protocol)]
    if choose_among:
        lines += ["", choice_sentence(study, choose_among, protocol=protocol).rstrip("\n")]
    return "\n".join(lines) + "\n"


def study_effects_table(study: StudyLike, *, protocol: str | None = None) -> list[str]:
    """Markdown table lines: per variant, its paired difference from the baseline [95% CI] on each
    headline metric in every embedding of ``protocol`` (default as :func:`study_headline`), in bold
    where the interval excludes 0."""
    if not isinstance(study, Mapping):
        study = read_study(study)
    config = study["config"]
    protocol = protocol or ("all" if "all" in config["protocols"] else config["protocols"][0])
    labels = [label for _, _, label in headline_metrics(study)]
    found = {
        (f["variant"], embedding, f["label"]): f
        for embedding in config["embeddings"]
        for f in study_findings(study, protocol=protocol, embedding=embedding)
    }
    header = [
        "vs " + config["baseline"],
        *(f"{label} ({embedding})" for embedding in config["embeddings"] for label in labels),
    ]
    rows = []
    for variant in [v for v in config["variants"] if v != config["baseline"]]:
        cells = []
        for embedding in config["embeddings"]:
            for label in labels:
                f = found.get((variant, embedding, label))
                if f is None or is_missing(f.get("mean_diff")):
                    cells.append("–")
                    continue
                text = f"{format_signed(f['mean_diff'])} {format_interval(f)}"
                cells.append(f"**{text}**" if f["verdict"] in ("helps", "hurts") else text)
        rows.append([variant, *cells])
    return markdown_table(header, rows)


def write_study_markdown(study: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Path:
    """Write :func:`study_markdown` of the study at ``study`` (its folder or ``study.json``) to
    ``out_path``, atomically. Returns the path written."""
    return write_text_atomic(out_path, study_markdown(study))


def _title(config: Mapping[str, Any]) -> str:
    return config.get("title") or f"hcl study: {Path(config['output_dir']).name}"


def _protocol_title(study: Mapping[str, Any], protocol: str) -> str:
    """``"all classes trained"``, ``"held-out classes (Pullover, Sandal)"``: the named classes, else
    those the cells report (``<protocol>/classes``), else their count."""
    if protocol == "all":
        return "all classes trained"
    if protocol != "heldout":
        return f"protocol {protocol}"
    spec = study["config"].get("heldout") or {}
    reported = {
        tuple(results[protocol]["classes"])
        for cell in study["cells"]
        if cell["cell"]["protocol"] == protocol
        for results in (cell.get("metrics") or {}).values()
        if results and isinstance(results.get(protocol), Mapping) and results[protocol].get("classes")
    }
    if spec.get("classes") or len(reported) == 1:
        return f"held-out classes ({', '.join(spec.get('classes') or next(iter(reported)))})"
    return f"{spec.get('count', 'some')} held-out classes" + (" (new per seed)" if spec.get("per_seed") else "")


def _provenance(study: Mapping[str, Any]) -> list[str]:
    """Bullet lines: how the numbers were made."""
    config, cells = study["config"], study["cells"]
    ok = [c for c in cells if c["status"] == "ok"]
    env = study.get("environment") or {}
    cell_envs = [c.get("environment") or env for c in ok] or [env]
    command = study.get("command")
    lines = [f"- **Command:** `{command}`" if command else "- **Command:** not recorded (run from Python)"]
    commits = Counter((e.get("git_commit"), e.get("git_dirty")) for e in cell_envs)
    code = [
        _commit(commit, dirty) + (f" ({count} cells)" if len(commits) > 1 else "")
        for (commit, dirty), count in commits.items()
    ]
    versions = [
        f"{name} {', '.join(sorted({str(e.get(name)) for e in cell_envs}))}" for name in ("hcl", "torch", "python")
    ]
    lines.append(f"- **Code:** {'; '.join(code)}; {', '.join(versions)}")
    shape = " x ".join(count_noun(len(config[key]), key[:-1]) for key in ("variants", "seeds", "protocols"))
    shape += f", baseline {config['baseline']}"
    lines.append(f"- **Cells:** {len(ok)} of {len(cells)} finished ({shape})")
    for cell in cells:
        if cell["status"] != "ok":
            lines.append(f"  - `{cell['key']}` {cell['status']}" + (f": {cell['error']}" if cell.get("error") else ""))
    workers = config.get("workers")
    threads = sorted({e.get("torch_threads") for e in cell_envs if e.get("torch_threads")})
    threads = threads or [config.get("threads_per_worker", 1)]
    per_cell = count_noun(threads[0], "thread") if len(threads) == 1 else "/".join(map(str, threads)) + " threads"
    lines.append(
        f"- **Workers:** {workers or 'one per CPU core'} at once, {per_cell} each, "
        f"executor {config.get('executor', 'process')}"
    )
    lines.append(f"- **Time:** {_timing(ok)}")
    lines.append(f"- **Machine:** {_machines(cell_envs)}")
    return lines


def _commit(commit: str | None, dirty: bool | None) -> str:
    if commit is None:
        return "hcl not from a git checkout"
    state = {True: "with uncommitted changes in hcl/", False: "clean"}.get(dirty, "state unknown")
    return f"git `{commit[:12]}` ({state})"


def _timing(cells: Sequence[Mapping[str, Any]]) -> str:
    starts = [_when(c.get("started")) for c in cells]
    ends = [_when(c.get("finished")) for c in cells]
    times = [(c.get("timing") or {}).get("total_s") for c in cells]
    if not cells or None in starts or None in ends or None in times:
        return "not recorded for every cell"
    threads = [(c.get("environment") or {}).get("torch_threads") or 1 for c in cells]
    span = (max(ends) - min(starts)).total_seconds()
    core = sum(t * n for t, n in zip(times, threads))
    busy = _busy_seconds(list(zip(starts, ends)))
    idle = f", {_duration(span)} from first start to last finish" if span - busy >= 60 else ""
    return (
        f"{_duration(busy)} wall while cells ran (the idle time between reruns left out{idle}); "
        f"{_duration(sum(times))} of cell time summed; {_duration(core)} CPU-core time "
        "(each cell's time x its threads)"
    )


def _busy_seconds(intervals: list[tuple[datetime.datetime, datetime.datetime]]) -> float:
    """The length of the union of the (start, end) intervals: wall time with at least one cell running."""
    total, reach = 0.0, None
    for start, end in sorted(intervals):
        if reach is None or start > reach:
            total += (end - start).total_seconds()
            reach = end
        elif end > reach:
            total += (end - reach).total_seconds()
            reach = end
    return total


def _when(text: Any) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _machines(envs: Sequence[Mapping[str, Any]]) -> str:
    """``host (arch, N CPUs, GPU)`` per distinct machine, with its cell count when there are several."""
    described: Counter[str] = Counter()
    for e in envs:
        parts = [str(e["machine"])] if e.get("machine") else []
        parts += [f"{e['cpus']} CPUs"] if e.get("cpus") else []
        parts += [e["gpu"] or "no GPU"] if "gpu" in e else []
        described[(e.get("host") or "host not recorded") + (f" ({', '.join(parts)})" if parts else "")] += 1
    return "; ".join(name + (f" ({count} cells)" if len(described) > 1 else "") for name, count in described.items())


def _section(study: Mapping[str, Any], protocol: str, embedding: str, h3: str) -> list[str]:
    config = study["config"]
    summary = [s for s in study["summary"] if s["protocol"] == protocol and s["embedding"] == embedding]
    absent = {
        c["cell"]["variant"]: reason
        for c in study["cells"]
        if c["cell"]["protocol"] == protocol
        for emb, reason in (c.get("absent") or {}).items()
        if emb == embedding
    }
    notes = [f"{variant}: no {embedding} embedding ({reason})." for variant, reason in absent.items()]
    if not summary:
        return ["No finished cell has this embedding.", *notes, ""]
    levels = study_levels(study)
    columns = [(level, "map@r") for level in levels] + [(ALL_LEVELS, "cpcc"), (levels[-1], "knn_accuracy")]
    lines = ["Mean [95% CI] over seeds.", "", *mean_table(summary, config, columns), ""]
    paired = [p for p in study["paired"] if p["protocol"] == protocol and p["embedding"] == embedding]
    shown = [(level, metric) for level, metric, _ in headline_metrics(study)]
    legend = (
        "Mean difference on the seeds both finished [95% t-interval]; p_t: paired t-test, "
        "p_W: Wilcoxon signed-rank (two-sided; it cannot go below 2/2^n)."
    )
    lines += [
        f"{h3} Paired differences from {config['baseline']}",
        "",
        *paired_table(paired, config, shown),
        "",
        legend,
        "",
    ]
    own = list(dict.fromkeys((s["level"], s["metric"]) for s in summary if s["metric"].startswith(f"{protocol}/")))
    if own:
        name = "the held-out classes" if protocol == "heldout" else f"protocol {protocol}"
        lines += [
            f"{h3} Metrics of {name}",
            "",
            f"Mean [95% CI] over seeds of `{protocol}/<metric>`:",
            "",
            *own_table(summary, config, own, protocol, paired=False),
            "",
            f"Paired differences from {config['baseline']} [95% CI], in bold where the interval excludes 0:",
            "",
            *own_table(paired, config, own, protocol, paired=True),
            "",
        ]
    return [*lines, *notes, ""] if notes else lines
