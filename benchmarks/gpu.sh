#!/usr/bin/env bash
# jmem bench on one GPU (written for one H200; about 6-7 minutes, < 8 with the time limits).
#
# Installs nothing: run it where jmem and a GPU build of jax are already installed, from the
# repository root or anywhere:   bash benchmarks/gpu.sh
# Writes benchmarks/gpu_{mlp,resnet}.json (override with OUT_DIR=...) and prints both tables
# last. Targets (issue 7): the ResNet at R=128 >= 5x baseline (b) "jax_scan" and >= 30% of
# the bf16 matmul peak measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
OUT_DIR="${OUT_DIR:-benchmarks}"
mkdir -p "$OUT_DIR"

"$PYTHON" - <<'PY'
import jax
if jax.default_backend() == "cpu":
    raise SystemExit(f"benchmarks/gpu.sh: no accelerator visible to JAX ({jax.devices()}); "
                     "use `python -m jmem.bench` for the CPU benchmark")
print("devices:", jax.devices())
PY

# Workload 1: the digits MLP, 20 epochs, bf16. One-at-a-time rows time 4 models.
timeout 150 "$PYTHON" -m jmem.bench --model mlp --R 8,128 --dtype bfloat16 \
    --strategies auto,vmap,sequential --baselines fz_loop,jax_scan --seq-models 4 \
    --repeats 3 --max-seconds 20 --no-scaling --out "$OUT_DIR/gpu_mlp.json" \
    > "$OUT_DIR/gpu_mlp.txt" || echo "gpu.sh: the MLP run failed or hit its time limit (exit $?)"

# Workload 2: the CIFAR-shaped ResNet (width 16, 3 stages, BatchNorm) on 10,000 synthetic
# 32x32x3 images, 5 epochs, bf16. R=8 first, so that a strategy too slow for R=128 (vmapped
# grouped convolutions) is skipped by prediction instead of eating the time budget.
timeout 300 "$PYTHON" -m jmem.bench --model resnet --R 8,128 --dtype bfloat16 \
    --strategies auto,vmap,sequential --baselines fz_loop,jax_scan --seq-models 4 \
    --repeats 3 --max-seconds 20 --no-scaling --out "$OUT_DIR/gpu_resnet.json" \
    > "$OUT_DIR/gpu_resnet.txt" || echo "gpu.sh: the ResNet run failed or hit its time limit (exit $?)"

echo
cat "$OUT_DIR/gpu_mlp.txt" "$OUT_DIR/gpu_resnet.txt" 2>/dev/null || true
