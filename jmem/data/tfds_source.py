"""TFDS datasets read offline from a prepared data directory (``tfds.data_source``).

jmem never downloads: a dataset must have been prepared (``prepare_command``) in the TFDS
data directory (``tfds_data_dir``) in the random-access ArrayRecord format. Reading needs no
TensorFlow; ``tensorflow_datasets`` is imported only when a split is read.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re

import numpy as np

from jmem.data.dataset import Dataset
from jmem.errors import JmemError

log = logging.getLogger(__name__)

# TFDS datasets jmem reads: name -> (number of classes, short description).
DATASETS = {
    "mnist": (10, "MNIST handwritten digits, 60,000 / 10,000 28x28x1 (TFDS, prepare first)"),
    "fashion_mnist": (10, "Fashion-MNIST clothing, 60,000 / 10,000 28x28x1 (TFDS, prepare first)"),
    "cifar10": (10, "CIFAR-10, 50,000 / 10,000 32x32x3; + extra test set cifar10_1 if prepared (TFDS)"),
    "cifar100": (100, "CIFAR-100 fine labels, 50,000 / 10,000 32x32x3 (TFDS, prepare first)"),
    "svhn_cropped": (10, "SVHN cropped digits, 73,257 / 26,032 32x32x3 (TFDS, prepare first)"),
}

# Extra test sets read along with a TFDS dataset when prepared: dataset -> [(extra name,
# TFDS name, split)]. CIFAR-10.1 (Recht et al. 2018) is a fresh CIFAR-10 test set.
EXTRAS = {"cifar10": [("cifar10_1", "cifar10_1", "test")]}


def tfds_data_dir(data_dir: str | None = None) -> str:
    """The TFDS data directory jmem reads: argument, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    if data_dir:
        return str(data_dir)
    return os.environ.get("TFDS_DATA_DIR") or os.path.join(os.path.expanduser("~"), "tensorflow_datasets")


def prepare_command(tfds_name: str, data_dir: str) -> str:
    """The shell command that prepares a TFDS dataset in the format ``tfds.data_source`` reads."""
    return f"pip install 'jmem[prepare]' && tfds build {tfds_name} --data_dir={data_dir} --file_format=array_record"


class NotPrepared(Exception):
    """A TFDS dataset is not prepared (in a random-access format) in the data directory."""


def load_tfds(name: str, data_dir: str | None) -> Dataset:
    directory = tfds_data_dir(data_dir)
    try:
        x_train, y_train, ids_train = read_split(name, "train", directory)
        x_test, y_test, ids_test = read_split(name, "test", directory)
    except NotPrepared as err:
        raise JmemError(
            f"dataset={name!r} is not prepared in {directory} ({err}); prepare it once on a machine "
            f"with internet: {prepare_command(name, directory)}"
        ) from None
    raw = Dataset(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=DATASETS[name][0],
        train_source_ids=ids_train,
        test_source_ids=ids_test,
    )
    extras = {}
    for extra, tfds_name, split in EXTRAS.get(name, []):
        try:
            x, y, _ = read_split(tfds_name, split, directory)
        except NotPrepared:
            log.info("extra test set %s skipped: not prepared in %s (%s)", extra, directory,
                     prepare_command(tfds_name, directory))
            continue
        extras[extra] = (x, y)
    return dataclasses.replace(raw, extra_tests=extras)


def read_split(name: str, split: str, data_dir: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(x float32[N, H, W, C] in [0, 1], y int32[N], source ids int64[N] or None) of one split.

    ``download=False``: with the default ``download=True``, ``data_source`` would try to
    download and prepare a missing dataset. Records are read one at a time, which works both
    for real ArrayRecord files and for ``tfds.testing.mock_data`` (whose batched
    ``__getitems__`` raises).
    """
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except (NotImplementedError, FileNotFoundError) as err:
        # Missing data surfaces as NotImplementedError ("random access ... TFRECORD is not
        # supported"): tfds assumes the default format when nothing is there. Tell the two apart.
        prepared = tfds.builder(name, data_dir=data_dir).is_prepared()
        raise NotPrepared("prepared, but not as array_record" if prepared else "no prepared data") from err
    n = len(source)
    images, labels, ids = [], np.empty(n, np.int64), []
    for i in range(n):
        record = source[i]
        images.append(np.asarray(record["image"]))
        labels[i] = int(record["label"])
        if "id" in record:
            ids.append(record["id"])
    x = np.stack(images).astype(np.float32) / 255.0
    if x.ndim == 3:  # a grayscale feature declared without a channel axis
        x = x[..., None]
    return x, labels.astype(np.int32), parse_source_ids(ids, split) if len(ids) == n else None


_ID = re.compile(r"^(?P<split>[a-z]+)_(?P<index>\d+)$")


def parse_source_ids(ids, split: str) -> np.ndarray | None:
    """int64[N] original file-order indices from TFDS ``id`` fields, or None if they don't parse.

    CIFAR writes ``"train_00042"`` / ``"test_00042"`` (5 digits), SVHN ``"train_000042"``
    (6 digits): the number is the example's index in the original files, which is the index
    published per-example lists (e.g. the CIFAR duplicate lists) use. Ids of another split or
    format (e.g. mock data's random strings) give None: no mapping rather than a wrong one.
    """
    out = np.empty(len(ids), np.int64)
    for i, raw in enumerate(ids):
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        match = _ID.match(text)
        if match is None or match["split"] != split:
            return None
        out[i] = int(match["index"])
    return out
