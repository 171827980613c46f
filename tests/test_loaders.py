"""Tests for jmem.data.loaders: every loader (TFDS ones on tfds mock data, offline) and every error."""

import hashlib
import random
import socket
import urllib.request

import numpy as np
import pytest

from jmem.data import loaders
from jmem.data.loaders import KNOWN_DATASETS, describe, digits_split, load_dataset
from jmem.data.tfds_source import parse_source_ids, tfds_data_dir
from jmem.data.dataset import Dataset
from jmem.errors import JmemError

tfds = pytest.importorskip("tensorflow_datasets")


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:]!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    requests = pytest.importorskip("requests")
    monkeypatch.setattr(requests.Session, "request", refuse)


def assert_normalised(ds: Dataset):
    axes = tuple(range(ds.x_train.ndim - 1))
    np.testing.assert_allclose(ds.x_train.mean(axis=axes), 0, atol=1e-4)
    std = ds.x_train.std(axis=axes)
    assert np.all((np.abs(std - 1) < 1e-3) | (std < 1e-6))  # constant channels stay constant


def assert_well_formed(ds: Dataset, shape, classes):
    assert ds.example_shape == shape
    assert ds.num_classes == classes
    for x, y in [(ds.x_train, ds.y_train), (ds.x_test, ds.y_test), *ds.extra_tests.values()]:
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert x.shape[1:] == shape and x.shape[0] == y.shape[0]
        assert y.min() >= 0 and y.max() < classes
    assert ds.channel_mean.dtype == ds.channel_std.dtype == np.float32
    assert ds.channel_mean.shape == ds.channel_std.shape == (shape[-1],)
    assert_normalised(ds)


# ----------------------------------------------------------------------------- digits


def test_digits():
    ds = load_dataset("digits")
    assert_well_formed(ds, (8, 8, 1), 10)
    assert (ds.num_train, ds.num_test) == (1352, 445)
    # Every class is split about 3:1.
    ratio = np.bincount(ds.y_test) / np.bincount(ds.y_train)
    assert np.all((ratio > 0.3) & (ratio < 0.35))
    # Pixels 0..16 were scaled to [0, 1] before normalisation.
    raw = ds.x_train * ds.channel_std + ds.channel_mean
    assert raw.min() == pytest.approx(0, abs=1e-5) and raw.max() == pytest.approx(1, abs=1e-5)
    np.testing.assert_array_equal(np.sort(np.concatenate([ds.train_source_ids, ds.test_source_ids])), np.arange(1797))


def test_embedded_digits_equal_scikit_learns():
    from sklearn.datasets import load_digits

    pixels, labels = loaders.digits_arrays()
    x, y = load_digits(return_X_y=True)
    assert pixels.dtype == labels.dtype == np.uint8
    np.testing.assert_array_equal(pixels, x)
    np.testing.assert_array_equal(labels, y)


def test_digits_split_is_pinned():
    """The split is part of every published digits result: it must never change."""
    from sklearn.datasets import load_digits

    test = np.flatnonzero(digits_split(load_digits().target)).astype(np.int64)
    assert test[:10].tolist() == [30, 31, 32, 34, 38, 41, 42, 43, 45, 50]
    assert hashlib.sha256(test.tobytes()).hexdigest()[:16] == "ef7d9d14ab922d0a"


def test_digits_split_rule():
    labels = np.array([0, 1, 0, 0, 1, 0, 0, 0, 0, 1, 1])
    # class 0 at 0,2,3,5,6,7,8 -> 4th = 5, 8th = none; class 1 at 1,4,9,10 -> 4th = 10
    np.testing.assert_array_equal(np.flatnonzero(digits_split(labels)), [5, 10])


# ----------------------------------------------------------------------------- mnist1d


def test_mnist1d_offline_without_side_effects(no_network, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    loaders._mnist1d_arrays.cache_clear()  # force a fresh generation under the network guard
    np.random.seed(123)
    random.seed(123)
    np_before, py_before = np.random.get_state(), random.getstate()
    ds = load_dataset("mnist1d")
    assert_well_formed(ds, (40, 1), 10)
    assert (ds.num_train, ds.num_test) == (4000, 1000)
    # The published defaults (seed 42) give these labels; a change means a different dataset.
    assert ds.y_train[:12].tolist() == [2, 6, 4, 5, 6, 6, 6, 0, 3, 1, 6, 9]
    assert ds.y_test[:12].tolist() == [2, 6, 3, 9, 4, 3, 1, 9, 5, 2, 0, 7]
    # Global generators were restored, and nothing was written to the working directory.
    np_after = np.random.get_state()
    assert np_after[0] == np_before[0] and np.array_equal(np_after[1], np_before[1]) and np_after[2:] == np_before[2:]
    assert random.getstate() == py_before
    assert list(tmp_path.iterdir()) == []


def test_mnist1d_cache_is_not_mutated_by_callers():
    first = load_dataset("mnist1d")
    first.x_train[:] = 0
    first.y_train[:] = 0
    second = load_dataset("mnist1d")
    assert second.y_train[:3].tolist() == [2, 6, 4] and second.x_train.std() > 0.5


# ----------------------------------------------------------------------------- npz


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def small_arrays(shape=(6,), n_train=20, n_test=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return dict(
        x_train=rng.normal(5, 3, (n_train, *shape)),
        y_train=np.arange(n_train) % classes,
        x_test=rng.normal(5, 3, (n_test, *shape)),
        y_test=np.arange(n_test) % classes,
    )


@pytest.mark.parametrize(
    "shape,expected", [((6,), (6,)), ((5, 4), (5, 4, 1)), ((4, 4, 3), (4, 4, 3)), ((7, 1), (7, 1)), ((2, 3, 4, 2), (2, 3, 4, 2))]
)
def test_npz_shapes(tmp_path, shape, expected):
    path = write_npz(tmp_path / "d.npz", **small_arrays(shape))
    ds = load_dataset(path)
    assert_well_formed(ds, expected, 3)
    assert ds.name == path and ds.train_source_ids is None


def test_npz_num_classes_key_and_constant_feature(tmp_path):
    arrays = small_arrays((3,))
    arrays["x_train"][:, 1] = 7.0  # a constant feature: std guarded, stays finite
    arrays["num_classes"] = np.int64(5)
    ds = load_dataset(write_npz(tmp_path / "d.npz", **arrays))
    assert ds.num_classes == 5
    assert ds.channel_std[1] == 1.0 and np.all(ds.x_train[:, 1] == 0)
    assert np.isfinite(ds.x_test).all()


def test_npz_uint8_images_and_integral_float_labels(tmp_path):
    arrays = small_arrays((4, 4))
    arrays["x_train"] = np.random.default_rng(1).integers(0, 256, (20, 4, 4), dtype=np.uint8)
    arrays["x_test"] = arrays["x_test"].astype(np.uint8)
    arrays["y_train"] = arrays["y_train"].astype(np.float64)
    ds = load_dataset(write_npz(tmp_path / "d.npz", **arrays))
    assert_well_formed(ds, (4, 4, 1), 3)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda a: a.pop("y_test"), r"lacks key\(s\) y_test; has x_test, x_train, y_train"),
        (lambda a: a.update(y_train=a["y_train"][:-1]), r"x_train has 20 examples but y_train has 19"),
        (lambda a: a["x_test"].__setitem__((2, 0), np.nan), r"x_test has non-finite values \(first at example 2\)"),
        (lambda a: a["x_train"].__setitem__((4, 1), np.inf), r"x_train has non-finite values \(first at example 4\)"),
        (lambda a: a.update(num_classes=np.int64(2)), r"y_train\[2\]=2 is outside \[0, 2\)"),
        (lambda a: a["y_test"].__setitem__(1, -1), r"y_test\[1\]=-1 is outside \[0, 3\)"),
        (lambda a: a.update(y_train=a["y_train"] * 0, y_test=a["y_test"] * 0), r"num_classes=1; need at least 2"),
        (lambda a: a.update(y_train=np.eye(3)[a["y_train"]]), r"y_train has shape \(20, 3\); need 1-D integer"),
        (lambda a: a.update(y_test=a["y_test"] + 0.5), r"y_test has dtype float64; need integer labels"),
        (lambda a: a.update(x_test=np.zeros((8, 5))), r"x_test examples have shape \(5,\), but x_train has \(6,\)"),
        (lambda a: a.update(x_train=np.zeros(20)), r"x_train has shape \(20,\); need \[examples, features"),
        (lambda a: a.update(num_classes=np.array([3, 4])), r"num_classes=.* must be a scalar integer"),
    ],
)
def test_npz_errors(tmp_path, change, message):
    arrays = small_arrays()
    change(arrays)
    path = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(JmemError, match=message) as info:
        load_dataset(path)
    text = str(info.value)
    assert "\n" not in text and "bad.npz" in text


def test_npz_missing_and_unreadable_file(tmp_path):
    with pytest.raises(JmemError, match=r"dataset='.*nope.npz': no such file"):
        load_dataset(str(tmp_path / "nope.npz"))
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(JmemError, match=r"junk.npz' is not a readable .npz file"):
        load_dataset(str(tmp_path / "junk.npz"))


def test_unknown_dataset_lists_known():
    with pytest.raises(JmemError) as info:
        load_dataset("cifar11")
    text = str(info.value)
    assert text.startswith("dataset='cifar11' is not known; known: digits, mnist1d, mnist")
    assert all(name in text for name in KNOWN_DATASETS) and ".npz" in text


# ----------------------------------------------------------------------------- TFDS (mocked)

TFDS_CASES = {
    "mnist": ((28, 28, 1), 10),
    "fashion_mnist": ((28, 28, 1), 10),
    "cifar10": ((32, 32, 3), 10),
    "cifar100": ((32, 32, 3), 100),
    "svhn_cropped": ((32, 32, 3), 10),
}


@pytest.mark.parametrize("name", sorted(TFDS_CASES))
def test_tfds_datasets_on_mock_data(name, tmp_path, no_network):
    shape, classes = TFDS_CASES[name]
    with tfds.testing.mock_data(num_examples=12):
        ds = load_dataset(name, data_dir=str(tmp_path))
    assert_well_formed(ds, shape, classes)
    assert (ds.num_train, ds.num_test) == (12, 12)
    # uint8 pixels were scaled by 1/255 before normalisation.
    raw = ds.x_train * ds.channel_std + ds.channel_mean
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5 and raw.max() > 0.5
    # Mock ids are random strings, not "train_01234": no mapping rather than a wrong one.
    assert ds.train_source_ids is None and ds.test_source_ids is None
    if name == "cifar10":
        assert list(ds.extra_tests) == ["cifar10_1"]
        x, y = ds.extra_tests["cifar10_1"]
        assert x.shape == (12, 32, 32, 3) and y.dtype == np.int32
    else:
        assert ds.extra_tests == {}


def fake_cifar(builder, split, **kwargs):
    """A data source stand-in with real-format CIFAR ids, in a shuffled order; no cifar10_1."""
    if builder.name == "cifar10_1":
        raise NotImplementedError("Random access data source for file format TFRECORD is not supported")
    order = [3, 0, 2, 1]
    rng = np.random.default_rng(len(split))
    return [
        {
            "id": f"{split}_{i:05d}".encode(),
            "image": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
            "label": np.int64(i % 10),
        }
        for i in order
    ]


def test_cifar_ids_parsed_and_missing_extra_skipped(tmp_path, caplog, no_network):
    caplog.set_level("INFO", logger="jmem.data.tfds_source")
    with tfds.testing.mock_data(as_data_source_fn=fake_cifar):
        ds = load_dataset("cifar10", data_dir=str(tmp_path))
    np.testing.assert_array_equal(ds.train_source_ids, [3, 0, 2, 1])
    np.testing.assert_array_equal(ds.test_source_ids, [3, 0, 2, 1])
    assert ds.train_source_ids.dtype == np.int64
    np.testing.assert_array_equal(ds.y_train, [3, 0, 2, 1])
    assert ds.extra_tests == {}
    assert "cifar10_1 skipped" in caplog.text and "tfds build cifar10_1" in caplog.text


def test_parse_source_ids():
    np.testing.assert_array_equal(parse_source_ids(["train_00042", b"train_00007"], "train"), [42, 7])
    np.testing.assert_array_equal(parse_source_ids(["test_000123"], "test"), [123])  # SVHN: 6 digits
    assert parse_source_ids(["test_00001"], "train") is None
    assert parse_source_ids(["gebc   ahgjef"], "train") is None


def test_tfds_not_prepared_says_how_to_prepare(tmp_path, no_network):
    with pytest.raises(JmemError) as info:
        load_dataset("cifar100", data_dir=str(tmp_path))
    assert str(info.value) == (
        f"dataset='cifar100' is not prepared in {tmp_path} (no prepared data); prepare it once on a "
        f"machine with internet: pip install 'jmem[prepare]' && tfds build cifar100 --data_dir={tmp_path} "
        "--file_format=array_record"
    )
    assert list(tmp_path.iterdir()) == [] or all(p.is_dir() for p in tmp_path.iterdir())


def test_tfds_prepared_as_tfrecord_is_told_apart(tmp_path, monkeypatch, no_network):
    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    with pytest.raises(JmemError, match=r"\(prepared, but not as array_record\).*--file_format=array_record"):
        load_dataset("mnist", data_dir=str(tmp_path))


def test_tfds_data_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "env"))
    assert tfds_data_dir() == str(tmp_path / "env")
    assert tfds_data_dir("/given") == "/given"
    monkeypatch.delenv("TFDS_DATA_DIR")
    assert tfds_data_dir().endswith("tensorflow_datasets")


# ----------------------------------------------------------------------------- describe


def test_describe_digits():
    text = describe(load_dataset("digits"))
    assert "dataset: digits" in text and "classes: 10" in text
    assert "example shape: [8, 8, 1]" in text
    assert "train: 1352 examples; per class 0:134" in text and "test: 445 examples" in text
    assert "normalisation (train, per channel): mean [0.3049], std [0.3758]" in text


def test_describe_lists_extra_tests_and_many_classes(tmp_path):
    with tfds.testing.mock_data(num_examples=5):
        text = describe(load_dataset("cifar10", data_dir=str(tmp_path)))
        assert "extra test cifar10_1: 5 examples" in text
        text = describe(load_dataset("cifar100", data_dir=str(tmp_path)))
    assert "per class min 0 (0.0%)" in text and "classes empty" in text


def test_channel_stats_large_offset():
    x = (1e4 + np.random.default_rng(0).normal(0, 1e-2, (500, 3))).astype(np.float32)
    mean, std = loaders.channel_stats(x, chunk=64)
    np.testing.assert_allclose(std, x.astype(np.float64).std(axis=0), rtol=1e-3)
