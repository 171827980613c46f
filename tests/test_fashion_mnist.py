"""Fashion-MNIST: the real IDX files (Debian's dataset-fashion-mnist), the experiment file and
its variants, and the leakage figures.

Tests that need the real files are skipped when they are missing, with the reason in pytest's
summary (``-ra``); under CI (``CI=true``) a missing dataset fails them instead.
"""

import csv
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from jmem import config as config_lib
from jmem.cli import main
from jmem.data import idx, loaders
from jmem.data.leakage import find_leakage
from jmem.data.loaders import load_dataset
from jmem.study import figures_leakage
from jmem.study import rundir

EXPERIMENT = Path(__file__).parent.parent / "experiments" / "fashion_mnist.py"


def fashion_mnist_dir() -> Path:
    return Path(os.environ.get(loaders.FASHION_MNIST_ENV) or loaders.FASHION_MNIST_SYSTEM_DIR)


def have_files() -> bool:
    try:
        idx.find_idx_files(fashion_mnist_dir())
        return True
    except Exception:
        return False


@pytest.fixture(scope="module")
def real_dir():
    """The directory of the real files; skip (or, under CI, fail) when they are missing."""
    if not have_files():
        reason = (f"Fashion-MNIST IDX files not found in {fashion_mnist_dir()}: "
                  "apt-get install dataset-fashion-mnist (root), or set $JMEM_FASHION_MNIST_DIR")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    return fashion_mnist_dir()


@pytest.fixture(scope="module")
def real(real_dir):
    return load_dataset("fashion_mnist")


# ----------------------------------------------------------------------------- the real files


def test_file_digests_are_pinned(real_dir):
    files = idx.find_idx_files(real_dir)
    for role, path in files.items():
        if path.name.endswith(".gz"):  # the published files (a plain copy has no file digest)
            assert hashlib.sha256(path.read_bytes()).hexdigest() == loaders.FASHION_MNIST_FILE_SHA256[path.name]
        assert idx.content_sha256(idx.read_idx(path)) == loaders.FASHION_MNIST_CONTENT_SHA256[role]


def test_sizes_and_class_balance(real):
    assert (real.num_train, real.num_test, real.num_classes) == (60_000, 10_000, 10)
    assert real.example_shape == (28, 28, 1) and real.x_train.dtype == np.float32
    np.testing.assert_array_equal(np.bincount(real.y_train), [6_000] * 10)
    np.testing.assert_array_equal(np.bincount(real.y_test), [1_000] * 10)
    assert real.source.startswith("IDX files in ")
    raw = real.x_test * real.channel_std + real.channel_mean  # pixels / 255
    assert -1e-5 < raw.min() and raw.max() < 1 + 1e-5
    # The first training image is an ankle boot (label 9) in the published order.
    assert int(real.y_train[0]) == 9 and int(real.y_test[0]) == 9


def test_real_records_through_the_tfds_path_give_the_same_arrays(real_dir, real, tmp_path):
    """The same records served by TFDS (mocked data source) load to the IDX path's arrays."""
    tfds = pytest.importorskip("tensorflow_datasets")
    arrays = idx.read_idx_dir(real_dir)

    def source(builder, split, **kwargs):
        x = arrays["train_images" if split == "train" else "test_images"]
        y = arrays["train_labels" if split == "train" else "test_labels"]
        return [{"image": x[i][..., None], "label": np.int64(y[i])} for i in range(len(y))]

    with tfds.testing.mock_data(as_data_source_fn=source):
        via_tfds = load_dataset("fashion_mnist", data_dir=str(tmp_path))
    for field in ("x_train", "y_train", "x_test", "y_test", "channel_mean", "channel_std"):
        np.testing.assert_array_equal(getattr(via_tfds, field), getattr(real, field), err_msg=field)


def test_data_command(real, capsys):
    assert main(["data", "fashion_mnist"]) == 0
    out = capsys.readouterr().out
    assert "source: IDX files in" in out and "train: 60000 examples; per class 0:6000" in out
    assert main(["data", "--list"]) == 0
    listed = capsys.readouterr().out
    assert "fashion_mnist" in listed and "idx:DIR" in listed


# ----------------------------------------------------------------------------- the experiment


def test_variants_load_and_the_main_config_is_feldman_zhang_mnist():
    main_cfg = config_lib.load_experiment(str(EXPERIMENT))
    assert main_cfg.data.name == "fashion_mnist"
    assert (main_cfg.model.kind, main_cfg.model.widths) == ("mlp", (512, 256))
    t = main_cfg.train
    assert (t.num_models, t.epochs, t.batch_size, t.optimizer, t.learning_rate, t.momentum) == (
        2000, 10, 128, "sgd", 0.1, 0.9)
    assert (main_cfg.subsets.design, main_cfg.subsets.rates) == ("fixed", (0.7,))
    for variant in ("cpu", "small"):
        cfg = config_lib.load_experiment(f"{EXPERIMENT}:{variant}")
        assert cfg.train.optimizer == "sgd" and cfg.train.batch_size == 128 and cfg.data == main_cfg.data
        assert config_lib.from_dict(config_lib.to_dict(cfg)) == cfg  # round-trips through config.json
    cpu = config_lib.load_experiment(f"{EXPERIMENT}:cpu")
    assert 512 <= cpu.train.num_models <= 1024
    with pytest.raises(Exception, match="unknown variant 'gpu'"):
        config_lib.load_experiment(f"{EXPERIMENT}:gpu")


def slice_dir(directory: Path, n_train=700, n_test=200) -> Path:
    """IDX files of the first examples of the real data, or of random images when it is missing."""
    directory.mkdir()
    if have_files():
        arrays = idx.read_idx_dir(fashion_mnist_dir())
    else:
        rng = np.random.default_rng(0)
        arrays = {"train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
                  "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
                  "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
                  "test_labels": (np.arange(n_test) % 10).astype(np.uint8)}
    for role, n in (("train", n_train), ("t10k", n_test)):
        key = "train" if role == "train" else "test"
        idx.write_idx(directory / f"{role}-images-idx3-ubyte.gz", arrays[f"{key}_images"][:n])
        idx.write_idx(directory / f"{role}-labels-idx1-ubyte.gz", arrays[f"{key}_labels"][:n])
    return directory


def test_small_variant_end_to_end(tmp_path, capsys):
    data = slice_dir(tmp_path / "slice")
    workdir = tmp_path / "run"
    assert main(["run", f"{EXPERIMENT}:small", "--workdir", str(workdir), "--no-progress",
                 "--set", f"data.name=idx:{data}"]) == 0
    capsys.readouterr()
    recorded = json.loads((workdir / rundir.CONFIG).read_text())
    assert recorded["model"]["widths"] == [16] and recorded["train"]["optimizer"] == "sgd"
    margins = np.load(workdir / rundir.MARGINS_TRAIN)
    keep = np.load(workdir / rundir.KEEP)
    assert margins.shape == keep.shape == (8, 700) and np.isfinite(margins).all()
    np.testing.assert_array_equal(keep.sum(1), 490)  # fixed 70% subsets
    models = list(csv.DictReader(open(workdir / rundir.MODEL_METRICS)))
    accuracy = np.mean([float(r["test_accuracy"]) for r in models])
    if have_files():  # one epoch of SGD on 490 real images already beats chance (10%) by far
        assert accuracy > 0.4, accuracy
    assert len(list(csv.DictReader(open(workdir / rundir.SCORES)))) == 700


# ----------------------------------------------------------------------------- leakage figures


def test_pick_pairs_closest_and_borderline():
    d = np.array([0.5, 0.1, 0.3, 0.2, 0.4, 0.0])
    closest, border = figures_leakage.pick_pairs(d, 4)
    np.testing.assert_array_equal(closest, [5, 1])
    np.testing.assert_array_equal(border, [4, 0])
    closest, border = figures_leakage.pick_pairs(d[:3], 8)
    assert sorted(closest.tolist() + border.tolist()) == [0, 1, 2] and len(set(closest) & set(border)) == 0


def test_leakage_command_writes_figures_of_the_pairs(tmp_path, capsys):
    """On a planted dataset: a test image copied from training shows up in the PNGs."""
    rng = np.random.default_rng(1)
    x_train = rng.integers(0, 256, (60, 12, 12), dtype=np.uint8)
    x_test = rng.integers(0, 256, (20, 12, 12), dtype=np.uint8)
    x_test[3] = x_train[7]
    x_test[11] = x_test[5]  # a within-test pair
    d = tmp_path / "planted"
    d.mkdir()
    for name, a in (("train-images-idx3-ubyte", x_train), ("t10k-images-idx3-ubyte", x_test),
                    ("train-labels-idx1-ubyte", np.arange(60, dtype=np.uint8) % 3),
                    ("t10k-labels-idx1-ubyte", np.arange(20, dtype=np.uint8) % 3)):
        idx.write_idx(d / name, a)
    out = tmp_path / "out" / "duplicates.csv"
    assert main(["leakage", f"idx:{d}", "--out", str(out)]) == 0
    assert "1 of 20 test examples (5.00%)" in capsys.readouterr().out.splitlines()[0]  # one line
    assert main(["leakage", f"idx:{d}", "--out", str(out), "--details"]) == 0  # and the table
    text = capsys.readouterr().out
    assert "1 of 20 test examples (5.00%)" in text and "Within the test set: 1 pair" in text
    assert "within" in text.splitlines()[4]  # the per-class table has the within-test column
    for name in (figures_leakage.DUPLICATES_PNG, figures_leakage.WITHIN_TEST_PNG):
        png = out.parent / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000
        assert name in text


def test_figures_skip_non_images_and_empty_results(tmp_path):
    ds = load_dataset("mnist1d")
    result = find_leakage(ds)
    assert figures_leakage.save_leakage_figures(tmp_path, result, ds) == []
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- memory at scale


def test_row_writer_writes_what_np_save_writes(tmp_path):
    """Run assembly streams margins wave by wave: the file must be np.save's, byte for byte."""
    a = np.random.default_rng(0).standard_normal((7, 5)).astype(np.float32)
    np.save(tmp_path / "ref.npy", a)
    writer = rundir.NpyRowWriter(tmp_path / "rows.npy", a.shape, np.float32)
    for block in (a[:3], a[3:4], a[4:]):
        writer.write_rows(block.astype(np.float64))  # cast back to the file's dtype
    with pytest.raises(Exception, match="do not fit"):
        writer.write_rows(a[:1])
    writer.commit()
    assert (tmp_path / "rows.npy").read_bytes() == (tmp_path / "ref.npy").read_bytes()
    short = rundir.NpyRowWriter(tmp_path / "short.npy", a.shape, np.float32)
    short.write_rows(a[:2])
    with pytest.raises(Exception, match="2 rows written, expected 7"):
        short.commit()
    short.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.npy", "rows.npy"]


@pytest.mark.slow  # ~45 s; the real run is benchmarks/gpu_fmnist.sh on a lent device
def test_gpu_fmnist_dry_run_on_the_cpu(real_dir, tmp_path):
    """benchmarks/gpu_fmnist.sh with DRY_RUN=1: the whole study (variant small, 600 images)
    through the same script, and the files that come back from the device."""
    import subprocess
    import sys

    env = dict(os.environ, DRY_RUN="1", PYTHON=sys.executable, OUT=str(tmp_path / "out"),
               WORK=str(tmp_path / "work"), PYTHONPATH=str(EXPERIMENT.parent.parent))
    run = subprocess.run(["bash", str(EXPERIMENT.parent.parent / "benchmarks" / "gpu_fmnist.sh")], env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, (run.stdout + run.stderr)[-2000:]
    back = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert back == ["env.txt", "figures.tar", "log.txt", "models.csv", "report.md", "retrain.json",
                    "thresholds.json", "verdict.txt"]
    assert "jmem run exit 0" in (tmp_path / "out" / "log.txt").read_text()
