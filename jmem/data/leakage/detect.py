"""Train/test near-duplicate detection: :func:`find_leakage` and its :class:`LeakageResult`.

The search itself is in :mod:`jmem.data.leakage.nearest`; its default thresholds are
documented there."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from jmem.data.dataset import Dataset
from jmem.errors import JmemError
from jmem.data.leakage.nearest import check_metric, check_positive, pixel_nearest, rms_centred, spatial_layout, vector_nearest

DETECTORS = ("pixel", "features")
#: Flag a test example when its distance to the nearest training example is <= this.
DEFAULT_THRESHOLDS = {"cosine": 0.02, "l2": 0.2}

PAIRS_DTYPE = np.dtype(
    [("test_index", np.int64), ("train_index", np.int64), ("distance", np.float32), ("detector", "U8")]
)
WITHIN_TEST_DTYPE = np.dtype([("test_index", np.int64), ("other_index", np.int64), ("distance", np.float32)])


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

    def within_test_per_class(self) -> np.ndarray:
        """int64[num_classes]: test examples in at least one within-test pair, per class."""
        wp = self.within_test_pairs
        members = np.unique(np.concatenate([wp["test_index"], wp["other_index"]]))
        return np.bincount(self.labels_test[members], minlength=self.num_classes).astype(np.int64)

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
    check_metric(metric)
    check_positive("chunk_size", chunk_size)
    feats = _check_features(features, dataset) if features is not None else None
    common = dict(metric=metric, chunk_size=chunk_size, ref_chunk_size=train_chunk_size)
    # Both pixel searches measure l2 in the training set's unit, so one threshold fits both.
    scale = rms_centred(dataset.x_train, spatial_layout(dataset.example_shape, max_shift), chunk_size) if metric == "l2" else None
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
