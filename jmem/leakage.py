"""Train/test leakage: near-duplicate detection, the known CIFAR lists, leakage-free test sets.

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

import csv
import dataclasses
import functools
import importlib.resources
import io
import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jmem import artifacts
from jmem.dataset import Dataset
from jmem.errors import JmemError

METRICS = ("cosine", "l2")
DETECTORS = ("pixel", "features")
#: Flag a test example when its distance to the nearest training example is <= this.
DEFAULT_THRESHOLDS = {"cosine": 0.02, "l2": 0.2}
#: Name of the extra test set without leaked examples (``margins_test_clean.npy`` etc.).
CLEAN_TEST_NAME = "test_clean"
#: Row counts of the shipped Barz & Denzler lists.
KNOWN_LIST_ROWS = {"cifar10": 286, "cifar100": 891}
CIFAR_NUM_TRAIN = 50_000
CIFAR_NUM_TEST = 10_000
DUPLICATES_COLUMNS = ("test_index", "train_index", "distance", "detector")

_KNOWN_HEADER = ["TestID", "TrainID", "Distance", "Judgment"]
_NORM_EPS = 1e-6  # per value; keeps near-constant examples from dividing by ~0
_DOWNSAMPLE_MIN = 16  # spatial axes at least this long are halved in the coarse view
_HIGHEST = jax.lax.Precision.HIGHEST
# Final distances are computed in blocks of this many query rows, whatever the chunk sizes:
# XLA may round differently for different batch shapes, and results must not depend on them.
_FINAL_ROWS = 64

PAIRS_DTYPE = np.dtype(
    [("test_index", np.int64), ("train_index", np.int64), ("distance", np.float32), ("detector", "U8")]
)
WITHIN_TEST_DTYPE = np.dtype([("test_index", np.int64), ("other_index", np.int64), ("distance", np.float32)])


# --------------------------------------------------------------------------------------------
# Known duplicate lists (Barz & Denzler 2020)
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KnownDuplicates:
    """A list of train/test duplicate pairs, one row per test example.

    Attributes:
      name: ``cifar10`` or ``cifar100``.
      test_id: int64[K]; with ``order == "source"`` the position in the original CIFAR test
        file, with ``order == "dataset"`` the position in a :class:`Dataset`'s test arrays.
      train_id: int64[K], the same for the training set.
      distance: float64[K], the authors' CNN-feature distance (not comparable to jmem's).
      judgment: int8[K], 0 exact duplicate, 1 near-duplicate, 2 very similar.
      order: ``"source"`` (as published) or ``"dataset"`` (after :func:`map_to_dataset_order`).
    """

    name: str
    test_id: np.ndarray
    train_id: np.ndarray
    distance: np.ndarray
    judgment: np.ndarray
    order: str = "source"

    def __len__(self) -> int:
        return int(self.test_id.shape[0])


def load_known_duplicates(name: str) -> KnownDuplicates:
    """The Barz & Denzler near-duplicate list of ``name`` (``"cifar10"``: 286 rows,
    ``"cifar100"``: 891 rows), in original CIFAR file order (``order="source"``).

    Validates the header, the row count, ``train_id < 50000``, ``test_id < 10000``, unique test
    ids and judgments in {0, 1, 2}. Map to a dataset's positions with
    :func:`map_to_dataset_order` before indexing arrays.
    """
    if name not in KNOWN_LIST_ROWS:
        raise JmemError(f"known duplicate list name={name!r}; choose one of {', '.join(KNOWN_LIST_ROWS)}")
    resource = importlib.resources.files("jmem") / "known_duplicates" / f"{name}_duplicates.csv"
    return parse_known_duplicates(name, resource.read_text(encoding="utf-8"))


def parse_known_duplicates(name: str, text: str) -> KnownDuplicates:
    """Parse and validate a ``TestID,TrainID,Distance,Judgment`` CSV (see
    :func:`load_known_duplicates`); ``name`` selects the expected row count."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or [c.strip() for c in rows[0]] != _KNOWN_HEADER:
        raise JmemError(f"{name} duplicate list header={rows[0] if rows else []!r}; expected {_KNOWN_HEADER}")
    body = [r for r in rows[1:] if r]
    expected = KNOWN_LIST_ROWS.get(name)
    if expected is not None and len(body) != expected:
        raise JmemError(f"{name} duplicate list has rows={len(body)}; expected {expected}")
    try:
        test_id = np.array([int(r[0]) for r in body], np.int64)
        train_id = np.array([int(r[1]) for r in body], np.int64)
        distance = np.array([float(r[2]) for r in body], np.float64)
        judgment = np.array([int(r[3]) for r in body], np.int8)
    except (ValueError, IndexError) as e:
        raise JmemError(f"{name} duplicate list has a malformed row ({e})") from None
    _check_range(name, "TestID", test_id, CIFAR_NUM_TEST)
    _check_range(name, "TrainID", train_id, CIFAR_NUM_TRAIN)
    if np.unique(test_id).size != test_id.size:
        raise JmemError(f"{name} duplicate list repeats TestID={_first_repeat(test_id)}")
    bad = np.flatnonzero(~np.isin(judgment, (0, 1, 2)))
    if bad.size:
        raise JmemError(f"{name} duplicate list row {bad[0]} has Judgment={judgment[bad[0]]}; expected 0, 1 or 2")
    if not np.all(np.isfinite(distance)):
        raise JmemError(f"{name} duplicate list has a non-finite Distance at row {np.flatnonzero(~np.isfinite(distance))[0]}")
    return KnownDuplicates(name, test_id, train_id, distance, judgment, order="source")


def _check_range(name, column, values, size):
    bad = np.flatnonzero((values < 0) | (values >= size))
    if bad.size:
        raise JmemError(f"{name} duplicate list row {bad[0]} has {column}={values[bad[0]]}; expected [0, {size})")


def _first_repeat(values: np.ndarray) -> int:
    uniq, counts = np.unique(values, return_counts=True)
    return int(uniq[counts > 1][0])


def map_to_dataset_order(known: KnownDuplicates, dataset: Dataset, *, missing: str = "raise") -> KnownDuplicates:
    """Re-index a published list (original file order) to positions in ``dataset``.

    The position of a listed id is the index ``i`` where ``dataset.train_source_ids[i]`` (or
    ``test_source_ids``) equals it; ``None`` source ids mean the dataset is in file order.

    TFDS serves cifar10/cifar100 in a shuffled order that differs from the original files,
    but each record carries an ``id`` feature, ``"train_XXXXX"`` / ``"test_XXXXX"``, that is
    the record's position in the original file (see :func:`jmem.data.parse_source_ids`). The data loader
    stores those numbers as the dataset's source ids; never index TFDS-ordered arrays with
    the published numbers directly.

    Args:
      known: a list with ``order == "source"``.
      dataset: the dataset to map into.
      missing: ``"raise"`` (default): a listed id absent from the dataset is an error (e.g.
        a subset was loaded); ``"drop"``: drop such rows.

    Returns:
      A :class:`KnownDuplicates` with ``order == "dataset"`` whose ``test_id`` / ``train_id``
      index ``dataset.x_test`` / ``dataset.x_train``; rows keep their published order.
    """
    if known.order != "source":
        raise JmemError(f"known duplicates order={known.order!r}; map_to_dataset_order needs 'source'")
    if missing not in ("raise", "drop"):
        raise JmemError(f"missing={missing!r}; choose 'raise' or 'drop'")
    test_pos = _positions_of(_source_ids(dataset.test_source_ids, dataset.num_test, "test_source_ids"), known.test_id)
    train_pos = _positions_of(_source_ids(dataset.train_source_ids, dataset.num_train, "train_source_ids"), known.train_id)
    found = (test_pos >= 0) & (train_pos >= 0)
    if missing == "raise" and not found.all():
        row = int(np.flatnonzero(~found)[0])
        field, value = ("test_source_ids", known.test_id[row]) if test_pos[row] < 0 else ("train_source_ids", known.train_id[row])
        raise JmemError(f"{known.name} duplicate row {row}: id {value} is not in dataset {dataset.name!r} {field}")
    return dataclasses.replace(
        known,
        test_id=test_pos[found],
        train_id=train_pos[found],
        distance=known.distance[found],
        judgment=known.judgment[found],
        order="dataset",
    )


def _source_ids(ids, n: int, field: str) -> np.ndarray:
    """int64[n] source ids (``arange`` for None), checked for shape and uniqueness."""
    if ids is None:
        return np.arange(n, dtype=np.int64)
    ids = np.asarray(ids)
    if ids.shape != (n,) or not np.issubdtype(ids.dtype, np.integer):
        raise JmemError(f"dataset {field} has shape {ids.shape} and dtype {ids.dtype}; expected int64[{n}]")
    ids = ids.astype(np.int64)
    if np.unique(ids).size != n:
        raise JmemError(f"dataset {field} repeats id {_first_repeat(ids)}")
    return ids


def _positions_of(source_ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """int64 positions ``i`` with ``source_ids[i] == wanted[j]``, -1 where absent."""
    order = np.argsort(source_ids, kind="stable")
    sorted_ids = source_ids[order]
    at = np.clip(np.searchsorted(sorted_ids, wanted), 0, max(len(sorted_ids) - 1, 0))
    hit = sorted_ids[at] == wanted if len(sorted_ids) else np.zeros(len(wanted), bool)
    return np.where(hit, order[at], -1).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Streaming nearest-neighbour search (jax)
# --------------------------------------------------------------------------------------------


class _Layout(NamedTuple):
    """How an example is read: ``[*spatial, channels]``; which axes blur, halve and shift."""

    spatial: tuple[int, ...]
    channels: int
    blur_axes: tuple[int, ...]  # spatial axis numbers (0-based) that are blurred
    down_axes: tuple[int, ...]  # ... and halved in the coarse view
    shift_axes: tuple[int, ...]  # ... and searched over shifts in the re-ranking
    max_shift: int


def _layout(example_shape: tuple[int, ...], max_shift: int) -> _Layout:
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


def _rms_centred(x: np.ndarray, layout: _Layout, chunk: int) -> float:
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
    _check_metric(metric)
    _check_positive("chunk_size", chunk_size)
    _check_positive("ref_chunk_size", ref_chunk_size)
    _check_positive("candidates", candidates)
    if max_shift < 0:
        raise JmemError(f"max_shift={max_shift}; need >= 0")
    layout = _layout(tuple(queries.shape[1:]), max_shift)
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
        scale = _rms_centred(refs, layout, chunk_size) if metric == "l2" else 1.0
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
    _check_metric(metric)
    _check_positive("chunk_size", chunk_size)
    _check_positive("ref_chunk_size", ref_chunk_size)
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


def _check_metric(metric):
    if metric not in METRICS:
        raise JmemError(f"metric={metric!r}; choose one of {', '.join(METRICS)}")


def _check_positive(field, value):
    if int(value) < 1:
        raise JmemError(f"{field}={value}; need a positive integer")


# --------------------------------------------------------------------------------------------
# Leakage result and the command's building blocks
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Neighbours:
    """Nearest neighbour of every query example: ``index`` int64[T] (-1: none), ``distance``
    float32[T] (inf: none)."""

    index: np.ndarray
    distance: np.ndarray


@dataclasses.dataclass(frozen=True)
class LeakageResult:
    """What :func:`find_leakage` found; thresholds are applied lazily, so
    :meth:`with_thresholds` re-thresholds without searching again.

    Attributes:
      dataset_name: the dataset's name.
      metric: ``"cosine"`` or ``"l2"``.
      thresholds: detector -> threshold; a test example is leaked by a detector when its
        nearest training distance is <= the threshold.
      nearest: detector (``"pixel"``, ``"features"``) -> nearest training example of every
        test example.
      within_test: nearest *other* test example of every test example (pixel detector), or
        None when not computed.
      labels_test: int32[T], for per-class counts.
      num_classes: number of classes.
    """

    dataset_name: str
    metric: str
    thresholds: dict
    nearest: dict
    within_test: Neighbours | None
    labels_test: np.ndarray
    num_classes: int

    @property
    def num_test(self) -> int:
        return int(self.labels_test.shape[0])

    def leaked_by(self, detector: str) -> np.ndarray:
        """bool[T]: test examples whose nearest training example is within the threshold."""
        return self.nearest[detector].distance <= self.thresholds[detector]

    @property
    def leaked(self) -> np.ndarray:
        """bool[T]: leaked by any detector."""
        out = np.zeros(self.num_test, bool)
        for detector in self.nearest:
            out |= self.leaked_by(detector)
        return out

    @property
    def pairs(self) -> np.ndarray:
        """Structured array (:data:`PAIRS_DTYPE`): one row per (leaked test example, detector)
        with its nearest training example; sorted by test index, then detector."""
        parts = []
        for detector, nb in self.nearest.items():
            t = np.flatnonzero(self.leaked_by(detector))
            part = np.empty(t.size, PAIRS_DTYPE)
            part["test_index"], part["train_index"], part["distance"] = t, nb.index[t], nb.distance[t]
            part["detector"] = detector
            parts.append(part)
        table = np.concatenate(parts) if parts else np.empty(0, PAIRS_DTYPE)
        return table[np.lexsort((table["detector"], table["test_index"]))]

    @property
    def within_test_pairs(self) -> np.ndarray:
        """Structured array (:data:`WITHIN_TEST_DTYPE`): unordered pairs of test examples
        (``test_index < other_index``) where one is the other's nearest test neighbour within
        the pixel threshold."""
        if self.within_test is None:
            return np.empty(0, WITHIN_TEST_DTYPE)
        nb = self.within_test
        t = np.flatnonzero((nb.index >= 0) & (nb.distance <= self.thresholds["pixel"]))
        a, b = np.minimum(t, nb.index[t]), np.maximum(t, nb.index[t])
        _, first = np.unique(np.stack([a, b], axis=1), axis=0, return_index=True)
        first = np.sort(first)
        table = np.empty(first.size, WITHIN_TEST_DTYPE)
        table["test_index"], table["other_index"], table["distance"] = a[first], b[first], nb.distance[t][first]
        return table[np.lexsort((table["other_index"], table["test_index"]))]

    def leaked_per_class(self) -> np.ndarray:
        """int64[num_classes]: leaked test examples per class (any detector)."""
        return np.bincount(self.labels_test[self.leaked], minlength=self.num_classes).astype(np.int64)

    def test_per_class(self) -> np.ndarray:
        """int64[num_classes]: test examples per class."""
        return np.bincount(self.labels_test, minlength=self.num_classes).astype(np.int64)

    def with_thresholds(self, thresholds) -> "LeakageResult":
        """A copy with new thresholds (a float for every detector, or detector -> float)."""
        return dataclasses.replace(self, thresholds=_resolve_thresholds(thresholds, self.metric, list(self.nearest)))


def _resolve_thresholds(threshold, metric: str, detectors) -> dict:
    if threshold is None:
        return {d: DEFAULT_THRESHOLDS[metric] for d in detectors}
    if isinstance(threshold, Mapping):
        unknown = sorted(set(threshold) - set(DETECTORS))
        if unknown:
            raise JmemError(f"threshold detector={unknown[0]!r}; choose one of {', '.join(DETECTORS)}")
        out = {d: float(threshold.get(d, DEFAULT_THRESHOLDS[metric])) for d in detectors}
    else:
        out = {d: float(threshold) for d in detectors}
    for d, value in out.items():
        if not np.isfinite(value) or value < 0:
            raise JmemError(f"threshold[{d!r}]={value}; need a finite value >= 0")
    return out


def _check_features(features, dataset: Dataset):
    try:
        f_train, f_test = features
    except (TypeError, ValueError):
        raise JmemError("features must be a pair (features_train float[N, D], features_test float[T, D])") from None
    f_train, f_test = np.asarray(f_train, np.float32), np.asarray(f_test, np.float32)
    for field, arr, n in (("features_train", f_train, dataset.num_train), ("features_test", f_test, dataset.num_test)):
        if arr.ndim != 2 or arr.shape[0] != n:
            raise JmemError(f"{field} has shape {arr.shape}; expected [{n}, D]")
        if not np.all(np.isfinite(arr)):
            raise JmemError(f"{field} has non-finite values (first at row {np.flatnonzero(~np.isfinite(arr).all(1))[0]})")
    if f_train.shape[1] != f_test.shape[1]:
        raise JmemError(f"features_test has D={f_test.shape[1]} but features_train has D={f_train.shape[1]}")
    return f_train, f_test


def find_leakage(dataset: Dataset, *, features=None, threshold=None, metric: str = "cosine",
                 chunk_size: int = 1024, train_chunk_size: int = 8192, candidates: int = 8,
                 max_shift: int = 1, within_test: bool = True) -> LeakageResult:
    """Nearest training example of every test example, in pixel space and optionally in a
    feature space, plus the nearest other test example (within-test duplicates).

    Args:
      dataset: the dataset (normalised arrays, any example shape).
      features: optional pair ``(features_train float[N, D], features_test float[T, D])``,
        e.g. penultimate-layer features of a trained model; adds the ``"features"`` detector.
      threshold: None (:data:`DEFAULT_THRESHOLDS` for ``metric``), one float for every
        detector, or ``{"pixel": ..., "features": ...}``.
      metric: ``"cosine"`` (default) or ``"l2"``; see the module docstring.
      chunk_size: test rows per step; train_chunk_size: training rows per step. Peak extra
        memory is about ``chunk_size * train_chunk_size * 4`` bytes plus the coarse views.
      candidates: coarse candidates re-ranked per test example (pixel detector).
      max_shift: pixels of shift tolerated per spatial axis (pixel detector); 0: none.
      within_test: also search the test set against itself.
    Returns:
      A :class:`LeakageResult`; ``write_duplicates_csv`` and ``format_leakage_summary`` turn it
      into the run directory's ``duplicates.csv`` and a printable summary.
    """
    _check_metric(metric)
    _check_positive("chunk_size", chunk_size)
    feats = _check_features(features, dataset) if features is not None else None
    common = dict(metric=metric, chunk_size=chunk_size, ref_chunk_size=train_chunk_size)
    # Both pixel searches measure l2 in the training set's unit, so one threshold fits both.
    scale = _rms_centred(dataset.x_train, _layout(dataset.example_shape, max_shift), chunk_size) if metric == "l2" else None
    pixel = dict(common, candidates=candidates, max_shift=max_shift, scale=scale)
    nearest = {"pixel": Neighbours(*pixel_nearest(dataset.x_test, dataset.x_train, **pixel))}
    if feats is not None:
        nearest["features"] = Neighbours(*vector_nearest(feats[1], feats[0], **common))
    within = None
    if within_test:
        within = Neighbours(*pixel_nearest(dataset.x_test, dataset.x_test, exclude_self=True, **pixel))
    return LeakageResult(
        dataset_name=dataset.name,
        metric=metric,
        thresholds=_resolve_thresholds(threshold, metric, list(nearest)),
        nearest=nearest,
        within_test=within,
        labels_test=np.asarray(dataset.y_test, np.int32),
        num_classes=int(dataset.num_classes),
    )


def write_duplicates_csv(path, result: LeakageResult) -> None:
    """Atomically write ``duplicates.csv`` (:data:`artifacts.DUPLICATES`): columns
    ``test_index,train_index,distance,detector``, one row per leaked test example and
    detector, indices are positions in the dataset's test/train arrays."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(DUPLICATES_COLUMNS)
    for row in result.pairs:
        writer.writerow([int(row["test_index"]), int(row["train_index"]), f"{float(row['distance']):.6g}", str(row["detector"])])
    artifacts.save_text(Path(path), out.getvalue())


def read_duplicates_csv(path) -> np.ndarray:
    """Read a ``duplicates.csv`` written by :func:`write_duplicates_csv` (:data:`PAIRS_DTYPE`)."""
    path = Path(path)
    if not path.exists():
        raise JmemError(f"run directory {str(path.parent)!r} has no {path.name}")
    rows = list(csv.reader(io.StringIO(path.read_text())))
    if not rows or tuple(rows[0]) != DUPLICATES_COLUMNS:
        raise JmemError(f"{path.name} header={rows[0] if rows else []!r}; expected {list(DUPLICATES_COLUMNS)}")
    table = np.empty(len(rows) - 1, PAIRS_DTYPE)
    for i, r in enumerate(rows[1:]):
        table[i] = (int(r[0]), int(r[1]), float(r[2]), r[3])
    return table


def format_leakage_summary(result: LeakageResult, dataset: Dataset) -> str:
    """A plain-text summary: leaked share of the test set per detector and per class, and
    within-test duplicates."""
    if result.num_test != dataset.num_test:
        raise JmemError(f"leakage result has {result.num_test} test examples but dataset {dataset.name!r} has {dataset.num_test}")
    t = dataset.num_test
    leaked = result.leaked
    lines = [
        f"Leakage in {dataset.name}: {int(leaked.sum()):,} of {t:,} test examples ({_pct(leaked.sum(), t)}) "
        f"have a near-duplicate among {dataset.num_train:,} training examples.",
    ]
    for detector in result.nearest:
        mask = result.leaked_by(detector)
        lines.append(
            f"  {detector:<8} ({result.metric}, threshold {result.thresholds[detector]:g}): "
            f"{int(mask.sum()):,} ({_pct(mask.sum(), t)})"
        )
    if result.within_test is not None:
        wp = result.within_test_pairs
        noun = "pair" if len(wp) == 1 else "pairs"
        lines.append(f"Within the test set: {len(wp):,} {noun} of near-duplicate test examples (pixel detector).")
    lines.append("Per class (leaked / test examples):")
    lines.append(f"  {'class':>5} {'leaked':>7} {'test':>7} {'share':>7}")
    for c, (n_leak, n_test) in enumerate(zip(result.leaked_per_class(), result.test_per_class())):
        lines.append(f"  {c:>5} {int(n_leak):>7,} {int(n_test):>7,} {_pct(n_leak, n_test):>7}")
    return "\n".join(lines) + "\n"


def _pct(num, den) -> str:
    return f"{100.0 * float(num) / float(den):.2f}%" if den else "n/a"


# --------------------------------------------------------------------------------------------
# Calibration against a known list
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Recall and precision of a distance threshold against known duplicates.

    Attributes:
      thresholds: float64[M], increasing: every distinct test distance.
      recall: float64[M], share of known duplicates with distance <= threshold.
      precision: float64[M], share of flagged test examples that are known duplicates
        (NaN where nothing is flagged).
      flagged: int64[M], test examples flagged at each threshold.
      num_known: number of known duplicate test examples.
      suggested: the threshold with the best F1 (ties: the smallest), or with
        ``min_precision`` the largest threshold whose precision reaches it (NaN if none).
    """

    thresholds: np.ndarray
    recall: np.ndarray
    precision: np.ndarray
    flagged: np.ndarray
    num_known: int
    suggested: float

    def at(self, threshold: float) -> tuple[float, float]:
        """(recall, precision) when flagging distances <= ``threshold``."""
        i = np.searchsorted(self.thresholds, threshold, side="right") - 1
        if i < 0:
            return 0.0, float("nan")
        return float(self.recall[i]), float(self.precision[i])


def calibrate_threshold(distance: np.ndarray, known, *, min_precision: float | None = None) -> Calibration:
    """Recall/precision of ``distance <= threshold`` at every distinct distance, against a
    known list, and a suggested threshold.

    Args:
      distance: float[T], each test example's distance to its nearest training example (e.g.
        ``result.nearest["pixel"].distance``).
      known: the known duplicate test examples as a :class:`KnownDuplicates` with
        ``order == "dataset"`` (see :func:`map_to_dataset_order`), a bool[T] mask or int[K]
        test positions. A known test example counts as found when its distance is within the
        threshold, whichever training example is nearest (training sets hold duplicates too).
      min_precision: if given, suggest the largest threshold whose precision is at least this.
    """
    distance = np.asarray(distance, np.float64)
    positive = _test_mask(known, distance.shape[0])
    if positive.sum() == 0:
        raise JmemError("known duplicates: the list has no test example in this dataset; cannot calibrate")
    order = np.argsort(distance, kind="stable")
    d = distance[order]
    tp = np.cumsum(positive[order])
    n_flag = np.arange(1, d.size + 1)
    last = np.flatnonzero(np.append(d[1:] != d[:-1], True))  # last row of each distinct distance
    finite = np.isfinite(d[last])
    last = last[finite]
    thresholds, tp, n_flag = d[last], tp[last], n_flag[last]
    recall = tp / positive.sum()
    precision = tp / n_flag
    if min_precision is not None:
        ok = np.flatnonzero(precision >= min_precision)
        suggested = float(thresholds[ok[-1]]) if ok.size else float("nan")
    else:
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        suggested = float(thresholds[int(np.argmax(f1))]) if f1.size else float("nan")
    return Calibration(thresholds, recall, precision, n_flag.astype(np.int64), int(positive.sum()), suggested)


# --------------------------------------------------------------------------------------------
# Leakage-free test sets
# --------------------------------------------------------------------------------------------


def _test_mask(duplicates, num_test: int) -> np.ndarray:
    """bool[T] from a LeakageResult, a dataset-ordered KnownDuplicates, a mask or positions."""
    if isinstance(duplicates, LeakageResult):
        mask = duplicates.leaked
    elif isinstance(duplicates, KnownDuplicates):
        if duplicates.order != "dataset":
            raise JmemError(f"known duplicates order={duplicates.order!r}; map them with map_to_dataset_order first")
        mask = np.zeros(num_test, bool)
        mask[_checked_positions(duplicates.test_id, num_test)] = True
    else:
        arr = np.asarray(duplicates)
        if arr.dtype == bool:
            mask = arr
        else:
            mask = np.zeros(num_test, bool)
            mask[_checked_positions(arr, num_test)] = True
    if mask.shape != (num_test,):
        raise JmemError(f"duplicates mask has shape {mask.shape}; expected ({num_test},)")
    return mask


def _checked_positions(positions: np.ndarray, num_test: int) -> np.ndarray:
    positions = np.asarray(positions)
    if positions.size and not np.issubdtype(positions.dtype, np.integer):
        raise JmemError(f"duplicate test positions have dtype {positions.dtype}; expected integers")
    bad = np.flatnonzero((positions < 0) | (positions >= num_test))
    if bad.size:
        raise JmemError(f"duplicate test position={int(positions[bad[0]])} is outside [0, {num_test})")
    return positions.astype(np.int64)


def clean_test_mask(dataset: Dataset, duplicates=None) -> np.ndarray:
    """bool[T]: test examples to *keep* (those without a train near-duplicate).

    Args:
      dataset: the dataset.
      duplicates: None: the Barz & Denzler list for ``cifar10`` / ``cifar100`` (mapped through
        the source ids; listed test ids absent from the dataset are ignored), detection with
        :func:`find_leakage` defaults otherwise. Or a :class:`LeakageResult`, a
        :class:`KnownDuplicates` (either order), a bool[T] mask or int[K] test positions.
    """
    if duplicates is None:
        if dataset.name in KNOWN_LIST_ROWS:
            duplicates = load_known_duplicates(dataset.name)
        else:
            duplicates = find_leakage(dataset, within_test=False)
    if isinstance(duplicates, KnownDuplicates) and duplicates.order == "source":
        # Only the test side matters here: a listed test image is dropped even when its
        # training twin is not in this (possibly subsampled) training set.
        test_src = _source_ids(dataset.test_source_ids, dataset.num_test, "test_source_ids")
        pos = _positions_of(test_src, duplicates.test_id)
        return ~_test_mask(pos[pos >= 0], dataset.num_test)
    return ~_test_mask(duplicates, dataset.num_test)


def leakage_free_test(dataset: Dataset, duplicates=None, *, name: str = CLEAN_TEST_NAME) -> Dataset:
    """``dataset`` plus an extra test set ``name`` (default ``"test_clean"``): the test set
    without the examples that have a near-duplicate in the training set (see
    :func:`clean_test_mask` for ``duplicates``). Order of the kept examples is preserved."""
    keep = clean_test_mask(dataset, duplicates)
    if not keep.any():
        raise JmemError(f"dataset {dataset.name!r}: every test example is a duplicate; {name} would be empty")
    return dataset.with_extra_test(name, dataset.x_test[keep], dataset.y_test[keep])
