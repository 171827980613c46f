"""What each step of a model sees: the epoch's order of the examples, the steps per epoch, and
the augmentation of a batch. Pure functions of keys and keep rows (see ``jmem.engine.trainer``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jmem.engine.hparams import TrainConfig


def epoch_order(key: jax.Array, keep_row: jax.Array, coupled: bool = False) -> jax.Array:
    """int32[N]: one epoch's order of the N example positions.

    One stable sort of all N indices by 31 random bits per example (``jax.random.bits``), so
    the order depends on (key, keep row) only, never on the wave's padding. Compact order
    (``coupled=False``, the default): the top bit of the key is "excluded", so the kept
    indices come first, in random order, then the excluded ones. Coupled order: all N by
    their random bits alone, the excluded ones left where they fall (their slots are masked
    out of the batch): two models with the same key and keep rows that differ in a few
    examples see every other example at the same step and in the same batch.
    (Until 2026-12 this was a full permutation followed by a stable argsort: two sorts of N
    per model and epoch, 13% of a digits-MLP wave's time.)
    """
    n_total = keep_row.shape[0]
    bits = jax.random.bits(key, (n_total,), jnp.uint32) >> 1
    sort_key = bits if coupled else jnp.where(keep_row, bits, bits | jnp.uint32(0x80000000))
    _, order = lax.sort((sort_key, jnp.arange(n_total, dtype=jnp.int32)), num_keys=1, is_stable=True)
    return order


def steps_per_epoch(keep: np.ndarray, train_cfg: TrainConfig) -> np.ndarray:
    """int64[R]: optimizer steps per epoch of each model of ``keep: bool[R, N]``:
    ``ceil(n_r / batch_size)`` for its own subset (compact order), or ``ceil(N / batch_size)``
    for every model with ``train.data_order="coupled"`` (excluded slots are masked, not
    skipped, so every model takes the same steps)."""
    keep = np.asarray(keep, bool)
    sizes = keep.sum(axis=1) if train_cfg.data_order == "compact" else np.full(keep.shape[0], keep.shape[1])
    return -(-sizes // train_cfg.batch_size)


def crop_flip(key: jax.Array, x: jax.Array, pad: int) -> jax.Array:
    """Random crop after zero padding by ``pad``, and random horizontal flip, per example.

    x: float32[B, H, W, C] -> float32[B, H, W, C].
    """
    b, h, w, c = x.shape
    k_crop, k_flip = jax.random.split(key)
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = jax.random.randint(k_crop, (b, 2), 0, 2 * pad + 1)
    crops = jax.vmap(lambda im, o: lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, c)))(padded, offsets)
    flip = jax.random.bernoulli(k_flip, 0.5, (b,))
    return jnp.where(flip[:, None, None, None], crops[:, :, ::-1, :], crops)
