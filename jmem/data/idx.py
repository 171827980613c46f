"""MNIST-format IDX files: a reader for one file and a loader for a directory of four.

The IDX format (LeCun et al.'s MNIST distribution, also used by Fashion-MNIST, KMNIST and
EMNIST) is a header followed by raw big-endian values:

* bytes 0-1: zero; byte 2: value type (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
  0x0D float32, 0x0E float64); byte 3: number of dimensions d;
* d big-endian uint32 sizes; then prod(sizes) values, row-major.

Files may be gzip-compressed (recognised by their content, not their name). A directory holds
``[prefix]train-images-idx3-ubyte``, ``[prefix]train-labels-idx1-ubyte`` and the same with
``t10k`` (or ``test``) for the test split, each optionally ``.gz``. EMNIST's images are stored
transposed; this loader returns every file as stored.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import zlib
from pathlib import Path

import numpy as np

from jmem.data.dataset import Dataset
from jmem.errors import JmemError

# IDX value type code -> numpy dtype (big-endian, as stored).
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"

_FILE_NAME = re.compile(
    r"^(?P<prefix>.*?)(?P<split>train|t10k|test)-(?P<kind>images|labels)-idx(?P<ndim>\d)-ubyte(?P<gz>\.gz)?$"
)
ROLES = ("train_images", "train_labels", "test_images", "test_labels")


def read_bytes(path) -> bytes:
    """The file's contents, gunzipped when it starts with the gzip magic bytes.

    Raises JmemError for a missing file or a damaged / truncated gzip stream.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise JmemError(f"IDX file {str(path)!r} cannot be read ({type(err).__name__}: {err})") from None
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise JmemError(f"IDX file {str(path)!r} is a damaged or truncated gzip file ({err})") from None


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of one IDX file into a native-endian numpy array of the stored shape.

    Raises JmemError (naming ``source``) on a bad magic number, an unknown value type, or a
    size that does not match the header (truncated, or trailing bytes).
    """
    if len(data) < 4:
        raise JmemError(f"IDX file {source!r} is truncated: {len(data)} bytes, not even a header")
    if data[0] != 0 or data[1] != 0:
        raise JmemError(f"IDX file {source!r} has magic number 0x{data[:4].hex()}; an IDX file starts "
                        "with two zero bytes (is it an IDX file?)")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise JmemError(f"IDX file {source!r} has value type 0x{code:02x}; known: "
                        + ", ".join(f"0x{c:02x}" for c in IDX_DTYPES))
    header = 4 + 4 * ndim
    if len(data) < header:
        raise JmemError(f"IDX file {source!r} is truncated inside its header ({len(data)} of {header} bytes)")
    shape = tuple(int(s) for s in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise JmemError(f"IDX file {source!r} is {what}: {len(data):,} bytes, header {list(shape)} of "
                        f"{dtype.name} needs {expected:,}")
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path) -> np.ndarray:
    """One IDX file (plain or gzip) as a numpy array; see :func:`parse_idx`."""
    return parse_idx(read_bytes(path), str(path))


def find_idx_files(directory) -> dict[str, Path]:
    """The four files of an IDX directory: role (:data:`ROLES`) -> path.

    Where both ``NAME`` and ``NAME.gz`` exist the plain file is used. Raises JmemError when
    the directory is missing, a file is missing, or it holds several datasets (prefixes).
    """
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise JmemError(f"IDX directory {str(directory)!r} does not exist")
    found: dict[tuple, Path] = {}
    for path in sorted(directory.iterdir()):
        match = _FILE_NAME.match(path.name)
        if match is None or not path.is_file():
            continue
        split = "train" if match["split"] == "train" else "test"
        key = (match["prefix"], f"{split}_{match['kind']}")
        if key not in found or not match["gz"]:  # plain beats .gz
            found[key] = path
    prefixes = sorted({prefix for prefix, _ in found})
    if len(prefixes) > 1:
        raise JmemError(f"IDX directory {str(directory)!r} holds several datasets (file prefixes "
                        f"{', '.join(map(repr, prefixes))}); give a directory with one")
    prefix = prefixes[0] if prefixes else ""
    missing = [role for role in ROLES if (prefix, role) not in found]
    if missing:
        names = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
                 "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
        wanted = ", ".join(f"{prefix}{names[r]}[.gz]" for r in missing)
        raise JmemError(f"IDX directory {str(directory)!r} lacks {wanted}")
    return {role: found[(prefix, role)] for role in ROLES}


def content_sha256(array: np.ndarray) -> str:
    """sha256 of an array's values (C order, as stored in the file), whatever the compression."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def read_idx_dir(directory) -> dict[str, np.ndarray]:
    """The four arrays of an IDX directory, checked against each other.

    Returns role -> array: images uint8 ``[N, H, W]`` (or ``[N, H, W, C]``), labels ``[N]``.
    Raises JmemError when image and label counts differ, labels are not 1-D integers, or
    train and test images have different shapes.
    """
    files = find_idx_files(directory)
    arrays = {role: read_idx(path) for role, path in files.items()}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        xf, yf = files[f"{split}_images"].name, files[f"{split}_labels"].name
        if x.ndim not in (3, 4):
            raise JmemError(f"IDX file {xf!r} has shape {list(x.shape)}; need images [N, H, W] or [N, H, W, C]")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise JmemError(f"IDX file {yf!r} has shape {list(y.shape)} of {y.dtype}; need 1-D integer labels")
        if x.shape[0] != y.shape[0]:
            raise JmemError(f"IDX files {xf!r} and {yf!r} do not match: {x.shape[0]:,} images but "
                            f"{y.shape[0]:,} labels")
        if y.size and y.min() < 0:
            raise JmemError(f"IDX file {yf!r} has negative label {int(y.min())}")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise JmemError(f"IDX directory {str(directory)!r}: train images are {list(arrays['train_images'].shape[1:])} "
                        f"but test images {list(arrays['test_images'].shape[1:])}")
    return arrays


def idx_dataset(arrays: dict[str, np.ndarray], name: str, num_classes: int | None = None) -> Dataset:
    """Raw (unnormalised) :class:`Dataset` from :func:`read_idx_dir` arrays.

    Pixels are scaled to [0, 1] (``/ 255``, as the TFDS path does), a channel axis is added to
    grayscale images: x float32 ``[N, H, W, C]``, y int32. ``num_classes`` defaults to the
    largest label + 1. Examples keep the files' order (source ids are ``arange``).
    """
    def images(x):
        x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
        return x[..., None] if x.ndim == 3 else x

    y_train = arrays["train_labels"].astype(np.int32)
    y_test = arrays["test_labels"].astype(np.int32)
    if num_classes is None:
        num_classes = int(max(y_train.max(initial=-1), y_test.max(initial=-1))) + 1
    return Dataset(name=name, x_train=images(arrays["train_images"]), y_train=y_train,
                   x_test=images(arrays["test_images"]), y_test=y_test, num_classes=num_classes)


def write_idx(path, array: np.ndarray, *, compress: bool | None = None) -> None:
    """Write an array as an IDX file (gzip when ``compress`` or the name ends in ``.gz``).

    For tests and for converting other data to the format; dtype must be one of
    :data:`IDX_DTYPES`.
    """
    path = Path(path)
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        raise JmemError(f"cannot write dtype {array.dtype} as IDX; known: {', '.join(d.name for d in IDX_DTYPES.values())}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    data = header + np.ascontiguousarray(array.astype(IDX_DTYPES[code])).tobytes()
    if compress or (compress is None and path.name.endswith(".gz")):
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
