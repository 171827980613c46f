#!/usr/bin/env bash
# Set up (first time only) and run the main job on the embedded default dataset (digits):
# the whole study (1,120 estimation models at rates 0.7 and 0.95, scores, the removal experiment
# of 1,050 models with the ablation of the four corrections, the report) -> runs/digits/report.md.
# Extra arguments go to `jmem run`, e.g.  bash run.sh --set train.num_models=64
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
exec .venv/bin/jmem run experiments/digits.py --workdir "${JMEM_WORKDIR:-runs/digits}" "$@"
