#!/usr/bin/env bash
# jmem bench on one accelerator (written for one H200): four workloads, < 8 minutes in all.
#
# Installs nothing: run it where jmem and an accelerator build of jax are installed, from the
# repository root or anywhere:   bash benchmarks/gpu.sh
#
#   1. digits MLP 64-256-10 (Adam 1e-3, batch 64, 20 epochs)         R = 1, 64, 512, 2000
#   2. Feldman & Zhang's MNIST MLP 784-512-256-10 (SGD 0.05 + momentum 0.9, batch 128) on
#      60,000 synthetic 28x28 images (the real Fashion-MNIST/MNIST may be absent there; only
#      the shapes matter), 2 epochs                                    R = 1, 64, 512, 2000
#   3. MNIST-1D CNN (width 32, depth 3, kernel 5), 5 epochs          R = 1, 8, 32, 128, 512
#   4. CIFAR-shaped ResNet (width 16, 3 stages, BatchNorm), 10,000 synthetic 32x32x3
#      images, 1 epoch                                                 R = 1, 8, 32, 128, 512
#
# Every jmem strategy (auto, vmap, patches, sequential; each batched one also with other
# chunk layouts, /c<k>) and the one-at-a-time baselines fz_loop (a) and jax_scan (b). Each
# row: models/s, examples/s, % of the bf16 and of the fp32 matmul peak (both measured in
# the run), peak device memory; then "auto vs the measured best" per workload and R.
# Strategies predicted (from the previous R) to need more than --max-seconds per call are
# skipped and listed. Each workload has its own time limit (60+120+90+180 s = 7.5 min).
#
# Writes $OUT_DIR/gpu_<workload>.{json,txt} (OUT_DIR default: benchmarks) and prints every
# table last. Goals (issue 15): the ResNet >= 5x jax_scan and >= 30% of the bf16 peak; the
# 2,000-model F&Z recipe in <= 10 minutes (the 2-epoch figure x epochs of the recipe).
#
# JMEM_GPU_TINY=1: the same script on a CPU in about a minute (R=2, 1 epoch, 128 examples,
# float32, a small peak matmul; only auto, the c0 layout and jax_scan, since compilation
# dominates there), used by tests/test_bench.py to keep this script working.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
OUT_DIR="${OUT_DIR:-benchmarks}"
TINY="${JMEM_GPU_TINY:-0}"
mkdir -p "$OUT_DIR"

if [ "$TINY" = 1 ]; then
    COMMON=(--repeats 1 --epochs 1 --n 128 --seq-models 1 --no-scaling --dtype float32
            --peak-size 128 --max-seconds 60 --strategies auto --baselines jax_scan --chunks 0)
    R_MLP=2; R_CONV=2; LIMIT_SCALE=4
else
    "$PYTHON" - <<'PY'
import jax
if jax.default_backend() == "cpu":
    raise SystemExit(f"benchmarks/gpu.sh: no accelerator visible to JAX ({jax.devices()}); "
                     "use `python -m jmem.bench` for the CPU benchmark, or JMEM_GPU_TINY=1")
print("devices:", jax.devices())
PY
    COMMON=(--repeats 2 --seq-models 4 --no-scaling --max-seconds 20)
    R_MLP=1,64,512,2000; R_CONV=1,8,32,128,512; LIMIT_SCALE=1
fi

run() {  # run NAME SECONDS ARGS...: one workload under its own time limit (COMMON comes
         # last, so tiny mode's settings override the workload's)
    local name="$1" seconds="$2"
    shift 2
    timeout "$((seconds * LIMIT_SCALE))" "$PYTHON" -m jmem.bench "$@" "${COMMON[@]}" \
        --out "$OUT_DIR/gpu_$name.json" > "$OUT_DIR/gpu_$name.txt" \
        || echo "gpu.sh: $name failed or hit its ${seconds}s limit (exit $?); see $OUT_DIR/gpu_$name.txt"
}

run mlp 60 --model mlp --R "$R_MLP" --strategies auto,vmap,sequential \
    --baselines fz_loop,jax_scan --chunks 64
run fzmnist 120 --model fzmnist --R "$R_MLP" --strategies auto,vmap,sequential \
    --baselines fz_loop,jax_scan --chunks 64
run cnn 90 --model cnn --R "$R_CONV" --epochs 5 --strategies all --baselines fz_loop,jax_scan \
    --chunks 8,64
run resnet 180 --model resnet --R "$R_CONV" --epochs 1 --strategies all --baselines fz_loop,jax_scan \
    --chunks 8,64

echo
for name in mlp fzmnist cnn resnet; do
    cat "$OUT_DIR/gpu_$name.txt" 2>/dev/null || true
    echo
done

# Then (not in tiny mode) the 2,000-model Fashion-MNIST estimation with Feldman & Zhang's
# recipe, whole process: benchmarks/gpu_fmnist.sh (SKIP_FMNIST=1 skips it).
if [ "$TINY" != 1 ] && [ "${SKIP_FMNIST:-0}" != 1 ]; then
    OUT_DIR="$OUT_DIR" PYTHON="$PYTHON" bash benchmarks/gpu_fmnist.sh
fi
