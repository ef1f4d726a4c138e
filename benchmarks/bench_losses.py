"""Forward+backward time and peak memory of the hcl losses against flat SupCon and a loop baseline.

Run ``python benchmarks/bench_losses.py`` (``--device cuda`` on a GPU). For every batch size
(counted in views, N = B*V) it times, on the same random unit features and the same synthetic
hierarchy, interleaved round-robin so that machine noise hits all methods alike:

* hcl ``HiMulConE`` in paper mode with every constraint reading (``hinge``, the default;
  ``pair``, the paper's; ``pair_held``; ``level_max``), ``HiMulCon`` in paper mode and
  ``HiMulConE`` in reference mode;
* the machine's limit (:func:`machine_limit`): the two GEMMs and the exp pass any contrastive
  loss over the views needs, as plain tensor ops, timed in the same rounds;
* flat SupCon on the finest labels: ``hcl.losses.SupConLoss`` and pytorch-metric-learning's
  ``SupConLoss`` (on the flattened views), the baselines of the ratios;
* the loop formulation: a straightforward re-implementation of the reference code's
  per-level loop (a Python loop over the batch builds each level's (B, B) mask, then one dense
  SupCon per level), computing the same value as reference mode.

Each thread count of ``--threads`` (default 1 and 2) is timed in turn. It prints a markdown
table: median (and minimum) milliseconds, the ratio of medians to hcl's flat SupCon, to the
limit and to PML's SupCon, and peak memory (at the first thread count); then, per HiMulConE
reading, its worst ratio to SupCon, its worst ratio to the limit at 4,096 views and more, and its
peak memory against SupCon's at the largest size. ``--skip PML loop reference`` leaves the
anchors out. On a shared machine the minimum is the steadier
figure. On CUDA peak memory is ``torch.cuda.max_memory_allocated`` above what was
allocated before the call. On CPU it is measured with the PyTorch profiler
(``profile_memory=True``): the running sum of the bytes every op allocates (counted from the op's
start) and frees (counted at its end), so at op granularity: temporaries allocated and freed
inside one ATen op are not seen. Only tensors are counted.

The hierarchy: ``--levels`` levels with ``--branching`` children per node, leaves drawn
uniformly for each sample, ``--views`` views per sample.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # _record, when loaded as a module

from _record import add_record_arguments, check_record_arguments, describe, finish, load_at_start  # noqa: E402

RECORD_PREFIX = "losses-"  # the names of this benchmark's records (see _record.py)

from hcl.losses import HiMulCon, HiMulConE, SupConLoss  # noqa: E402

REFERENCE_BASE_TEMPERATURE = 0.07
LIMIT = "limit: 2 GEMMs + exp (no loss)"


def loop_formulation(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """The reference HMLC 'hmce' loss, computed the way the reference code does.

    For k = 1..L-1 the last k label columns are zeroed, a Python loop over the batch builds the
    (B, B) mask of equal rows, a dense SupCon (SupContrast's, with base temperature 0.07) runs on
    it, the level loss is maxed with the running max and weighted by exp(1/k), and only the first
    sample of each remaining label row is kept, rows in sorted order. Anchors without positives
    are skipped. The sum is divided by L.

    Shape:
        features: (B, V, D); labels: (B, L) without -1. Returns a scalar.
    """
    features = F.normalize(features, dim=-1)
    num_levels = labels.shape[1]
    cumulative = features.sum() * 0
    running_max = None
    for k in range(1, num_levels):
        layer_labels = labels.clone()
        layer_labels[:, num_levels - k :] = 0
        mask = torch.stack([(layer_labels == layer_labels[i]).all(dim=1) for i in range(layer_labels.shape[0])])
        layer_loss = _dense_supcon(features, mask.float(), temperature)
        if layer_loss is not None:
            if running_max is not None:
                layer_loss = torch.maximum(running_max, layer_loss)
            cumulative = cumulative + torch.exp(torch.tensor(1.0 / k)) * layer_loss
            running_max = layer_loss if running_max is None else torch.maximum(running_max, layer_loss)
        _, inverse = torch.unique(layer_labels, dim=0, sorted=True, return_inverse=True)
        first = torch.full((int(inverse.max()) + 1,), labels.shape[0], dtype=torch.long, device=labels.device)
        first.scatter_reduce_(0, inverse, torch.arange(labels.shape[0], device=labels.device), reduce="amin")
        labels, features = labels[first], features[first]
    return cumulative / num_levels


def _dense_supcon(features: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor | None:
    """SupContrast's loss on all views with a (B, B) positive mask; None without any positive."""
    num_samples, num_views, _ = features.shape
    views = torch.cat(torch.unbind(features, dim=1), dim=0)
    logits = views @ views.t() / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    not_self = 1 - torch.eye(num_samples * num_views, device=features.device)
    mask = mask.repeat(num_views, num_views) * not_self
    log_prob = logits - torch.log((torch.exp(logits) * not_self).sum(dim=1, keepdim=True))
    positives = mask.sum(dim=1)
    has_positive = positives > 0
    if not bool(has_positive.any()):
        return None
    mean_log_prob = (mask * log_prob).sum(dim=1)[has_positive] / positives[has_positive]
    return -(temperature / REFERENCE_BASE_TEMPERATURE) * mean_log_prob.mean()


def synthetic_labels(num_samples: int, num_levels: int, branching: int, generator: torch.Generator) -> torch.Tensor:
    """Labels of a balanced tree: leaves drawn uniformly, column l = leaf // branching**(L-1-l)."""
    leaves = torch.randint(0, branching**num_levels, (num_samples,), generator=generator)
    return torch.stack([leaves // branching ** (num_levels - 1 - level) for level in range(num_levels)], dim=1)


def _methods(labels: torch.Tensor, skip: list[str]) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The timed methods, by name; names holding any of ``skip`` are left out."""
    finest = labels[:, -1]
    methods: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "flat SupCon (hcl)": lambda x: SupConLoss(0.1)(x, finest),
        LIMIT: lambda x: machine_limit(x, 0.1),
        "HiMulConE hinge (hcl, default)": lambda x: HiMulConE(0.1)(x, labels),
        "HiMulConE pair (hcl, paper)": lambda x: HiMulConE(0.1, constraint="pair")(x, labels),
        "HiMulConE pair_held (hcl)": lambda x: HiMulConE(0.1, constraint="pair_held")(x, labels),
        "HiMulConE level_max (hcl)": lambda x: HiMulConE(0.1, constraint="level_max")(x, labels),
        "HiMulCon paper (hcl)": lambda x: HiMulCon(0.1)(x, labels),
        "HiMulConE reference (hcl)": lambda x: HiMulConE(0.1, mode="reference")(x, labels),
    }
    try:
        from pytorch_metric_learning.losses import SupConLoss as PMLSupConLoss
    except ImportError:
        pass
    else:
        pml = PMLSupConLoss(temperature=0.1)
        methods["flat SupCon (PML)"] = lambda x: pml(torch.cat(torch.unbind(x, dim=1)), finest.repeat(x.shape[1]))
    return {name: method for name, method in methods.items() if not any(word in name for word in skip)}


def machine_limit(features: torch.Tensor, temperature: float) -> torch.Tensor:
    """What any contrastive loss over N views must at least do, as plain tensor ops, no autograd.

    One forward GEMM (N, D) x (D, N) for the similarities, an in-place exp pass over them and
    their row sums, and the backward GEMM (N, N) x (N, D). The gradient reaches each view as
    anchor and as partner, two backward GEMMs in general; with the similarities' symmetry (one
    shared shift, as hcl's kernels use) both fit in one, so one is the floor. One (N, N) buffer,
    no masks, no labels. The result is a graph-free zero: the timing loop's ``.backward()`` adds
    nothing.

    Shape:
        features: (B, V, D). Returns a scalar.
    """
    with torch.no_grad():
        flat = features.reshape(-1, features.shape[-1])
        weights = torch.mm(flat / temperature, flat.T).exp_()
        row_sum = weights.sum(dim=1)
        weights.mul_(row_sum.reciprocal().unsqueeze(1))
        both_sides = torch.mm(weights, flat)
        total = both_sides[0, 0]
    return features.sum() * 0 + total * 0


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_once(method: Callable[[torch.Tensor], torch.Tensor], features: torch.Tensor) -> float:
    x = features.detach().clone().requires_grad_(True)
    _synchronize(features.device)
    start = time.perf_counter()
    method(x).backward()
    _synchronize(features.device)
    return time.perf_counter() - start


def _peak_memory(method: Callable[[torch.Tensor], torch.Tensor], features: torch.Tensor) -> float:
    """Peak bytes allocated above the starting point during one forward+backward."""
    x = features.detach().clone().requires_grad_(True)
    if features.device.type == "cuda":
        torch.cuda.synchronize(features.device)
        torch.cuda.reset_peak_memory_stats(features.device)
        base = torch.cuda.memory_allocated(features.device)
        method(x).backward()
        torch.cuda.synchronize(features.device)
        return float(torch.cuda.max_memory_allocated(features.device) - base)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        method(x).backward()
    # An op's net allocation counts from its start, its net release from its end (frees inside
    # an op are not time-stamped), which errs towards a higher peak.
    changes = sorted(
        (e.time_range.start if e.self_cpu_memory_usage > 0 else e.time_range.end, e.self_cpu_memory_usage)
        for e in prof.events()
        if e.self_cpu_memory_usage
    )
    running = peak = 0
    for _, change in changes:
        running += change
        peak = max(peak, running)
    return float(peak)


def run(args: argparse.Namespace) -> list[dict[str, object]]:
    """Time every method at every size and thread count; return one row per (threads, size, method).

    Peak memory does not depend on the thread count and is measured at the first one only.
    """
    device = torch.device(args.device)
    rows = []
    for threads_index, threads in enumerate(args.threads):
        torch.set_num_threads(threads)
        generator = torch.Generator().manual_seed(args.seed)
        for num_views_total in args.sizes:
            rows += _run_size(args, device, num_views_total, threads, generator, memory=threads_index == 0)
    return rows


def _run_size(
    args: argparse.Namespace,
    device: torch.device,
    num_views_total: int,
    threads: int,
    generator: torch.Generator,
    *,
    memory: bool,
) -> list[dict[str, object]]:
    num_samples = num_views_total // args.views
    labels = synthetic_labels(num_samples, args.levels, args.branching, generator).to(device)
    features = F.normalize(torch.randn(num_samples, args.views, args.dim, generator=generator), dim=-1).to(device)
    methods = _methods(labels, args.skip)
    loop_name = "loop formulation (reference HMLC, hmce)"
    loop_skipped = any(word in loop_name for word in args.skip) or (
        device.type == "cpu" and num_views_total > args.loop_max_views
    )
    if not loop_skipped:
        methods[loop_name] = lambda x, labels=labels: loop_formulation(x, labels)
    times: dict[str, list[float]] = {name: [] for name in methods}
    for method in methods.values():  # warm-up
        _time_once(method, features)
    loop_repeats = max(3, args.repeats // 4)
    for repeat in range(args.repeats):
        for name, method in methods.items():
            if name.startswith("loop") and repeat >= loop_repeats:
                continue
            times[name].append(_time_once(method, features))
    medians = {name: statistics.median(values) * 1e3 for name, values in times.items()}
    print(f"timed {num_views_total} views on {threads} thread(s)", file=sys.stderr)
    rows = []
    for name in methods:
        rows.append(
            {
                "method": name,
                "views": num_views_total,
                "threads": threads,
                "device": device.type,
                "ms": medians[name],
                "ms_min": min(times[name]) * 1e3,
                "vs_hcl": medians[name] / medians["flat SupCon (hcl)"],
                "vs_limit": medians[name] / medians[LIMIT] if LIMIT in medians else None,
                "vs_hcl_min": min(times[name]) / min(times["flat SupCon (hcl)"]),
                "vs_limit_min": min(times[name]) / min(times[LIMIT]) if LIMIT in times else None,
                "vs_pml": medians[name] / medians["flat SupCon (PML)"] if "flat SupCon (PML)" in medians else None,
                "peak_mib": _peak_memory(methods[name], features) / 2**20 if memory else None,
                "repeats": len(times[name]),
            }
        )
    if loop_skipped and "loop" not in args.skip:
        rows.append(
            {
                "method": loop_name,
                "views": num_views_total,
                "threads": threads,
                "device": device.type,
                "skipped": f"skipped on CPU above --loop-max-views {args.loop_max_views}",
            }
        )
    return rows


def format_table(rows: list[dict[str, object]]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| method | views (B*V) | threads | ms (median) | ms (min) | x flat SupCon (hcl) | x limit "
        "| x flat SupCon (PML) | peak MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def ratio(value: object) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    for row in rows:
        head = f"| {row['method']} | {row['views']} | {row['threads']} |"
        if "skipped" in row:
            lines.append(f"{head} {row['skipped']} | | | | | |")
            continue
        peak = "-" if row["peak_mib"] is None else f"{row['peak_mib']:.1f}"
        lines.append(
            f"{head} {row['ms']:.2f} | {row['ms_min']:.2f} | {row['vs_hcl']:.2f} | {ratio(row['vs_limit'])} | "
            f"{ratio(row['vs_pml'])} | {peak} |"
        )
    return "\n".join(lines)


def summary(rows: list[dict[str, object]]) -> str:
    """HiMulConE's worst ratios against flat SupCon (every size) and the limit (4,096 views and
    more), of medians and of minima (the steadier figure on a shared machine), and its peak
    memory against SupCon's at the largest size."""
    timed = [row for row in rows if "skipped" not in row]
    himulcone = [row for row in timed if row["method"].startswith("HiMulConE") and "reference" not in row["method"]]
    lines = []

    def where(row: dict[str, object]) -> str:
        return f"{row['views']:,} views, {row['threads']} thread{'' if row['threads'] == 1 else 's'}"

    for name in sorted({row["method"] for row in himulcone}):
        mine = [row for row in himulcone if row["method"] == name]
        worst = max(mine, key=lambda row: row["vs_hcl"])
        worst_min = max(mine, key=lambda row: row["vs_hcl_min"])
        text = (
            f"- {name}: at most {worst['vs_hcl']:.2f}x flat SupCon by medians ({where(worst)}), "
            f"{worst_min['vs_hcl_min']:.2f}x by minima ({where(worst_min)})"
        )
        large = [row for row in mine if row["views"] >= 4096 and row["vs_limit"] is not None]
        if large:
            worst_limit = max(large, key=lambda row: row["vs_limit"])
            worst_limit_min = max(large, key=lambda row: row["vs_limit_min"])
            text += (
                f"; at >= 4,096 views at most {worst_limit['vs_limit']:.2f}x the limit by medians, "
                f"{worst_limit_min['vs_limit_min']:.2f}x by minima"
            )
        largest = max(mine, key=lambda row: (row["peak_mib"] is not None, row["views"]))
        supcon = [
            row
            for row in timed
            if row["method"] == "flat SupCon (hcl)"
            and row["views"] == largest["views"]
            and row["peak_mib"] is not None
            and largest["peak_mib"] is not None
        ]
        if supcon:
            text += (
                f"; peak memory at {largest['views']:,} views {largest['peak_mib']:.0f} MiB = "
                f"{largest['peak_mib'] / supcon[0]['peak_mib']:.2f}x SupCon's"
            )
        lines.append(text)
    return "\n".join(lines)


# README columns: short names of the methods, in this order (those a record lacks are left out).
_COLUMNS = {
    "flat SupCon (hcl)": "flat SupCon, ms",
    LIMIT: "limit (GEMMs + exp)",
    "HiMulConE hinge (hcl, default)": "HiMulConE hinge (default)",
    "HiMulConE pair (hcl, paper)": "HiMulConE pair (paper)",
    "HiMulConE pair_held (hcl)": "HiMulConE pair_held",
    "HiMulConE level_max (hcl)": "HiMulConE level_max",
    "HiMulCon paper (hcl)": "HiMulCon",
    "HiMulConE reference (hcl)": "HiMulConE reference mode",
    "flat SupCon (PML)": "SupCon (pytorch-metric-learning)",
    "loop formulation (reference HMLC, hmce)": "loop formulation",
}


def readme_block(record: dict[str, object]) -> str:
    """The README's loss table from a saved record: median ms of flat SupCon, and every other
    method as median ms with its ratio to flat SupCon in the same run; then the summary lines and
    the provenance line."""
    rows = [row for row in record["rows"] if "skipped" not in row]
    present = {row["method"] for row in rows}
    columns = [name for name in _COLUMNS if name in present]
    lines = [
        "| views | threads | " + " | ".join(_COLUMNS[name] for name in columns) + " |",
        "|---:|---:|" + "---:|" * len(columns),
    ]
    cells = {(row["views"], row["threads"], row["method"]): row for row in rows}
    for views, threads in sorted({(row["views"], row["threads"]) for row in rows}, key=lambda k: (k[1], k[0])):
        values = []
        for name in columns:
            row = cells.get((views, threads, name))
            if row is None:
                values.append("–")
            elif name == "flat SupCon (hcl)":
                values.append(f"{row['ms']:,.2f}")
            else:
                values.append(f"{row['ms']:,.2f} ({row['vs_hcl']:.2f}×)")
        lines.append(f"| {views:,} | {threads} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n\n" + summary(record["rows"]) + "\n\n" + describe(record)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    parser.add_argument(
        "--sizes",
        type=lambda s: [int(v) for v in s.split(",")],
        default=[256, 1024, 4096, 8192],
        help="batch sizes in views (B*V), comma-separated",
    )
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per method (median reported)")
    parser.add_argument("--views", type=int, default=2, help="views per sample")
    parser.add_argument("--dim", type=int, default=128, help="embedding dimension D")
    parser.add_argument("--levels", type=int, default=4, help="label levels L")
    parser.add_argument("--branching", type=int, default=4, help="children per node of the synthetic tree")
    parser.add_argument("--loop-max-views", type=int, default=4096, help="skip the loop formulation above this on CPU")
    parser.add_argument(
        "--threads",
        type=lambda s: [int(v) for v in s.split(",")],
        default=[1, 2],
        help="torch thread counts, comma-separated, each timed in turn",
    )
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        help="leave out methods whose name holds any of these words (e.g. PML loop reference)",
    )
    parser.add_argument("--seed", type=int, default=0)
    add_record_arguments(parser)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")
    args.record_name = check_record_arguments(parser, args, RECORD_PREFIX + args.device.split(":")[0])
    return args


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    load = load_at_start()
    try:
        rows = run(args)
    finally:
        torch.set_num_threads(threads)
    finish(args, args.record_name, rows, readme_block, load)
    print(
        f"D={args.dim}, L={args.levels}, branching={args.branching}, V={args.views}, temperature=0.1, "
        f"threads={','.join(map(str, args.threads))}, torch {torch.__version__}; medians of {args.repeats} "
        "interleaved runs"
    )
    table = format_table(rows) + "\n\n" + summary(rows)
    print(table)
    return table


if __name__ == "__main__":
    main()
