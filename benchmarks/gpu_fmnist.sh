#!/usr/bin/env bash
# Feldman & Zhang's MNIST recipe on Fashion-MNIST, their 2,000-model run, on one accelerator
# (called by benchmarks/gpu.sh; at most 20 + 15 minutes by its time limits): MLP
# 784-512-256-10, SGD lr 0.1 momentum 0.9, batch 128, 10 epochs, fixed 70% subsets, through
# `jmem train` + `jmem score` (leakage, training, margins, scoring), whole process. F&Z call
# theirs "a few GPU hours"; jmem's goal is <= 10 minutes on one H200. Then the F&Z-style loop
# against jmem on the same recipe at R=16 (benchmarks/bench_fmnist.py) for the throughput ratio.
#
# Needs Fashion-MNIST's IDX files (apt-get install dataset-fashion-mnist).
# DRY_RUN=1: on the CPU, the same commands at a tiny setting (4 models, 1 epoch, 600 training
# images) to check the plumbing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
OUT_DIR="${OUT_DIR:-benchmarks}"
DRY_RUN="${DRY_RUN:-0}"
mkdir -p "$OUT_DIR"
FM_RUN="$OUT_DIR/gpu_fmnist_run"
FM_SET=()
FM_BENCH=(--variant "" --R 16)
if [ "$DRY_RUN" = 1 ]; then
  FM_SLICE="$OUT_DIR/gpu_fmnist_slice"
  "$PYTHON" -c "import sys; sys.path.insert(0, 'benchmarks'); from pathlib import Path; import bench_fmnist; bench_fmnist._slice_idx_dir(Path('$FM_SLICE'), 600, 200)"
  FM_SET=(--set train.num_models=4 --set train.epochs=1 --set "data.name=idx:$FM_SLICE")
  FM_BENCH=(--dry-run)
fi
rm -rf "$FM_RUN"
start=$(date +%s)
{ timeout 1200 "$PYTHON" -m jmem train experiments/fashion_mnist.py --workdir "$FM_RUN" --no-progress "${FM_SET[@]}" \
    && "$PYTHON" -m jmem score "$FM_RUN"; } > "$OUT_DIR/gpu_fmnist.txt" 2>&1 \
    || echo "gpu_fmnist.sh: the Fashion-MNIST run failed or hit its time limit (exit $?)"
echo "fashion_mnist F&Z recipe, jmem train + score: $(( $(date +%s) - start )) s wall (whole process)" | tee -a "$OUT_DIR/gpu_fmnist.txt"
timeout 900 "$PYTHON" benchmarks/bench_fmnist.py "${FM_BENCH[@]}" --workdir "$OUT_DIR/gpu_fmnist_bench" \
    --out "$OUT_DIR/gpu_fmnist_bench.json" > /dev/null \
    || echo "gpu_fmnist.sh: the Fashion-MNIST throughput comparison failed or hit its time limit (exit $?)"
cat "$OUT_DIR/gpu_fmnist.txt" "$OUT_DIR/gpu_fmnist_bench.json" 2>/dev/null || true
