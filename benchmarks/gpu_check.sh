#!/usr/bin/env bash
# The GPU checks, as one script for a short lease on a CUDA machine (run from the repo root; about
# 4-6 minutes on an H200, at most ~9.5 minutes: every command runs under its own `timeout`).
#
#  1. the CUDA tests of the losses (CUDA-graph replays included), the numerical stress and metrics;
#  2. the losses, 1 thread, fp32 and bf16, with and without CUDA graphs: HiMulConE's readings
#     against flat SupCon and the limit, with the anchors (reference mode, PML, the loop
#     formulation) at 1,024 and 4,096 views (record losses-cuda), and without the loop
#     formulation and with fewer rounds at 8,192 and 16,384 views (record losses-cuda-large);
#  3. the training step of ResNet-18 (32 px) and ResNet-50 (224 px), bf16, channels_last,
#     batch 256 x 2 views: HiMulConE with and without its CUDA graph against cross-entropy
#     (record train-cuda-models, naming the card);
#  4. the losses on this host's CPU, 2 threads (record losses-cpu-idle-host); WITH_METRICS=1 adds
#     the retrieval benchmark on the GPU (console only; up to 2 more minutes).
#
# Logs and records go to $OUT (or ./gpu-out). To put the records in the README: copy each
# $OUT/NAME.json to docs/benchmarks/NAME.json (a record's file is named after it), then run
#     python benchmarks/_record.py README.md docs/benchmarks/NAME.json ...
# which writes the block between `<!-- bench-NAME:start -->` and `<!-- bench-NAME:end -->`; where the
# README lacks these two marker lines it stops and prints them: paste them where the table belongs
# (with a sentence saying what it shows) and run it again. tests/test_benchmark_records.py then
# checks every block against its record. Extra wheels (pytorch-metric-learning, faiss-cpu) may be
# put in .whl/ beforehand for machines without internet.
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONPATH="$PWD:/tmp/site" PYTHONUNBUFFERED=1 HCL_FAST=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee "$OUT/device.txt"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/losses tests/reliability/test_numerical_stress.py \
  tests/metrics -k "cuda or gpu or graphed" 2>&1 | tail -25 | tee "$OUT/tests_cuda.txt"
LOSSES=(python3 benchmarks/bench_losses.py --device cuda --threads 1 --dtypes fp32,bf16 --graph off,on --min-seconds 0)
timeout 100 "${LOSSES[@]}" --sizes 1024,4096 --repeats 20 \
  --record "$OUT/losses-cuda.json" 2>&1 | tee "$OUT/bench_losses_cuda.md"
timeout 120 python3 benchmarks/bench_train.py --device cuda --sections models --precision bf16 --channels-last \
  --batch-size 256 --record "$OUT/train-cuda-models.json" 2>&1 | tee "$OUT/bench_train_cuda.md"
timeout 150 "${LOSSES[@]}" --sizes 8192,16384 --repeats 10 --skip loop --tag large \
  --record "$OUT/losses-cuda-large.json" 2>&1 | tee "$OUT/bench_losses_cuda_large.md"
# The CPU figures on this host's idle cores, 2 threads as on the development machines.
timeout 60 python3 benchmarks/bench_losses.py --device cpu --threads 2 --sizes 1024 --repeats 40 --tag idle-host \
  --record "$OUT/losses-cpu-idle-host.json" 2>&1 | tee "$OUT/bench_losses_cpu2.md"
if [ "${WITH_METRICS:-0}" = 1 ]; then
  timeout 120 python3 benchmarks/bench_metrics.py --device cuda --skip-pml 2>&1 | tee "$OUT/bench_metrics_cuda.md"
fi
