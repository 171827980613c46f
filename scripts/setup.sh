#!/usr/bin/env bash
# Create .venv (if missing) and install jmem into it, with the extras given as arguments.
# Usage: scripts/setup.sh [EXTRA,...]    e.g. scripts/setup.sh dev
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
log=.venv/setup.log
# pip's own chatter goes to the log; on failure its tail is shown.
quiet() { "$@" >>"$log" 2>&1 || { tail -40 "$log" >&2; echo "setup failed; the whole log: $log" >&2; exit 1; }; }
if [ ! -x .venv/bin/python ]; then
  echo "setting up .venv (first run only: a few minutes)" >&2
  "$PYTHON" -m venv .venv
  quiet .venv/bin/python -m pip install --upgrade pip
fi
spec="."
if [ -n "${1:-}" ]; then spec=".[$1]"; fi
# Re-install only when pyproject.toml changed since the last install.
stamp=".venv/.jmem-installed-$(sha1sum pyproject.toml | cut -c1-12)-${1:-base}"
if [ ! -f "$stamp" ]; then
  quiet .venv/bin/python -m pip install -e "$spec"
  # dev: the notebook tests' Jupyter kernel is this venv's interpreter (kernel spec in .venv/share).
  if [[ ",${1:-}," == *,dev,* ]]; then
    quiet .venv/bin/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (jmem .venv)"
  fi
  touch "$stamp"
fi
