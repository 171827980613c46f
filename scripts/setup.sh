#!/usr/bin/env bash
# Create .venv (if missing) and install jmem into it, with the extras given as arguments.
# Usage: scripts/setup.sh [EXTRA,...]    e.g. scripts/setup.sh dev
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
spec="."
if [ -n "${1:-}" ]; then spec=".[$1]"; fi
# Re-install only when pyproject.toml changed since the last install.
stamp=".venv/.jmem-installed-$(sha1sum pyproject.toml | cut -c1-12)-${1:-base}"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet -e "$spec"
  # dev: the notebook tests' Jupyter kernel is this venv's interpreter (kernel spec in .venv/share).
  if [[ ",${1:-}," == *,dev,* ]]; then
    .venv/bin/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (jmem .venv)" >/dev/null
  fi
  touch "$stamp"
fi
