#!/usr/bin/env bash
# The Fashion-MNIST study at Feldman & Zhang's MNIST scale, on one lent accelerator, in one
# command of at most 8 minutes (run it with the device tool's timeout_s about 500):
#
#   carry: [".data"]   command: JMEM_COMMIT=<sha> bash benchmarks/gpu_fmnist.sh
#
# `experiments/fashion_mnist.py:fz_scale`: F&Z's MLP 784-512-256-10 (SGD 0.1, momentum 0.9,
# batch 128; 30 epochs, since at their 10 nothing is memorized yet on Fashion-MNIST) at rates
# 0.7 and 0.95 with equal held-out precision (150 + 900 models, every example held out of 45
# at each rate), 1% canaries, then the removal
# experiment (two pools, the 2^4 ablation as defined and size-matched, 10 seeds per arm and
# pool, the protocols' removal curves) and the report. The run directory stays on the machine
# (its arrays are ~1.2 GB); what comes back under $OUT: env.txt, log.txt, verdict.txt,
# retrain.json, thresholds.json, report.md, models.csv and figures.tar (the report's plots).
#
# Fashion-MNIST is not on the device and nothing can be downloaded there: copy its four IDX
# files into .data/fashion-mnist/ first (ignored by git; `mkdir -p .data && cp -r
# /usr/share/datasets/fashion-mnist .data/` after `apt-get install dataset-fashion-mnist`).
# DRY_RUN=1: the same script on the CPU, variant `small` on 600 training images (the test).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-benchmarks/gpu_out}"
WORK="${WORK:-/tmp/jmem_fmnist_fz}"
BUDGET="${JMEM_GPU_BUDGET:-440}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
VARIANT=fz_scale
SET=()
if [ "${DRY_RUN:-0}" = 1 ]; then
  export JAX_PLATFORMS=cpu
  VARIANT=small
  "$PYTHON" -c "import sys; sys.path.insert(0, 'benchmarks'); from pathlib import Path; import bench_fmnist; bench_fmnist._slice_idx_dir(Path('$WORK-data'), 600, 200)"
  SET=(--set "data.name=idx:$WORK-data")
else
  export JMEM_FASHION_MNIST_DIR="${JMEM_FASHION_MNIST_DIR:-$PWD/.data/fashion-mnist}"
  export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"
  if [ ! -e "$JMEM_FASHION_MNIST_DIR/train-images-idx3-ubyte.gz" ]; then
    echo "gpu_fmnist.sh: no Fashion-MNIST IDX files in $JMEM_FASHION_MNIST_DIR (carry .data)" | tee "$OUT/log.txt"
    exit 2
  fi
fi
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "jmem commit: ${JMEM_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
  echo "host: $(uname -a)"; echo "cpus: $(nproc)"
  nvidia-smi 2>&1 || echo "nvidia-smi: not available"
  "$PYTHON" -c "import jax, flax, optax, numpy, scipy; print('jax', jax.__version__, jax.devices()); print('flax', flax.__version__, 'optax', optax.__version__, 'numpy', numpy.__version__, 'scipy', scipy.__version__)" 2>&1
} > "$OUT/env.txt"

rm -rf "$WORK"
start=$(date +%s)
timeout -k 10 "$BUDGET" "$PYTHON" -m jmem run "experiments/fashion_mnist.py:$VARIANT" --workdir "$WORK" \
  --no-progress "${SET[@]}" > "$OUT/log.txt" 2>&1
rc=$?
echo "jmem run exit $rc after $(( $(date +%s) - start )) s (limit $BUDGET s)" | tee -a "$OUT/log.txt"
for f in retrain/verdict.txt retrain/retrain.json thresholds.json report.md models.csv; do
  [ -e "$WORK/$f" ] && cp "$WORK/$f" "$OUT/$(basename "$f")"
done
[ -d "$WORK/figures" ] && tar -C "$WORK" -cf "$OUT/figures.tar" figures
tail -n 25 "$OUT/log.txt"
exit $rc
