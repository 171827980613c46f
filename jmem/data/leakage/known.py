"""Known duplicate lists: Barz & Denzler (J. Imaging 2020, arXiv 1902.00423) for CIFAR-10/100,
and their mapping from the original file order to a dataset's order."""

from __future__ import annotations

import csv
import dataclasses
import importlib.resources
import io

import numpy as np

from jmem.data.dataset import Dataset
from jmem.errors import JmemError

#: Row counts of the shipped Barz & Denzler lists.
KNOWN_LIST_ROWS = {"cifar10": 286, "cifar100": 891}
CIFAR_NUM_TRAIN = 50_000
CIFAR_NUM_TEST = 10_000
_KNOWN_HEADER = ["TestID", "TrainID", "Distance", "Judgment"]


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
    resource = importlib.resources.files("jmem.data") / "known_duplicates" / f"{name}_duplicates.csv"
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
    the record's position in the original file (see :func:`jmem.data.tfds_source.parse_source_ids`). The data loader
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
    test_pos = positions_of(source_ids_of(dataset.test_source_ids, dataset.num_test, "test_source_ids"), known.test_id)
    train_pos = positions_of(source_ids_of(dataset.train_source_ids, dataset.num_train, "train_source_ids"), known.train_id)
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


def source_ids_of(ids, n: int, field: str) -> np.ndarray:
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


def positions_of(source_ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """int64 positions ``i`` with ``source_ids[i] == wanted[j]``, -1 where absent."""
    order = np.argsort(source_ids, kind="stable")
    sorted_ids = source_ids[order]
    at = np.clip(np.searchsorted(sorted_ids, wanted), 0, max(len(sorted_ids) - 1, 0))
    hit = sorted_ids[at] == wanted if len(sorted_ids) else np.zeros(len(wanted), bool)
    return np.where(hit, order[at], -1).astype(np.int64)
