#!/usr/bin/env bash
# jmem on one accelerator, sized for a lent device session: one command, done in < 8 minutes.
#
#   OUT=results_dir bash benchmarks/gpu.sh        (the device tool sets $OUT itself)
#
# Synthetic data only, `python3` (PYTHON=...), nothing installed; jmem is imported from this
# checkout. Sections, each a process of its own under its own time limit, all under one
# global deadline (JMEM_GPU_BUDGET seconds, default 460):
#   ceilings (40 s)  bf16/fp32 matmul, device-to-device copy
#   mlp     (140 s)  Feldman & Zhang's MNIST MLP, R = 1,024, one epoch, fp32 and bf16: jmem,
#                    a lean stacked-weight einsum + optax loop, one model at a time
#   resnet  (200 s)  the CIFAR preset's ResNet at R = 16 and 64: vmap, patches, chunked
#                    lax.map, one at a time, one model at batch R x 256 (the ceiling)
#   margins  (60 s)  predict_margins for 1,024 MLPs and 16 ResNets
# (benchmarks/gpu_bench.py says what each measures.) Every measurement is one JSON line
# appended to $OUT/rows.jsonl the moment it exists, so a section cut off by its limit keeps
# its rows; $OUT/env.txt holds nvidia-smi and versions, $OUT/log.txt every section's output,
# and the summary table (<= 40 lines, also $OUT/table.txt) is printed last.
#
# JMEM_GPU_TINY=1: the same script on the CPU at tiny shapes (tests/test_bench.py runs it).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-benchmarks/gpu_out}"
BUDGET="${JMEM_GPU_BUDGET:-460}"
TINY="${JMEM_GPU_TINY:-0}"
mkdir -p "$OUT"
ROWS="$OUT/rows.jsonl"
LOG="$OUT/log.txt"
END=$(( $(date +%s) + BUDGET ))
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ "$TINY" = 1 ]; then
  export JAX_PLATFORMS=cpu
else  # room for the R = 64 ResNets (XLA takes 75% of the card by default)
  export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"
fi

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "jmem commit: ${JMEM_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
  echo "host: $(uname -a)"; echo "cpus: $(nproc)"
  nvidia-smi 2>&1 || echo "nvidia-smi: not available"
  "$PYTHON" - <<'PY' 2>&1
import importlib.metadata as md, platform
print("python", platform.python_version())
for name in ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "optax", "numpy", "orbax-checkpoint"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        pass
PY
} > "$OUT/env.txt"

note() {  # note SECTION STATUS REASON: a row for a section that did not run to its end
  printf '{"section": "%s", "name": "section", "status": "%s", "reason": "%s", "t": %s}\n' \
    "$1" "$2" "$3" "$(date +%s)" >> "$ROWS"
}

section() {  # section NAME CAP_SECONDS
  local name="$1" cap="$2" now left limit rc
  now=$(date +%s)
  left=$(( END - now - 10 ))  # 10 s kept for the table
  limit=$(( cap < left ? cap : left ))
  if [ "$limit" -lt 10 ]; then
    note "$name" skipped "global deadline: ${left} s left"
    return
  fi
  echo "== $name (limit ${limit} s)" | tee -a "$LOG"
  timeout -k 5 "$limit" "$PYTHON" benchmarks/gpu_bench.py "$name" --rows "$ROWS" \
      --deadline $(( now + limit - 3 )) >> "$LOG" 2>&1
  rc=$?
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    note "$name" timeout "killed at its ${limit} s limit; rows before that are kept"
  elif [ "$rc" != 0 ]; then
    note "$name" error "exit $rc; see log.txt"
  fi
}

# JMEM_GPU_SECTIONS="ceilings resnet" runs only those (with JMEM_GPU_ONLY, see gpu_bench.py).
for spec in ceilings:40 mlp:140 resnet:200 margins:60; do
  case " ${JMEM_GPU_SECTIONS:-ceilings mlp resnet margins} " in
    *" ${spec%%:*} "*) section "${spec%%:*}" "${spec##*:}" ;;
  esac
done

echo
"$PYTHON" benchmarks/gpu_bench.py table --rows "$ROWS" | tee "$OUT/table.txt"
