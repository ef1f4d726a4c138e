"""Time one epoch of HierarchicalBatchSampler against a plain shuffled BatchSampler.

Run ``python benchmarks/bench_sampler.py``. For each N (default 60,000 and 1,000,000) it draws
4-level labels (``--branching`` children per node, leaves uniform), then times, interleaved
round-robin so that machine noise hits both alike:

* ``hierarchical``: ``list(HierarchicalBatchSampler(labels, B))`` for a fresh epoch
  (``set_epoch`` each repeat), i.e. building the arrangement and yielding every batch;
* ``plain``: ``list(BatchSampler(RandomSampler(range(N)), B, drop_last=True))``, the baseline.

It prints a markdown table with the median seconds, the ratio (target <= 3x), the one-off
construction time of the hierarchical sampler (label validation and prefix ids, paid once per
run, not per epoch; target <= 1.5 s for 1M samples on 2 cores) as wall and CPU seconds and as a
ratio to the plain epoch measured in the same run, and the per-level coverage
(:func:`hcl.data.sampler_coverage`) of both. On a loaded machine the CPU seconds (over the
threads used) are the better guide to the wall time on idle cores.

The sampler is CPU work by design (it runs in the DataLoader's process); ``--device cuda``
places the labels on the GPU first, as a data set could hand them over, and the sampler copies
them to the CPU once at construction (counted in the construction time).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import BatchSampler, RandomSampler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # _record, when loaded as a module

from _record import add_record_arguments, check_record_arguments, describe, finish, load_at_start  # noqa: E402

RECORD_PREFIX = "sampler"  # the names of this benchmark's records (see _record.py)

from hcl.data import HierarchicalBatchSampler, sampler_coverage  # noqa: E402


def tree_labels(n: int, branching: list[int], seed: int) -> torch.Tensor:
    """Labels of n samples whose leaves are uniform over a full tree. Shape (n, len(branching))."""
    leaves = int(np.prod(branching))
    leaf = np.random.default_rng(seed).integers(0, leaves, n)
    columns, divisor = [], leaves
    for b in branching:
        divisor //= b
        columns.append(leaf // divisor)
    return torch.from_numpy(np.stack(columns, axis=1))


def measure(n: int, args: argparse.Namespace) -> dict[str, object]:
    """One N: the median construction (wall and CPU s), epoch times of both samplers and coverage."""
    labels = tree_labels(n, args.branching, seed=0).to(args.device)
    walls, cpus = [], []
    for _ in range(args.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        sampler = HierarchicalBatchSampler(labels, args.batch_size, seed=0)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu_start)
    generator = torch.Generator().manual_seed(0)
    plain = BatchSampler(RandomSampler(range(n), generator=generator), args.batch_size, drop_last=True)
    times: dict[str, list[float]] = {"hierarchical": [], "plain": []}
    batches: dict[str, list[list[int]]] = {}
    for repeat in range(args.repeats):
        sampler.set_epoch(repeat)
        for name, source in (("hierarchical", sampler), ("plain", plain)):
            start = time.perf_counter()
            batches[name] = list(source)
            times[name].append(time.perf_counter() - start)
    row: dict[str, object] = {
        "n": n,
        "levels": labels.shape[1],
        "hierarchical_s": statistics.median(times["hierarchical"]),
        "plain_s": statistics.median(times["plain"]),
        "construction_s": statistics.median(walls),
        "construction_cpu_s": statistics.median(cpus),
        "coverage_hierarchical": None,
        "coverage_plain": None,
    }
    if not args.no_coverage:
        cpu_labels = labels.cpu()
        row["coverage_hierarchical"] = sampler_coverage(cpu_labels, batches["hierarchical"])
        row["coverage_plain"] = sampler_coverage(cpu_labels, batches["plain"])
    return row


def format_table(rows: list[dict[str, object]]) -> str:
    """The rows as a markdown table."""

    def coverage(values: list[float] | None) -> str:
        return "–" if values is None else " / ".join(f"{value:.3f}" for value in values)

    lines = [
        "| N | levels | hierarchical s/epoch | plain s/epoch | ratio | construction s (CPU s) "
        "| construction / plain epoch | coverage per level (hierarchical) | coverage per level (plain) |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['n']:,} | {row['levels']} | {row['hierarchical_s']:.3f} | {row['plain_s']:.3f} "
            f"| {row['hierarchical_s'] / row['plain_s']:.2f}× "
            f"| {row['construction_s']:.2f} ({row['construction_cpu_s']:.2f}) "
            f"| {row['construction_s'] / row['plain_s']:.2f}× "
            f"| {coverage(row['coverage_hierarchical'])} | {coverage(row['coverage_plain'])} |"
        )
    return "\n".join(lines)


def readme_block(record: dict[str, object]) -> str:
    """The README's sampler table from a saved record."""
    return f"{format_table(record['rows'])}\n\n{describe(record)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[60_000, 1_000_000])
    parser.add_argument("--branching", type=int, nargs="+", default=[5, 4, 4, 20], help="children per level (4 levels)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="where the labels live before sampling (cpu or cuda)")
    parser.add_argument("--no-coverage", action="store_true", help="skip the coverage columns (slow at 1M)")
    add_record_arguments(parser)
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")
    record_name = check_record_arguments(parser, args, RECORD_PREFIX)
    load = load_at_start()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
        f"branching {args.branching}, labels on {args.device}\n"
    )
    rows = []
    for n in args.sizes:
        rows.append(measure(n, args))
        print(f"measured N={n:,}", file=sys.stderr, flush=True)
    print(format_table(rows))
    finish(args, record_name, rows, readme_block, load, {"batch_size": args.batch_size, "branching": args.branching})


if __name__ == "__main__":
    main()
