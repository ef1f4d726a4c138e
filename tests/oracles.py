"""Slow, obviously-correct loop oracles for the losses, written straight from the definitions.

Every quantity is built with explicit Python loops over anchors and pairs (no masks, no
vectorised tricks), in the dtype of the input (use float64), and stays differentiable, so the
tests can compare both values and gradients with the vectorised losses. Keep batches tiny.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

__all__ = [
    "make_labels",
    "oracle_constraint_loss",
    "oracle_level_terms",
    "oracle_paper_loss",
    "oracle_reference_loss",
    "oracle_supcon",
    "paper_default_weights",
]


def paper_default_weights(num_levels: int) -> list[float]:
    """lambda_l = exp(1 / (L - l)), l = 0..L-1."""
    return [math.exp(1.0 / (num_levels - level)) for level in range(num_levels)]


def _views(features: torch.Tensor) -> tuple[list[torch.Tensor], list[int]]:
    """Unit view vectors, view-major like SupContrast, and the sample each view comes from."""
    if features.dim() == 2:
        features = features.unsqueeze(1)
    num_samples, num_views, _ = features.shape
    vectors, samples = [], []
    for view in range(num_views):
        for sample in range(num_samples):
            vector = features[sample, view]
            vectors.append(vector / vector.norm())
            samples.append(sample)
    return vectors, samples


def _prefix(label_row: Sequence[int], level: int) -> tuple[int, ...] | None:
    """The label prefix 0..level, or None when any of it is unknown."""
    prefix = tuple(int(v) for v in label_row[: level + 1])
    return None if any(v < 0 for v in prefix) else prefix


def _pair_losses(vectors: list[torch.Tensor], temperature: float) -> list[list[torch.Tensor | None]]:
    """ell[i][p] = -log(exp(s_ip/t) / sum_{a != i} exp(s_ia/t)); None on the diagonal."""
    n = len(vectors)
    ell: list[list[torch.Tensor | None]] = []
    for i in range(n):
        others = [torch.dot(vectors[i], vectors[a]) / temperature for a in range(n) if a != i]
        log_denominator = torch.logsumexp(torch.stack(others), dim=0) if others else None
        row = []
        for p in range(n):
            row.append(None if p == i else log_denominator - torch.dot(vectors[i], vectors[p]) / temperature)
        ell.append(row)
    return ell


def oracle_paper_loss(
    features: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    level_weights: Sequence[float],
    constrained: bool,
    bound_gradient: bool = True,
) -> torch.Tensor:
    """Paper-mode HiMulCon (unconstrained) or HiConE/HiMulConE (constrained).

    For each level l: P_l(i) = other views with equal, known prefix 0..l; the level term is the
    mean over anchors with |P_l(i)| > 0 of the mean over p of ell(i,p), or of max(ell(i,p), m_i)
    with m_i = max over q in P_{l+1}(i) of ell(i,q) when constrained and P_{l+1}(i) is not empty.
    Loss = (1/L) sum_l lambda_l term_l; no positive pair at all gives features.sum() * 0.
    ``bound_gradient=False`` detaches m_i.
    """
    labels = labels.reshape(labels.shape[0], -1)
    num_levels = labels.shape[1]
    vectors, samples = _views(features)
    n = len(vectors)
    rows = [labels[s].tolist() for s in samples]
    ell = _pair_losses(vectors, temperature)

    def positives(i: int, level: int) -> list[int]:
        mine = _prefix(rows[i], level)
        if mine is None:
            return []
        return [p for p in range(n) if p != i and _prefix(rows[p], level) == mine]

    total = None
    for level in range(num_levels):
        anchor_terms = []
        for i in range(n):
            pos = positives(i, level)
            if not pos:
                continue
            bound = None
            if constrained and level + 1 < num_levels:
                finer = positives(i, level + 1)
                if finer:
                    bound = ell[i][finer[0]]
                    for q in finer[1:]:
                        bound = torch.maximum(bound, ell[i][q])
                    if not bound_gradient:
                        bound = bound.detach()
            if bound is None:
                pair_terms = [ell[i][p] for p in pos]
            elif bound_gradient:
                pair_terms = [torch.maximum(ell[i][p], bound) for p in pos]
            else:
                # A held bound: pairs at or above it (the bound's own pair included) keep their
                # whole gradient, the pairs it holds up get none.
                pair_terms = [torch.where(ell[i][p] >= bound, ell[i][p], bound) for p in pos]
            anchor_terms.append(sum(pair_terms) / len(pair_terms))
        if anchor_terms:
            term = level_weights[level] * sum(anchor_terms) / len(anchor_terms) / num_levels
            total = term if total is None else total + term
    return features.sum() * 0 if total is None else total


def oracle_level_terms(
    features: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    level_weights: Sequence[float],
    constrained: bool,
    constraint: str = "pair",
    constraint_weight: float = 0.5,
) -> list[torch.Tensor]:
    """Each level's term ``lambda_l * T_l / L``: the loss with every other level weighted 0 (a
    level's bound comes from the finer level's pairs, whatever that level's weight); with
    ``constrained``, the reading ``constraint`` ("pair", "pair_held" or "hinge")."""
    num_levels = len(level_weights)
    terms = []
    for level, weight in enumerate(level_weights):
        one_level = [weight if other == level else 0.0 for other in range(num_levels)]
        if constrained and constraint == "hinge":
            terms.append(oracle_constraint_loss(features, labels, temperature, one_level, "hinge", constraint_weight))
        else:
            bound_gradient = constraint != "pair_held"
            terms.append(oracle_paper_loss(features, labels, temperature, one_level, constrained, bound_gradient))
    return terms


def oracle_supcon(features: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Flat SupCon: the one-level paper loss with weight 1."""
    return oracle_paper_loss(features, labels.reshape(-1, 1), temperature, [1.0], constrained=False)


def _reference_supcon(
    features: torch.Tensor, label_rows: list[tuple[int, ...]], temperature: float
) -> torch.Tensor | None:
    """SupContrast's loss with a label mask and base temperature 0.07; anchors without positives
    are skipped (the reference would divide by zero), None when there is no anchor at all."""
    vectors, samples = _views(features)
    n = len(vectors)
    anchor_terms = []
    for i in range(n):
        others = [torch.dot(vectors[i], vectors[a]) / temperature for a in range(n) if a != i]
        if not others:
            continue
        log_denominator = torch.logsumexp(torch.stack(others), dim=0)
        log_probs = [
            torch.dot(vectors[i], vectors[p]) / temperature - log_denominator
            for p in range(n)
            if p != i and label_rows[samples[p]] == label_rows[samples[i]]
        ]
        if log_probs:
            anchor_terms.append(-(temperature / 0.07) * sum(log_probs) / len(log_probs))
    return sum(anchor_terms) / len(anchor_terms) if anchor_terms else None


def oracle_reference_loss(
    features: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    penalty: Callable[[torch.Tensor], torch.Tensor] | Sequence[float],
    loss_type: str,
) -> torch.Tensor:
    """The reference HMLC loop: for k = 1..L-1 zero the last k columns, one SupCon per level,
    combine ('hmc', 'hce', 'hmce'), then keep the first sample of each remaining label row with
    the rows in sorted order (torch.unique(sorted=True) semantics); divide by L."""
    if features.dim() == 2:
        features = features.unsqueeze(1)
    num_levels = labels.shape[1]
    kept = list(range(labels.shape[0]))
    total = features.sum() * 0
    running = None
    for k in range(1, num_levels):
        rows = [tuple(int(v) for v in labels[s, : num_levels - k].tolist()) for s in kept]
        layer = _reference_supcon(features[kept], rows, temperature)
        if callable(penalty):
            weight = float(penalty(torch.tensor(1.0 / k, dtype=torch.float32)))
        else:
            weight = penalty[num_levels - 1 - k]
        if layer is not None:
            if loss_type in ("hce", "hmce") and running is not None:
                layer = torch.maximum(running, layer)
            total = total + (1.0 if loss_type == "hce" else weight) * layer
            running = layer if running is None else torch.maximum(running, layer)
        first: dict[tuple[int, ...], int] = {}
        for position, row in enumerate(rows):
            first.setdefault(row, kept[position])
        kept = [first[row] for row in sorted(first)]
    return total / num_levels


def oracle_constraint_loss(
    features: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    level_weights: Sequence[float],
    constraint: str,
    constraint_weight: float = 0.5,
) -> torch.Tensor:
    """The "level_max" and "hinge" readings of the hierarchy constraint (hcl.losses.constraints).

    P_l(i), ell(i, p) as in :func:`oracle_paper_loss`; T_l = mean over anchors with |P_l(i)| > 0
    of the mean over p of the pair term, 0 for a level without anchors.
    level_max: pair term ell(i, p); T'_{L-1} = T_{L-1}, T'_l = max(T_l, T'_{l+1}).
    hinge: pair term ell(i, p) + beta * max(0, m_i - ell(i, p)), m_i = max over q in P_{l+1}(i)
    of ell(i, q), detached, where l < L-1 and P_{l+1}(i) is not empty; T'_l = T_l.
    Loss = (1/L) sum_l lambda_l T'_l; no positive pair at all gives features.sum() * 0.
    """
    labels = labels.reshape(labels.shape[0], -1)
    num_levels = labels.shape[1]
    vectors, samples = _views(features)
    n = len(vectors)
    rows = [labels[s].tolist() for s in samples]
    ell = _pair_losses(vectors, temperature)
    zero = features.sum() * 0

    def positives(i: int, level: int) -> list[int]:
        mine = _prefix(rows[i], level)
        if mine is None:
            return []
        return [p for p in range(n) if p != i and _prefix(rows[p], level) == mine]

    if not any(positives(i, level) for i in range(n) for level in range(num_levels)):
        return zero
    terms = []
    for level in range(num_levels):
        anchor_terms = []
        for i in range(n):
            pos = positives(i, level)
            if not pos:
                continue
            pair_terms = [ell[i][p] for p in pos]
            finer = positives(i, level + 1) if level + 1 < num_levels else []
            if constraint == "hinge" and finer:
                # The penalty's gradient is 0 at the bound itself (its own pair is not held up).
                bound = max(float(ell[i][q].detach()) for q in finer)
                pair_terms = [
                    term + constraint_weight * (bound - term) if float(term.detach()) < bound else term
                    for term in pair_terms
                ]
            anchor_terms.append(sum(pair_terms) / len(pair_terms))
        terms.append(sum(anchor_terms) / len(anchor_terms) if anchor_terms else zero)
    if constraint == "level_max":
        for level in reversed(range(num_levels - 1)):
            terms[level] = torch.maximum(terms[level], terms[level + 1])
    elif constraint != "hinge":
        raise ValueError(f"not a reading this oracle knows: {constraint!r}")
    return sum(weight * term for weight, term in zip(level_weights, terms, strict=True)) / num_levels


def make_labels(num_samples: int, num_levels: int, seed: int, ragged: bool) -> torch.Tensor:
    """Labels from a tiny alphabet (many shared prefixes), optionally cut short with -1."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (num_samples, num_levels), generator=generator)
    if ragged:
        depth = torch.randint(0, num_levels + 1, (num_samples,), generator=generator)
        labels[torch.arange(num_levels) >= depth.unsqueeze(1)] = -1
    return labels
