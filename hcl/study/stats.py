"""A study's numbers: per-cell metric rows, means with t-intervals, paired tests against a baseline.

Every metric of every finished cell becomes one row ``{variant, protocol, seed, embedding,
level, metric, value}``. Grouped over seeds, a row group gets its mean and a 95% t-interval;
paired with the baseline variant on the seeds both finished, its mean difference, the difference's
t-interval, the paired t-test and the Wilcoxon signed-rank test.

With 5 seeds, the Wilcoxon test cannot go below p = 2 / 2**5 = 0.0625 (two-sided): all five
differences of one sign is the most extreme outcome. It guards the t-test against one outlying
seed; it cannot reach 0.05 on its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["ALL_LEVELS", "METRICS", "aggregate", "cell_rows", "mean_interval", "paired_difference", "verdict"]

METRICS = ("map@r", "precision@1", "knn_accuracy")  # per level, besides the whole-hierarchy CPCC
ALL_LEVELS = "(all)"  # the level of a metric of the whole hierarchy (CPCC)
_GROUP = ("variant", "protocol", "embedding", "level", "metric")


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean and two-sided t-interval of the mean: ``mean +- t_{(1+c)/2, n-1} * sd / sqrt(n)``.

    NaN values are dropped. With one value the interval (and ``sd``) is NaN; with none, every
    field but ``n`` is NaN.

    Returns:
        ``{"n", "mean", "sd", "ci_low", "ci_high"}``, ``sd`` with ``n - 1`` in the denominator.
    """
    x = _finite(values)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    sd = float(x.std(ddof=1)) if n > 1 else math.nan
    half = _t_quantile(confidence, n - 1) * sd / math.sqrt(n) if n > 1 else math.nan
    return {"n": n, "mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half}


def paired_difference(values: Sequence[float], baseline: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """``values - baseline``, paired position by position (the same seed), and two tests of it.

    Pairs with a NaN on either side are dropped. ``p_t`` is the paired two-sided t-test
    (``t = mean / (sd / sqrt(n))``, n - 1 degrees of freedom); identical pairs throughout give
    ``p_t = 1``, a constant non-zero difference ``p_t = 0``. ``p_wilcoxon`` is
    :func:`scipy.stats.wilcoxon` with its defaults (two-sided; zero differences dropped; exact
    for up to 50 pairs without ties, else the normal approximation); all-zero differences give 1.
    Fewer than two pairs give NaN p-values.

    Returns:
        ``{"n", "mean_diff", "ci_low", "ci_high", "p_t", "p_wilcoxon"}``.
    """
    from scipy import stats

    a, b = np.asarray(values, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    keep = np.isfinite(a) & np.isfinite(b)
    diff = a[keep] - b[keep]
    interval = mean_interval(diff, confidence)
    n = len(diff)
    p_t = p_wilcoxon = math.nan
    if n > 1:
        if not diff.any():
            p_t = p_wilcoxon = 1.0
        else:
            sd = diff.std(ddof=1)
            p_t = 0.0 if sd == 0 else float(2 * stats.t.sf(abs(diff.mean()) / (sd / math.sqrt(n)), n - 1))
            p_wilcoxon = float(stats.wilcoxon(diff).pvalue)
    return {
        "n": n,
        "mean_diff": interval["mean"],
        "ci_low": interval["ci_low"],
        "ci_high": interval["ci_high"],
        "p_t": p_t,
        "p_wilcoxon": p_wilcoxon,
    }


def verdict(ci_low: float | None, ci_high: float | None) -> str:
    """The reading of a paired difference's interval, higher being better: ``"helps"`` when
    ``ci_low > 0``, ``"hurts"`` when ``ci_high < 0``, ``"no detectable difference"`` when the
    interval holds 0, ``"too few seeds"`` when it is missing (None or NaN: a difference over fewer
    than two seeds)."""
    if ci_low is None or ci_high is None or math.isnan(ci_low) or math.isnan(ci_high):
        return "too few seeds"
    if ci_low > 0:
        return "helps"
    if ci_high < 0:
        return "hurts"
    return "no detectable difference"


def cell_rows(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The metric rows of one finished cell record (see :func:`hcl.study.cell.run_cell`).

    Per embedding and level: ``map@r``, ``precision@1`` and ``knn_accuracy``; per embedding:
    ``cpcc`` at level ``"(all)"``; a protocol's own metrics ``{name: {level: value} | value}``
    as ``"<protocol>/<name>"``. Levels are named as the hierarchy names them. An absent embedding
    (None) gives no rows.
    """
    cell = record["cell"]
    rows = []
    for embedding, results in (record.get("metrics") or {}).items():
        if results is None:
            continue
        names = list(results.get("levels") or [])
        values: list[tuple[str, str, Any]] = []
        for level, per_level in results.get("retrieval", {}).items():
            values += [(_level_name(level, names), m, per_level[m]) for m in METRICS if m in per_level]
            if str(level) in results.get("knn_accuracy", {}):
                values.append((_level_name(level, names), "knn_accuracy", results["knn_accuracy"][str(level)]))
        values.append((ALL_LEVELS, "cpcc", results.get("cpcc")))
        extra = results.get(cell["protocol"])
        if isinstance(extra, Mapping):
            for metric, value in extra.items():
                name = f"{cell['protocol']}/{metric}"
                if isinstance(value, Mapping):
                    values += [(_level_name(level, names), name, v) for level, v in value.items()]
                else:
                    values.append((ALL_LEVELS, name, value))
        for level, metric, value in values:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.append({**cell, "embedding": embedding, "level": level, "metric": metric, "value": float(value)})
    return rows


def aggregate(
    rows: Iterable[Mapping[str, Any]], baseline: str, confidence: float = 0.95
) -> dict[str, list[dict[str, Any]]]:
    """Summaries over seeds and paired differences against ``baseline``.

    Returns:
        ``{"summary": [{variant, protocol, embedding, level, metric, n, mean, sd, ci_low,
        ci_high, seeds}], "paired": [{variant, baseline, protocol, embedding, level, metric, n,
        mean_diff, ci_low, ci_high, p_t, p_wilcoxon, seeds}]}``, in the order rows first appear;
        ``paired`` holds every variant but the baseline, over the seeds both finished.
    """
    groups: dict[tuple[Any, ...], dict[int, float]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in _GROUP), {})[int(row["seed"])] = float(row["value"])
    summary, paired = [], []
    for key, by_seed in groups.items():
        seeds = sorted(by_seed)
        summary.append(
            {**dict(zip(_GROUP, key)), **mean_interval([by_seed[s] for s in seeds], confidence), "seeds": seeds}
        )
        if key[0] == baseline:
            continue
        reference = groups.get((baseline, *key[1:]))
        if reference is None:
            continue
        common = sorted(set(by_seed) & set(reference))
        difference = paired_difference([by_seed[s] for s in common], [reference[s] for s in common], confidence)
        paired.append({**dict(zip(_GROUP, key)), "baseline": baseline, **difference, "seeds": common})
    return {"summary": summary, "paired": paired}


def _level_name(key: Any, names: list[str]) -> str:
    """A level index ("0") as the hierarchy names it; any other key as it is."""
    key = str(key)
    return names[int(key)] if key.isdigit() and int(key) < len(names) else key


def _finite(values: Sequence[float]) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    return x[np.isfinite(x)]


def _t_quantile(confidence: float, df: int) -> float:
    from scipy import stats

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    return float(stats.t.ppf((1 + confidence) / 2, df))
