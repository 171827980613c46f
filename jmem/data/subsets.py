"""Keep-mask designs: which training examples each of the R models sees.

Every experiment in jmem is "train R models on R keep-masks" (see DESIGN.md), so this module
only produces boolean matrices ``keep: bool[R, N]`` (row r = model r's training subset) and
the helpers the trainer and the retraining experiment need around them:

- :func:`make_keep` draws random subsets in one of three designs:

  * ``fixed``: every model sees exactly ``round(rate * N)`` examples (Feldman & Zhang 2020).
    All models run the same number of steps.
  * ``bernoulli``: every example is in every model independently with probability ``rate``.
  * ``balanced``: every example is in exactly ``rate * R`` models and out of the other
    ``(1 - rate) * R`` (LiRA, Carlini et al. 2022: draw ``u ~ U(0, 1)`` of shape (R, N), rank
    each column, keep the ``rate * R`` lowest). This makes every example's in/out counts equal,
    which the memorization estimator's error depends on (F&Z lemma).

- the removal experiment's masks are :mod:`jmem.data.removal`.

Randomness comes only from ``jmem.rng.stream(seed, "subsets")``, which is independent of
every training setting. This module imports numpy and jax.random only (never flax, optax or
the trainer).

Determinism and prefix stability:

- ``fixed`` and ``bernoulli``: row r is drawn from ``fold_in(stream, r)`` alone (and the rate
  model r gets), so model r's mask is the same whatever ``num_models`` is: adding models to a
  run never changes the earlier ones.
- ``balanced``: column i is drawn from ``fold_in(balanced_base, i)``; column ranks depend on R,
  so a balanced design is *not* prefix-stable in R (asking for more models changes every
  mask). It is deterministic for a given (seed, R, N, rates), and prefix-stable in N for a
  fixed R.

Exact counts are computed from 32-bit random integers; ties (rare) are broken towards the
lower index, so the result never depends on numpy's selection algorithm.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jmem import rng
from jmem.errors import JmemError

DESIGNS = {
    "fixed": "every model sees exactly round(rate*N) examples (Feldman & Zhang 2020)",
    "bernoulli": "each example is in each model independently with probability rate",
    "balanced": "every example is in exactly rate*R models (LiRA); needs rate*R integer",
}

# Column keys of the balanced design are folded from this salt so they do not coincide with
# the per-model row keys fold_in(stream, r) of the other designs (no run has 2**32-1 models).
_BALANCED_SALT = 2**32 - 1
# Draw random bits in chunks of about this many entries (64 MB of uint32) to bound memory.
_CHUNK_ENTRIES = 2**24


# ----------------------------------------------------------------------------- validation


def _normalise_rates(rates: float | Sequence[float]) -> tuple[float, ...]:
    """Rates as a non-empty tuple of floats in (0, 1); JmemError names the bad one."""
    if isinstance(rates, (int, float, np.integer, np.floating)):
        items, scalar = (float(rates),), True
    else:
        items, scalar = tuple(float(r) for r in rates), False
        if not items:
            raise JmemError("subsets.rates=[] is empty; give at least one inclusion rate in (0, 1)")
    for g, rate in enumerate(items):
        if not (math.isfinite(rate) and 0.0 < rate < 1.0):
            field = "subsets.rate" if scalar else f"subsets.rates[{g}]"
            raise JmemError(f"{field}={rate!r} must be strictly between 0 and 1")
    return items


def _check_count(field: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise JmemError(f"{field}={value!r} must be an integer")
    if value < 1:
        raise JmemError(f"{field}={value} must be >= 1")
    return int(value)


def _round_half_up(x: float) -> int:
    # Python's round() rounds half to even (round(2.5) == 2); a count should not depend on that.
    return int(math.floor(x + 0.5))


def model_groups(num_models: int, num_rates: int, rates: tuple[float, ...] = (),
                 equal_heldout: bool = False) -> np.ndarray:
    """int64[R]: the rate group of every model.

    Default: alternating, model r in group ``r % num_rates``. ``equal_heldout``: blocks of
    consecutive models, group g's size proportional to ``1 / (1 - rates[g])`` (largest
    remainders), so each example's expected number of held-out models ``(1 - rate) * R_g`` is
    the same at every rate; blocks also put models of one subset size in the same waves.
    """
    if not equal_heldout or num_rates == 1:
        return np.arange(num_models) % num_rates
    weights = 1.0 / (1.0 - np.asarray(rates, np.float64))
    sizes = _largest_remainder(weights, num_models)
    return np.repeat(np.arange(num_rates), sizes)


def _largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    """int64[G] summing to ``total``, proportional to ``weights`` (Hamilton's method; ties go
    to the lower index)."""
    share = np.asarray(weights, np.float64) / np.sum(weights) * total
    base = np.floor(share).astype(np.int64)
    order = np.argsort(-(share - base), kind="stable")
    base[order[:total - int(base.sum())]] += 1
    return base


def _group_sizes(groups: np.ndarray, num_groups: int) -> list[int]:
    return np.bincount(groups, minlength=num_groups).tolist()


def _balanced_counts(groups: np.ndarray, rates: tuple[float, ...]) -> list[int] | None:
    """Per group, how many of its models include each example; None if not all integers."""
    counts = []
    for rate, size in zip(rates, _group_sizes(groups, len(rates))):
        x = rate * size
        k = _round_half_up(x)
        if size == 0 or abs(x - k) > 1e-6 * max(1.0, x) or not 0 < k < size:
            return None
        counts.append(k)
    return counts


def _nearest_valid_balanced(num_models: int, rates: tuple[float, ...], equal_heldout: bool,
                            limit: int = 100_000) -> list[int]:
    """The closest valid model counts below and above num_models (either may be missing)."""
    def valid(r):
        return _balanced_counts(model_groups(r, len(rates), rates, equal_heldout), rates)

    found = []
    below = next((r for r in range(num_models - 1, 0, -1) if valid(r)), None)
    above = next((r for r in range(num_models + 1, num_models + limit) if valid(r)), None)
    for r in (below, above):
        if r is not None:
            found.append(r)
    return found


def _balanced_error(num_models: int, rates: tuple[float, ...], equal_heldout: bool) -> JmemError:
    groups = model_groups(num_models, len(rates), rates, equal_heldout)
    sizes = _group_sizes(groups, len(rates))
    if len(rates) == 1:
        detail = f"rate*num_models to be an integer: {rates[0]:g}*{num_models}={rates[0] * num_models:g}"
    else:
        bad = next(g for g, (rate, size) in enumerate(zip(rates, sizes))
                   if _balanced_counts(np.zeros(size, np.int64), (rate,)) is None)
        how = "in blocks sized by 1/(1-rate)" if equal_heldout else f"model r is in group r % {len(rates)}"
        detail = (f"rates[g]*models_in_group_g to be an integer for every rate group g ({how}): "
                  f"group {bad} has {rates[bad]:g}*{sizes[bad]}={rates[bad] * sizes[bad]:g}")
    near = _nearest_valid_balanced(num_models, rates, equal_heldout)
    hint = "nearest valid num_models: " + " or ".join(map(str, near)) if near else "no valid num_models nearby"
    return JmemError(f"subsets.design='balanced' needs {detail}; {hint}")


# ----------------------------------------------------------------------------- random bits


@functools.partial(jax.jit, static_argnums=2)
def _bits_per_id(base: jax.Array, ids: jax.Array, length: int) -> jax.Array:
    """uint32[len(ids), length]: row j = random bits of key fold_in(base, ids[j])."""
    return jax.vmap(lambda i: jax.random.bits(jax.random.fold_in(base, i), (length,), jnp.uint32))(ids)


def _chunked_bits(base: jax.Array, count: int, length: int):
    """Yield (start, uint32[c, length]) for ids start..start+c-1, covering range(count).

    Chunks are padded to one power-of-two size so few programs are compiled (the extra ids'
    rows are drawn and dropped), and the next chunk is dispatched before the current one is
    handed out, so JAX draws while numpy selects.
    """
    chunk = max(1, min(1 << (count - 1).bit_length(), _CHUNK_ENTRIES // max(1, length)))
    starts = list(range(0, count, chunk))

    def draw(start):
        return _bits_per_id(base, jnp.arange(start, start + chunk, dtype=jnp.uint32), length)

    pending = draw(starts[0])
    for j, start in enumerate(starts):
        current = pending
        if j + 1 < len(starts):
            pending = draw(starts[j + 1])
        yield start, np.asarray(current)[: count - start]


def _lowest_k(bits: np.ndarray, k: np.ndarray) -> np.ndarray:
    """bool[M, K]: in row m, True at exactly the k[m] smallest entries of bits[m].

    Ties at the k-th value go to the lower index, so the result is fully determined by the
    values (np.partition's own tie order is an implementation detail).
    Args: bits uint32[M, K]; k int[M] with 1 <= k[m] <= K.
    """
    k = np.asarray(k)
    kths = np.unique(k) - 1
    kth_value = np.take_along_axis(np.partition(bits, kths, axis=1), (k - 1)[:, None], axis=1)
    keep = bits <= kth_value
    counts = keep.sum(axis=1)
    for m in np.flatnonzero(counts > k):
        ties = np.flatnonzero(bits[m] == kth_value[m, 0])
        keep[m, ties[len(ties) - (counts[m] - k[m]) :]] = False
    return keep


# ----------------------------------------------------------------------------- designs


def model_rates_for(num_models: int, rates: float | Sequence[float], equal_heldout: bool = False) -> np.ndarray:
    """float32[R]: the inclusion rate of each model (see :func:`model_groups`)."""
    num_models = _check_count("train.num_models", num_models)
    items = _normalise_rates(rates)
    return np.asarray(items, np.float32)[model_groups(num_models, len(items), items, equal_heldout)]


def make_keep(
    seed: int,
    num_models: int,
    num_examples: int,
    design: str = "fixed",
    rates: float | Sequence[float] = 0.7,
    equal_heldout: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw R random training subsets of N examples.

    Args:
      seed: the run seed; randomness comes from ``jmem.rng.stream(seed, "subsets")``.
      num_models: R >= 1.
      num_examples: N >= 1 (the training-set size).
      design: ``"fixed"``, ``"bernoulli"`` or ``"balanced"`` (see the module docstring).
      rates: one inclusion rate in (0, 1), or several: model r gets ``rates[r % len(rates)]``,
        or with ``equal_heldout`` the rate of its block (:func:`model_groups`). With
        ``balanced`` and several rates, balance holds within each rate group: every example
        is in exactly ``rates[g] * R_g`` of the ``R_g`` models of group g.

    Returns:
      keep: bool[R, N], ``keep[r, i]`` = model r trains on example i.
      model_rates: float32[R], the rate model r was drawn with.

    Raises:
      JmemError: bad rate, R or N, unknown design, ``fixed`` rounding to an empty or full
        subset, or ``balanced`` with ``rate * R`` not an integer (names the nearest valid R).
    """
    num_models = _check_count("train.num_models", num_models)
    num_examples = _check_count("num_examples", num_examples)
    if design not in DESIGNS:
        raise JmemError(f"subsets.design={design!r} is not one of {', '.join(map(repr, DESIGNS))}")
    items = _normalise_rates(rates)
    groups = model_groups(num_models, len(items), items, equal_heldout)
    model_rates = np.asarray(items, np.float32)[groups]
    stream = rng.stream(int(seed), "subsets")
    if design == "fixed":
        keep = _fixed(stream, groups, num_examples, items)
    elif design == "bernoulli":
        keep = _bernoulli(stream, groups, num_examples, items)
    else:
        keep = _balanced(stream, groups, num_examples, items, equal_heldout)
    return keep, model_rates


def _fixed(stream: jax.Array, groups: np.ndarray, num_examples: int, rates: tuple[float, ...]) -> np.ndarray:
    """bool[R, N] with exactly round(rate_r * N) examples in row r (row r from fold_in(stream, r))."""
    sizes = [_round_half_up(rate * num_examples) for rate in rates]  # float64 rates, not float32
    for rate, size in zip(rates, sizes):
        if not 0 < size < num_examples:
            raise JmemError(
                f"subsets.rate={rate:g} keeps round({rate:g}*{num_examples})={size} of num_examples="
                f"{num_examples} examples with design 'fixed'; need between 1 and {num_examples - 1}"
            )
    num_models = groups.size
    k = np.asarray(sizes)[groups]
    keep = np.empty((num_models, num_examples), bool)
    for start, bits in _chunked_bits(stream, num_models, num_examples):
        stop = start + bits.shape[0]
        keep[start:stop] = _lowest_k(bits, k[start:stop])
    return keep


def _bernoulli(stream: jax.Array, groups: np.ndarray, num_examples: int, rates: tuple[float, ...]) -> np.ndarray:
    """bool[R, N], each entry independently True with probability rate_r (to within 2**-32)."""
    # Compare 32-bit integers with floor(rate * 2**32) rather than floats: exact and portable.
    per_group = np.floor(np.asarray(rates, np.float64) * 2.0**32).astype(np.uint64)
    num_models = groups.size
    thresholds = per_group[groups]
    keep = np.empty((num_models, num_examples), bool)
    for start, bits in _chunked_bits(stream, num_models, num_examples):
        stop = start + bits.shape[0]
        keep[start:stop] = bits < thresholds[start:stop, None]
    return keep


def _balanced(stream: jax.Array, groups: np.ndarray, num_examples: int, rates: tuple[float, ...],
              equal_heldout: bool = False) -> np.ndarray:
    """bool[R, N] where every column has exactly rates[g]*R_g Trues among group g's rows.

    Column i's R uniform draws come from fold_in(balanced_base, i); within each rate group the
    lowest ranks are kept (LiRA's construction, done per column so it can be chunked).
    """
    num_models = groups.size
    counts = _balanced_counts(groups, rates)
    if counts is None:
        raise _balanced_error(num_models, rates, equal_heldout)
    base = jax.random.fold_in(stream, _BALANCED_SALT)
    keep = np.empty((num_models, num_examples), bool)
    members = [np.flatnonzero(groups == g) for g in range(len(rates))]
    for start, bits in _chunked_bits(base, num_examples, num_models):
        stop = start + bits.shape[0]  # bits: uint32[columns, R]
        for rows, k in zip(members, counts):
            sub = bits[:, rows]
            keep[rows, start:stop] = _lowest_k(sub, np.full(sub.shape[0], k)).T
    return keep
