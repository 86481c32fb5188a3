#!/usr/bin/env bash
# GPU check for recvae, meant to finish in under 5 minutes on one data-centre GPU:
#   1. the CUDA tests (tests/recvae/test_cuda.py: CUDA vs CPU kernels, training, evaluation, warm start);
#   2. bench_recvae.py on the GPU, float32 and bf16 mixed precision: GitHub stars (1 seed, 50
#      epochs, paper settings) and the generated 50k x 20k matrix (3 epochs each).
# Results: benchmarks/results/recvae_gpu.{json,md} and benchmarks/results/gpu_check.log.
#
#   benchmarks/gpu_check.sh                 # PYTHON=.venv/bin/python DATASET=../shared/datasets/github-stars-tiny
#
# Needs a CUDA build of torch 2.13.0 in $PYTHON's environment (the Makefile installs the CPU
# wheel; on a GPU machine install torch==2.13.0 from the PyTorch index for the machine's CUDA).
# Not run on the development machine (no GPU there).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
DATASET=${DATASET:-../shared/datasets/github-stars-tiny}
THREADS=${THREADS:-8}
RESULTS=benchmarks/results
LOG=$RESULTS/gpu_check.log
mkdir -p "$RESULTS"
started=$(date +%s)

"$PYTHON" - <<'EOF'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: CUDA is unavailable to torch {torch.__version__} (CUDA build: {torch.version.cuda}); "
             "install a CUDA build of torch 2.13.0 and run on a GPU machine")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}, "
      f"bf16 supported: {torch.cuda.is_bf16_supported()}")
EOF

{
  echo "== $(date -u +%FT%TZ) gpu_check on $(hostname); nvidia-smi:"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  echo "== CUDA tests"
} | tee "$LOG"
status=0
# Keep going when a test fails: the benchmark figures are still wanted, the exit status says it.
timeout 120 "$PYTHON" -m pytest tests/recvae/test_cuda.py -q -rs 2>&1 | tee -a "$LOG" || status=1

echo "== bench_recvae on cuda (float32 + bf16)" | tee -a "$LOG"
OMP_WAIT_POLICY=PASSIVE timeout 240 "$PYTHON" benchmarks/bench_recvae.py \
  --device cuda --mixed-precision --threads "$THREADS" --dataset "$DATASET" \
  --seeds 0 --epochs 50 --tune-gammas --large-epochs 3 \
  --output "$RESULTS/recvae_gpu" 2>&1 | tee -a "$LOG" || status=1

echo "== done in $(( $(date +%s) - started )) s (status $status); results in $RESULTS/recvae_gpu.md" | tee -a "$LOG"
exit $status
