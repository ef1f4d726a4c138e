"""Study statistics against hand computation: closed-form t distribution (4 degrees of freedom),
exact Wilcoxon by enumerating every sign assignment, and scipy's own paired t-test."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from hcl.study import aggregate, cell_rows, mean_interval, paired_difference


def t4_cdf(t: float) -> float:
    """CDF of Student's t with 4 degrees of freedom, in closed form."""
    x = t / math.sqrt(4 + t * t)
    return 0.5 + 0.75 * x * (1 - x * x / 3)


def t4_quantile(p: float) -> float:
    low, high = 0.0, 50.0
    for _ in range(200):  # bisection
        mid = (low + high) / 2
        low, high = (mid, high) if t4_cdf(mid) < p else (low, mid)
    return (low + high) / 2


def exact_wilcoxon(diffs: list[float]) -> float:
    """Two-sided exact signed-rank p-value, zeros dropped, distinct |d| (no ties) only."""
    d = [x for x in diffs if x != 0]
    assert len({round(abs(x), 9) for x in d}) == len(d), "the oracle needs distinct |differences|"
    ranks = {v: r + 1 for r, v in enumerate(sorted(abs(x) for x in d))}
    observed = sum(ranks[abs(x)] for x in d if x > 0)
    signs = itertools.product((0, 1), repeat=len(d))
    totals = [sum(rank for rank, positive in zip(range(1, len(d) + 1), sign) if positive) for sign in signs]
    low = sum(w <= observed for w in totals) / len(totals)
    high = sum(w >= observed for w in totals) / len(totals)
    return min(1.0, 2 * min(low, high))


def test_t_quantile_closed_form() -> None:
    assert t4_quantile(0.975) == pytest.approx(2.7764451051977987, abs=1e-12)


def test_mean_interval_by_hand() -> None:
    values = [0.61, 0.64, 0.58, 0.66, 0.63]
    result = mean_interval(values)
    mean = sum(values) / 5
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 4)
    half = t4_quantile(0.975) * sd / math.sqrt(5)
    assert result["n"] == 5
    assert result["mean"] == pytest.approx(mean, abs=1e-14)
    assert result["sd"] == pytest.approx(sd, abs=1e-14)
    assert result["ci_low"] == pytest.approx(mean - half, abs=1e-10)
    assert result["ci_high"] == pytest.approx(mean + half, abs=1e-10)


def test_mean_interval_known_case_and_confidence() -> None:
    # 1..5: mean 3, sd sqrt(2.5), standard error 1/sqrt(2)
    result = mean_interval([1, 2, 3, 4, 5])
    assert (result["ci_low"], result["ci_high"]) == pytest.approx(
        (3 - 2.7764451051977987 / math.sqrt(2), 3 + 2.7764451051977987 / math.sqrt(2))
    )
    wider, narrower = mean_interval([1, 2, 3, 4, 5], 0.99), mean_interval([1, 2, 3, 4, 5], 0.8)
    assert wider["ci_low"] < result["ci_low"] < narrower["ci_low"]
    with pytest.raises(ValueError, match="confidence must be between 0 and 1"):
        mean_interval([1, 2], 1.5)


def test_mean_interval_degenerate() -> None:
    one = mean_interval([0.4])
    assert one["n"] == 1 and one["mean"] == 0.4 and math.isnan(one["ci_low"]) and math.isnan(one["sd"])
    none = mean_interval([])
    assert none["n"] == 0 and math.isnan(none["mean"])
    constant = mean_interval([0.5, 0.5, 0.5])
    assert constant["ci_low"] == constant["ci_high"] == 0.5
    with_nan = mean_interval([1.0, float("nan"), 3.0])
    assert with_nan["n"] == 2 and with_nan["mean"] == 2.0


@pytest.mark.parametrize(
    ("values", "baseline"),
    [
        ([0.71, 0.69, 0.74, 0.70, 0.73], [0.68, 0.70, 0.69, 0.66, 0.71]),
        ([0.50, 0.52, 0.49, 0.55, 0.51], [0.53, 0.56, 0.50, 0.53, 0.58]),
        ([0.1, 0.2, 0.3, 0.4, 0.5], [0.11, 0.18, 0.34, 0.37, 0.55]),
    ],
)
def test_paired_difference_by_hand(values: list[float], baseline: list[float]) -> None:
    result = paired_difference(values, baseline)
    d = [a - b for a, b in zip(values, baseline)]
    mean = sum(d) / 5
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 4)
    t = mean / (sd / math.sqrt(5))
    assert result["n"] == 5
    assert result["mean_diff"] == pytest.approx(mean, abs=1e-14)
    half = t4_quantile(0.975) * sd / math.sqrt(5)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((mean - half, mean + half), abs=1e-10)
    assert result["p_t"] == pytest.approx(2 * (1 - t4_cdf(abs(t))), abs=1e-12)
    assert result["p_t"] == pytest.approx(stats.ttest_rel(values, baseline).pvalue, rel=1e-10)
    assert result["p_wilcoxon"] == pytest.approx(exact_wilcoxon(d), abs=1e-12)


def test_wilcoxon_floor_with_five_seeds() -> None:
    """All five differences of one sign: the smallest two-sided p, 2/32."""
    result = paired_difference([0.9, 0.8, 0.7, 0.85, 0.75], [0.1, 0.2, 0.25, 0.3, 0.05])
    assert result["p_wilcoxon"] == pytest.approx(0.0625)
    assert result["p_t"] < 0.001


def test_paired_difference_degenerate_cases() -> None:
    same = paired_difference([0.3, 0.4, 0.5], [0.3, 0.4, 0.5])
    assert same["mean_diff"] == 0 and same["p_t"] == 1.0 and same["p_wilcoxon"] == 1.0
    shifted = paired_difference([0.5, 0.5, 0.5, 0.5, 0.5], [0.25, 0.25, 0.25, 0.25, 0.25])
    assert shifted["p_t"] == 0.0 and shifted["ci_low"] == shifted["ci_high"] == 0.25
    assert shifted["p_wilcoxon"] == pytest.approx(0.0625)
    one = paired_difference([0.5], [0.4])
    assert one["n"] == 1 and math.isnan(one["p_t"]) and math.isnan(one["p_wilcoxon"])
    with_nan = paired_difference([0.5, float("nan"), 0.7, 0.6], [0.4, 0.3, float("nan"), 0.1])
    assert with_nan["n"] == 2 and with_nan["mean_diff"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference([1, 2], [1])


def record(variant: str, seed: int, shift: float, protocol: str = "all", projection: bool = True) -> dict:
    def evaluation(offset: float) -> dict:
        return {
            "levels": ["coarse", "fine"],
            "retrieval": {
                "0": {"precision@1": 0.9 + shift, "recall@5": 1.0, "map@r": 0.8 + shift + offset},
                "1": {"precision@1": 0.7 + shift, "recall@5": 0.9, "map@r": 0.5 + shift + offset},
            },
            "knn_accuracy": {"0": 0.95 + shift, "1": 0.75 + shift},
            "cpcc": 0.6 + shift,
            **(
                {"heldout": {"map@r": {"0": 0.4 + shift, "1": 0.2}, "parent_accuracy": 0.9}}
                if protocol == "heldout"
                else {}
            ),
        }

    return {
        "cell": {"variant": variant, "protocol": protocol, "seed": seed},
        "status": "ok",
        "metrics": {"features": evaluation(0.0), "projection": evaluation(-0.1) if projection else None},
    }


def test_cell_rows() -> None:
    rows = cell_rows(record("A", 3, 0.01, protocol="heldout", projection=False))
    assert all(r["embedding"] == "features" and r["seed"] == 3 and r["variant"] == "A" for r in rows)
    got = {(r["level"], r["metric"]): r["value"] for r in rows}
    assert got == pytest.approx(
        {
            ("coarse", "map@r"): 0.81,
            ("coarse", "precision@1"): 0.91,
            ("coarse", "knn_accuracy"): 0.96,
            ("fine", "map@r"): 0.51,
            ("fine", "precision@1"): 0.71,
            ("fine", "knn_accuracy"): 0.76,
            ("(all)", "cpcc"): 0.61,
            ("coarse", "heldout/map@r"): 0.41,
            ("fine", "heldout/map@r"): 0.2,
            ("(all)", "heldout/parent_accuracy"): 0.9,
        }
    )
    assert len(cell_rows(record("A", 0, 0.0))) == 14  # 7 metrics x 2 embeddings, recall@k left out


def test_aggregate_pairs_on_common_seeds() -> None:
    shifts = {"Base": [0.00, 0.02, 0.01, 0.03, 0.02], "New": [0.03, 0.04, 0.02, 0.06]}  # New lacks seed 4
    rows = [
        row
        for name, values in shifts.items()
        for seed, s in enumerate(values)
        for row in cell_rows(record(name, seed, s))
    ]
    tables = aggregate(rows, "Base")
    assert len(tables["summary"]) == 2 * 14 and len(tables["paired"]) == 14
    fine = next(
        p for p in tables["paired"] if p["level"] == "fine" and p["metric"] == "map@r" and p["embedding"] == "features"
    )
    assert fine["seeds"] == [0, 1, 2, 3] and fine["baseline"] == "Base" and fine["variant"] == "New"
    expected = paired_difference([0.5 + s for s in shifts["New"]], [0.5 + s for s in shifts["Base"][:4]])
    assert {k: fine[k] for k in expected} == pytest.approx(expected)
    summary = next(
        s
        for s in tables["summary"]
        if s["variant"] == "Base" and s["level"] == "(all)" and s["embedding"] == "projection"
    )
    assert summary["n"] == 5 and summary["mean"] == pytest.approx(0.6 + np.mean(shifts["Base"]))
    assert [s["variant"] for s in tables["summary"]][:14] == ["Base"] * 14  # in the order rows came
