"""Leakage-free test sets: the test set without examples that have a training near-duplicate."""

from __future__ import annotations


import numpy as np

from jmem.data.dataset import Dataset
from jmem.errors import JmemError
from jmem.data.leakage.detect import LeakageResult, find_leakage
from jmem.data.leakage.known import KNOWN_LIST_ROWS, KnownDuplicates, load_known_duplicates, positions_of, source_ids_of

#: Name of the extra test set without leaked examples (``margins_test_clean.npy`` etc.).
CLEAN_TEST_NAME = "test_clean"


def duplicates_mask(duplicates, num_test: int) -> np.ndarray:
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
        test_src = source_ids_of(dataset.test_source_ids, dataset.num_test, "test_source_ids")
        pos = positions_of(test_src, duplicates.test_id)
        return ~duplicates_mask(pos[pos >= 0], dataset.num_test)
    return ~duplicates_mask(duplicates, dataset.num_test)


def leakage_free_test(dataset: Dataset, duplicates=None, *, name: str = CLEAN_TEST_NAME) -> Dataset:
    """``dataset`` plus an extra test set ``name`` (default ``"test_clean"``): the test set
    without the examples that have a near-duplicate in the training set (see
    :func:`clean_test_mask` for ``duplicates``). Order of the kept examples is preserved."""
    keep = clean_test_mask(dataset, duplicates)
    if not keep.any():
        raise JmemError(f"dataset {dataset.name!r}: every test example is a duplicate; {name} would be empty")
    return dataset.with_extra_test(name, dataset.x_test[keep], dataset.y_test[keep])
