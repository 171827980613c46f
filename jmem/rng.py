"""RNG discipline: one root key per run, split into named streams, folded by model id.

Model ``r``'s keys are ``fold_in(stream(seed, name), r)``, so model 17 is the same model
whether it is trained alone, in a wave of 64, on one device or eight, and the subset stream
does not depend on any training setting.
"""

from __future__ import annotations

import jax
import numpy as np

# Fixed ids: changing one changes every result of that stream, so never renumber.
STREAMS = {
    "subsets": 0,
    "init": 1,
    "data_order": 2,
    "augment": 3,
    "canaries": 4,
    "placebo": 5,
    "dropout": 6,
    "retrain": 7,
    "loo": 8,
}


def stream(seed: int, name: str) -> jax.Array:
    """The key of one named stream: uint32[2] (a raw threefry key)."""
    if name not in STREAMS:
        raise KeyError(f"unknown RNG stream {name!r}; known: {sorted(STREAMS)}")
    return jax.random.fold_in(jax.random.PRNGKey(seed), STREAMS[name])


def model_keys(seed: int, name: str, model_ids) -> jax.Array:
    """Per-model keys of one stream: uint32[R, 2], row r = fold_in(stream, model_ids[r])."""
    ids = np.asarray(model_ids, dtype=np.uint32)
    return jax.vmap(lambda i: jax.random.fold_in(stream(seed, name), i))(ids)


def stream_words(seed: int, name: str) -> tuple[int, ...]:
    """The words (uint32) of one stream's key: entropy for numpy's SeedSequence.

    Pure-numpy code (``jmem.scores``) takes these words instead of importing JAX.
    """
    key = stream(int(seed), name)
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):  # typed keys (custom PRNG mode)
        key = jax.random.key_data(key)
    return tuple(int(w) for w in np.asarray(key, dtype=np.uint32).ravel())


def numpy_stream(seed: int, name: str, *path: int) -> np.random.Generator:
    """A numpy Generator seeded from the named stream (and optional sub-ids).

    The stream key's words plus ``path`` seed numpy's SeedSequence, so a sub-stream (e.g. a
    block of examples) is fixed by its id alone.
    """
    return np.random.default_rng([*stream_words(seed, name), *(int(p) for p in path)])
