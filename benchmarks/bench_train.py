"""Training throughput: HiMulConE against cross-entropy, the same step otherwise, in one run.

For ResNet-18 at 32 px (small-image stem) and ResNet-50 at 224 px, time a full training step
(forward of B samples x 2 views, loss, backward, SGD update, via ``hcl.train.train_step``) with
the HiMulConE loss over 4 label levels and with cross-entropy on the finest label over the same
views, and print a markdown table with images/s, the step time against cross-entropy, and the share of
the step that the HiMulConE loss itself takes (timed alone on the same features).

    python benchmarks/bench_train.py                       # CPU: small defaults, ~1-2 minutes
    python benchmarks/bench_train.py --device cuda --batch-size 256 --precision bf16 --channels-last

Data are random tensors (this measures compute, not data loading); labels come from a 4-level
tree with the pairs the hierarchical sampler would put in a batch.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from hcl.models import build_encoder
from hcl.train import build_objective, resolve_device, train_step

MODELS = {"resnet18_32": ("resnet18", 32, True), "resnet50_224": ("resnet50", 224, False)}
# Step variants: (loss, replay the loss as a CUDA graph). The eager HiMulConE row is CUDA only.
VARIANTS = {
    "cross_entropy": ("cross_entropy", False),
    "himulcone": ("himulcone", True),
    "himulcone, no CUDA graph": ("himulcone", False),
}
NUM_VIEWS = 2
NUM_LEAVES = 1000


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda or mps")
    parser.add_argument("--batch-size", type=int, default=None, help="samples per step (default: 256 GPU, 8 CPU)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 GPU, 2 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 5 GPU, 1 CPU)")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    args = parser.parse_args()
    device = resolve_device(args.device)
    accelerated = device.type != "cpu"
    args.batch_size = args.batch_size or (256 if accelerated else 8)
    args.steps = args.steps or (20 if accelerated else 2)
    args.warmup = args.warmup if args.warmup is not None else (5 if accelerated else 1)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(
        f"device: {device} ({name}); torch {torch.__version__}; batch {args.batch_size} x {NUM_VIEWS} views; "
        f"{args.precision}{', channels_last' if args.channels_last else ''}{', compiled' if args.compile else ''}; "
        f"median of {args.steps} steps after {args.warmup} warm-up\n"
    )
    variants = [v for v in VARIANTS if device.type == "cuda" or VARIANTS[v][1] is True or v == "cross_entropy"]
    loss_only = {
        graphs: time_loss_only(args, device, graphs) for graphs in sorted({VARIANTS[v][1] for v in variants[1:]})
    }
    print("| model | input | loss | ms/step | images/s | views/s | peak GiB | step time vs CE | loss share |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for model_key in args.models:
        medians = {}
        for variant in variants:
            times, peak = time_steps(model_key, variant, args, device)
            medians[variant] = statistics.median(times)
            images_per_s = args.batch_size / medians[variant]
            hierarchical = variant != "cross_entropy"
            overhead = f"{100 * (medians[variant] / medians['cross_entropy'] - 1):+.1f}%" if hierarchical else "-"
            share = f"{100 * loss_only[VARIANTS[variant][1]] / medians[variant]:.1f}%" if hierarchical else "-"
            backbone, size, small = MODELS[model_key]
            print(
                f"| {backbone}{' (small stem)' if small else ''} | {size} px | {variant} | "
                f"{1000 * medians[variant]:.1f} | {images_per_s:.0f} | {NUM_VIEWS * images_per_s:.0f} | "
                f"{'-' if peak is None else f'{peak:.1f}'} | {overhead} | {share} |",
                flush=True,
            )
    alone = ", ".join(
        f"{1000 * t:.2f} ms {'as a CUDA graph' if graphs and device.type == 'cuda' else 'eager'}"
        for graphs, t in loss_only.items()
    )
    print(
        f"\nloss share: HiMulConE forward + backward alone ({alone}, on (B, 2, 128) features, 4 levels) as a "
        "fraction of the step. The CE step uses a linear classifier instead of the MLP projection head, so "
        "'step time vs CE' also includes the head. Off CUDA the graph option has no effect."
    )


if __name__ == "__main__":
    main()
