"""Streaming nearest-neighbour search in pixel space and in feature space (jax).


Point 4 of the critique of Feldman & Zhang (see BACKGROUND section 3): when a test image has a
near-duplicate in the training set, removing that training image also removes the test image's
"answer", so the removal experiment must also be scored on a test set without such twins.

Two sources of duplicates:

* **Known lists** (CIFAR-10 / CIFAR-100): Barz & Denzler, "Do We Train on Test Data? Purging
  CIFAR of Near-Duplicates", J. Imaging 2020 (arXiv 1902.00423), shipped in
  ``jmem/known_duplicates/``. :func:`load_known_duplicates`, :func:`map_to_dataset_order`.
* **Detection** (any dataset): :func:`find_leakage`, the nearest training neighbour of every
  test example in pixel space and, optionally, in a feature space given as arrays.

The pixel detector (designed to survive brightness/contrast changes, noise and 1-pixel shifts):

1. *Standardise per example*: subtract the example's per-channel mean. A brightness change
   ``a * x + b`` in raw pixels is ``a * z + o_c`` in channel-normalised space, so centring
   removes ``o_c`` and the cosine removes ``a`` exactly.
2. *Candidate search on a coarse view*: blur each spatial axis with the binomial filter
   [1, 2, 1] / 4 and, for axes of 16 pixels or more, keep every second pixel (CIFAR 32x32x3
   becomes 16x16x3 = 768 values). Blurring makes a 1-pixel shift a small change and averages
   noise away; halving each axis makes the all-pairs search 4x cheaper. The ``candidates``
   nearest training examples of every test example in this view are kept, streaming over
   chunks of test rows and training rows with a running top-k, so the T x N distance matrix
   never exists (CIFAR: 10,000 x 50,000).
3. *Shift-tolerant re-ranking at full resolution*: for every candidate, the distance is the
   minimum over shifts ``(dy, dx)`` in ``[-max_shift, max_shift]^2`` of the distance between
   the candidate's central crop (``max_shift`` pixels cut from every border) and the test
   example's crop shifted by ``(dy, dx)``; each crop is centred per channel again. The
   smallest distance (ties: lowest training index) is the example's nearest neighbour. Only
   spatial axes of 16 pixels or more are shifted (a pixel is a large shift on 8x8 digits).

Distances (``metric``), both scale free, 0 for an exact copy:

* ``"cosine"``: ``1 - cos(a, b)`` of the centred vectors; 1 for unrelated examples, 0 for
  copies up to brightness and contrast. Near-constant examples (centred norm ~ 0) have
  distance ~1 to everything, so blank images are never flagged.
* ``"l2"``: the root-mean-square difference of the centred vectors divided by the RMS of the
  centred training examples; ~sqrt(2) for unrelated examples. Not contrast invariant.

Feature arrays (penultimate-layer features of trained models) are compared as plain vectors
(no centring, no shifts): cosine on the raw vectors; l2 divided by the RMS of the training
features.

Default thresholds (:data:`DEFAULT_THRESHOLDS`): cosine distance 0.02 (centred correlation
>= 0.98) and l2 0.2 (the same for examples of average contrast, where l2 = sqrt(2 * cosine)).
Measured: on synthetic smooth 32x32x3 images (``tests/test_leakage.py``) planted exact,
shifted and brightness-scaled copies land below 1e-5 and noisy copies (sigma 0.02 in [0, 1]
pixels) at <= 0.011, while the nearest distinct image is at >= 0.45. On scikit-learn's 8x8
digits (75/25 split, no exact copies) 10 of 450 test images fall within 0.02 (none within
0.01), each of the same class as its neighbour, and 0.05 would flag 36%: low-resolution data
packs distinct examples closely, so lower the threshold there rather than raise it. The same
numbers are used for the features detector, where they are *not* calibrated: trained
networks pull same-class features together, so calibrate with :func:`calibrate_threshold`
against a known list before trusting them.

All distance computations run in ``jax.numpy`` (``jit``, float32, highest matmul precision so
a GPU's TF32 cannot blur near-duplicates into their neighbours).
"""

from __future__ import annotations

import functools
import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jmem.errors import JmemError

METRICS = ("cosine", "l2")
_NORM_EPS = 1e-6  # per value; keeps near-constant examples from dividing by ~0
_DOWNSAMPLE_MIN = 16  # spatial axes at least this long are halved in the coarse view
_HIGHEST = jax.lax.Precision.HIGHEST
# Final distances are computed in blocks of this many query rows, whatever the chunk sizes:
# XLA may round differently for different batch shapes, and results must not depend on them.
_FINAL_ROWS = 64


class _Layout(NamedTuple):
    """How an example is read: ``[*spatial, channels]``; which axes blur, halve and shift."""

    spatial: tuple[int, ...]
    channels: int
    blur_axes: tuple[int, ...]  # spatial axis numbers (0-based) that are blurred
    down_axes: tuple[int, ...]  # ... and halved in the coarse view
    shift_axes: tuple[int, ...]  # ... and searched over shifts in the re-ranking
    max_shift: int


def spatial_layout(example_shape: tuple[int, ...], max_shift: int) -> _Layout:
    """``[H, W, C]`` images and ``[L, C]`` sequences blur/shift over their spatial axes;
    ``[D]`` vectors are one channel with no spatial structure (no blur, no shifts)."""
    if len(example_shape) < 2:
        return _Layout((int(np.prod(example_shape)),), 1, (), (), (), 0)
    spatial = tuple(int(s) for s in example_shape[:-1])
    blur = tuple(a for a, s in enumerate(spatial) if s >= 3)
    down = tuple(a for a, s in enumerate(spatial) if s >= _DOWNSAMPLE_MIN)
    # One pixel is a small shift only at >= 16 pixels; on an 8x8 digit it is an eighth of
    # the image, and the crop would throw away 44% of it.
    shift = tuple(a for a, s in enumerate(spatial) if max_shift > 0 and s >= max(_DOWNSAMPLE_MIN, 2 * max_shift + 2))
    return _Layout(spatial, int(example_shape[-1]), blur, down, shift, max_shift if shift else 0)


def _centre(x: jax.Array) -> jax.Array:
    """float32[m, ..., C] minus each example's per-channel mean over all spatial positions."""
    axes = tuple(range(1, x.ndim - 1))
    return x - jnp.mean(x, axis=axes, keepdims=True)


@functools.partial(jax.jit, static_argnames=("layout", "metric"))
def _coarse_view(x: jax.Array, layout: _Layout, metric: str) -> jax.Array:
    """float32[m, *spatial, C] -> float32[m, D']: blurred, halved, centred (and unit-norm for
    cosine) vectors used to find candidates."""
    x = x.reshape((x.shape[0],) + layout.spatial + (layout.channels,)).astype(jnp.float32)
    for a in layout.blur_axes:
        # Blur-and-halve is linear along each axis: one small matmul per axis was measured 3x
        # faster on XLA:CPU than edge padding and slicing.
        op = jnp.asarray(_blur_operator(layout.spatial[a], a in layout.down_axes))
        x = jnp.moveaxis(jnp.tensordot(x, op, axes=[[a + 1], [0]], precision=_HIGHEST), -1, a + 1)
    v = _centre(x).reshape(x.shape[0], -1)
    return _unit(v) if metric == "cosine" else v


def _blur_operator(n: int, halve: bool) -> np.ndarray:
    """float32[n, n'] applying the binomial filter [1, 2, 1] / 4 with edge replication (so a
    constant stays constant: brightness offsets survive the blur), then, if ``halve``, keeping
    every second sample (n' = ceil(n / 2))."""
    op = np.zeros((n, n), np.float32)
    for i in range(n):
        for j, w in ((i - 1, 0.25), (i, 0.5), (i + 1, 0.25)):
            op[min(max(j, 0), n - 1), i] += w
    return op[:, ::2] if halve else op


def _unit(v: jax.Array) -> jax.Array:
    """Rows of ``v`` scaled to unit norm; the eps makes a ~zero row ~zero, not noise."""
    return v / jnp.sqrt(jnp.sum(v * v, axis=-1, keepdims=True) + _NORM_EPS * v.shape[-1])


@functools.partial(jax.jit, static_argnames=("k",))
def _topk_scan(q, q_self, refs, ref_bias, ref_index, k: int):
    """Running top-k of ``q @ r + bias`` over reference chunks.

    Args:
      q: float32[cq, D] query rows.
      q_self: int32[cq], a reference index each row must not match (its own; -1 for none).
      refs: float32[nc, cr, D] reference rows in chunks (zero padded).
      ref_bias: float32[nc, cr], added to every score; -inf marks padding.
      ref_index: int32[nc, cr], global reference indices (-2 for padding).
    Returns:
      (scores float32[cq, k], indices int32[cq, k]), best first.
    """

    def step(carry, chunk):
        best_s, best_i = carry
        r, bias, idx = chunk
        s = jnp.dot(q, r.T, precision=_HIGHEST) + bias[None, :]
        s = jnp.where(idx[None, :] == q_self[:, None], -jnp.inf, s)
        cs, ci = jax.lax.top_k(s, min(k, r.shape[0]))
        all_s = jnp.concatenate([best_s, cs], axis=1)
        all_i = jnp.concatenate([best_i, idx[ci]], axis=1)
        ts, ti = jax.lax.top_k(all_s, k)
        return (ts, jnp.take_along_axis(all_i, ti, axis=1)), None

    init = (jnp.full((q.shape[0], k), -jnp.inf, jnp.float32), jnp.full((q.shape[0], k), -1, jnp.int32))
    (scores, index), _ = jax.lax.scan(step, init, (refs, ref_bias, ref_index))
    return scores, index


def _streaming_topk(queries: np.ndarray, refs: np.ndarray, ref_bias: np.ndarray, *, k: int,
                    exclude_self: bool, query_chunk: int, ref_chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of ``queries @ refs.T + ref_bias`` per query row, never materialising [T, N].

    Args:
      queries: float32[T, D]; refs: float32[N, D]; ref_bias: float32[N].
      exclude_self: queries and refs are the same set; a row never matches itself.
    Returns:
      (scores float32[T, k], indices int64[T, k]); index -1 where fewer than k exist.
    """
    t, n = queries.shape[0], refs.shape[0]
    cr = min(ref_chunk, n)
    nc = -(-n // cr)
    pad = nc * cr - n
    refs_c = jnp.asarray(np.pad(refs, ((0, pad), (0, 0))).reshape(nc, cr, -1))
    bias_c = jnp.asarray(np.pad(ref_bias.astype(np.float32), (0, pad), constant_values=-np.inf).reshape(nc, cr))
    index_c = jnp.asarray(np.pad(np.arange(n, dtype=np.int32), (0, pad), constant_values=-2).reshape(nc, cr))
    cq = min(query_chunk, t)
    scores = np.empty((t, k), np.float32)
    index = np.empty((t, k), np.int64)
    for start in range(0, t, cq):
        stop = min(start + cq, t)
        q = np.zeros((cq, queries.shape[1]), np.float32)  # fixed shape: one compilation
        q[: stop - start] = queries[start:stop]
        q_self = np.full(cq, -1, np.int32)
        if exclude_self:
            q_self[: stop - start] = np.arange(start, stop)
        s, i = _topk_scan(jnp.asarray(q), jnp.asarray(q_self), refs_c, bias_c, index_c, k)
        scores[start:stop] = np.asarray(s)[: stop - start]
        index[start:stop] = np.asarray(i)[: stop - start]
    index[~np.isfinite(scores)] = -1
    return scores, index


@functools.partial(jax.jit, static_argnames=("layout", "metric"))
def _shift_distance(q, cands, scale, layout: _Layout, metric: str):
    """Shift-tolerant distance of each query to each of its candidates.

    Args:
      q: float32[cq, *spatial, C] queries (normalised pixels).
      cands: float32[cq, k, *spatial, C] their candidates.
      scale: float32[], the l2 normaliser (ignored for cosine).
    Returns:
      float32[cq, k]: min over shifts of the crop distance (see the module docstring).
    """
    m = layout.max_shift
    n_sp = len(layout.spatial)
    q = q.reshape((q.shape[0],) + layout.spatial + (layout.channels,))
    cands = cands.reshape(cands.shape[:2] + layout.spatial + (layout.channels,))

    def crop(x, lead, offsets):
        for a in layout.shift_axes:
            axis = lead + a
            size = layout.spatial[a] - 2 * m
            x = jax.lax.slice_in_dim(x, m + offsets[a], m + offsets[a] + size, axis=axis)
        return x

    zero = (0,) * n_sp
    # The candidate's central crop is compared with the query's crops at every offset (the
    # same relative shifts as moving the candidate): slicing the k-times smaller query array
    # and one batched matmul over all shifts was measured 8x faster on XLA:CPU than slicing
    # the candidates once per shift.
    b = crop(cands, 2, zero)
    b = b.reshape(b.shape[0], b.shape[1], -1, layout.channels)  # [cq, k, P, C]
    dim = b.shape[2] * b.shape[3]
    sb = jnp.sum(b, axis=2)
    bb = jnp.maximum(jnp.sum(b * b, axis=(2, 3)) - jnp.sum(sb * sb, axis=-1) / b.shape[2], 0.0)[:, :, None]
    shifted = []
    for shift in itertools.product(range(-m, m + 1), repeat=len(layout.shift_axes)):
        offsets = list(zero)
        for ax, d in zip(layout.shift_axes, shift):
            offsets[ax] = -d
        shifted.append(_centre(crop(q, 1, offsets)).reshape(q.shape[0], dim))
    a = jnp.stack(shifted, axis=1)  # [cq, S, P*C], zero mean per channel
    aa = jnp.sum(a * a, axis=-1)[:, None, :]
    # ``a`` has zero channel means, so a . (b - mean b) = a . b: b needs no centred copy, and
    # |b - mean b|^2 = sum b^2 - (sum b)^2 / P per channel.
    ab = jnp.einsum("qsd,qkd->qks", a, b.reshape(b.shape[0], b.shape[1], dim), precision=_HIGHEST)
    if metric == "cosine":
        d = 1.0 - ab / (jnp.sqrt(aa + _NORM_EPS * dim) * jnp.sqrt(bb + _NORM_EPS * dim))
    else:
        d = jnp.sqrt(jnp.maximum(aa + bb - 2.0 * ab, 0.0) / dim) / scale
    return jnp.maximum(jnp.min(d, axis=-1), 0.0)


def rms_centred(x: np.ndarray, layout: _Layout, chunk: int) -> float:
    """RMS of the per-channel-centred examples of ``x`` (the l2 distance unit)."""
    total = 0.0
    for start in range(0, x.shape[0], chunk):
        v = np.asarray(x[start : start + chunk], np.float64).reshape((-1, int(np.prod(layout.spatial)), layout.channels))
        v = v - v.mean(axis=1, keepdims=True)
        total += float(np.sum(v * v))
    return float(np.sqrt(total / x.size)) or 1.0


def _coarse_views(x: np.ndarray, layout: _Layout, metric: str, chunk: int) -> np.ndarray:
    """float32[m, D'] coarse views of ``x`` computed chunk by chunk (one compiled shape)."""
    dims = [(s + 1) // 2 if a in layout.down_axes else s for a, s in enumerate(layout.spatial)]
    out = np.empty((x.shape[0], int(np.prod(dims)) * layout.channels), np.float32)
    c = min(chunk, x.shape[0])
    for start in range(0, x.shape[0], c):
        block = np.zeros((c,) + x.shape[1:], np.float32)
        part = x[start : start + c]
        block[: len(part)] = part
        out[start : start + len(part)] = np.asarray(_coarse_view(jnp.asarray(block), layout, metric))[: len(part)]
    return out


def _pick_best(cand: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row the candidate with the smallest distance, ties to the lowest index."""
    dist = np.where(cand < 0, np.inf, dist)
    order = np.lexsort((np.where(cand < 0, np.iinfo(np.int64).max, cand), dist), axis=-1)
    first = order[:, 0]
    rows = np.arange(cand.shape[0])
    return cand[rows, first], dist[rows, first].astype(np.float32)


def pixel_nearest(queries: np.ndarray, refs: np.ndarray, *, metric: str = "cosine", exclude_self: bool = False,
                  candidates: int = 8, max_shift: int = 1, chunk_size: int = 1024,
                  ref_chunk_size: int = 8192, scale: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nearest reference example of every query in normalised pixel space (see module doc).

    Args:
      queries: float32[T, *example_shape] (e.g. the test set, NHWC).
      refs: float32[N, *example_shape] (e.g. the training set).
      metric: ``"cosine"`` or ``"l2"``.
      exclude_self: ``queries`` is ``refs``; find the nearest *other* example.
      candidates: coarse-view candidates re-ranked at full resolution per query.
      max_shift: largest shift (pixels, per spatial axis) tried in the re-ranking; 0: none.
      chunk_size: query rows per step; ref_chunk_size: reference rows per step.
      scale: l2 unit; default the RMS of the centred ``refs``.
    Returns:
      (index int64[T], distance float32[T]); index -1 and distance inf when there is no
      reference (a one-example set with ``exclude_self``).
    """
    check_metric(metric)
    check_positive("chunk_size", chunk_size)
    check_positive("ref_chunk_size", ref_chunk_size)
    check_positive("candidates", candidates)
    if max_shift < 0:
        raise JmemError(f"max_shift={max_shift}; need >= 0")
    layout = spatial_layout(tuple(queries.shape[1:]), max_shift)
    k = min(candidates, refs.shape[0] - int(exclude_self))
    if k < 1:
        return np.full(queries.shape[0], -1, np.int64), np.full(queries.shape[0], np.inf, np.float32)
    qv = _coarse_views(queries, layout, metric, chunk_size)
    rv = qv if exclude_self else _coarse_views(refs, layout, metric, chunk_size)
    bias = np.zeros(rv.shape[0], np.float32) if metric == "cosine" else -np.sum(rv * rv, axis=1)
    _, cand = _streaming_topk(qv if metric == "cosine" else 2.0 * qv, rv, bias, k=k,
                              exclude_self=exclude_self, query_chunk=chunk_size, ref_chunk=ref_chunk_size)
    del qv, rv
    if scale is None:
        scale = rms_centred(refs, layout, chunk_size) if metric == "l2" else 1.0
    # Candidate images are gathered on the host a few rows at a time: [rows, k, *shape].
    rows = _FINAL_ROWS
    dist = np.empty(cand.shape, np.float32)
    for start in range(0, queries.shape[0], rows):
        stop = min(start + rows, queries.shape[0])
        q = np.zeros((rows,) + queries.shape[1:], np.float32)
        q[: stop - start] = queries[start:stop]
        idx = np.zeros((rows, k), np.int64)
        idx[: stop - start] = np.maximum(cand[start:stop], 0)
        c = np.asarray(refs[idx.reshape(-1)], np.float32).reshape((rows, k) + refs.shape[1:])
        d = _shift_distance(jnp.asarray(q), jnp.asarray(c), jnp.float32(scale), layout, metric)
        dist[start:stop] = np.asarray(d)[: stop - start]
    return _pick_best(cand, dist)


def vector_nearest(queries: np.ndarray, refs: np.ndarray, *, metric: str = "cosine", exclude_self: bool = False,
                   chunk_size: int = 1024, ref_chunk_size: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Nearest reference row of every query row for plain vectors (e.g. model features).

    Args:
      queries: float[T, D]; refs: float[N, D].
      metric: ``"cosine"``: ``1 - cos`` of the raw vectors; ``"l2"``: Euclidean distance
        divided by the root-mean-square norm of the ``refs`` rows (unrelated rows: ~sqrt(2)).
    Returns:
      (index int64[T], distance float32[T]).
    """
    check_metric(metric)
    check_positive("chunk_size", chunk_size)
    check_positive("ref_chunk_size", ref_chunk_size)
    q = np.asarray(queries, np.float32)
    r = np.asarray(refs, np.float32)
    if refs.shape[0] - int(exclude_self) < 1:
        return np.full(q.shape[0], -1, np.int64), np.full(q.shape[0], np.inf, np.float32)
    sq_r = np.sum(r.astype(np.float64) ** 2, axis=1)
    if metric == "cosine":
        qn = np.asarray(_unit(jnp.asarray(q)))
        rn = qn if exclude_self else np.asarray(_unit(jnp.asarray(r)))
        _, i = _streaming_topk(qn, rn, np.zeros(r.shape[0], np.float32), k=1, exclude_self=exclude_self,
                               query_chunk=chunk_size, ref_chunk=ref_chunk_size)
    else:
        _, i = _streaming_topk(2.0 * q, r, (-sq_r).astype(np.float32), k=1, exclude_self=exclude_self,
                               query_chunk=chunk_size, ref_chunk=ref_chunk_size)
    i = i[:, 0]
    unit = float(np.sqrt(sq_r.mean() / r.shape[1])) or 1.0
    dist = np.empty(q.shape[0], np.float32)
    for start in range(0, q.shape[0], _FINAL_ROWS):
        stop = min(start + _FINAL_ROWS, q.shape[0])
        a = np.zeros((_FINAL_ROWS, q.shape[1]), np.float32)
        b = np.zeros_like(a)
        a[: stop - start] = q[start:stop]
        b[: stop - start] = r[np.maximum(i[start:stop], 0)]
        dist[start:stop] = np.asarray(_vector_distance(jnp.asarray(a), jnp.asarray(b), jnp.float32(unit), metric))[: stop - start]
    return i, np.where(i < 0, np.inf, dist).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("metric",))
def _vector_distance(a, b, unit, metric: str):
    """float32[m]: distance of row pairs ``a[j]``, ``b[j]`` (float32[m, D]), see vector_nearest."""
    if metric == "cosine":
        return jnp.clip(1.0 - jnp.sum(_unit(a) * _unit(b), axis=-1), 0.0, 2.0)
    return jnp.sqrt(jnp.mean((a - b) ** 2, axis=-1)) / unit


def check_metric(metric):
    if metric not in METRICS:
        raise JmemError(f"metric={metric!r}; choose one of {', '.join(METRICS)}")


def check_positive(field, value):
    if int(value) < 1:
        raise JmemError(f"{field}={value}; need a positive integer")
