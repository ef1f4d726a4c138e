"""Forward+backward time and peak memory of the hcl losses against flat SupCon and a loop baseline.

Run ``python benchmarks/bench_losses.py`` (``--device cuda`` on a GPU). For every batch size
(counted in views, N = B*V) it times, on the same random unit features and the same synthetic
hierarchy, interleaved in rounds so that machine noise hits all methods alike (each round in a
fresh seeded order, so that no method mostly follows the same one):

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

Each thread count of ``--threads`` (default 1 and 2) is timed in turn, and at each size each
feature dtype of ``--dtypes`` (``fp32``, the default, and ``bf16``): the features are made in
that dtype. hcl's losses compute in float32 whatever the input (a bf16 input is upcast, with
autocast off, and its gradient cast back), so their bf16 rows time that upcast, not bf16
arithmetic; the limit's GEMMs and exp run in the input's dtype, PML and the loop formulation
as their code does. A method that fails on a bf16 input (or as a graph) is left out there and
reported with its error; in fp32 without a graph a failure stops the run.

``--graph on`` (CUDA only; ``--graph off,on`` for both) also times flat SupCon and the
HiMulConE readings replayed as CUDA graphs (:class:`hcl.losses.CUDAGraphLoss`, as the trainer
does), in the same rounds: the losses are built with ``check_inputs=False`` and captured during
the warm-up call, so only replays are timed. ``hcl.losses.SupConLoss`` has no entry in the loss
table that CUDAGraphLoss reads, so the graphed flat SupCon is ``HiMulCon(level_weights=[1])`` on
the finest labels, the same loss by the same code path. At a size where a loss's dense form
does not fit, CUDAGraphLoss would run it directly (the graph-off row's work, unchecked): such a
loss is left out of that size's graph rounds after its warm-up and reported as not captured.
The limit has no graph and is timed once per dtype.

Ratios compare rows of one (threads, size, dtype, graph) setting with flat SupCon of that
setting (so a graphed HiMulConE with a graphed SupCon); the ratio to the limit (and to PML)
uses the limit (PML) of the same threads, size and dtype. It prints a markdown table: median
(and minimum) milliseconds, these ratios and peak memory (at the first thread count, without
graphs); then, per setting and HiMulConE reading, its worst ratio to SupCon, its worst ratio to
the limit at 4,096 views and more, and its peak memory against SupCon's at the largest size
(the tables and the README block: ``_losses_report.py``). ``--skip PML loop reference`` leaves
the anchors out. On a shared machine the minimum is the steadier figure.

On CUDA peak memory is ``torch.cuda.max_memory_allocated`` above what was allocated before the
call (a graph's replay allocates nothing, its buffers are held from the capture on, so graph
rows have none). On CPU it is measured with the PyTorch profiler
(``profile_memory=True``): the running sum of the bytes every op allocates (counted from the op's
start) and frees (counted at its end), so at op granularity: temporaries allocated and freed
inside one ATen op are not seen. Only tensors are counted.

The hierarchy: ``--levels`` levels with ``--branching`` children per node, leaves drawn
uniformly for each sample, ``--views`` views per sample.
"""

from __future__ import annotations

import argparse
import functools
import gc
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # _record, when loaded as a module

from _losses_report import (
    DTYPES,
    FAILED,
    GRAPHS,
    LIMIT,
    LOOP,
    NOT_CAPTURED,
    PML,
    SUPCON,
    format_table,
    readme_block,
    summary,
)  # noqa: E402
from _record import add_record_arguments, check_record_arguments, finish, load_at_start  # noqa: E402

RECORD_PREFIX = "losses-"  # the names of this benchmark's records (see _record.py)

from hcl.losses import CUDAGraphLoss, HiMulCon, HiMulConE, SupConLoss  # noqa: E402

REFERENCE_BASE_TEMPERATURE = 0.07
# The HiMulConE readings: the name of each method and its constraint.
READINGS = {
    "HiMulConE hinge (hcl, default)": "hinge",
    "HiMulConE pair (hcl, paper)": "pair",
    "HiMulConE pair_held (hcl)": "pair_held",
    "HiMulConE level_max (hcl)": "level_max",
}


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
        SUPCON: lambda x: SupConLoss(0.1)(x, finest),
        LIMIT: lambda x: machine_limit(x, 0.1),
        **{name: _himulcone(constraint, labels) for name, constraint in READINGS.items()},
        "HiMulCon paper (hcl)": lambda x: HiMulCon(0.1)(x, labels),
        "HiMulConE reference (hcl)": lambda x: HiMulConE(0.1, mode="reference")(x, labels),
    }
    try:
        from pytorch_metric_learning.losses import SupConLoss as PMLSupConLoss
    except ImportError:
        pass
    else:
        pml = PMLSupConLoss(temperature=0.1)
        methods[PML] = lambda x: pml(torch.cat(torch.unbind(x, dim=1)), finest.repeat(x.shape[1]))
    return {name: method for name, method in methods.items() if not any(word in name for word in skip)}


def _himulcone(constraint: str, labels: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: HiMulConE(0.1, constraint=constraint)(x, labels)


def _graphed_methods(labels: torch.Tensor, skip: list[str]) -> dict[str, functools.partial]:
    """Flat SupCon and the HiMulConE readings, unchecked and wrapped in :class:`CUDAGraphLoss`,
    by name (``skip`` as for :func:`_methods`); each is a ``partial`` of its wrapper."""
    losses = {
        SUPCON: (HiMulCon(0.1, level_weights=[1.0], check_inputs=False), labels[:, -1:]),
        **{name: (HiMulConE(0.1, constraint=c, check_inputs=False), labels) for name, c in READINGS.items()},
    }
    return {
        name: functools.partial(CUDAGraphLoss(loss), labels=target)
        for name, (loss, target) in losses.items()
        if not any(word in name for word in skip)
    }


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


def _rounds(
    args: argparse.Namespace, baselines: list[Callable[[torch.Tensor], torch.Tensor]], features: torch.Tensor
) -> int:
    """``--repeats`` rounds, or more where a call is short: enough for flat SupCon (the ratios'
    baseline, timed once more here) to be timed for about ``--min-seconds``, at most 1,000."""
    if not baselines or args.min_seconds <= 0:
        return args.repeats
    seconds = _time_once(baselines[0], features)
    return max(args.repeats, min(1000, math.ceil(args.min_seconds / max(seconds, 1e-6))))


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
    """Time every method at every size, thread count, dtype and graph setting; return one row per
    (threads, size, dtype, graph, method).

    Peak memory does not depend on the thread count and is measured at the first one only,
    without graphs.
    """
    device = torch.device(args.device)
    rows = []
    for threads_index, threads in enumerate(args.threads):
        torch.set_num_threads(threads)
        generator = torch.Generator().manual_seed(args.seed)
        for num_views_total in args.sizes:
            num_samples = num_views_total // args.views
            labels = synthetic_labels(num_samples, args.levels, args.branching, generator).to(device)
            unit = F.normalize(torch.randn(num_samples, args.views, args.dim, generator=generator), dim=-1)
            for dtype in args.dtypes:
                features = unit.to(device=device, dtype=DTYPES[dtype])
                rows += _run_setting(args, features, labels, threads, dtype, memory=threads_index == 0)
    return rows


def _run_setting(
    args: argparse.Namespace,
    features: torch.Tensor,
    labels: torch.Tensor,
    threads: int,
    dtype: str,
    *,
    memory: bool,
) -> list[dict[str, object]]:
    """Every method of every ``--graph`` setting on these features, in interleaved rounds."""
    device = features.device
    num_views_total = features.shape[0] * features.shape[1]
    eager = _methods(labels, args.skip)
    if "off" not in args.graph:  # the limit has no graph: it is timed in any case
        eager = {name: method for name, method in eager.items() if name == LIMIT}
    methods: dict[tuple[str, str], Callable[[torch.Tensor], torch.Tensor]] = {
        (name, "off"): method for name, method in eager.items()
    }
    if "on" in args.graph:
        methods |= {(name, "on"): method for name, method in _graphed_methods(labels, args.skip).items()}
    loop_left_out = "off" not in args.graph or any(word in LOOP for word in args.skip)
    loop_too_large = not loop_left_out and device.type == "cpu" and num_views_total > args.loop_max_views
    if not (loop_left_out or loop_too_large):
        methods[(LOOP, "off")] = lambda x, labels=labels: loop_formulation(x, labels)

    def row(key: tuple[str, str], **values: object) -> dict[str, object]:
        head = {"method": key[0], "views": num_views_total, "threads": threads, "dtype": dtype, "graph": key[1]}
        return head | {"device": device.type} | values

    skipped = []
    if loop_too_large:
        skipped.append(row((LOOP, "off"), skipped=f"skipped on CPU above --loop-max-views {args.loop_max_views}"))
    for key, method in list(methods.items()):  # warm-up, which also captures the graphs
        try:
            _time_once(method, features)
        except (RuntimeError, TypeError, NotImplementedError) as error:
            if (dtype, key[1]) == ("fp32", "off"):
                raise
            del methods[key]
            reason = f"{FAILED} ({dtype}, CUDA graph {key[1]}): {str(error).splitlines()[0][:120]}"
            skipped.append(row(key, skipped=reason))
            continue
        if key[1] == "on" and method.func.captured == 0:
            del methods[key]
            skipped.append(row(key, skipped=NOT_CAPTURED))
    times: dict[tuple[str, str], list[float]] = {key: [] for key in methods}
    rounds = _rounds(args, [method for key, method in methods.items() if key[0] == SUPCON], features)
    loop_repeats = max(3, args.repeats // 4)  # the loop formulation is slow: a quarter of --repeats
    order = list(methods.items())
    shuffle = random.Random(args.seed)
    collecting = gc.isenabled()
    gc.disable()  # as timeit does: a collection would land on whichever call triggers it
    try:
        for repeat in range(rounds):
            # A fresh order each round (seeded), so that no method mostly follows the same one:
            # a method runs slower after one that has filled the caches with its own data.
            shuffle.shuffle(order)
            for key, method in order:
                if key[0] == LOOP and repeat >= loop_repeats:
                    continue
                times[key].append(_time_once(method, features))
    finally:
        if collecting:
            gc.enable()
    medians = {key: statistics.median(values) * 1e3 for key, values in times.items()}
    minima = {key: min(values) * 1e3 for key, values in times.items()}
    print(f"timed {num_views_total} views on {threads} thread(s), {dtype}", file=sys.stderr)

    def ratio(key: tuple[str, str], baseline: tuple[str, str], of: dict[tuple[str, str], float]) -> float | None:
        return of[key] / of[baseline] if baseline in of else None

    rows = []
    for key, method in methods.items():
        supcon, limit, pml = (SUPCON, key[1]), (LIMIT, "off"), (PML, "off")
        values = {
            "ms": medians[key],
            "ms_min": minima[key],
            "vs_hcl": ratio(key, supcon, medians),
            "vs_limit": ratio(key, limit, medians),
            "vs_hcl_min": ratio(key, supcon, minima),
            "vs_limit_min": ratio(key, limit, minima),
            "vs_pml": ratio(key, pml, medians),
            "peak_mib": _peak_memory(method, features) / 2**20 if memory and key[1] == "off" else None,
            "repeats": len(times[key]),
        }
        rows.append(row(key, **values))
    return rows + skipped


def _names(text: str) -> list[str]:
    """A comma-separated list, each name once, in order."""
    return list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    parser.add_argument(
        "--sizes",
        type=lambda s: [int(v) for v in s.split(",")],
        default=[256, 1024, 4096, 8192],
        help="batch sizes in views (B*V), comma-separated",
    )
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds at least (median reported)")
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=0.5,
        help="more rounds where a call is short, until flat SupCon is timed for about this long (0: --repeats)",
    )
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
    parser.add_argument(
        "--dtypes",
        type=_names,
        default=["fp32"],
        help=f"feature dtypes, comma-separated ({', '.join(DTYPES)}), each timed in turn",
    )
    parser.add_argument(
        "--graph",
        type=_names,
        default=["off"],
        help="off, on (CUDA only: SupCon and the HiMulConE readings replayed as CUDA graphs) or off,on",
    )
    parser.add_argument("--seed", type=int, default=0)
    add_record_arguments(parser)
    args = parser.parse_args(argv)
    for option, values, allowed in (("--dtypes", args.dtypes, DTYPES), ("--graph", args.graph, GRAPHS)):
        unknown = [value for value in values if value not in allowed]
        if unknown or not values:
            parser.error(f"{option} {','.join(values) or '(empty)'}: each value must be one of {', '.join(allowed)}")
    if args.repeats < 1 or args.min_seconds < 0 or args.views < 1 or min(args.threads, default=0) < 1:
        parser.error(
            f"--repeats {args.repeats}, --min-seconds {args.min_seconds}, --views {args.views}, --threads "
            f"{','.join(map(str, args.threads))}: need at least 1 round, 0 s, 1 view and 1 thread"
        )
    uneven = [size for size in args.sizes if size < 2 * args.views or size % args.views]
    if uneven or not args.sizes:
        parser.error(
            f"--sizes {','.join(map(str, uneven)) or '(empty)'}: a size counts views (samples x --views "
            f"{args.views}), so a multiple of {args.views} and at least {2 * args.views}"
        )
    if any(word in SUPCON for word in args.skip):
        parser.error(f"--skip {' '.join(args.skip)}: {SUPCON!r} is every ratio's baseline and cannot be left out")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")
    if "on" in args.graph and not args.device.startswith("cuda"):
        parser.error(f"--graph on: CUDA graphs need --device cuda, got --device {args.device}")
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
    finish(args, args.record_name, rows, readme_block, load, device=args.device)
    print(
        f"D={args.dim}, L={args.levels}, branching={args.branching}, V={args.views}, temperature=0.1, "
        f"threads={','.join(map(str, args.threads))}, dtypes={','.join(args.dtypes)}, CUDA graph="
        f"{','.join(args.graph)}, torch {torch.__version__}; medians of "
        + (
            f"at least {args.repeats} interleaved rounds (more where a call is short: about {args.min_seconds} s "
            "of flat SupCon per size)"
            if args.min_seconds
            else f"{args.repeats} interleaved rounds"
        )
        + f"; the loop formulation in {max(3, args.repeats // 4)} of them"
    )
    table = format_table(rows) + "\n\n" + summary(rows)
    print(table)
    return table


if __name__ == "__main__":
    main()
