"""The README's benchmark tables are generated from the committed records in docs/benchmarks/.

Each record holds a benchmark's rows, its command line, commit and machine; the benchmark's own
``readme_block`` renders its README block, which must match the README byte for byte, and every
generated benchmark block must have its record.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from hcl.textblock import read_marked_block

ROOT = Path(__file__).resolve().parents[1]
RECORDS = sorted((ROOT / "docs" / "benchmarks").glob("*.json"))


def _benchmark(script: str) -> ModuleType:
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
    rendered = _benchmark(record["script"]).readme_block(record)
    assert read_marked_block(ROOT / "README.md", f"bench-{record['benchmark']}").strip() == rendered.strip()
    assert record["command"].startswith(f"python benchmarks/{record['script']} ")
    assert f"--record docs/benchmarks/{path.name}" in record["command"]


def test_every_generated_benchmark_block_has_a_record() -> None:
    blocks = set(re.findall(r"<!-- bench-([A-Za-z0-9_.-]+):start -->", (ROOT / "README.md").read_text("utf-8")))
    assert blocks == {path.stem for path in RECORDS}


def test_a_readme_block_needs_a_record(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("<!-- bench-sampler:start -->\nold\n<!-- bench-sampler:end -->\n", encoding="utf-8")
    bench = _benchmark("bench_sampler.py")
    args = bench.argparse.Namespace(record=None, update_readme=readme)
    with pytest.raises(SystemExit, match="needs --record"):
        sys.path.insert(0, str(ROOT / "benchmarks"))
        try:
            bench.finish(args, "sampler", [], bench.readme_block, None)
        finally:
            sys.path.remove(str(ROOT / "benchmarks"))
    assert "old" in readme.read_text(encoding="utf-8")
