#!/usr/bin/env bash
# The GPU checks, as one script for a short lease on a CUDA machine (run from the repo root).
# CUDA tests of the losses and numerical stress, then the loss, training and metrics benchmarks
# on the GPU. Logs and benchmark records (*.json) go to $OUT (or ./gpu-out); copy a record to
# docs/benchmarks/ and run `python benchmarks/_record.py README.md docs/benchmarks/NAME.json` to
# write its README block (the block's markers must be in the README). Extra wheels (pytorch-metric-learning, faiss-cpu)
# may be put in .whl/ beforehand for machines without internet.
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
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/losses tests/reliability/test_numerical_stress.py \
  tests/metrics -k "cuda or gpu" 2>&1 | tail -25 | tee "$OUT/tests_cuda.txt"
timeout 150 python3 benchmarks/bench_losses.py --device cuda --sizes 1024,4096,8192,16384 --threads 1 \
  --record "$OUT/losses-cuda.json" 2>&1 | tee "$OUT/bench_losses_cuda.md"
# The CPU figures on this host's idle cores, 2 threads as on the development machines.
timeout 90 python3 benchmarks/bench_losses.py --device cpu --threads 2 --sizes 1024 --repeats 40 --tag idle-host \
  --record "$OUT/losses-cpu-idle-host.json" 2>&1 | tee "$OUT/bench_losses_cpu2.md"
timeout 150 python3 benchmarks/bench_train.py --device cuda --sections models --precision bf16 --channels-last --batch-size 256 2>&1 \
  | tee "$OUT/bench_train_cuda.md"
if [ "${WITH_METRICS:-0}" = 1 ]; then
  timeout 120 python3 benchmarks/bench_metrics.py --device cuda --skip-pml 2>&1 | tee "$OUT/bench_metrics_cuda.md"
fi
