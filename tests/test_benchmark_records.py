"""The README's benchmark tables are generated from the committed records in docs/benchmarks/.

Each record holds a benchmark's rows, its command line, commit and machine; the benchmark's own
``readme_block`` renders its README block, which must match the README byte for byte, and every
generated benchmark block must have its record.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from hcl.textblock import read_marked_block

ROOT = Path(__file__).resolve().parents[1]
RECORDS = sorted((ROOT / "docs" / "benchmarks").glob("*.json"))


def _load(script: str) -> ModuleType:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(f"_bench_{Path(script).stem}", ROOT / "benchmarks" / script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


@pytest.mark.parametrize("path", RECORDS, ids=[path.stem for path in RECORDS])
def test_the_readme_block_is_the_rendered_record(path: Path) -> None:
    record = json.loads(path.read_text(encoding="utf-8"))
    assert path.stem == record["benchmark"], "a record's file is named after its benchmark"
    rendered = _load("_record.py").render(record)
    assert read_marked_block(ROOT / "README.md", f"bench-{record['benchmark']}").strip() == rendered.strip()
    assert record["command"].startswith(f"python benchmarks/{record['script']} ")
    assert "--record " in record["command"]


def test_every_generated_benchmark_block_has_a_record() -> None:
    blocks = set(re.findall(r"<!-- bench-([A-Za-z0-9_.-]+):start -->", (ROOT / "README.md").read_text("utf-8")))
    assert blocks == {path.stem for path in RECORDS}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--update-readme", "{readme}"], "needs --record"),
        (["--record", "{tmp}"], "a folder"),
        (["--record", "{tmp}/r.json", "--tag", "a b"], "a tag is letters"),
        (["--record", "{tmp}/r.json", "--tag", ""], "a tag is letters"),
        (["--record", "{tmp}/r.json", "--update-readme", "{tmp}/missing.md"], "missing.md"),
        (["--record", "{tmp}/r.json", "--update-readme", "{readme}", "--tag", "other"], "bench-sampler-other"),
    ],
)
def test_record_options_are_checked_before_measuring(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("<!-- bench-sampler:start -->\nold\n<!-- bench-sampler:end -->\n", encoding="utf-8")
    record = _load("_record.py")
    parser = record.argparse.ArgumentParser()
    record.add_record_arguments(parser)
    args = parser.parse_args([option.format(tmp=tmp_path, readme=readme) for option in options])
    with pytest.raises(SystemExit):
        record.check_record_arguments(parser, args, "sampler")
    assert message in capsys.readouterr().err
    assert "old" in readme.read_text(encoding="utf-8") and not (tmp_path / "r.json").exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"script": "/tmp/elsewhere.py"}, "is not a benchmark script"),
        ({"script": "bench_missing.py"}, "is not a benchmark script"),
        ({"benchmark": "losses-cpu"}, "was not written by bench_sampler.py"),
    ],
)
def test_render_runs_only_this_folders_scripts_on_their_own_records(changes: dict, message: str) -> None:
    record = {"benchmark": "sampler", "script": "bench_sampler.py", "rows": []} | changes
    with pytest.raises(ValueError, match=message):
        _load("_record.py").render(record)


def test_render_rewrites_a_block_from_a_record(tmp_path: Path) -> None:
    record = {
        "benchmark": "sampler",
        "script": "bench_sampler.py",
        "command": "python benchmarks/bench_sampler.py --record x.json",
        "finished": "2026-12-06T00:00:00+00:00",
        "environment": {"torch": "2.14.1", "cpus": 2, "cpu_model": "CPU", "git_commit": "0123456789abcdef"},
        "rows": [
            {
                "n": 1000,
                "levels": 4,
                "hierarchical_s": 0.002,
                "plain_s": 0.001,
                "construction_s": 0.01,
                "construction_cpu_s": 0.02,
                "coverage_hierarchical": None,
                "coverage_plain": [1.0, 0.5],
            }
        ],
    }
    (tmp_path / "sampler.json").write_text(json.dumps(record), encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench-sampler:start -->\nold\n<!-- bench-sampler:end -->\nend\n", encoding="utf-8")
    _load("_record.py").main([str(readme), str(tmp_path / "sampler.json")])
    block = read_marked_block(readme, "bench-sampler")
    assert "| 1,000 | 4 | 0.002 | 0.001 | 2.00× | 0.01 (0.02) | 10.00× | – | 1.000 / 0.500 |" in block
    assert "at commit `0123456789`" in block and "python benchmarks/bench_sampler.py --record x.json" in block
    assert readme.read_text(encoding="utf-8").startswith("intro\n") and readme.read_text("utf-8").endswith("end\n")


def test_a_record_without_its_readme_block_names_the_markers_to_add(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = json.loads((ROOT / "docs" / "benchmarks" / "sampler.json").read_text(encoding="utf-8"))
    (tmp_path / "sampler.json").write_text(json.dumps(record), encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n", encoding="utf-8")
    with pytest.raises(SystemExit):
        _load("_record.py").main([str(readme), str(tmp_path / "sampler.json")])
    error = capsys.readouterr().err
    assert "has no block bench-sampler" in error
    assert "<!-- bench-sampler:start -->\n<!-- bench-sampler:end -->" in error
    assert readme.read_text(encoding="utf-8") == "intro\n"


@pytest.mark.parametrize(("device", "named"), [(None, True), ("cuda:0", True), ("cpu", False)])
def test_the_provenance_line_names_the_gpu_of_a_cuda_record(device: str | None, named: bool) -> None:
    environment = {"torch": "2.14", "cpus": 16, "cpu_model": "EPYC", "gpu": "NVIDIA H200"}
    record = {
        "command": "python benchmarks/bench_losses.py --record x.json",
        "finished": "2026-12-06T00:00:00+00:00",
        "environment": environment | ({} if device is None else {"device": device}),
    }
    line = _load("_record.py").describe(record)
    assert ("on NVIDIA H200, EPYC, 16 CPUs, torch 2.14," in line) is named
    assert "on EPYC, 16 CPUs, torch 2.14," in line or named


def test_a_models_record_renders_the_printed_table_naming_the_card() -> None:
    setup = {
        "device": "cuda",
        "device_name": "NVIDIA H200",
        "torch": "2.14.1",
        "batch_size": 256,
        "views": 2,
        "precision": "bf16",
        "channels_last": True,
        "compile": False,
        "steps": 20,
        "warmup": 5,
        "loss_only_ms": {"eager": 3.0, "as a CUDA graph": 0.38},
    }
    row = {"section": "models", "model": "resnet18", "small_stem": True, "input_px": 32, "peak_gib": 1.25}
    rows = [
        row | {"variant": "cross_entropy", "ms": 11.2, "images_per_s": 22857.1, "vs_ce": None, "loss_share": None},
        row | {"variant": "himulcone", "ms": 10.9, "images_per_s": 23486.2, "vs_ce": -0.0268, "loss_share": 0.0349},
    ]
    record = {
        "benchmark": "train-cuda-models",
        "script": "bench_train.py",
        "command": "python benchmarks/bench_train.py --device cuda --sections models --record x.json",
        "finished": "2026-12-06T00:00:00+00:00",
        "environment": {"torch": "2.14.1", "cpus": 16, "cpu_model": "EPYC", "gpu": "NVIDIA H200", "device": "cuda"},
        "setup": setup,
        "rows": rows,
    }
    block = _load("_record.py").render(record)
    assert block.startswith("device: cuda (NVIDIA H200); torch 2.14.1; batch 256 x 2 views; bf16, channels_last;")
    assert "| resnet18 (small stem) | 32 px | cross_entropy | 11.2 | 22857 | 45714 | 1.2 | - | - |" in block
    assert "| resnet18 (small stem) | 32 px | himulcone | 10.9 | 23486 | 46972 | 1.2 | -2.7% | 3.5% |" in block
    assert "(3.00 ms eager, 0.38 ms as a CUDA graph, on (B, 2, 128) features" in block
    assert "on NVIDIA H200, EPYC, 16 CPUs, torch 2.14.1," in block.splitlines()[-1]
    bench = _load("bench_train.py")
    assert bench.models_text(setup, rows) in block  # the table the run printed


def test_bench_train_records_either_the_demo_or_the_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    options = ["--device", "cpu", "--sections", "step", "models", "--record", str(tmp_path / "r.json")]
    with pytest.raises(SystemExit):
        _load("bench_train.py").main(options)
    assert "--record saves one README block" in capsys.readouterr().err and not (tmp_path / "r.json").exists()


def test_the_gpu_script_is_valid_bash_and_times_out_every_command() -> None:
    script = ROOT / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True, check=False).returncode == 0
    commands = [
        line.strip()
        for line in script.read_text(encoding="utf-8").splitlines()
        if not line.lstrip().startswith("#") and re.search(r'python3 (-m pytest|benchmarks/)|"\$\{LOSSES', line)
    ]
    assert len(commands) >= 6
    assert all(line.startswith(("timeout ", "LOSSES=(")) for line in commands), commands
