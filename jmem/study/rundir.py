"""The run directory: a public, documented set of plain files (see the README).

Every array is a ``.npy`` file (memory-mappable, readable without jmem), every table a
``.csv``, every record a ``.json``. Writes are atomic (write to a temporary name in the same
directory, then ``os.replace``), so a killed process never leaves a half-written artifact
under a final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from jmem.errors import JmemError

CONFIG = "config.json"
KEEP = "keep.npy"                    # bool[R, N]
LABELS_TRAIN = "labels_train.npy"    # int32[N], canaries included
LABELS_TEST = "labels_test.npy"      # int32[T]
MARGINS_TRAIN = "margins_train.npy"  # float32[R, N]
MARGINS_TEST = "margins_test.npy"    # float32[R, T]
MODEL_RATES = "model_rates.npy"      # float32[R], the inclusion rate of each model's mask
CANARIES = "canaries.npy"            # bool[N], training examples whose label was re-drawn
MODEL_METRICS = "models.csv"         # one row per model: id, rate, test accuracy, diverged, ...
SCORES = "scores.csv"
THRESHOLDS = "thresholds.json"
PAIRS = "pairs.csv"
DUPLICATES = "duplicates.csv"
RETRAIN = "retrain.json"
REPORT = "report.md"


def margins_extra_name(test_name: str) -> str:
    """File name of the margins on an extra test set, ``margins_<name>.npy`` (float32[R, T_k])."""
    return f"margins_{test_name}.npy"


def labels_extra_name(test_name: str) -> str:
    """File name of the labels of an extra test set, ``labels_<name>.npy`` (int32[T_k])."""
    return f"labels_{test_name}.npy"


@contextlib.contextmanager
def _atomic_path(path: Path):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_array(path: Path, array: np.ndarray) -> None:
    """Atomically write ``array`` as a ``.npy`` file."""
    with _atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array))
            f.flush()
            os.fsync(f.fileno())


class NpyRowWriter:
    """Write a C-order ``.npy`` file of known shape block of rows by block, atomically.

    For arrays assembled from parts (a run's margins from its wave files): only one block is
    in memory at a time, and the file is the same bytes ``np.save`` writes for the whole
    array. Rows go to a temporary file next to ``path``; :meth:`commit` (after exactly
    ``shape[0]`` rows) fsyncs and renames it, :meth:`discard` removes it.
    """

    def __init__(self, path: Path, shape: tuple, dtype):
        self.path, self.shape, self.dtype = Path(path), tuple(int(s) for s in shape), np.dtype(dtype)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self.tmp, self.file, self.rows = Path(tmp), os.fdopen(fd, "wb"), 0
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": self.shape}
        np.lib.format.write_array_header_1_0(self.file, header)

    def write_rows(self, block: np.ndarray) -> None:
        """Append ``block`` (shape ``[n, *shape[1:]]``, cast to the file's dtype)."""
        block = np.asarray(block)
        if block.shape[1:] != self.shape[1:] or self.rows + block.shape[0] > self.shape[0]:
            raise JmemError(f"{self.path.name}: rows of shape {block.shape} do not fit {list(self.shape)} "
                            f"after {self.rows} rows")
        self.file.write(np.ascontiguousarray(block, dtype=self.dtype).tobytes())
        self.rows += block.shape[0]

    def commit(self) -> None:
        if self.rows != self.shape[0]:
            raise JmemError(f"{self.path.name}: {self.rows} rows written, expected {self.shape[0]}")
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        if not self.file.closed:
            self.file.close()
        if self.tmp.exists():
            self.tmp.unlink()


def save_arrays(path: Path, arrays: dict) -> None:
    """Atomically write several named arrays as one ``.npz`` file."""
    with _atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())


def load_array(path: Path, mmap: bool = False) -> np.ndarray:
    """Read a ``.npy`` file; a missing file is a :class:`JmemError` naming it."""
    path = Path(path)
    if not path.exists():
        raise JmemError(f"run directory {str(path.parent)!r} has no {path.name}")
    return np.load(path, mmap_mode="r" if mmap else None)


def save_json(path: Path, obj) -> None:
    """Atomically write ``obj`` as indented JSON (numpy scalars/arrays converted)."""
    with _atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def load_json(path: Path):
    path = Path(path)
    if not path.exists():
        raise JmemError(f"run directory {str(path.parent)!r} has no {path.name}")
    return json.loads(path.read_text())


def save_text(path: Path, text: str) -> None:
    """Atomically write a text file (CSV, Markdown)."""
    with _atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def save_bytes(path: Path, data: bytes) -> None:
    """Atomically write a binary file (a PNG figure)."""
    with _atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
