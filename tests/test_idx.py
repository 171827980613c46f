"""Tests for jmem.data.idx (the IDX format) and the ``idx:DIR`` / ``fashion_mnist`` sources,
on small generated files. The real Fashion-MNIST files are tested in test_fashion_mnist.py."""

import gzip

import numpy as np
import pytest

from jmem.data import idx
from jmem.data import loaders
from jmem.data.loaders import load_dataset
from jmem.errors import JmemError


def images(n, shape=(5, 4), seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n,) + shape, dtype=np.uint8)


def write_dir(directory, n_train=12, n_test=6, *, gz=True, prefix="", test_name="t10k", seed=0):
    """An IDX directory of uint8 images [n, 5, 4] and labels 0..2; returns the arrays."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": images(n_train, seed=seed),
        "train_labels": (np.arange(n_train) % 3).astype(np.uint8),
        "test_images": images(n_test, seed=seed + 1),
        "test_labels": rng.integers(0, 3, n_test).astype(np.uint8),
    }
    ext = ".gz" if gz else ""
    names = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": f"{test_name}-images-idx3-ubyte", "test_labels": f"{test_name}-labels-idx1-ubyte"}
    for role, name in names.items():
        idx.write_idx(directory / f"{prefix}{name}{ext}", arrays[role])
    return arrays


# ----------------------------------------------------------------------------- one file


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
def test_round_trip_plain_and_gzip(tmp_path, name, dtype):
    array = (np.arange(2 * 3 * 4) - 7).reshape(2, 3, 4).astype(dtype)
    path = tmp_path / name
    idx.write_idx(path, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    out = idx.read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, array)


def test_header_layout_is_big_endian():
    # 0x0000 0801 (uint8, 1 dim), size 3 as big-endian uint32, then the values.
    data = bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 7, 8, 9])
    np.testing.assert_array_equal(idx.parse_idx(data), [7, 8, 9])
    data = bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0x01, 0x02, 0xFF, 0xFE])  # int16 258, -2
    np.testing.assert_array_equal(idx.parse_idx(data), [258, -2])


def test_gzip_is_recognised_by_content_not_name(tmp_path):
    path = tmp_path / "labels-idx1-ubyte"  # no .gz, but compressed
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 2, 4, 5])))
    np.testing.assert_array_equal(idx.read_idx(path), [4, 5])


@pytest.mark.parametrize("data, message", [
    (b"\x1f\x00\x08\x01", "has magic number 0x1f000801; an IDX file starts with two zero bytes"),
    (b"PK\x03\x04rest", "has magic number 0x504b0304"),
    (bytes([0, 0, 0x0A, 1, 0, 0, 0, 1, 0]), "has value type 0x0a; known: 0x08, 0x09"),
    (b"\x00\x00", "is truncated: 2 bytes, not even a header"),
    (bytes([0, 0, 8, 3, 0, 0, 0, 9]), "is truncated inside its header (8 of 16 bytes)"),
    (bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]), "is truncated: 10 bytes, header [5] of uint8 needs 13"),
    (bytes([0, 0, 8, 1, 0, 0, 0, 1, 1, 2]), "is longer than its header says: 10 bytes, header [1] of uint8 needs 9"),
])
def test_bad_files_are_named_errors(data, message):
    with pytest.raises(JmemError) as info:
        idx.parse_idx(data, "f")
    assert str(info.value).startswith("IDX file 'f' ") and message in str(info.value)


def test_truncated_gzip_and_missing_file(tmp_path):
    path = tmp_path / "x-idx3-ubyte.gz"
    idx.write_idx(path, images(50))
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(JmemError, match="is a damaged or truncated gzip file"):
        idx.read_idx(path)
    with pytest.raises(JmemError, match="cannot be read .FileNotFoundError"):
        idx.read_idx(tmp_path / "absent")


def test_write_idx_refuses_unknown_dtype(tmp_path):
    with pytest.raises(JmemError, match="cannot write dtype uint16 as IDX"):
        idx.write_idx(tmp_path / "a", np.zeros(2, np.uint16))


# ----------------------------------------------------------------------------- directories


@pytest.mark.parametrize("gz", [True, False])
def test_idx_dataset_loads_and_normalises(tmp_path, gz):
    arrays = write_dir(tmp_path / "d", gz=gz)
    ds = load_dataset(f"idx:{tmp_path / 'd'}")
    assert ds.name == f"idx:{tmp_path / 'd'}" and ds.source == f"IDX files in {tmp_path / 'd'}"
    assert ds.example_shape == (5, 4, 1) and ds.num_classes == 3
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    np.testing.assert_array_equal(ds.y_train, arrays["train_labels"])
    np.testing.assert_array_equal(ds.y_test, arrays["test_labels"])
    raw = ds.x_train * ds.channel_std + ds.channel_mean  # back to [0, 1]: pixels / 255
    np.testing.assert_allclose(raw[..., 0], arrays["train_images"] / 255.0, atol=1e-5)
    assert abs(float(ds.x_train.mean())) < 1e-5


def test_emnist_style_prefix_and_test_split_name(tmp_path):
    write_dir(tmp_path, prefix="emnist-digits-", test_name="test")
    files = idx.find_idx_files(tmp_path)
    assert files["test_images"].name == "emnist-digits-test-images-idx3-ubyte.gz"


def test_plain_file_beats_gzip_copy(tmp_path):
    write_dir(tmp_path, gz=True)
    idx.write_idx(tmp_path / "train-labels-idx1-ubyte", np.full(12, 2, np.uint8))
    files = idx.find_idx_files(tmp_path)
    assert files["train_labels"].name == "train-labels-idx1-ubyte"
    assert files["train_images"].name == "train-images-idx3-ubyte.gz"


def test_directory_errors(tmp_path):
    with pytest.raises(JmemError, match="IDX directory '.*absent' does not exist"):
        idx.find_idx_files(tmp_path / "absent")
    write_dir(tmp_path / "a")
    (tmp_path / "a" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(JmemError, match=r"lacks t10k-labels-idx1-ubyte\[.gz\]$"):
        idx.find_idx_files(tmp_path / "a")
    write_dir(tmp_path / "b")
    write_dir(tmp_path / "b", prefix="kmnist-")
    with pytest.raises(JmemError, match="holds several datasets .file prefixes '', 'kmnist-'"):
        idx.find_idx_files(tmp_path / "b")


def test_mismatched_files(tmp_path):
    write_dir(tmp_path / "a")
    idx.write_idx(tmp_path / "a" / "train-labels-idx1-ubyte.gz", np.zeros(11, np.uint8))
    with pytest.raises(JmemError, match="do not match: 12 images but 11 labels"):
        idx.read_idx_dir(tmp_path / "a")
    write_dir(tmp_path / "b")
    idx.write_idx(tmp_path / "b" / "t10k-images-idx3-ubyte.gz", images(6, shape=(4, 5)))
    with pytest.raises(JmemError, match=r"train images are \[5, 4\] but test images \[4, 5\]"):
        idx.read_idx_dir(tmp_path / "b")
    write_dir(tmp_path / "c")
    idx.write_idx(tmp_path / "c" / "train-labels-idx1-ubyte.gz", np.zeros((12, 2), np.uint8))
    with pytest.raises(JmemError, match="need 1-D integer labels"):
        idx.read_idx_dir(tmp_path / "c")
    with pytest.raises(JmemError, match="give the directory"):
        load_dataset("idx:")


# ----------------------------------------------------------------------------- fashion_mnist sources


@pytest.fixture
def no_system_copy(tmp_path, monkeypatch):
    """No Fashion-MNIST anywhere: empty TFDS dir, no env var, a missing system directory."""
    monkeypatch.setattr(loaders, "FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "no-system"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no-tfds"))
    monkeypatch.delenv(loaders.FASHION_MNIST_ENV, raising=False)


def test_source_order(tmp_path, monkeypatch, no_system_copy):
    system = str(tmp_path / "no-system")
    assert loaders.fashion_mnist_sources() == [("tfds", str(tmp_path / "no-tfds")), ("idx", system)]
    monkeypatch.setenv(loaders.FASHION_MNIST_ENV, "/env")
    assert loaders.fashion_mnist_sources(idx_dir="/given") == [
        ("idx", "/given"), ("tfds", str(tmp_path / "no-tfds")), ("idx", system)]
    assert loaders.fashion_mnist_sources() == [("idx", "/env"), ("tfds", str(tmp_path / "no-tfds")), ("idx", system)]
    assert loaders.fashion_mnist_sources(data_dir="/tfds") == [("tfds", "/tfds"), ("idx", "/env"), ("idx", system)]


def test_missing_everywhere_lists_every_way(no_system_copy):
    with pytest.raises(JmemError) as info:
        load_dataset("fashion_mnist")
    text = str(info.value)
    assert text.startswith("dataset='fashion_mnist' was not found (tried TFDS in ")
    assert "apt-get install dataset-fashion-mnist" in text
    assert "github.com/zalandoresearch/fashion-mnist" in text and "data.idx_dir=DIR" in text
    assert loaders.FASHION_MNIST_ENV in text and "tfds build fashion_mnist" in text
    assert "\n" not in text


def test_named_directory_must_hold_fashion_mnist(tmp_path, monkeypatch, no_system_copy):
    with pytest.raises(JmemError, match=r"from data.idx_dir=.*: IDX directory .* does not exist"):
        load_dataset("fashion_mnist", idx_dir=str(tmp_path / "wrong"))
    monkeypatch.setenv(loaders.FASHION_MNIST_ENV, str(tmp_path / "wrong"))
    with pytest.raises(JmemError, match=r"from \$JMEM_FASHION_MNIST_DIR="):
        load_dataset("fashion_mnist")
    write_dir(tmp_path / "other")  # valid IDX files, but not Fashion-MNIST
    with pytest.raises(JmemError, match="does not hold Fashion-MNIST: train_images has sha256 .* use dataset idx:"):
        load_dataset("fashion_mnist", idx_dir=str(tmp_path / "other"))


def test_fashion_mnist_tfds_and_idx_give_the_same_arrays_for_the_same_records(tmp_path, monkeypatch,
                                                                              no_system_copy):
    """TFDS mock records written as IDX files load to the same arrays as through TFDS."""
    tfds = pytest.importorskip("tensorflow_datasets")
    (tmp_path / "idx").mkdir()
    with tfds.testing.mock_data(num_examples=12):
        via_tfds = load_dataset("fashion_mnist", data_dir=str(tmp_path / "tfds"))
        for split, file_split in (("train", "train"), ("test", "t10k")):
            source = tfds.data_source("fashion_mnist", split=split, data_dir=str(tmp_path / "tfds"),
                                      download=False)
            records = [source[i] for i in range(len(source))]
            x = np.stack([np.asarray(r["image"]) for r in records])[..., 0]
            y = np.array([int(r["label"]) for r in records], np.uint8)
            idx.write_idx(tmp_path / "idx" / f"{file_split}-images-idx3-ubyte.gz", x)
            idx.write_idx(tmp_path / "idx" / f"{file_split}-labels-idx1-ubyte.gz", y)
    monkeypatch.setattr(loaders, "check_fashion_mnist", lambda arrays, directory: None)  # mock != real digests
    via_idx = load_dataset("fashion_mnist", idx_dir=str(tmp_path / "idx"))
    assert via_tfds.source.startswith("prepared TFDS data in") and via_idx.source.startswith("IDX files in")
    for field in ("x_train", "y_train", "x_test", "y_test", "channel_mean", "channel_std"):
        a, b = getattr(via_tfds, field), getattr(via_idx, field)
        assert a.dtype == b.dtype and a.shape == b.shape, field
        np.testing.assert_array_equal(a, b, err_msg=field)
    assert via_tfds.num_classes == via_idx.num_classes == 10


def test_explicit_tfds_dir_not_prepared_is_an_error(tmp_path, no_system_copy):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(JmemError, match=r"not prepared in data_dir=.*tfds build fashion_mnist"):
        load_dataset("fashion_mnist", data_dir=str(tmp_path / "empty"))
