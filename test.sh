#!/usr/bin/env bash
# Set up (first time only) and run the test suite on the CPU, slow tests excluded.
# Extra arguments go to pytest, e.g.  bash test.sh -k subsets   or   bash test.sh -m slow
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh dev
scripts/fashion_mnist.sh  # real Fashion-MNIST files for their tests (apt-get where root)
export JAX_PLATFORMS=cpu
exec .venv/bin/python -m pytest -m "not slow" -n 2 --durations=15 "$@"
