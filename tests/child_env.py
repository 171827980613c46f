"""The environment of a child process a test starts (``jmem`` or a script).

One place for what every child needs: CPU only, this checkout first on the path, the test
session's persistent compilation cache and its thresholds (conftest.py), and no fault
injection inherited from the parent.
"""

import os
from pathlib import Path

import jax

from jmem.study.faults import KILL_ENV

REPO = Path(__file__).resolve().parents[1]


def child_env(**extra) -> dict:
    """A copy of ``os.environ`` with the test session's JAX settings, then ``extra``."""
    env = dict(os.environ)
    env.pop(KILL_ENV, None)
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO),
               JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.2",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    env.update(extra)
    return env
