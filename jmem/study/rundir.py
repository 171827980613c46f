"""The run directory: a public, documented set of plain files (docs/run-directory.md).

Every array is a ``.npy`` file (memory-mappable, readable without jmem), every table a
``.csv``, every record a ``.json``. Writes are atomic (write to a temporary name in the same
directory, then ``os.replace``), so a killed process never leaves a half-written artifact
under a final name. Files get the mode a normal file gets under the user's umask (a
colleague sharing the filesystem can read them). A failed write (full disk, read-only
directory) or an unreadable file is a one-line :class:`JmemError` naming the file.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import secrets
import zipfile
from pathlib import Path

import numpy as np

from jmem.errors import JmemError, one_line, os_error
from jmem.jsonable import to_jsonable

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
ABLATION = "ablation.json"
REPORT = "report.md"
REPORT_FIGURES = "figures"           # the report's PNG plots, linked from report.md
FZ_EXPORT = "fz_layout.npz"          # scores in Feldman & Zhang's released file layout
RELIABILITY = "reliability.json"     # split-half, stability and models-needed numbers of the report
MANIFEST = "manifest.json"           # what the run depends on: dataset fingerprint, checksums
CUM_LOSS = "cum_loss.npy"            # float32[R, N], train.record_proxies: summed training loss (CSL)
LEARNED_EPOCH = "learned_epoch.npy"  # int32[R, N], train.record_proxies: epoch from which it stays learned
LOSS_HISTORY = "loss_history.npy"    # float32[R, epochs], mean training loss per epoch (NaN once diverged)
LOO = "loo.json"                     # the leave-one-out validation (``jmem loo``), in loo/


def margins_extra_name(test_name: str) -> str:
    """File name of the margins on an extra test set, ``margins_<name>.npy`` (float32[R, T_k])."""
    return f"margins_{test_name}.npy"


def labels_extra_name(test_name: str) -> str:
    """File name of the labels of an extra test set, ``labels_<name>.npy`` (int32[T_k])."""
    return f"labels_{test_name}.npy"


@contextlib.contextmanager
def _atomic_path(path: Path):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    The temporary file is created with mode 0o666 minus the umask (``tempfile.mkstemp``
    would make it 0600, and the rename would keep that). An OSError becomes a JmemError
    naming ``path``.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _create_tmp(path)
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        raise os_error(err, path, "write") from err
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _create_tmp(path: Path) -> Path:
    """Create an empty ``.<name>.<random>.tmp`` next to ``path`` (umask-based mode)."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


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
    array. Blocks go to the next rows, or to the rows they name (a wave of models grouped by
    subset size holds rows from anywhere); every row is written exactly once. Rows go to a
    temporary file next to ``path``; :meth:`commit` (after every row) fsyncs and renames it,
    :meth:`discard` removes it.
    """

    def __init__(self, path: Path, shape: tuple, dtype):
        self.path, self.shape, self.dtype = Path(path), tuple(int(s) for s in shape), np.dtype(dtype)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = _create_tmp(self.path)  # umask-based mode, like every other output
        self.file = open(self.tmp, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": self.shape}
        np.lib.format.write_array_header_1_0(self.file, header)
        self._data_offset = self.file.tell()
        self._row_bytes = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))
        self._written = np.zeros(self.shape[0], bool)
        self.rows = 0  # rows written so far

    def write_rows(self, block: np.ndarray, rows: np.ndarray | None = None) -> None:
        """Write ``block`` (shape ``[n, *shape[1:]]``, cast to the file's dtype) into the rows
        ``rows`` (int[n], distinct, none written before; default: the next n rows)."""
        block = np.asarray(block)
        n = block.shape[0] if block.ndim else 0
        rows = np.arange(self.rows, self.rows + n) if rows is None else np.asarray(rows, np.int64)
        if block.shape[1:] != self.shape[1:] or rows.shape != (n,):
            raise JmemError(f"{self.path.name}: rows of shape {block.shape} do not fit {list(self.shape)}")
        if n and (rows.min() < 0 or rows.max() >= self.shape[0] or self._written[rows].any()
                  or np.unique(rows).size != n):
            raise JmemError(f"{self.path.name}: rows {row_span(rows)} do not fit {list(self.shape)} "
                            f"after {self.rows} rows (out of range or written twice)")
        data = np.ascontiguousarray(block, dtype=self.dtype)
        # One seek and write per run of consecutive rows: in row order this is one sequential write.
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        for first, last in zip(np.r_[0, breaks], np.r_[breaks, n]):
            self.file.seek(self._data_offset + int(rows[first]) * self._row_bytes)
            self.file.write(data[first:last].tobytes())
        self._written[rows] = True
        self.rows += n

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


def row_span(rows: np.ndarray) -> str:
    """``"first-last"`` of the row indices ``rows`` (int[n]), for messages ("none" if empty)."""
    return f"{int(rows.min())}-{int(rows.max())}" if rows.size else "none"


def save_arrays(path: Path, arrays: dict) -> None:
    """Atomically write several named arrays as one ``.npz`` file."""
    with _atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())


def save_arrays_streaming(path: Path, items) -> None:
    """Atomically write ``(name, array)`` pairs from an iterable as one ``.npz`` file.

    Each array is written into the archive as soon as it is produced, so a caller can build
    large arrays one at a time without holding them all (``np.load`` reads the result).
    """
    with _atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, array in items:
                with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())


def load_array(path: Path, mmap: bool = False) -> np.ndarray:
    """Read a ``.npy`` file; a missing file is a :class:`JmemError` naming it."""
    path = Path(path)
    if not path.exists():
        raise JmemError(f"run directory {str(path.parent)!r} has no {path.name}")
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except OSError as err:
        raise os_error(err, path, "read") from err
    except (ValueError, EOFError) as err:  # truncated: "mmap length is greater than file size"
        raise JmemError(f"{path} is damaged or not a .npy file ({one_line(err)})") from err
    if not isinstance(array, np.ndarray):  # a .npz under a .npy name
        raise JmemError(f"{path} is not a .npy array file")
    return array


def save_json(path: Path, obj) -> None:
    """Atomically write ``obj`` as indented JSON (numpy scalars/arrays converted)."""
    save_text(path, json_text(obj))


def json_text(obj) -> str:
    """The exact text :func:`save_json` writes for ``obj`` (through :func:`jmem.jsonable.to_jsonable`)."""
    return json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n"


def load_json(path: Path, expect=None):
    """Read a JSON file; missing, unreadable or malformed (or, with ``expect``, not of that
    type, e.g. ``dict``) is a :class:`JmemError` naming it."""
    path = Path(path)
    if not path.exists():
        raise JmemError(f"run directory {str(path.parent)!r} has no {path.name}")
    try:
        value = json.loads(path.read_text())
    except OSError as err:
        raise os_error(err, path, "read") from err
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise JmemError(f"{path} is not valid JSON ({one_line(err)})") from err
    if expect is not None and not isinstance(value, expect):
        kind = "a JSON object" if expect is dict else expect.__name__
        raise JmemError(f"{path} holds a JSON {type(value).__name__}, not {kind}")
    return value


def save_text(path: Path, text: str) -> None:
    """Atomically write a text file (CSV, Markdown)."""
    with _atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def save_bytes(path: Path, data: bytes) -> None:
    """Atomically write a binary file (a PNG figure)."""
    with _atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


# ----------------------------------------------------------------------------- CSV tables


def _format_column(values: np.ndarray) -> list:
    if values.dtype.kind in "OUS":
        return values.astype(str).tolist()
    if values.dtype == np.bool_:
        return values.astype(np.int8).astype(str).tolist()
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(str).tolist()
    return np.char.mod("%.6g", values.astype(np.float64)).tolist()


def csv_text(columns: dict) -> str:
    """A CSV table from equal-length 1-D arrays (floats as %.6g, NaN as ``nan``, bools 0/1)."""
    header = ",".join(columns)
    cols = [_format_column(np.asarray(v)) for v in columns.values()]
    rows = [",".join(r) for r in zip(*cols)]
    return "\n".join([header, *rows]) + "\n"


def read_csv_columns(path) -> dict:
    """A CSV file as ``{column: array}``: float64 where every value parses, else str."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise JmemError(f"{path} is empty")
        rows = list(reader)
    cols = {}
    for i, name in enumerate(header):
        values = [r[i] for r in rows]
        try:
            cols[name] = np.array([float(v) for v in values], np.float64)
        except ValueError:
            cols[name] = np.array(values, dtype=str)
    return cols


def read_diverged(path: Path, num_models: int) -> np.ndarray | None:
    """bool[R], the ``diverged`` column of ``models.csv``; None without the file or column."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        column = read_csv_columns(path).get("diverged")
    except (IndexError, JmemError):  # a short row, or no header
        raise JmemError(f"{path} is damaged: its rows do not match its header") from None
    if column is None:
        return None
    if column.size != num_models:
        raise JmemError(f"{path} has {column.size} rows; expected one per model ({num_models})")
    if column.dtype.kind != "f" or not np.isin(column, (0, 1)).all():
        raise JmemError(f"{path} is damaged: its 'diverged' column is not 0/1")
    return column == 1
