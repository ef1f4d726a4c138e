"""Two processes, gloo, CPU: DDP with the gathered loss equals one process on the whole batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from hcl.train import all_gather_no_grad, all_gather_with_grad

WORKER = Path(__file__).resolve().parent / "_ddp_worker.py"
pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")


def _run_ranks(commands: list[list[str]], envs: list[dict[str, str]], timeout: float = 240) -> None:
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for cmd, env in zip(commands, envs)
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=timeout)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output[-3000:]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", **extra)
    env.pop("HCL_DEBUG", None)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run both ranks once (startup dominates the cost); the tests below read what they saved."""
    out = tmp_path_factory.mktemp("ddp")
    cfg = {
        "dataset": "synthetic",
        "data_options": {"depth": 3, "branching": [2, 2, 3], "samples_per_leaf": 8, "image_size": 16, "cache": False},
        "backbone": "compact_cnn",
        "width": 4,
        "embedding_dim": 8,
        "loss": "himulcon",
        "batch_size": 32,
        "epochs": 1,
        "eval_every": -1,
        "progress": False,
        "device": "cpu",
        "output_dir": str(out / "run"),
    }
    port = str(_free_port())
    command = [sys.executable, str(WORKER), "--out", str(out), "--config", json.dumps(cfg)]
    envs = [
        _env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        for r in range(2)
    ]
    _run_ranks([command, command], envs)
    return out


def test_loss_and_gradients_match_a_single_process_over_the_whole_batch(two_ranks: Path) -> None:
    ranks = [torch.load(two_ranks / f"step_rank{r}.pt", weights_only=True) for r in range(2)]
    assert set(ranks[0]) == {"himulcone", "himulcon", "supcon", "simclr", "cross_entropy"}
    for name, reference in ((n, v["reference"]) for n, v in ranks[0].items()):
        for rank in ranks:
            result = rank[name]
            assert result["loss"] == pytest.approx(reference["loss"], rel=1e-5), name
            # all_gather_with_grad sums every rank's gradient and DDP averages over ranks: the
            # result is the single-process gradient, neither halved nor doubled.
            for got, want in zip(result["grads"], reference["grads"]):
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6, msg=name)
            assert result["labels"].shape == (8, 3)


def test_fit_under_two_processes_keeps_ranks_in_sync(two_ranks: Path) -> None:
    results = [torch.load(two_ranks / f"fit_rank{r}.pt", weights_only=True) for r in range(2)]
    # 96 samples, 16 per rank and step: 3 steps an epoch.
    assert results[0]["step"] == results[1]["step"] == 3
    # DDP keeps the parameters identical; batch-norm running statistics are per rank (rank 0's
    # are broadcast before each forward pass and saved in the checkpoint).
    parameters = [
        k for k in results[0]["model"] if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    ]
    assert len(parameters) == 19
    for key in parameters:
        torch.testing.assert_close(results[1]["model"][key], results[0]["model"][key], rtol=0, atol=0, msg=key)
    checkpoint = torch.load(two_ranks / "run" / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 3
    lines = (two_ranks / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["step"] == 3  # only rank 0 writes


def test_gathers_are_identities_without_a_process_group() -> None:
    x = torch.randn(3, 2, requires_grad=True)
    assert all_gather_with_grad(x) is x
    labels = torch.arange(3)
    assert all_gather_no_grad(labels) is labels
