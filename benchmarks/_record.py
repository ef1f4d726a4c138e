"""Benchmark records: what a benchmark measured, on which machine and when, and the README block
written from it.

``--record PATH`` saves a run's rows with its command line, commit, machine and load average as
JSON (atomically); ``--update-readme README.md`` then rewrites the benchmark's generated block in
the README from that record, so no figure in the README is typed by hand. The test
``tests/test_benchmark_records.py`` rebuilds every committed record's block and compares it with
the README byte for byte.

A record measured elsewhere (say on a GPU machine, by ``benchmarks/gpu_check.sh``) is copied to
``docs/benchmarks/`` and its block written with
``python benchmarks/_record.py README.md docs/benchmarks/NAME.json``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hcl.atomic import write_text_atomic  # noqa: E402
from hcl.study.cell import cpu_model, provenance  # noqa: E402
from hcl.textblock import block_markers, read_marked_block, replace_marked_block  # noqa: E402

_SCRIPT = re.compile(r"bench_[a-z_]+\.py")

__all__ = [
    "add_record_arguments",
    "check_record_arguments",
    "cpu_model",
    "describe",
    "finish",
    "load_at_start",
    "load_record",
    "render",
]


def add_record_arguments(parser: argparse.ArgumentParser) -> None:
    """``--record PATH``, ``--update-readme README`` (needs ``--record``) and ``--tag``."""
    parser.add_argument("--record", type=Path, help="save the rows, command and machine as JSON here")
    parser.add_argument(
        "--update-readme", type=Path, metavar="README", help="rewrite this file's generated block from the record"
    )
    parser.add_argument(
        "--tag", help="appended to the benchmark's name (its README block is bench-NAME-TAG), e.g. 'before'"
    )


def check_record_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace, name: str) -> str:
    """Check the record options before anything is measured (``parser.error`` on a mistake) and
    return the record's name: ``name``, or ``name-TAG``."""
    if args.tag is not None:
        name = f"{name}-{args.tag}"
    try:
        block_markers(f"bench-{name}")
        if args.tag == "":
            raise ValueError
    except ValueError:
        parser.error(f"--tag {args.tag!r}: a tag is letters, digits and '_.-' (it names a README block)")
    if args.update_readme is not None and args.record is None:
        parser.error("--update-readme needs --record: the README block is written from the saved record")
    if args.record is not None:
        if args.record.is_dir():
            parser.error(f"--record {args.record}: a folder; give the JSON file's path")
        try:
            args.record.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            parser.error(f"--record {args.record}: cannot create its folder ({error.strerror})")
        if not os.access(args.record.parent, os.W_OK):
            parser.error(f"--record {args.record}: its folder is not writable")
    if args.update_readme is not None:
        try:
            read_marked_block(args.update_readme, f"bench-{name}")
        except (OSError, ValueError) as error:
            parser.error(f"--update-readme {args.update_readme}: {error}")
    return name


def _changed_files(root: Path) -> bool | None:
    """Whether ``hcl/`` or ``benchmarks/`` differ from the checkout's commit (untracked files
    included); None outside a git checkout."""
    try:
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "hcl", "benchmarks"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(status.stdout.strip()) if status.returncode == 0 else None


def finish(
    args: argparse.Namespace,
    name: str,
    rows: list[dict[str, Any]],
    render: Callable[[dict[str, Any]], str],
    load: float | None,
    extra: dict[str, Any] | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Save the record ``name`` (``--record``; the name from :func:`check_record_arguments`) and
    rewrite the README block ``bench-<name>`` (``--update-readme``) from it; return the record.

    The record's ``git_dirty`` says whether ``hcl/`` or ``benchmarks/`` differed from the commit.
    ``device``: the device the benchmark measured (``"cpu"``, ``"cuda:1"``), kept in the record;
    on CUDA its card is the record's ``gpu`` (by default the machine's first one).
    """
    environment = provenance() | {"cpu_model": cpu_model(), "load_average_at_start": load}
    if device is not None:
        environment["device"] = str(device)
        if environment["device"].startswith("cuda"):
            import torch

            environment["gpu"] = torch.cuda.get_device_name(torch.device(device))
    environment["git_dirty"] = (
        _changed_files(Path(__file__).resolve().parents[1]) if environment["git_commit"] else None
    )
    record = {
        "benchmark": name,
        "script": Path(sys.argv[0]).name,
        "command": "python " + shlex.join([f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "environment": environment,
        "rows": rows,
        **(extra or {}),
    }
    text = json.dumps(record, indent=1, sort_keys=True) + "\n"
    record = json.loads(text)  # render what the file holds, as the README test does
    if args.record is not None:
        write_text_atomic(args.record, text)
        print(f"record written to {args.record}", file=sys.stderr)
    if args.update_readme is not None:
        replace_marked_block(args.update_readme, f"bench-{name}", render(record))
        print(f"README block bench-{name} rewritten in {args.update_readme}", file=sys.stderr)
    return record


def load_at_start() -> float | None:
    """The 1-minute load average now (None where the OS does not say)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def describe(record: dict[str, Any]) -> str:
    """One line saying how, where and when a record was measured: the GPU's name (unless the
    record says it measured another device), the CPU, the CPU count and torch's version."""
    env = record["environment"]
    commit = env.get("git_commit")
    on_gpu = "device" not in env or str(env["device"]).startswith("cuda")
    where = ", ".join(
        part
        for part in (
            env.get("gpu") if on_gpu else None,
            env.get("cpu_model"),
            f"{env['cpus']} CPUs" if env.get("cpus") else None,
            f"torch {env['torch']}",
        )
        if part
    )
    load = env.get("load_average_at_start")
    return (
        f"Measured by `{record['command']}`"
        + (f" at commit `{commit[:10]}`{' with uncommitted changes' if env.get('git_dirty') else ''}" if commit else "")
        + f" on {where}, finished {record['finished']}"
        + (f", load average {load} at the start" if load is not None else "")
        + "."
    )


def load_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A saved record."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def render(record: dict[str, Any]) -> str:
    """A record's README block, as the benchmark that wrote it renders it.

    Raises:
        ValueError: the record names no benchmark script of this folder, or a record name that
            script does not write.
    """
    script = record.get("script")
    folder = Path(__file__).resolve().parent
    if not isinstance(script, str) or not _SCRIPT.fullmatch(script) or not (folder / script).is_file():
        raise ValueError(f"the record's script {script!r} is not a benchmark script in {folder}")
    spec = importlib.util.spec_from_file_location(f"_bench_{Path(script).stem}", folder / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not str(record.get("benchmark", "")).startswith(module.RECORD_PREFIX):
        raise ValueError(
            f"record {record.get('benchmark')!r} was not written by {script} (its records start {module.RECORD_PREFIX!r})"
        )
    return module.readme_block(record)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Rewrite README blocks from saved benchmark records.")
    parser.add_argument("readme", type=Path)
    parser.add_argument("records", type=Path, nargs="+")
    args = parser.parse_args(argv)
    try:
        readme = args.readme.read_text(encoding="utf-8")
    except OSError as error:
        parser.error(f"{args.readme}: {error.strerror or error}")
    blocks = {}  # every record is checked and rendered before the README is touched
    for path in args.records:
        try:
            record = load_record(path)
            name = f"bench-{record['benchmark']}"
            blocks[name] = (path, render(record))
        except (OSError, KeyError, ValueError) as error:
            parser.error(f"{path}: cannot render it ({type(error).__name__}: {error})")
        start, end = block_markers(name)
        if start not in readme and end not in readme:
            parser.error(
                f"{args.readme} has no block {name} for {path}: add these two lines where its table belongs "
                f"(on lines of their own), then run this again:\n{start}\n{end}"
            )
        try:
            read_marked_block(args.readme, name)
        except ValueError as error:
            parser.error(str(error))
    for name, (path, text) in blocks.items():
        replace_marked_block(args.readme, name, text)
        print(f"README block {name} rewritten from {path}")


if __name__ == "__main__":
    main()
