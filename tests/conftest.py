"""Test set-up: CPU only, small shapes, and JAX's persistent compilation cache.

Compilation dominates tiny tests, so compiled programs are cached across runs in
``$JMEM_TEST_CACHE`` (default ``~/.cache/jmem-tests/jax``).
"""

import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

_CACHE = Path(os.environ.get("JMEM_TEST_CACHE", Path.home() / ".cache" / "jmem-tests" / "jax"))
_CACHE.mkdir(parents=True, exist_ok=True)
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
