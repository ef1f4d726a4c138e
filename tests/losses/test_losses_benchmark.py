"""benchmarks/bench_losses.py: its loop formulation is the reference loss, and it runs end to end."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

from hcl.losses import CUDAGraphLoss, HiMulConE


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
        ["--device", "cpu", "--sizes", "16", "--repeats", "1", "--min-seconds", "0", "--loop-max-views", "8"]
        + ["--threads", "1"]
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


def _check_ratios_within_settings(rows: list[dict], settings: set[tuple[str, str]]) -> None:
    timed = [row for row in rows if "skipped" not in row]
    assert {(row["dtype"], row["graph"]) for row in timed} == settings
    for dtype, graph in settings:
        group = [row for row in timed if (row["dtype"], row["graph"]) == (dtype, graph)]
        (supcon,) = [row for row in group if row["method"] == "flat SupCon (hcl)"]
        assert supcon["vs_hcl"] == 1.0 and supcon["vs_hcl_min"] == 1.0
        for row in group:
            assert row["vs_hcl"] == pytest.approx(row["ms"] / supcon["ms"], rel=1e-12)


def test_each_dtype_is_timed_and_compared_with_its_own_supcon(bench: ModuleType, tmp_path: Path) -> None:
    options = ["--device", "cpu", "--sizes", "64", "--repeats", "2", "--threads", "1", "--dtypes", "fp32,bf16"]
    bench.main([*options, "--skip", "PML", "loop", "reference", "--record", str(tmp_path / "r.json")])
    record = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    _check_ratios_within_settings(record["rows"], {("fp32", "off"), ("bf16", "off")})
    block = bench.readme_block(record)
    assert block.startswith("| views | threads | dtype | CUDA graph | flat SupCon, ms |")
    assert "\n| 64 | 1 | fp32 | off | " in block and "\n| 64 | 1 | bf16 | off | " in block
    assert "- HiMulConE hinge (hcl, default) [bf16, CUDA graph off]: at most" in block
    assert "- HiMulConE hinge (hcl, default) [fp32, CUDA graph off]: at most" in block


def test_graph_rows_are_compared_with_the_graphed_supcon(bench: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    class Captured(CUDAGraphLoss):  # calls the loss directly on CPU, but says it captured it
        captured = 1

    monkeypatch.setattr(bench, "CUDAGraphLoss", Captured)
    args = bench.parse_args(["--device", "cpu", "--sizes", "32", "--repeats", "1", "--threads", "1"])
    args.graph, args.skip = ["off", "on"], ["PML", "loop", "reference"]  # as --graph off,on would on CUDA
    rows = bench.run(args)
    _check_ratios_within_settings(rows, {("fp32", "off"), ("fp32", "on")})
    graphed = {row["method"] for row in rows if row["graph"] == "on"}
    assert graphed == {"flat SupCon (hcl)", *bench.READINGS}
    record = {"rows": rows, "command": "c", "finished": "f", "environment": {"torch": "2", "device": "cuda"}}
    block = bench.readme_block(record)
    assert "\n| 32 | 1 | fp32 | on | " in block and "[fp32, CUDA graph on]: at most" in block


def test_losses_not_captured_are_left_out_of_the_graph_rounds_and_said_so(bench: ModuleType) -> None:
    args = bench.parse_args(["--device", "cpu", "--sizes", "32", "--repeats", "1", "--threads", "1"])
    args.graph, args.skip = ["on"], ["PML", "loop", "reference"]  # on CPU nothing is captured
    rows = bench.run(args)
    assert {row["method"] for row in rows if "skipped" not in row} == {bench.LIMIT}
    assert {row["method"] for row in rows if row.get("skipped") == bench.NOT_CAPTURED} == {
        "flat SupCon (hcl)",
        *bench.READINGS,
    }
    record = {"rows": rows, "command": "c", "finished": "f", "environment": {"torch": "2"}}
    assert "Not captured as CUDA graphs, so absent from the graph rows: flat SupCon (hcl) at 32 views;" in (
        bench.readme_block(record)
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--device", "cpu", "--graph", "on"], "--graph on: CUDA graphs need --device cuda"),
        (["--device", "cpu", "--graph", "off,sometimes"], "--graph off,sometimes: each value must be one of off, on"),
        (["--device", "cpu", "--dtypes", "fp16"], "--dtypes fp16: each value must be one of fp32, bf16"),
        (["--device", "cpu", "--repeats", "0"], "--repeats 0, --min-seconds 0.5, --views 2, --threads 1,2: need"),
        (["--device", "cpu", "--min-seconds", "-1"], "--min-seconds -1.0"),
        (["--device", "cpu", "--threads", "0"], "--threads 0: need"),
        (["--device", "cpu", "--sizes", "64,33,2"], "--sizes 33,2: a size counts views (samples x --views 2)"),
        (["--device", "cpu", "--skip", "SupCon"], "'flat SupCon (hcl)' is every ratio's baseline"),
    ],
)
def test_settings_are_checked_before_measuring(
    bench: ModuleType, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(options)
    assert message in capsys.readouterr().err


def test_a_method_failing_in_bf16_is_left_out_and_said_so(bench: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    limit = bench.machine_limit

    def fp32_only(features: torch.Tensor, temperature: float) -> torch.Tensor:
        if features.dtype == torch.bfloat16:
            raise RuntimeError("no bf16 here\nsecond line")
        return limit(features, temperature)

    monkeypatch.setattr(bench, "machine_limit", fp32_only)
    args = bench.parse_args(["--device", "cpu", "--sizes", "32", "--repeats", "1", "--threads", "1"])
    args.skip, args.dtypes = ["PML", "loop", "reference", "HiMulCon paper", "pair", "level_max"], ["fp32", "bf16"]
    rows = bench.run(args)
    assert {(row["method"], row["dtype"]) for row in rows if "skipped" not in row} == {
        (name, dtype)
        for name in ("flat SupCon (hcl)", bench.LIMIT, "HiMulConE hinge (hcl, default)")
        for dtype in ("fp32", "bf16")
    } - {(bench.LIMIT, "bf16")}
    record = {"rows": rows, "command": "c", "finished": "f", "environment": {"torch": "2"}}
    note = f"{bench.LIMIT} at 32 views was left out: it failed (bf16, CUDA graph off): no bf16 here."
    assert note in bench.readme_block(record)
    monkeypatch.setattr(bench, "machine_limit", lambda features, temperature: fp32_only(features.bfloat16(), 0.1))
    args.dtypes = ["fp32"]
    with pytest.raises(RuntimeError, match="no bf16 here"):  # in fp32 without a graph a failure is a bug
        bench.run(args)


def test_each_round_times_the_methods_in_a_fresh_order(bench: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    # A method runs slower after one that filled the caches: no method may mostly follow the
    # same one, as it would in a fixed (or merely rotated) order.
    calls: list[object] = []
    time_once = bench._time_once
    monkeypatch.setattr(bench, "_time_once", lambda method, x: calls.append(method) or time_once(method, x))
    args = bench.parse_args(["--device", "cpu", "--sizes", "8", "--repeats", "12", "--min-seconds", "0"])
    args.threads, args.skip = [1], ["PML", "loop", "reference"]
    features = torch.nn.functional.normalize(torch.randn(4, 2, 8), dim=-1)
    bench._run_setting(args, features, bench.synthetic_labels(4, 4, 4, torch.Generator()), 1, "fp32", memory=False)
    methods = len(set(map(id, calls)))
    rounds = [calls[i : i + methods] for i in range(len(calls) - 12 * methods, len(calls), methods)]
    assert len({tuple(map(id, order)) for order in rounds}) >= 10
    first = {id(order[0]) for order in rounds}
    assert len(first) >= 3
