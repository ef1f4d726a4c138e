"""Benchmark hcl.metrics.per_level_retrieval against pytorch-metric-learning's AccuracyCalculator.

Both run on the same random-but-clustered embeddings (default 100,000 x 128, a 2 x 5 x 10 x 20
hierarchy: 2, 10, 100 and 2,000 classes per level), each in its own subprocess so that its peak
resident memory (ru_maxrss) is its own. PML is applied level by level with the level's label
prefixes as its labels and ``k="max_bin_count"`` (what MAP@R needs: the largest class size);
levels whose k x N neighbour table would not fit in ``--pml-memory-gb`` are reported as skipped,
with the memory they would need (about 80 bytes per query and neighbour, measured). PML's
FaissKNN is an exact IndexFlatL2 search, which on L2-normalised embeddings ranks as cosine
similarity does (up to float32 rounding: near-ties may swap, hence differences of ~1e-6).

Each hcl run first calls ``per_level_retrieval`` on 2,000 items, untimed: numba compiles the CPU
rows on their first call (cached on disk afterwards) and CUDA loads its kernels. Two baselines
run in the same invocation, so their ratios hold on a loaded machine:
``hcl-arrays`` is hcl without numba, whose CPU rows are array operations (the engine before the
compiled rows of :mod:`hcl.metrics._compiled_rows`; still the library's path without numba), and
``hcl-before`` the array-op row engine that was replaced earlier in issue 16 (every row sorted
down to the coarsest level's R, about N/2 ranks with two coarse classes), kept here only as a
baseline.

Usage:
    python benchmarks/bench_metrics.py                  # 100k, CPU, 2 threads
    python benchmarks/bench_metrics.py --n 20000        # smaller
    python benchmarks/bench_metrics.py --device cuda    # hcl on the GPU (PML/faiss stays on CPU)
    python benchmarks/bench_metrics.py --device cuda --skip-pml   # the GPU figure alone
    python benchmarks/bench_metrics.py --skip-pml --skip-before   # hcl and hcl-arrays only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _record, when loaded as a module

from _record import add_record_arguments, check_record_arguments, describe, finish, load_at_start  # noqa: E402

RECORD_PREFIX = "metrics-"  # the names of this benchmark's records (see _record.py)
BRANCHING = (2, 5, 10, 20)
METRICS = ("precision@1", "r_precision", "map@r")
PML_NAMES = {"precision@1": "precision_at_1", "r_precision": "r_precision", "map@r": "mean_average_precision_at_r"}


def make_data(n: int, dim: int, seed: int):
    """Clustered embeddings: a sum of one random centre per level plus noise.

    Labels use raw ids that repeat under different parents (child index within its parent), as
    many real label files do, so the prefix logic is exercised.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    num_fine = int(np.prod(BRANCHING))
    fine = rng.integers(0, num_fine, size=n)
    labels = np.empty((n, len(BRANCHING)), dtype=np.int64)
    node = fine.copy()
    for level in range(len(BRANCHING) - 1, -1, -1):
        labels[:, level] = node % BRANCHING[level]
        node //= BRANCHING[level]
    scales = (1.0, 0.7, 0.5, 0.4)
    embeddings = rng.standard_normal((n, dim)).astype(np.float32)
    width = 1
    for level, scale in enumerate(scales):
        width *= BRANCHING[level]
        centres = rng.standard_normal((width, dim)).astype(np.float32) * scale
        ids = np.zeros(n, dtype=np.int64)
        for up in range(level + 1):
            ids = ids * BRANCHING[up] + labels[:, up]
        embeddings += centres[ids]
    return embeddings, labels


def full_depth_rows(sims, first, context, scratch):
    """The CPU row engine before issue 16: each row partitioned at the largest R, that part sorted."""
    import numpy as np

    from hcl.metrics._ranked_rows import hits_in_top_r

    layout, ks, plan = context.layout, context.ks, context.plan
    num_levels = plan.num_levels
    keys = scratch.keys
    np.copyto(keys, sims, casting="unsafe")
    np.bitwise_and(keys, ~layout.code_mask, out=keys)
    plan.mark_rows(keys, first, layout.self_key)
    relevant_counts = plan.relevant[first : first + len(keys)]
    depth = min(context.num_rankable, max(int(relevant_counts[:, 0].max()), ks[-1]))
    if depth < keys.shape[1]:
        keys.partition(depth - 1, axis=1)
    top = keys[:, :depth]
    top.sort(axis=1)
    shared = np.bitwise_and(top, layout.code_mask, out=scratch.codes[:, :depth], casting="unsafe")
    sums = np.zeros((num_levels, 3 + len(ks)))
    counts = np.zeros(num_levels, dtype=np.int64)
    for level in range(num_levels):
        r = relevant_counts[:, level]
        counted = np.flatnonzero(r > 0)
        if len(counted) == 0:
            break
        width = min(depth, max(int(r.max()), ks[-1]))
        relevant = scratch.relevant.reshape(-1)[: len(keys) * width].reshape(len(keys), width)
        np.greater(shared[:, :width], level, out=relevant)
        head = relevant[counted, : ks[-1]]
        sums[level, 0] = head[:, 0].sum()
        for i, k in enumerate(ks):
            sums[level, 3 + i] = head[:, :k].any(axis=1).sum()
        num_hits, ap_times_r = hits_in_top_r(relevant, r, context.harmonic)
        r_counted = r[counted]
        sums[level, 1] = (num_hits[counted] / r_counted).sum()
        sums[level, 2] = (ap_times_r[counted] / r_counted).sum()
        counts[level] = len(counted)
    return sums, counts


def worker(args: argparse.Namespace) -> None:
    """Run one measurement and print one JSON line (seconds, peak RSS, metrics)."""
    import resource

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    embeddings, labels = make_data(args.n, args.dim, args.seed)
    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out: dict = {"what": args.worker}

    def cpu_seconds() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    if args.worker in ("hcl", "hcl-arrays", "hcl-before"):
        from hcl.metrics import _retrieval_engine, per_level_retrieval

        if args.worker != "hcl":
            _retrieval_engine.compiled_rows = lambda: None  # as without numba: the array-op rows
        if args.worker == "hcl-before":
            _retrieval_engine._numpy_rows = full_depth_rows

        emb = torch.from_numpy(embeddings)
        if args.device != "cpu":
            emb = emb.to(args.device)
        # Warm up: numba compiles the CPU rows on their first call (seconds, then cached on disk),
        # CUDA loads its kernels; neither is the steady cost being measured.
        per_level_retrieval(emb[:2000], labels[:2000])
        if args.device != "cpu":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), cpu_seconds()
        result = per_level_retrieval(emb, labels, ks=(1, 5, 10))
        if args.device != "cpu":
            torch.cuda.synchronize()
        out["seconds"] = time.perf_counter() - t0
        out["cpu_seconds"] = cpu_seconds() - c0
        out["levels"] = {str(k): v for k, v in result.items()}
        if args.device != "cpu":
            out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        import faiss
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        from hcl.labels import prefix_ids

        faiss.omp_set_num_threads(args.threads)
        normed = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
        ids = prefix_ids(torch.from_numpy(labels)).numpy()
        calc = AccuracyCalculator(include=tuple(PML_NAMES.values()), k="max_bin_count", device=torch.device("cpu"))
        out["levels"], out["seconds_per_level"], out["skipped"] = {}, {}, {}
        c0 = cpu_seconds()
        for level in range(labels.shape[1]):
            k = int(np.bincount(ids[:, level]).max()) - 1
            # Measured: about 75 bytes per (query, neighbour) at peak (distances, indices, the
            # neighbours' labels and PML's masks and copies of them).
            need_gb = args.n * k * 80 / 2**30
            if need_gb > args.pml_memory_gb:
                out["skipped"][str(level)] = f"k={k} needs {need_gb:.0f} GB of neighbour tables"
                continue
            t0 = time.perf_counter()
            acc = calc.get_accuracy(normed, ids[:, level])
            out["seconds_per_level"][str(level)] = time.perf_counter() - t0
            out["levels"][str(level)] = {m: acc[p] for m, p in PML_NAMES.items()}
        out["cpu_seconds"] = cpu_seconds() - c0
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["baseline_rss_mb"] = start_rss / 1024
    print(json.dumps(out))


def run_worker(what: str, args: argparse.Namespace) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(args.threads)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        what,
        "--n",
        str(args.n),
        "--dim",
        str(args.dim),
        "--seed",
        str(args.seed),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
        "--pml-memory-gb",
        str(args.pml_memory_gb),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        last_line = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
        return {"what": what, "error": last_line, "wall": time.perf_counter() - t0}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _times(ratio: float, better: str, worse: str) -> str:
    """``2.00x faster`` for a ratio of 2, ``2.00x slower`` for 0.5."""
    return f"{ratio:.2f}x {better}" if ratio >= 1 else f"{1 / ratio:.2f}x {worse}"


def summary_tables(record: dict) -> tuple[str, str]:
    """The implementations table with the same-run ratios, and the per-level metric table."""
    config = record["config"]
    runs = {run["what"]: run for run in record["rows"]}
    hcl_run, pml_run = runs.get("hcl"), runs.get("pml")
    lines = ["| implementation | levels | wall seconds | CPU seconds | peak RSS (MB) |", "|---|---|---:|---:|---:|"]
    lines += [f"{run['what']} failed: {run['error']}" for run in runs.values() if "error" in run]
    if "error" not in hcl_run:
        extra = f", GPU peak {hcl_run['gpu_peak_mb']:.0f} MB" if "gpu_peak_mb" in hcl_run else ""
        lines.append(
            f"| hcl per_level_retrieval ({config['device']}) | all {len(BRANCHING)} | "
            f"{hcl_run['seconds']:.1f} | {hcl_run['cpu_seconds']:.1f} | {hcl_run['peak_rss_mb']:.0f}{extra} |"
        )
    baselines = (
        ("hcl-arrays", "hcl without numba (cpu, array-op rows)", "without numba"),
        ("hcl-before", "hcl before issue 16 (cpu, every row sorted to the coarsest R)", "before issue 16"),
    )
    ratios = []
    for what, title, short in baselines:
        run = runs.get(what)
        if run is None or "error" in run or "error" in hcl_run:
            continue
        lines.append(
            f"| {title} | all {len(BRANCHING)} | {run['seconds']:.1f} | {run['cpu_seconds']:.1f} "
            f"| {run['peak_rss_mb']:.0f} |"
        )
        diff = max(
            abs(run["levels"][level][m] - hcl_run["levels"][level][m])
            for level in hcl_run["levels"]
            for m in (*METRICS, "recall@10")
        )
        ratios.append(
            f"hcl vs {short}, same run: {_times(run['seconds'] / hcl_run['seconds'], 'faster', 'slower')} wall, "
            f"{_times(run['cpu_seconds'] / hcl_run['cpu_seconds'], 'less', 'more')} CPU; "
            f"largest metric difference {diff:.1e}"
        )
    if pml_run is not None and "error" not in pml_run:
        done = sorted(pml_run["seconds_per_level"], key=int)
        total = sum(pml_run["seconds_per_level"].values())
        lines.append(
            f"| PML AccuracyCalculator (faiss CPU, k=max_bin_count) | {', '.join(done) or 'none'} | "
            f"{total:.1f} | {pml_run['cpu_seconds']:.1f} | {pml_run['peak_rss_mb']:.0f} |"
        )
        lines += [f"| PML level {level} | skipped | {why} | | |" for level, why in sorted(pml_run["skipped"].items())]
    table = "\n".join(lines) + ("\n\n" + "\n".join(f"- {ratio}" for ratio in ratios) if ratios else "")
    if "error" in hcl_run:
        return table, ""
    metrics = ["| level | classes | metric | hcl | PML | abs diff |", "|---|---|---|---|---|---|"]
    classes = 1
    for level in range(len(BRANCHING)):
        classes *= BRANCHING[level]
        ours = hcl_run["levels"][str(level)]
        theirs = pml_run["levels"].get(str(level)) if pml_run and "error" not in pml_run else None
        for metric in METRICS:
            ref = f"{theirs[metric]:.6f}" if theirs else "-"
            diff = f"{abs(theirs[metric] - ours[metric]):.1e}" if theirs else "-"
            metrics.append(f"| {level} | {classes} | {metric} | {ours[metric]:.6f} | {ref} | {diff} |")
        metrics.append(f"| {level} | {classes} | recall@10 | {ours['recall@10']:.6f} | - | - |")
    return table, "\n".join(metrics)


def readme_block(record: dict) -> str:
    """The README's retrieval table (with the same-run ratios) from a saved record."""
    config = record["config"]
    head = (
        f"N = {config['n']:,}, D = {config['dim']}, hierarchy {' × '.join(map(str, BRANCHING))}, "
        f"{config['threads']} CPU threads, hcl on {config['device']}:"
    )
    return f"{head}\n\n{summary_tables(record)[0]}\n\n{describe(record)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="number of embeddings")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for both libraries")
    parser.add_argument("--device", default="cpu", help="where hcl computes: cpu or cuda")
    parser.add_argument(
        "--pml-memory-gb", type=float, default=12.0, help="skip PML levels whose neighbour tables would exceed this"
    )
    parser.add_argument("--skip-pml", action="store_true")
    parser.add_argument("--skip-before", action="store_true", help="skip hcl's older full-depth CPU engine")
    parser.add_argument("--skip-arrays", action="store_true", help="skip hcl's array-op CPU engine (no numba)")
    parser.add_argument("--worker", choices=("hcl", "hcl-arrays", "hcl-before", "pml"), help=argparse.SUPPRESS)
    add_record_arguments(parser)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    record_name = check_record_arguments(parser, args, RECORD_PREFIX + args.device.split(":")[0])
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            sys.exit("--device cuda given but CUDA is not available")
    load = load_at_start()
    print(
        f"# per_level_retrieval benchmark: N={args.n}, D={args.dim}, hierarchy "
        f"{' x '.join(map(str, BRANCHING))}, {args.threads} CPU threads, hcl on {args.device}"
    )
    print(
        f"# {os.cpu_count()} CPUs here, load average {load} at the start; on a busy "
        "machine CPU seconds / threads is the better guide to the wall time on idle cores\n"
    )
    on_cpu = args.device == "cpu"
    workers = ["hcl"]
    workers += [] if args.skip_arrays or not on_cpu else ["hcl-arrays"]
    workers += [] if args.skip_before or not on_cpu else ["hcl-before"]
    workers += [] if args.skip_pml else ["pml"]
    rows = [run_worker(what, args) for what in workers]
    config = {"n": args.n, "dim": args.dim, "threads": args.threads, "device": args.device, "seed": args.seed}
    table, metrics = summary_tables({"config": config, "rows": rows})
    print(table + ("\n\n" + metrics if metrics else ""))
    finish(args, record_name, rows, readme_block, load, {"config": config})


if __name__ == "__main__":
    main()
