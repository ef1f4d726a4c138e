"""The ``hcl`` command line: train, evaluate, embed, info, the demo and studies.

    hcl train --config configs/fashion_mnist_himulcone.yaml [--set key=value ...] [--resume]
    hcl evaluate runs/my_run [--split test]
    hcl embed runs/my_run --split test --out emb.npz
    hcl info
    hcl demo --out runs/demo [--update-readme README.md]
    hcl study --config configs/study_fashion_mnist.yaml [--set key=value ...] [--workers N] [--markdown OUT.md]
    hcl study-report studies/fashion_mnist [--markdown OUT.md] [--headline [--choose-among V ...]] [--html] [--into FILE.md]

``python -m hcl ...`` is the same, and ``torchrun --nproc_per_node=N -m hcl train ...`` trains
with DistributedDataParallel. ``--set`` keys and types come from :class:`hcl.train.TrainConfig`.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import platform
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

# Exit codes: 0 done, 1 a failure during the run, 2 bad input, 130 stopped by Ctrl-C.
_EXIT_FAILURE, _EXIT_USAGE, _EXIT_INTERRUPTED = 1, 2, 130


def _config_keys_help() -> str:
    from hcl.train.config import TrainConfig

    names = [f.name for f in dataclasses.fields(TrainConfig)]
    return "config keys: " + ", ".join(names)


def _add_overrides(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--set KEY=VALUE ...``, collected into ``args.overrides``."""
    parser.add_argument(
        "--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE", help=help_text
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hcl", description="Hierarchical multi-label contrastive learning (HiMulCon, HiConE, HiMulConE)."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train an encoder from a config",
        epilog=_config_keys_help(),
        description="Train an encoder. Under torchrun, each process trains its shard with DDP.",
    )
    train.add_argument("--config", type=Path, help="YAML or JSON config (default: the TrainConfig defaults)")
    _add_overrides(train, "override config keys, e.g. --set lr=0.05 epochs=20 output_dir=runs/x")
    group = train.add_mutually_exclusive_group()
    group.add_argument(
        "--resume",
        action="store_true",
        help="continue from <output_dir>/checkpoint.pt (or checkpoint.prev.pt when it is damaged); a run without "
        "a loadable checkpoint is refused and left as it is; a folder holding no run at all starts fresh",
    )
    group.add_argument("--overwrite", action="store_true", help="start fresh over an existing run directory")

    evaluate = commands.add_parser("evaluate", help="evaluate a run per level; writes results.json")
    evaluate.add_argument("run_dir", type=Path)
    evaluate.add_argument("--split", help="split to evaluate (default: the config's eval_split)")
    evaluate.add_argument("--query-split", help="query split searched against --split as the gallery")
    evaluate.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best available)")

    embed = commands.add_parser("embed", help="write the embeddings of a split to .npz")
    embed.add_argument("run_dir", type=Path)
    embed.add_argument("--split", default="test")
    embed.add_argument("--out", type=Path, help="output .npz (default: <run_dir>/embeddings_<split>.npz)")
    embed.add_argument("--which", choices=("features", "projection"), help="default: the config's embedding")
    embed.add_argument("--device", default=None)

    commands.add_parser("info", help="versions, devices and data sets found")

    demo = commands.add_parser(
        "demo",
        help="train SupCon, HiMulCon and HiMulConE on Fashion-MNIST, evaluate both embeddings, report",
        description="Train the three demo runs (only the loss differs), evaluate each on the backbone features and "
        "the projection head, print the per-level tables; writes <out>/metrics.json, <out>/demo_table.md and "
        "<out>/report.html.",
    )
    demo.add_argument("--out", type=Path, default=Path("runs/demo"))
    demo.add_argument("--configs", type=Path, default=None, help="folder with the demo configs")
    _add_overrides(demo, "overrides applied to every run")
    demo.add_argument("--no-report", action="store_true", help="skip report.html (and its UMAP)")
    demo.add_argument(
        "--update-readme",
        type=Path,
        metavar="README",
        help="then write docs/demo_results.json beside README from <out>/metrics.json and regenerate the table "
        "between README's <!-- demo-table:start/end --> markers from it",
    )
    demo.add_argument(
        "--no-train",
        action="store_true",
        help="with --update-readme: train nothing, use the demo already in --out",
    )

    study = commands.add_parser(
        "study",
        help="run a grid of loss variants x seeds x protocols; writes study.json and study.html",
        description="Run every unfinished cell of a study (finished cells are skipped, unfinished ones resume), "
        "then aggregate over seeds. Exits 1 when a cell failed.",
    )
    study.add_argument("--config", type=Path, required=True, help="study YAML (see hcl.study.StudyConfig)")
    _add_overrides(
        study, "override study keys, dotted: --set workers=2 seeds=[0,1] base.epochs=1 variants.SupCon.lr=0.1"
    )
    study.add_argument("--workers", type=int, help="cells run at once (default: the config's, else the CPU cores)")
    study.add_argument("--no-report", action="store_true", help="skip study.html")
    study.add_argument(
        "--markdown", type=Path, metavar="OUT.md", help="also write the results as Markdown (hcl.study.study_markdown)"
    )

    report = commands.add_parser(
        "study-report",
        help="a finished study's results as Markdown (and study.html), from study.json alone",
        description="Write a study's results from its study.json without training anything: the Markdown "
        "account (provenance, findings, tables) printed or written to --markdown; --headline for a few lines.",
    )
    report.add_argument("study", type=Path, help="the study folder or its study.json")
    report.add_argument("--markdown", type=Path, metavar="OUT.md", help="write the Markdown here (default: print it)")
    report.add_argument("--headline", action="store_true", help="only the headline: largest effects and nulls")
    report.add_argument("--html", action="store_true", help="also redraw study.html next to study.json")
    report.add_argument(
        "--choose-among",
        nargs="+",
        default=(),
        metavar="VARIANT",
        help="with --headline: also the rule's choice among these variants (names or patterns such as "
        "'HiMulConE*'; see hcl.study.choose_variant)",
    )
    report.add_argument(
        "--into",
        type=Path,
        metavar="FILE.md",
        help="put the Markdown between FILE.md's <!-- study-results:start/end --> markers "
        "(with --headline: <!-- study-summary:start/end -->), e.g. README.md or docs/study.md",
    )
    report.add_argument(
        "--block",
        metavar="NAME",
        help="with --into: the markers' name instead, <!-- NAME:start/end --> (several studies in one file)",
    )
    return parser


def _train(args: argparse.Namespace) -> int:
    from hcl.train import TrainConfig, apply_overrides, fit, load_config

    cfg = load_config(args.config, args.overrides) if args.config else apply_overrides(TrainConfig(), args.overrides)
    result = fit(cfg, resume=args.resume, overwrite=args.overwrite)
    if result.interrupted:
        return _EXIT_INTERRUPTED
    if result.results is not None:
        print(_results_table({cfg.loss: result.results}))
    print(f"run directory: {result.run_dir}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from hcl.rundir import RESULTS_FILE
    from hcl.train import evaluate_run

    results = evaluate_run(args.run_dir, split=args.split, query_split=args.query_split, device=args.device)
    print(_results_table({results["loss"]: results}))
    print(f"wrote {args.run_dir / RESULTS_FILE}")
    return 0


def _embed(args: argparse.Namespace) -> int:
    from hcl.rundir import embeddings_path, save_embeddings
    from hcl.train import build_split, embed_dataset, load_run, resolve_device

    device = resolve_device(args.device or "auto")
    cfg, model, _ = load_run(args.run_dir, device=device)
    dataset = build_split(cfg, args.split)
    embeddings, labels, indices = embed_dataset(
        model, dataset, which=args.which or cfg.embedding, batch_size=cfg.eval_batch_size, device=device
    )
    out = args.out or embeddings_path(args.run_dir, args.split)
    save_embeddings(out, embeddings, labels, dataset.hierarchy, indices)
    print(f"wrote {len(embeddings)} embeddings of dimension {embeddings.shape[1]} to {out}")
    return 0


def _info(_: argparse.Namespace) -> int:
    import numpy as np
    import torch
    import torchvision

    import hcl
    from hcl.train import resolve_device

    lines = [
        f"hcl {hcl.__version__}",
        f"python {platform.python_version()} ({platform.platform()})",
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, numpy {np.__version__}",
        f"cpu threads: {torch.get_num_threads()}",
    ]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            lines.append(
                f"cuda:{index} {props.name}, {props.total_memory / 2**30:.0f} GiB, "
                f"compute capability {props.major}.{props.minor}, bf16 {torch.cuda.is_bf16_supported()}"
            )
    else:
        lines.append("cuda: not available")
    lines.append(f"mps: {'available' if torch.backends.mps.is_available() else 'not available'}")
    lines.append(f"default device: {resolve_device('auto')}")
    fashion = Path("/usr/share/datasets/fashion-mnist")
    lines.append(
        f"Fashion-MNIST (Debian dataset-fashion-mnist): {'found' if fashion.is_dir() else 'not found'} at {fashion}"
    )
    print("\n".join(lines))
    return 0


def _results_table(runs: dict[str, dict]) -> str:
    """Per-level metrics of one or more evaluated runs, side by side, as plain text; a run named
    after a config loss is headed by the loss's proper name (HiMulConE, SupCon)."""
    from hcl.losses import loss_display_name

    names = list(runs)
    first = runs[names[0]]
    level_names = first.get("levels") or [f"level{i}" for i in range(len(first["retrieval"]))]
    # recall@1 equals precision@1 by definition (a relevant item among the 1 nearest): shown once.
    metrics = [m for m in first["retrieval"]["0"] if m not in ("num_queries", "recall@1")]
    shown = [loss_display_name(n) for n in names]
    width = max(12, *(len(n) for n in shown))
    header = f"{'level':<14}{'metric':<14}" + "".join(f"{n:>{width + 2}}" for n in shown)
    rows = [header, "-" * len(header)]
    for level, level_name in enumerate(level_names):
        for metric in metrics:
            values = "".join(f"{runs[n]['retrieval'][str(level)][metric]:>{width + 2}.4f}" for n in names)
            rows.append(f"{level_name:<14}{metric:<14}{values}")
        if "knn_accuracy" in first:
            values = "".join(f"{runs[n]['knn_accuracy'][str(level)]:>{width + 2}.4f}" for n in names)
            rows.append(f"{level_name:<14}{'knn_accuracy':<14}{values}")
    rows.append(f"{'(all)':<14}{'cpcc':<14}" + "".join(f"{runs[n]['cpcc']:>{width + 2}.4f}" for n in names))
    return "\n".join(rows)


def _demo(args: argparse.Namespace) -> int:
    from hcl.demo import README_BLOCK, run_demo, update_readme
    from hcl.textblock import read_marked_block

    if args.no_train and args.update_readme is None:
        raise ValueError("--no-train only makes sense with --update-readme README")
    if args.update_readme is not None:
        read_marked_block(args.update_readme, README_BLOCK)  # missing markers fail now, not after training
    if not args.no_train:
        run_demo(
            args.out,
            configs_dir=args.configs,
            overrides=args.overrides,
            report=not args.no_report,
            print_table=lambda table: print(table, end=""),
        )
    if args.update_readme is not None:
        results = update_readme(args.update_readme, args.out)
        print(f"wrote the demo results of {args.out} into {results} and its table into {args.update_readme}")
    return 0


def _study(args: argparse.Namespace) -> int:
    from hcl.study import StudyCellError, run_study, write_study_markdown

    try:
        result = run_study(args.config, overrides=args.overrides, workers=args.workers, report=not args.no_report)
    except StudyCellError as error:
        print(f"hcl study: error: {error}", file=sys.stderr)
        if args.markdown:  # the finished cells' numbers, with the failures listed
            print(f"wrote {write_study_markdown(error.result.output_dir, args.markdown)}")
        print(f"study files (the other cells): {error.result.output_dir}; rerun to retry the rest")
        return _EXIT_FAILURE if error.result.failed else _EXIT_INTERRUPTED
    files = "study.json" + ("" if args.no_report else " and study.html")
    print(f"all {len(result.records)} cells finished ({len(result.ran)} run now); wrote {files} in {result.output_dir}")
    if args.markdown:
        print(f"wrote {write_study_markdown(result.output_dir, args.markdown)}")
    return 0


def _study_report(args: argparse.Namespace) -> int:
    from hcl.atomic import write_text_atomic
    from hcl.study import read_study, study_headline, study_markdown, write_study_report
    from hcl.textblock import replace_marked_block

    study = read_study(args.study)
    # Inside another page (--into) the account is a section of it, its headings one level down.
    if args.choose_among and not args.headline:
        raise ValueError("--choose-among goes with --headline")
    if args.headline:
        text = study_headline(study, choose_among=args.choose_among)
    else:
        text = study_markdown(study, heading_level=2 if args.into else 1)
    if args.markdown:
        print(f"wrote {write_text_atomic(args.markdown, text)}")
    if args.into:
        block = args.block or ("study-summary" if args.headline else "study-results")
        print(f"wrote the {block} block of {replace_marked_block(args.into, block, text)}")
    if not (args.markdown or args.into):
        print(text, end="")
    if args.html:
        source = args.study / "study.json" if args.study.is_dir() else args.study
        print(f"wrote {write_study_report(source)}", file=sys.stderr if not args.markdown else sys.stdout)
    return 0


_COMMANDS = {
    "train": _train,
    "evaluate": _evaluate,
    "embed": _embed,
    "info": _info,
    "demo": _demo,
    "study": _study,
    "study-report": _study_report,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (the ``hcl`` console script exits with it).

    Errors are reported in one line naming the problem (exit 2 for bad input such as an unknown
    config key, or a full disk, which the user must fix before a rerun; 1 for a failure during the
    run such as a NaN loss); set ``HCL_DEBUG=1`` for the full traceback.
    """
    args = _parser().parse_args(argv)
    if os.environ.get("HCL_DEBUG"):  # full tracebacks instead of one-line errors
        return _COMMANDS[args.command](args)
    with warnings.catch_warnings():
        # Warnings as one line each, like the errors (Python's form adds the warning's source line).
        warnings.showwarning = lambda message, *_, **__: print(
            f"hcl {args.command}: warning: {message}", file=sys.stderr
        )
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """The command, its errors as one line and an exit status (see :func:`main`)."""
    from hcl.train import NonFiniteLossError

    try:
        return _COMMANDS[args.command](args)
    except NonFiniteLossError as error:
        print(f"hcl {args.command}: error: {error}", file=sys.stderr)
        return _EXIT_FAILURE
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, ImportError) as error:
        print(f"hcl {args.command}: error: {error}", file=sys.stderr)
        return _EXIT_USAGE
    except (OSError, RuntimeError) as error:
        print(f"hcl {args.command}: error: {error}", file=sys.stderr)
        out_of_space = isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
        return _EXIT_USAGE if out_of_space else _EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"hcl {args.command}: interrupted", file=sys.stderr)
        return _EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
