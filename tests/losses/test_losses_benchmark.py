"""benchmarks/bench_losses.py: its loop formulation is the reference loss, and it runs end to end."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

from hcl.losses import HiMulConE


@pytest.fixture(scope="module")
def bench(repo_root: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_losses", repo_root / "benchmarks" / "bench_losses.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("num_views", [1, 2])
def test_loop_formulation_equals_reference_mode(bench: ModuleType, num_views: int) -> None:
    generator = torch.Generator().manual_seed(num_views)
    labels = bench.synthetic_labels(24, 4, 2, generator)
    features = torch.randn(24, num_views, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    expected = HiMulConE(0.1, mode="reference")(features, labels)
    actual = bench.loop_formulation(features, labels)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=0)
    grads = [torch.autograd.grad(loss, features)[0] for loss in (actual, expected)]
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-8, atol=1e-12)


def test_synthetic_labels_form_a_tree(bench: ModuleType) -> None:
    labels = bench.synthetic_labels(200, 3, 4, torch.Generator().manual_seed(0))
    assert labels.shape == (200, 3) and int(labels[:, 2].max()) < 64
    assert torch.equal(labels[:, 0], labels[:, 2] // 16) and torch.equal(labels[:, 1], labels[:, 2] // 4)


def test_benchmark_prints_a_table(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    table = bench.main(
        ["--device", "cpu", "--sizes", "16", "--repeats", "1", "--loop-max-views", "8", "--threads", "1"]
    )
    lines = table.splitlines()
    assert lines[0].startswith("| method | views (B*V) | threads | dtype | CUDA graph | ms (median)")
    methods = {line.split(" | ")[0].lstrip("| ") for line in lines[2:] if line.startswith("|")}
    constraints = {f"HiMulConE {name} (hcl)" for name in ("pair_held", "level_max")}
    assert {"flat SupCon (hcl)", "HiMulConE pair (hcl, paper)", "HiMulConE hinge (hcl, default)"} <= methods
    assert constraints | {bench.LIMIT} <= methods
    assert "HiMulConE reference (hcl)" in methods
    assert any("skipped on CPU above --loop-max-views 8" in line for line in lines)
    hcl_flat = [line for line in lines if line.startswith("| flat SupCon (hcl) | 16 | 1 | fp32 | off |")]
    assert hcl_flat and hcl_flat[0].split(" | ")[7].strip() == "1.00"
    assert "HiMulConE hinge (hcl, default): at most" in table and "by minima" in table and "x SupCon's" in table
    assert table in capsys.readouterr().out


def test_machine_limit_is_a_graph_free_zero(bench: ModuleType) -> None:
    features = torch.nn.functional.normalize(torch.randn(8, 2, 4), dim=-1).requires_grad_()
    value = bench.machine_limit(features, 0.1)
    value.backward()
    assert float(value.detach()) == 0.0 and torch.equal(features.grad, torch.zeros_like(features))
