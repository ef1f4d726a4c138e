"""Training throughput: the demo's step and study cell on CPU, and HiMulConE against cross-entropy.

Three sections, each printed as a markdown table (ratios and shares only; nothing is asserted):

* ``step``: the demo model (``configs/fashion_mnist_himulcone.yaml``: compact CNN width 16,
  batch 128 x 2 views, Fashion-MNIST, HiMulConE) trained through hcl's own data path
  (:class:`hcl.train.SeededViews` over the augmented split, the hierarchical sampler); each step
  is split into data loading, forward, loss, backward and optimizer step, with images per second
  of each part and of the whole step.
* ``cell``: one study cell end to end at a small budget (``--cell-epochs``): ``fit`` without its
  own evaluation, then :func:`hcl.train.evaluate_embeddings` on both embeddings, split into
  training, embedding the evaluation and reference sets, and the metrics.
* ``models``: for ResNet-18 at 32 px (small-image stem) and ResNet-50 at 224 px, a full training
  step (forward of B samples x 2 views, loss, backward, SGD update, via ``hcl.train.train_step``)
  with the HiMulConE loss over 4 label levels and with cross-entropy on the finest label, with
  images/s, the step time against cross-entropy and the loss's own share. Data are random
  tensors with labels from a 4-level tree (this measures compute, not data loading).

    python benchmarks/bench_train.py                        # CPU: all three, a few minutes
    python benchmarks/bench_train.py --sections step --threads 1
    python benchmarks/bench_train.py --device cuda --sections models --batch-size 256 --precision bf16 --channels-last

``--record`` saves one README block's record: either the step and cell sections (record
``train-DEVICE``) or the models section alone (``train-DEVICE-models``: its rows, the setup with
the device's card, precision and batch, and the loss-alone times), not both in one run.

Without Fashion-MNIST's files (``make setup`` installs Debian's dataset-fashion-mnist) the step
and cell sections use the synthetic data set at 28 px, saying so.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # _record, when loaded as a module

from _record import add_record_arguments, check_record_arguments, describe, finish, load_at_start  # noqa: E402

RECORD_PREFIX = "train-"  # the names of this benchmark's records (see _record.py)

import hcl.train.evaluate as evaluate_module  # noqa: E402
from hcl.models import build_encoder  # noqa: E402
from hcl.train import (  # noqa: E402
    TrainConfig,
    build_objective,
    evaluate_embeddings,
    fit,
    load_config,
    resolve_device,
    train_step,
)
from hcl.train.distributed import init_distributed  # noqa: E402
from hcl.train.loop import _epoch_loader  # noqa: E402
from hcl.train.run import start_run  # noqa: E402

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "fashion_mnist_himulcone.yaml"
STEP_PARTS = ("data loading", "forward", "loss", "backward", "optimizer step")
CELL_PARTS = ("training", "embedding for evaluation", "metrics")

MODELS = {"resnet18_32": ("resnet18", 32, True), "resnet50_224": ("resnet50", 224, False)}
# Step variants: (loss, replay the loss as a CUDA graph). The eager HiMulConE row is CUDA only.
VARIANTS = {
    "cross_entropy": ("cross_entropy", False),
    "himulcone": ("himulcone", True),
    "himulcone, no CUDA graph": ("himulcone", False),
}
NUM_VIEWS = 2
NUM_LEAVES = 1000


def demo_config(output_dir: str) -> tuple[TrainConfig, str]:
    """The demo's config writing to ``output_dir``, and the data it reads (synthetic without Fashion-MNIST)."""
    cfg = dataclasses.replace(load_config(DEMO_CONFIG), output_dir=output_dir, progress=False)
    try:
        from hcl.data import build_dataset

        build_dataset(cfg.dataset, split=cfg.train_split, root=cfg.data_root)
        return cfg, "Fashion-MNIST"
    except FileNotFoundError:
        synthetic = {"image_size": 28}
        cfg = dataclasses.replace(cfg, dataset="synthetic", data_options=synthetic, train_subset=None, eval_subset=None)
        return cfg, "synthetic (Fashion-MNIST's files are missing)"


def time_demo_step(cfg: TrainConfig, steps: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of each part of ``steps`` training steps of the demo, after ``warmup`` untimed ones.

    The step is :func:`hcl.train.train_step`'s, cut where the parts meet: the loader yields the
    batch (augmentation included), the model maps (B*V, C, H, W) to outputs, the loss, its
    backward pass (the loss value is read back as the trainer does), and the SGD update.
    """
    ctx = init_distributed(cfg.device)
    run = start_run(cfg, ctx, resume=False, overwrite=True)
    if warmup + steps > run.steps_per_epoch:
        raise ValueError(f"--steps + --warmup must be <= {run.steps_per_epoch}, an epoch of the demo")
    _, loader = _epoch_loader(run, 0, 0, warmup + steps)
    run.net.train()
    times: dict[str, list[float]] = {part: [] for part in STEP_PARTS}
    batches = iter(loader)
    for step in range(warmup + steps):
        marks = [time.perf_counter()]
        images, labels, _ = next(batches)
        marks.append(time.perf_counter())
        run.optimizer.zero_grad(set_to_none=True)
        outputs = run.net(images.flatten(0, 1)).float().reshape(*images.shape[:2], -1)
        marks.append(time.perf_counter())
        loss = run.objective(outputs, labels)
        marks.append(time.perf_counter())
        loss.backward()
        float(loss.detach())
        marks.append(time.perf_counter())
        run.optimizer.step()
        marks.append(time.perf_counter())
        if step >= warmup:
            for part, begin, end in zip(STEP_PARTS, marks, marks[1:]):
                times[part].append(end - begin)
    return times


def step_row(times: dict[str, list[float]]) -> dict[str, float]:
    """Median seconds of each part and of the whole step."""
    medians = {part: statistics.median(values) for part, values in times.items()}
    return medians | {"whole step": statistics.median(map(sum, zip(*times.values())))}


def step_table(medians: dict[str, float], batch_size: int) -> str:
    """Median milliseconds, images/s and share of the step for each part, and the whole step."""
    whole = medians["whole step"]
    lines = ["| part | ms/step | images/s of the part | share of the step |", "|---|---:|---:|---:|"]
    for part in (*STEP_PARTS, "whole step"):
        seconds = medians[part]
        share = "100%" if part == "whole step" else f"{100 * seconds / whole:.1f}%"
        lines.append(f"| {part} | {1000 * seconds:.1f} | {batch_size / seconds:.0f} | {share} |")
    return "\n".join(lines)


@contextlib.contextmanager
def timed_embedding(into: list[float]) -> Iterator[None]:
    """Record the seconds and images of every :func:`hcl.train.embed_dataset` call evaluation makes."""
    original = evaluate_module.embed_dataset

    def embed(model, dataset, **options):  # noqa: ANN001, ANN003, ANN202 - same signature as wrapped
        start = time.perf_counter()
        result = original(model, dataset, **options)
        into.extend([time.perf_counter() - start, len(dataset)])
        return result

    evaluate_module.embed_dataset = embed
    try:
        yield
    finally:
        evaluate_module.embed_dataset = original


def time_cell(cfg: TrainConfig, epochs: int) -> dict[str, tuple[float, int]]:
    """Seconds and images of one study cell's parts: training, embedding for evaluation, metrics.

    The cell is :mod:`hcl.study.cell`'s work: ``fit`` (here without its own evaluation) and
    :func:`hcl.train.evaluate_embeddings` on the features and the projection.
    """
    cfg = dataclasses.replace(cfg, epochs=epochs, eval_every=-1)
    start = time.perf_counter()
    result = fit(cfg, overwrite=True)
    train_s = time.perf_counter() - start
    embedded: list[float] = []
    start = time.perf_counter()
    with timed_embedding(embedded):
        evaluate_embeddings(
            result.run_dir, embeddings=("features", "projection"), cfg=cfg, model=result.model, step=result.step
        )
    eval_s = time.perf_counter() - start
    embed_s, embed_images = sum(embedded[0::2]), int(sum(embedded[1::2]))
    return {
        "training": (train_s, result.step * cfg.batch_size),
        "embedding for evaluation": (embed_s, embed_images),
        "metrics": (eval_s - embed_s, embed_images),
    }


def readme_block(record: dict[str, object]) -> str:
    """The README block of a saved record: the demo tables (step and cell), or the models
    section's setup line and table."""
    if "setup" in record:
        return f"{models_text(record['setup'], record['rows'])}\n\n{describe(record)}"
    parts = []
    for row in record["rows"]:
        if row["section"] == "step":
            parts.append(f"{row['title']}\n\n{step_table(row['seconds'], row['batch_size'])}")
        elif row["section"] == "cell":
            cell = {part: tuple(value) for part, value in row["parts"].items()}
            parts.append(f"{row['title']}\n\n{cell_table(cell)}")
    return "\n\n".join([*parts, describe(record)])


def cell_table(parts: dict[str, tuple[float, int]]) -> str:
    """Seconds, images/s and share of the cell for each part, and the whole cell."""
    whole = sum(seconds for seconds, _ in parts.values())
    lines = ["| part | s | images | images/s | share of the cell |", "|---|---:|---:|---:|---:|"]
    for part in CELL_PARTS:
        seconds, images = parts[part]
        lines.append(f"| {part} | {seconds:.1f} | {images} | {images / seconds:.0f} | {100 * seconds / whole:.1f}% |")
    trained = parts["training"][1]
    lines.append(f"| whole cell | {whole:.1f} | {trained} trained | {trained / whole:.0f} | 100% |")
    return "\n".join(lines)


def tree_labels(batch: int, generator: torch.Generator) -> torch.Tensor:
    """Pairs of samples sharing a leaf of a 4-level tree (4 x 5 x 5 x 10 = 1000 leaves).

    Shape:
        Returns (batch, 4) int64, column 0 coarsest; global node ids per level.
    """
    leaves = torch.randint(0, NUM_LEAVES, ((batch + 1) // 2,), generator=generator).repeat_interleave(2)[:batch]
    return torch.stack([leaves // 250, leaves // 50, leaves // 10, leaves], dim=1)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def time_steps(
    model_key: str, variant: str, args: argparse.Namespace, device: torch.device
) -> tuple[list[float], float | None]:
    """Seconds of each timed step, and the peak CUDA memory in GiB (None off CUDA)."""
    loss_name, cuda_graphs = VARIANTS[variant]
    backbone, size, small = MODELS[model_key]
    torch.manual_seed(0)
    model = build_encoder(
        backbone, small_images=small, num_classes=NUM_LEAVES if loss_name == "cross_entropy" else None
    ).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if args.compile else model
    objective = build_objective(loss_name, cuda_graphs=cuda_graphs)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, NUM_VIEWS, 3, size, size, generator=generator).to(device)
    labels = tree_labels(args.batch_size, generator).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for step in range(args.warmup + args.steps):
        synchronize(device)
        start = time.perf_counter()
        train_step(
            net,
            objective,
            images,
            labels,
            optimizer,
            scaler=scaler,
            precision=args.precision,
            channels_last=args.channels_last,
            step=step,
        )
        synchronize(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return times, peak


def time_loss_only(args: argparse.Namespace, device: torch.device, cuda_graphs: bool) -> float:
    """Median seconds of the HiMulConE forward + backward alone on (B, 2, 128) float32 features."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(args.batch_size, NUM_VIEWS, 128, generator=generator).to(device).requires_grad_()
    labels = tree_labels(args.batch_size, generator).to(device)
    objective = build_objective("himulcone", cuda_graphs=cuda_graphs)
    times = []
    for step in range(args.warmup + args.steps):
        synchronize(device)
        start = time.perf_counter()
        objective(features, labels).backward()
        synchronize(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", nargs="+", choices=("step", "cell", "models"), default=["step", "cell", "models"])
    parser.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda or mps")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--demo-steps", type=int, default=10, help="timed steps of the demo (step section)")
    parser.add_argument("--cell-epochs", type=int, default=1, help="epochs of the study cell (cell section)")
    parser.add_argument("--batch-size", type=int, default=None, help="models: samples per step (256 GPU, 8 CPU)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32", help="models section")
    parser.add_argument("--channels-last", action="store_true", help="models section")
    parser.add_argument("--compile", action="store_true", help="models section: torch.compile the model")
    parser.add_argument("--steps", type=int, default=None, help="models: timed steps (default: 20 GPU, 2 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 5 GPU, 1 CPU)")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    add_record_arguments(parser)
    args = parser.parse_args(argv)
    load = load_at_start()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    models_only = set(args.sections) == {"models"}
    if args.record is not None and "models" in args.sections and not models_only:
        parser.error(
            "--record saves one README block: record the step and cell sections, or the models section "
            "(its record is train-DEVICE-models), in separate runs"
        )
    record_name = check_record_arguments(parser, args, RECORD_PREFIX + device.type + ("-models" if models_only else ""))
    accelerated = device.type != "cpu"
    args.warmup = args.warmup if args.warmup is not None else (5 if accelerated else 1)
    threads = f"{torch.get_num_threads()} thread{'' if torch.get_num_threads() == 1 else 's'}"
    print(f"torch {torch.__version__}; {platform.processor() or platform.machine()}, {threads}; medians\n")
    rows: list[dict[str, object]] = []
    if "step" in args.sections or "cell" in args.sections:
        with tempfile.TemporaryDirectory() as scratch:
            cfg, data = demo_config(scratch)
            cfg = dataclasses.replace(cfg, device=str(device))
            what = f"{cfg.backbone} width {cfg.width}, batch {cfg.batch_size} x {cfg.num_views} views, {data}"
            if "step" in args.sections:
                seconds = step_row(time_demo_step(cfg, args.demo_steps, args.warmup))
                title = f"Demo training step ({what}; {device}, {threads}, median of {args.demo_steps} steps):"
                rows.append({"section": "step", "title": title, "seconds": seconds, "batch_size": cfg.batch_size})
                print(f"### {title}\n\n{step_table(seconds, cfg.batch_size)}\n", flush=True)
            if "cell" in args.sections:
                parts = time_cell(cfg, args.cell_epochs)
                title = (
                    f"Study cell ({what}; {device}, {threads}; {args.cell_epochs} epoch(s) of "
                    f"{cfg.train_subset or 'all'} images, then both embeddings evaluated):"
                )
                rows.append({"section": "cell", "title": title, "parts": parts})
                print(f"### {title}\n\n{cell_table(parts)}\n", flush=True)
    if "models" in args.sections:
        args.batch_size = args.batch_size or (256 if accelerated else 8)
        args.steps = args.steps or (20 if accelerated else 2)
        models = models_section(args, device)
        print(models_text(models["setup"], models["rows"]), flush=True)
        finish(args, record_name, models["rows"], readme_block, load, {"setup": models["setup"]}, device=str(device))
    if rows:
        finish(args, record_name, rows, readme_block, load)


def models_section(args: argparse.Namespace, device: torch.device) -> dict[str, object]:
    """Time the ResNet steps: HiMulConE's against cross-entropy's, and the loss alone; return the
    setup (device and card, precision, batch, the loss-alone times) and one row per (model,
    variant), as :func:`models_text` prints them."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        threads = torch.get_num_threads()
        name = f"{platform.processor() or platform.machine()}, {threads} thread{'' if threads == 1 else 's'}"
    variants = [v for v in VARIANTS if device.type == "cuda" or VARIANTS[v][1] is True or v == "cross_entropy"]
    graph_settings = sorted({VARIANTS[v][1] for v in variants[1:]})
    loss_only = {graphs: time_loss_only(args, device, graphs) for graphs in graph_settings}
    rows = []
    for model_key in args.models:
        backbone, size, small = MODELS[model_key]
        medians = {}
        for variant in variants:
            times, peak = time_steps(model_key, variant, args, device)
            medians[variant] = statistics.median(times)
            hierarchical = variant != "cross_entropy"
            rows.append(
                {
                    "section": "models",
                    "model": backbone,
                    "small_stem": small,
                    "input_px": size,
                    "variant": variant,
                    "ms": 1000 * medians[variant],
                    "images_per_s": args.batch_size / medians[variant],
                    "peak_gib": peak,
                    "vs_ce": medians[variant] / medians["cross_entropy"] - 1 if hierarchical else None,
                    "loss_share": loss_only[VARIANTS[variant][1]] / medians[variant] if hierarchical else None,
                }
            )
            print(f"timed {model_key}, {variant}", file=sys.stderr, flush=True)
    setup = {
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "batch_size": args.batch_size,
        "views": NUM_VIEWS,
        "precision": args.precision,
        "channels_last": args.channels_last,
        "compile": args.compile,
        "steps": args.steps,
        "warmup": args.warmup,
        "loss_only_ms": {
            ("as a CUDA graph" if graphs and device.type == "cuda" else "eager"): 1000 * seconds
            for graphs, seconds in loss_only.items()
        },
    }
    return {"setup": setup, "rows": rows}


def models_text(setup: dict[str, object], rows: list[dict[str, object]]) -> str:
    """The models section as printed and in the README: the setup line naming the device's card,
    the table (ms/step, images/s, views/s, peak GiB, step time against cross-entropy, the loss's
    share of the step) and what the loss alone takes."""
    options = "".join(
        text for key, text in (("channels_last", ", channels_last"), ("compile", ", compiled")) if setup[key]
    )
    lines = [
        f"device: {setup['device']} ({setup['device_name']}); torch {setup['torch']}; batch {setup['batch_size']} x "
        f"{setup['views']} views; {setup['precision']}{options}; median of {setup['steps']} steps after "
        f"{setup['warmup']} warm-up",
        "",
        "| model | input | loss | ms/step | images/s | views/s | peak GiB | step time vs CE | loss share |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        overhead = "-" if row["vs_ce"] is None else f"{100 * row['vs_ce']:+.1f}%"
        share = "-" if row["loss_share"] is None else f"{100 * row['loss_share']:.1f}%"
        peak = "-" if row["peak_gib"] is None else f"{row['peak_gib']:.1f}"
        lines.append(
            f"| {row['model']}{' (small stem)' if row['small_stem'] else ''} | {row['input_px']} px | "
            f"{row['variant']} | {row['ms']:.1f} | {row['images_per_s']:.0f} | "
            f"{setup['views'] * row['images_per_s']:.0f} | {peak} | {overhead} | {share} |"
        )
    alone = ", ".join(f"{ms:.2f} ms {how}" for how, ms in setup["loss_only_ms"].items())
    lines += [
        "",
        f"loss share: HiMulConE forward + backward alone ({alone}, on (B, {setup['views']}, 128) features, 4 "
        "levels) as a fraction of the step. The CE step uses a linear classifier instead of the MLP projection "
        "head, so 'step time vs CE' also includes the head. Off CUDA the graph option has no effect.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
