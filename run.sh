#!/usr/bin/env bash
# Set up (first time only) and run the main job on the embedded default dataset (digits):
# train 256 models on 70% subsets, score memorization, write runs/digits/.
# Extra arguments go to `jmem run`, e.g.  bash run.sh --set train.num_models=64
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
exec .venv/bin/jmem run experiments/digits.py --workdir "${JMEM_WORKDIR:-runs/digits}" "$@"
