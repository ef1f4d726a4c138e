"""Seeded fuzzing of every loss on embeddings at extreme scales, temperatures and level weights.

Each of the generated cases draws a loss of the registry (every mode and constraint reading), a
batch (1-8 samples, 1-3 views, 1-6 dimensions, 1-3 levels with unknown labels, duplicated or
all-zero rows), a scale for every row from 1e-30 to 1e30 (one for the whole batch for CPCC,
which reads the embeddings as given), a temperature from 1e-15 to 1e15 and level weights from 0 to
1e15; one case in five takes a temperature or a weight outside those limits (non-finite
features are test_fuzz_losses.py's). Every case must either

* raise a ValueError naming the bad value, or
* give a finite float32 loss equal to the float64 loss of the same embeddings at unit scale
  (which tests/reliability/test_fuzz_losses.py holds to the loop oracles), within 1e-4 of the
  loss's natural size ``max(1, sum lambda) (max(1, 1/t) + log N)`` (times ``t / 0.07`` in
  reference mode), and a finite gradient wherever the true one fits in float32; the gradient
  must match float64's where it is well conditioned (moderate temperature, no ties, no zero rows).

Plain ``random.Random`` and ``torch.Generator`` draws from a fixed seed: the same cases every run.
"""

from __future__ import annotations

import math
import random
from typing import Any

import torch
from conftest import FAST
from loss_variants import embedding_loss_variants
from losses.trees import tree

from hcl.losses import get_loss

CASES = 600 if FAST else 3000
HIERARCHY = tree((2, 2, 2))
IN_RANGE_TEMPERATURES = (1e-15, 1e-9, 1e-4, 0.05, 0.1, 1.0, 1e4, 1e9, 1e15)
OUT_OF_RANGE_TEMPERATURES = (9e-16, 1e-38, 1e-300, 1.1e15, 1e38, 0.0, -0.1, math.nan, math.inf)
IN_RANGE_WEIGHTS = (0.0, 1e-30, 1e-3, 1.0, 10.0, 1e6, 1e15)
OUT_OF_RANGE_WEIGHTS = (1.1e15, 3e38, math.inf, math.nan, -1.0)


VARIANTS = embedding_loss_variants()


def _draw_case(rng: random.Random, generator: torch.Generator) -> dict[str, Any]:
    name, options = rng.choice(VARIANTS)
    spec = get_loss(name)
    options = dict(options)
    num_samples, num_views, dim = rng.randint(1, 8), rng.randint(1, 3), rng.randint(1, 6)
    if name == "simclr":
        num_views = max(num_views, 2)
    finest = torch.randint(HIERARCHY.num_nodes(2), (num_samples,), generator=generator)
    labels = HIERARCHY.node_labels(2)[finest]
    if name != "cpcc_supcon":
        labels = labels[:, : rng.randint(1, 3)].clone()
        if rng.random() < 0.3:
            labels[rng.randrange(num_samples), rng.randrange(labels.shape[1]) :] = -1
    base = torch.randn(num_samples, num_views, dim, generator=generator, dtype=torch.float64)
    kind = rng.choice(["random", "random", "duplicated", "zero_row"])
    if kind == "duplicated" and num_samples > 1:
        base[num_samples // 2 :] = base[: num_samples - num_samples // 2].clone()
    elif kind == "zero_row":
        base[rng.randrange(num_samples), rng.randrange(num_views)] = 0.0
    exponents = torch.randint(-30, 31, (1, 1, 1) if name == "cpcc_supcon" else (num_samples, num_views, 1))
    scale = torch.pow(10.0, exponents.to(torch.float64)).expand(num_samples, num_views, 1)

    hostile = rng.random() < 0.2
    temperature = rng.choice(IN_RANGE_TEMPERATURES)
    weights = None
    if spec.weighted and rng.random() < 0.7:
        weights = [rng.choice(IN_RANGE_WEIGHTS) for _ in range(labels.shape[1])]
    if hostile and spec.weighted and rng.random() < 0.5:
        weights = weights or [1.0] * labels.shape[1]
        weights[rng.randrange(len(weights))] = rng.choice(OUT_OF_RANGE_WEIGHTS)
    elif hostile:
        temperature = rng.choice(OUT_OF_RANGE_TEMPERATURES)
    if "temperature" in spec.options:
        options["temperature"] = temperature
    if weights is not None:
        options["level_weights"] = weights
    return {
        "name": name,
        "options": options,
        "labels": labels,
        "base": base,
        "scale": scale,
        "kind": kind,
        "hostile": hostile,
    }


def _value_and_grad(loss_fn: Any, features: torch.Tensor, labels: torch.Tensor) -> tuple[float, torch.Tensor]:
    leaf = features.detach().clone().requires_grad_()
    value = loss_fn(leaf, labels)
    (grad,) = torch.autograd.grad(value, leaf, allow_unused=True)
    return value.item(), torch.zeros_like(leaf) if grad is None else grad


def _natural_size(case: dict[str, Any], num_views: int) -> float:
    """The size a loss of these settings can reach, which float32 rounding errors scale with."""
    options = case["options"]
    temperature = options.get("temperature", 0.1)
    weights = options.get("level_weights") or [math.e]
    size = max(1.0, sum(weights)) * (max(1.0, 1.0 / temperature) + math.log(num_views + 1))
    if options.get("mode") == "reference":
        size *= max(1.0, temperature / 0.07)
    return size


def _check(case: dict[str, Any]) -> str:
    """Run one case: ``"rejected"`` or ``"value"``; raises AssertionError on a silent wrong value."""
    spec = get_loss(case["name"])
    features = (case["base"] * case["scale"]).float()
    try:
        loss_fn = spec.build(hierarchy=HIERARCHY, **case["options"])
        value, grad = _value_and_grad(loss_fn, features, case["labels"])
    except ValueError as error:
        message = str(error)
        assert case["hostile"] or "reference mode does not support unknown" in message, message
        named = ("temperature", "level_weights", "unknown (-1)")
        assert any(word in message for word in named), message
        return "rejected"
    assert not case["hostile"], f"a hostile setting was accepted, value {value}"
    size = _natural_size(case, features.shape[0] * features.shape[1])
    expected, expected_grad = _value_and_grad(loss_fn, case["base"], case["labels"])
    assert math.isfinite(value), f"non-finite loss {value}"
    assert abs(value - expected) <= 1e-4 * size, f"loss {value} != float64 {expected} (size {size:.3g})"
    # d loss / d x with x = c f is (d loss / d f) / c: about size / (c |f|), inf where that overflows.
    row_norms = (case["base"] * case["scale"]).norm(dim=-1).clamp(min=1e-300)
    natural_grad = size / row_norms.min().item()
    if natural_grad < 1e30:
        assert bool(torch.isfinite(grad).all()), f"non-finite gradient (natural size {natural_grad:.3g})"
    temperature = case["options"].get("temperature", 0.1)
    well_conditioned = case["kind"] == "random" and 0.05 <= temperature <= 1e4 and natural_grad < 1e30
    if well_conditioned and not spec.constrained:
        scaled_grad = grad.double() * case["scale"]  # back to d loss / d f
        tolerance = 1e-3 * max(expected_grad.abs().max().item(), size / case["base"].norm(dim=-1).max().item())
        error = (scaled_grad - expected_grad).abs().max().item()
        assert error <= tolerance, f"gradient off by {error:.3g} (tolerance {tolerance:.3g})"
    return "value"


def test_extreme_scales_temperatures_and_weights_give_exact_values_or_clear_errors(
    cases, one_torch_thread: None
) -> None:
    rng, generator = random.Random(12), torch.Generator().manual_seed(12)
    failures, outcomes = [], {"value": 0, "rejected": 0}
    for index in range(CASES):
        case = _draw_case(rng, generator)
        try:
            outcomes[_check(case)] += 1
        except AssertionError as error:
            exponents = case["scale"].log10().round().unique().tolist()
            failures.append(
                f"case {index}: {case['name']} {case['options']} scales 1e{exponents} {case['kind']}: {error}"
            )
    for outcome, count in outcomes.items():
        cases.add("losses.extremes", outcome, count)
    assert not failures, f"{len(failures)} of {CASES} cases failed:\n" + "\n".join(failures[:20])
    assert outcomes["value"] >= CASES // 2 and outcomes["rejected"] >= CASES // 10, outcomes
