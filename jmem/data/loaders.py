"""Datasets as plain arrays: the ``Dataset`` value every later stage of jmem consumes.

Sources (``load_dataset(name)``):

- ``digits``: the 1,797 real 8x8 handwritten digits scikit-learn ships (UCI), embedded in
  jmem as ``jmem/data/digits.npz`` (45 KB), so always available offline. The embedded
  default dataset. Fixed split, see :func:`digits_split`.
- ``mnist1d``: MNIST-1D (Greydanus 2020), generated locally with the package's published
  default arguments: 4,000 train / 1,000 test sequences of length 40, 10 classes.
- ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``, ``svhn_cropped``: read with
  ``tfds.data_source`` (:mod:`jmem.data.tfds_source`) from an already prepared TFDS data
  directory (``data_dir`` argument, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``).
  Reading needs no TensorFlow; preparing does (``pip install 'jmem[prepare]'``), and jmem
  never downloads anything.
- ``fashion_mnist`` also from its original IDX files (:func:`fashion_mnist_sources`): the
  ``idx_dir`` argument, ``$JMEM_FASHION_MNIST_DIR``, or Debian's ``dataset-fashion-mnist``
  package in ``/usr/share/datasets/fashion-mnist``; their contents are checked against pinned
  sha256 digests.
- ``idx:DIR``: any directory of MNIST-format IDX files (MNIST, KMNIST, EMNIST; see
  :mod:`jmem.data.idx`).
- any path ending in ``.npz`` (see :func:`load_npz`).

Every dataset is normalised per channel (last axis) with the *training* set's mean and std,
applied to the train, test and extra test sets alike; labels are int32, images NHWC float32.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import random
from pathlib import Path

import numpy as np

from jmem.data import idx, tfds_source
from jmem.data.dataset import Dataset
from jmem.errors import JmemError, one_line

log = logging.getLogger(__name__)

KNOWN_DATASETS = {
    "digits": "UCI/scikit-learn 8x8 handwritten digits, 1,797 real images, 10 classes (embedded, default)",
    "mnist1d": "MNIST-1D, 4,000 / 1,000 sequences of length 40, 10 classes (generated offline)",
    **{name: desc for name, (_, desc) in tfds_source.DATASETS.items()},
    "fashion_mnist": ("Fashion-MNIST clothing, 60,000 / 10,000 28x28x1; TFDS, or the IDX files "
                      "(apt-get install dataset-fashion-mnist)"),
    "idx:DIR": "a directory of MNIST-format IDX files (MNIST, KMNIST, EMNIST, ...)",
}

#: Human-readable class names, label order, where the dataset defines them.
CLASS_NAMES = {
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                "truck"),
    # CIFAR-100's 100 fine labels in label order (alphabetical, as the dataset and TFDS give them)
    "cifar100": tuple("""apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy
        bridge bus butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud
        cockroach couch crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl
        hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man
        maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear
        pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket
        rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar
        sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip
        turtle wardrobe whale willow_tree wolf woman worm""".split()),
}


def label_text(dataset_name: str, label: int) -> str:
    """A label as figures show it: ``"6 Shirt"`` where the dataset names its classes
    (:data:`CLASS_NAMES`), else ``"6"``."""
    names = CLASS_NAMES.get(dataset_name)
    return f"{int(label)} {names[int(label)]}" if names and 0 <= int(label) < len(names) else str(int(label))

# Fashion-MNIST's IDX files (Xiao, Rasul & Vollgraf 2017), as published and as Debian ships them.
FASHION_MNIST_ENV = "JMEM_FASHION_MNIST_DIR"
FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_URL = "https://github.com/zalandoresearch/fashion-mnist (data/fashion/*.gz)"
#: sha256 of the four published .gz files (file name -> digest).
FASHION_MNIST_FILE_SHA256 = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
#: sha256 of the decoded values (:func:`jmem.data.idx.content_sha256`) of each file: the same
#: for gzip and plain copies, so the loader checks any copy against it.
FASHION_MNIST_CONTENT_SHA256 = {
    "train_images": "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
    "train_labels": "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
    "test_images": "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
    "test_labels": "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
}

# A channel whose training std is below this is constant: divide by 1 instead of ~0.
_MIN_STD = 1e-6


def load_dataset(name: str, *, data_dir: str | None = None, idx_dir: str | None = None) -> Dataset:
    """Load a dataset by name (or ``.npz`` path), normalised and validated.

    Args:
      name: one of :data:`KNOWN_DATASETS`, ``idx:DIR``, or a path ending in ``.npz``.
      data_dir: TFDS data directory (TFDS datasets only); default ``$TFDS_DATA_DIR`` or
        ``~/tensorflow_datasets``.
      idx_dir: directory of Fashion-MNIST's IDX files (``fashion_mnist`` only); see
        :func:`fashion_mnist_sources` for the order sources are tried in.

    Returns:
      A validated :class:`Dataset`: x float32 ``[N, *example_shape]`` (images NHWC), y int32.

    Raises:
      JmemError: unknown name, missing file, TFDS data not prepared, malformed arrays.
    """
    if not isinstance(name, str):
        raise JmemError(f"dataset={name!r} must be a dataset name or a path ending in .npz")
    if name.endswith(".npz"):
        raw = load_npz(name)
    elif name == "digits":
        raw = _load_digits()
    elif name == "mnist1d":
        raw = _load_mnist1d()
    elif name.startswith("idx:"):
        directory = name.removeprefix("idx:")
        if not directory:
            raise JmemError(f"dataset={name!r}: give the directory, e.g. idx:/data/mnist")
        raw = dataclasses.replace(idx.idx_dataset(idx.read_idx_dir(directory), name),
                                  source=f"IDX files in {directory}")
    elif name == "fashion_mnist":
        raw = _load_fashion_mnist(data_dir, idx_dir)
    elif name in tfds_source.DATASETS:
        raw = tfds_source.load_tfds(name, data_dir)
    else:
        known = ", ".join(KNOWN_DATASETS)
        raise JmemError(f"dataset={name!r} is not known; known: {known}, or a path ending in .npz")
    return _finish(dataclasses.replace(raw, name=name))


# ----------------------------------------------------------------------------- finishing


def _finish(raw: Dataset) -> Dataset:
    """Validate raw arrays (before NaNs could spread through normalisation), then normalise."""
    _check_finite(raw)
    _validate(raw)
    mean, std = channel_stats(raw.x_train)
    extras = {k: (normalise(x, mean, std), y) for k, (x, y) in raw.extra_tests.items()}
    out = dataclasses.replace(
        raw,
        x_train=normalise(raw.x_train, mean, std),
        x_test=normalise(raw.x_test, mean, std),
        extra_tests=extras,
        channel_mean=mean,
        channel_std=std,
    )
    return _validate(out)


def _validate(ds: Dataset) -> Dataset:
    try:
        return ds.validate()
    except JmemError as err:
        message = str(err)
        if message.startswith("dataset "):
            raise
        raise JmemError(f"dataset {ds.name!r}: {message}") from err


def _check_classes(ds: Dataset, declared: bool = True) -> None:
    """Labels must be dense: classes 0..C-1 with C <= N, every class in the training set.

    Checked before anything allocates per-class memory (one stray label of 10^6 would make a
    million-way classifier). A class seen only in a test set is allowed with a warning: no
    model can learn it, so its test examples are never classified correctly. A class with no
    example at all is an error when C was inferred from the labels (``declared=False``), a
    warning when the dataset declares its ``num_classes``.
    """
    c, n = ds.num_classes, ds.num_train
    if c > n:
        raise JmemError(f"dataset {ds.name!r}: {c} classes (labels up to {c - 1}) but only {n} "
                        "training examples; labels must be dense, 0..C-1 with C <= N")
    counts = np.bincount(ds.y_train, minlength=c)
    present = int((counts > 0).sum())
    if present < 2:
        raise JmemError(f"dataset {ds.name!r}: the training set holds {present} class "
                        f"(label {int(ds.y_train[0])}); need at least 2 classes")
    tests = [("y_test", ds.y_test)] + [(f"y_{k}", y) for k, (_, y) in ds.extra_tests.items()]
    seen_in_test = np.zeros(c, bool)
    for _, y in tests:
        seen_in_test[np.unique(y)] = True
    absent = np.flatnonzero(counts == 0)
    not_dense = absent[~seen_in_test[absent]]
    if not_dense.size and not declared:
        raise JmemError(f"dataset {ds.name!r}: class {int(not_dense[0])} of 0..{c - 1} has no "
                        f"example ({not_dense.size} in all); labels must be dense 0..C-1 "
                        "with every class in the training set")
    from jmem.errors import warn

    if not_dense.size:
        warn(f"dataset {ds.name!r}: num_classes={c} but class {int(not_dense[0])} has no example "
             f"({not_dense.size} in all); their outputs are never trained")
    absent = absent[seen_in_test[absent]]
    if absent.size:
        split = next(name for name, y in tests if np.isin(absent, y).any())
        warn(f"dataset {ds.name!r}: class {int(absent[0])} occurs in {split} but never in "
             f"y_train ({absent.size} in all); no model can classify those examples")


def _check_finite(ds: Dataset) -> None:
    """JmemError naming the split and first example with a NaN or inf."""
    splits = [("train", ds.x_train), ("test", ds.x_test)]
    splits += [(f"extra_tests[{k!r}]", x) for k, (x, _) in ds.extra_tests.items()]
    for split, x in splits:
        if x.ndim >= 2 and x.shape[0] and not np.isfinite(x).all():
            bad = int(np.flatnonzero((~np.isfinite(x.reshape(x.shape[0], -1))).any(axis=1))[0])
            raise JmemError(f"dataset {ds.name!r}: x_{split} has non-finite values (first at example {bad})")


def channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over all axes but the last: two float32[C].

    Accumulates in float64 over chunks of examples (a float64 copy of CIFAR would be 1.2 GB),
    two passes so a large mean does not swamp a small std. Channels with std below 1e-6 get
    std 1, so constant channels (e.g. always-blank pixels of a flattened image) stay finite.
    """
    c = x.shape[-1]
    flat = x.reshape(-1, c)
    count = flat.shape[0]
    step = chunk * max(1, count // max(1, x.shape[0]))
    total = np.zeros(c)
    for start in range(0, count, step):
        total += flat[start : start + step].sum(axis=0, dtype=np.float64)
    mean = total / count
    squares = np.zeros(c)
    for start in range(0, count, step):
        squares += ((flat[start : start + step] - mean) ** 2).sum(axis=0)
    std = np.sqrt(squares / count)
    std = np.where(std < _MIN_STD, 1.0, std)
    return mean.astype(np.float32), std.astype(np.float32)


def normalise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """float32 copy of x with (x - mean) / std applied along the last (channel) axis."""
    out = np.array(x, dtype=np.float32, copy=True)
    out -= mean
    out /= std
    return out


# ----------------------------------------------------------------------------- digits


def digits_split(labels: np.ndarray) -> np.ndarray:
    """bool[N]: the fixed test split of ``digits``, True = test.

    Rule: within each class, in the order scikit-learn ships the examples, every 4th example
    (the 4th, 8th, 12th, ...) goes to test. No random generator is involved, so the split
    cannot change with a numpy or scikit-learn version; it is stratified (25% of every class,
    rounded down) and yields 1,352 train / 445 test examples.
    """
    test = np.zeros(labels.shape[0], bool)
    for c in np.unique(labels):
        test[np.flatnonzero(labels == c)[3::4]] = True
    return test


# The UCI "Optical Recognition of Handwritten Digits" test set (Alpaydin & Kaynak 1998, CC BY
# 4.0) as scikit-learn ships it (``load_digits``): uint8 pixels [1797, 64] in 0..16 and uint8
# labels [1797], in scikit-learn's order. Embedded because importing scikit-learn costs ~1.1 s
# of every run's start-up; tests/test_data.py checks it equals scikit-learn's copy.
DIGITS_FILE = Path(__file__).with_name("digits.npz")


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The embedded digits: (pixels uint8[1797, 64] in 0..16, labels uint8[1797])."""
    with np.load(DIGITS_FILE) as raw:
        return raw["pixels"], raw["labels"]


def _load_digits() -> Dataset:
    x, y = digits_arrays()
    # Pixels are counts 0..16 of an 4x4 block of the original 32x32 bitmap: scale to [0, 1].
    x = (x.astype(np.float32) / 16.0).reshape(-1, 8, 8, 1)
    y = y.astype(np.int32)
    test = digits_split(y)
    ids = np.arange(y.shape[0], dtype=np.int64)
    return Dataset(
        name="digits",
        x_train=x[~test],
        y_train=y[~test],
        x_test=x[test],
        y_test=y[test],
        num_classes=10,
        train_source_ids=ids[~test],
        test_source_ids=ids[test],
    )


# ----------------------------------------------------------------------------- mnist1d


@functools.lru_cache(maxsize=1)
def _mnist1d_arrays() -> tuple[np.ndarray, ...]:
    """(x_train float32[4000, 40], y_train, x_test float32[1000, 40], y_test), read-only.

    Never ``mnist1d.data.get_dataset``: it tries a download and writes a pickle into the
    working directory. ``make_dataset`` is pure numpy but calls ``set_seed``, which reseeds the
    *global* numpy and ``random`` generators, so both are saved and restored around it.
    Cached per process (1.5-2 s to generate); the arrays are read-only so callers copy.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    arrays = (
        np.asarray(data["x"], np.float32),
        np.asarray(data["y"], np.int32),
        np.asarray(data["x_test"], np.float32),
        np.asarray(data["y_test"], np.int32),
    )
    for a in arrays:
        a.flags.writeable = False
    return arrays


def _load_mnist1d() -> Dataset:
    x_train, y_train, x_test, y_test = _mnist1d_arrays()
    # Sequences are [N, L, C] with one channel, so 1-D CNNs and MLPs both apply.
    return Dataset(
        name="mnist1d",
        x_train=x_train[:, :, None],
        y_train=y_train.copy(),
        x_test=x_test[:, :, None],
        y_test=y_test.copy(),
        num_classes=10,
    )


# ----------------------------------------------------------------------------- npz


def load_npz(path: str) -> Dataset:
    """Raw (unnormalised) arrays of a ``.npz`` file.

    Keys: ``x_train``, ``y_train``, ``x_test``, ``y_test`` (required) and ``num_classes``
    (optional; default max label + 1 over train and test). x may be any numeric dtype and is
    cast to float32 as is (no /255: per-channel normalisation follows anyway). Shapes:

    - ``[N, D]``: feature vectors, kept as ``[N, D]``; every feature is its own "channel", so
      each is standardised separately (an MLP flattens its input anyway).
    - ``[N, L, 1]``: a one-channel 1-D signal (like ``mnist1d``), kept as is: a width-1
      grayscale image makes no sense, so a last axis of size 1 is taken as the channel axis.
    - ``[N, H, W]`` (last axis > 1): grayscale images, a channel axis is added: ``[N, H, W, 1]``.
      Consequently a multi-channel 1-D signal ``[N, L, C>1]`` is read as images; store such
      data as ``[N, L*C]`` features instead.
    - ``[N, H, W, C]`` (NHWC) or any other rank >= 2: kept as is.

    y must be integer labels, 1-D.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise JmemError(f"dataset={path!r}: no such file")
    try:
        loaded = np.load(file, allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - empty (EOFError), truncated, not numpy at all
        raise JmemError(f"dataset={path!r} is not a readable .npz file "
                        f"({type(err).__name__}: {one_line(err)[:200]})") from err
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise JmemError(f"dataset={path!r} holds a single .npy array, not a .npz archive of "
                        "x_train, y_train, x_test, y_test (write it with numpy.savez)")
    try:
        with loaded as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as err:  # noqa: BLE001 - truncated or damaged member (BadZipFile, zlib.error)
        raise JmemError(f"dataset={path!r} is a damaged .npz file "
                        f"({type(err).__name__}: {one_line(err)[:200]})") from err
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise JmemError(
            f"dataset={path!r} lacks key(s) {', '.join(missing)}; has {', '.join(sorted(arrays)) or 'none'}"
        )
    x_train, x_test = (_npz_images(path, k, arrays[k]) for k in ("x_train", "x_test"))
    y_train, y_test = (_npz_labels(path, k, arrays[k]) for k in ("y_train", "y_test"))
    if "num_classes" in arrays:
        value = arrays["num_classes"]
        if value.ndim != 0 or not np.issubdtype(value.dtype, np.integer):
            raise JmemError(f"dataset={path!r}: num_classes={value!r} must be a scalar integer")
        num_classes = int(value)
    else:
        num_classes = int(max(y_train.max(initial=-1), y_test.max(initial=-1))) + 1
    dataset = Dataset(
        name=str(path), x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, num_classes=num_classes
    )
    labels = [y_train, y_test]
    if all(y.size == 0 or y.min() >= 0 for y in labels) and num_classes >= 2 \
            and all(y.size == 0 or y.max() < num_classes for y in labels):
        _check_classes(dataset, declared="num_classes" in arrays)  # else: _finish names the label
    return dataset


def _npz_images(path: str, key: str, x: np.ndarray) -> np.ndarray:
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or np.iscomplexobj(x):
        raise JmemError(f"dataset={path!r}: {key} has dtype {x.dtype}; need real numbers")
    if x.ndim < 2:
        raise JmemError(f"dataset={path!r}: {key} has shape {x.shape}; need [examples, features...]")
    if x.ndim == 3 and x.shape[-1] != 1:
        x = x[..., None]
    return x.astype(np.float32)


def _npz_labels(path: str, key: str, y: np.ndarray) -> np.ndarray:
    if y.ndim != 1:
        raise JmemError(f"dataset={path!r}: {key} has shape {y.shape}; need 1-D integer labels (not one-hot)")
    if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)  # integral floats, as written by some tools
    if not np.issubdtype(y.dtype, np.integer):
        raise JmemError(f"dataset={path!r}: {key} has dtype {y.dtype}; need integer labels")
    if y.size and (y.min() < np.iinfo(np.int32).min or y.max() > np.iinfo(np.int32).max):
        raise JmemError(f"dataset={path!r}: {key} has labels outside int32")
    return y.astype(np.int32)


# ----------------------------------------------------------------------------- Fashion-MNIST


def fashion_mnist_sources(data_dir: str | None = None, idx_dir: str | None = None) -> list[tuple[str, str]]:
    """Where ``fashion_mnist`` is looked for, in order: a list of (kind, directory).

    1. ``data_dir`` given: prepared TFDS data there (kind ``"tfds"``);
    2. ``idx_dir`` given, else ``$JMEM_FASHION_MNIST_DIR``: the four IDX files (``"idx"``);
    3. TFDS' default directory (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``), if prepared;
    4. ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``).

    Explicit choices come first, so a TFDS copy lying in the default directory never overrides
    an IDX directory the user named. The TFDS copy holds the same images in another order
    (TFDS shuffles records when preparing), so runs from the two kinds differ.
    """
    sources = []
    if data_dir:
        sources.append(("tfds", str(data_dir)))
    chosen_idx = idx_dir or os.environ.get(FASHION_MNIST_ENV)
    if chosen_idx:
        sources.append(("idx", str(chosen_idx)))
    if not data_dir:
        sources.append(("tfds", tfds_source.tfds_data_dir(None)))
    sources.append(("idx", FASHION_MNIST_SYSTEM_DIR))
    return sources


def fashion_mnist_instructions() -> str:
    """Every way to get Fashion-MNIST, for the error message when none is found."""
    return (
        "get it one of these ways: (1) Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist "
        f"(files in {FASHION_MNIST_SYSTEM_DIR}); (2) download the four *-ubyte.gz files from "
        f"{FASHION_MNIST_URL} into a directory and set data.idx_dir=DIR or ${FASHION_MNIST_ENV}=DIR; "
        f"(3) TFDS: {tfds_source.prepare_command('fashion_mnist', tfds_source.tfds_data_dir(None))}, then data.data_dir=DIR"
    )


def _load_fashion_mnist(data_dir: str | None, idx_dir: str | None) -> Dataset:
    tried = []
    for kind, directory in fashion_mnist_sources(data_dir, idx_dir):
        explicit = (kind == "tfds" and directory == data_dir) or (kind == "idx" and directory != FASHION_MNIST_SYSTEM_DIR)
        if kind == "tfds":
            if not explicit and not (Path(directory) / "fashion_mnist").is_dir():
                tried.append(f"TFDS in {directory}: no prepared data")  # skip importing tfds
                continue
            try:
                x_train, y_train, _ = tfds_source.read_split("fashion_mnist", "train", directory)
                x_test, y_test, _ = tfds_source.read_split("fashion_mnist", "test", directory)
            except tfds_source.NotPrepared as err:
                if explicit:  # the user named this directory: say so rather than fall through
                    raise JmemError(f"dataset='fashion_mnist' is not prepared in data_dir={directory} ({err}); "
                                    + fashion_mnist_instructions()) from None
                tried.append(f"TFDS in {directory}: {err}")
                continue
            log.info("fashion_mnist: prepared TFDS data in %s", directory)
            return Dataset(name="fashion_mnist", x_train=x_train, y_train=y_train, x_test=x_test,
                           y_test=y_test, num_classes=10, source=f"prepared TFDS data in {directory}")
        if explicit or Path(directory).is_dir():
            # A named directory must hold the files: a wrong path is an error, not a fall-through.
            field = "data.idx_dir" if idx_dir else f"${FASHION_MNIST_ENV}" if explicit else "system directory"
            try:
                arrays = idx.read_idx_dir(directory)
            except JmemError as err:
                raise JmemError(f"dataset='fashion_mnist' from {field}={directory}: {err}") from None
            check_fashion_mnist(arrays, directory)
            log.info("fashion_mnist: IDX files in %s", directory)
            raw = idx.idx_dataset(arrays, "fashion_mnist", num_classes=10)
            return dataclasses.replace(raw, source=f"IDX files in {directory}")
        tried.append(f"IDX files in {directory}: no such directory")
    raise JmemError(f"dataset='fashion_mnist' was not found (tried {'; '.join(tried)}); "
                    + fashion_mnist_instructions())


def check_fashion_mnist(arrays: dict[str, np.ndarray], directory: str) -> None:
    """JmemError unless the four arrays are exactly the published Fashion-MNIST values."""
    for role, expected in FASHION_MNIST_CONTENT_SHA256.items():
        digest = idx.content_sha256(arrays[role])
        if digest != expected:
            raise JmemError(f"IDX directory {directory!r} does not hold Fashion-MNIST: {role} has sha256 "
                            f"{digest[:16]}... of its values, expected {expected[:16]}...; for other IDX data "
                            f"use dataset idx:{directory}")


# ----------------------------------------------------------------------------- describe


def describe(dataset: Dataset) -> str:
    """A human-readable summary (the ``jmem data NAME`` command): sizes, shapes, balance, stats."""
    ds = dataset
    lines = [
        f"dataset: {ds.name}",
        *([f"source: {ds.source}"] if ds.source else []),
        f"classes: {ds.num_classes}",
        f"example shape: {list(ds.example_shape)} (float32{', NHWC' if len(ds.example_shape) == 3 else ''})",
    ]
    splits = [("train", ds.y_train), ("test", ds.y_test)]
    splits += [(f"extra test {k}", y) for k, (_, y) in ds.extra_tests.items()]
    for label, y in splits:
        lines.append(f"{label}: {y.shape[0]} examples; {_balance(y, ds.num_classes)}")
    if ds.channel_mean is not None:
        mean, std = _floats(ds.channel_mean), _floats(ds.channel_std)
        lines.append(f"normalisation (train, per channel): mean {mean}, std {std}")
    for label, ids in (("train", ds.train_source_ids), ("test", ds.test_source_ids)):
        if ids is not None:
            lines.append(f"{label} source ids: original file-order indices {int(ids.min())}..{int(ids.max())}")
    return "\n".join(lines)


def _balance(y: np.ndarray, num_classes: int) -> str:
    counts = np.bincount(y, minlength=num_classes)
    share = counts / max(1, counts.sum())
    if num_classes <= 10:
        per_class = " ".join(f"{c}:{n}" for c, n in enumerate(counts))
        return f"per class {per_class}"
    return (
        f"per class min {counts.min()} ({share.min():.1%}), median {int(np.median(counts))}, "
        f"max {counts.max()} ({share.max():.1%}); {int((counts == 0).sum())} classes empty"
    )


def _floats(values: np.ndarray, limit: int = 6) -> str:
    shown = ", ".join(f"{v:.4g}" for v in values[:limit])
    more = f", ... ({len(values)} channels)" if len(values) > limit else ""
    return f"[{shown}{more}]"
