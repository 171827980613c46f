"""The `jmem` command end to end on small configs: run directory, resume, refusals, errors."""

import json

import numpy as np
import pytest

from jmem import artifacts, runner
from jmem.cli import main

SMALL = "experiments/digits.py:small"


def run_cli(*argv):
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small digits run shared by the tests below (16 models, 3 epochs)."""
    workdir = tmp_path_factory.mktemp("run") / "digits"
    assert run_cli("train", SMALL, "--workdir", workdir, "--no-progress") == 0
    return workdir


def test_data_command_prints_sizes(capsys):
    assert run_cli("data", "digits") == 0
    out = capsys.readouterr().out
    assert "digits" in out and "train" in out and "test" in out


def test_data_list(capsys):
    assert run_cli("data", "--list") == 0
    out = capsys.readouterr().out
    for name in ("digits", "mnist1d", "cifar10", "PATH.npz"):
        assert name in out


def test_unknown_dataset_is_one_line_exit_2(capsys):
    assert run_cli("data", "imagenet_xxl") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jmem: error:") and "imagenet_xxl" in err and "\n" not in err


def test_train_writes_the_run_directory(trained):
    keep = np.load(trained / artifacts.KEEP)
    n = np.load(trained / artifacts.LABELS_TRAIN).shape[0]
    t = np.load(trained / artifacts.LABELS_TEST).shape[0]
    assert keep.shape == (16, n) and keep.dtype == bool
    assert np.all(keep.sum(1) == round(0.7 * n))
    margins_train = np.load(trained / artifacts.MARGINS_TRAIN)
    margins_test = np.load(trained / artifacts.MARGINS_TEST)
    assert margins_train.shape == (16, n) and margins_train.dtype == np.float32
    assert margins_test.shape == (16, t)
    assert np.all(np.isfinite(margins_train))
    assert np.load(trained / artifacts.CANARIES).sum() == round(0.02 * n)
    config = json.loads((trained / artifacts.CONFIG).read_text())
    assert config["train"]["num_models"] == 16
    lines = (trained / artifacts.MODEL_METRICS).read_text().splitlines()
    assert lines[0].startswith("model,rate,subset_size,diverged,final_loss,test_accuracy")
    assert len(lines) == 17
    assert not (trained / runner.WAVES_DIR).exists()
    # Even 3 epochs on 70% of digits is far above chance (10%).
    assert (margins_test > 0).mean() > 0.5


def test_rerun_is_a_no_op(trained, capsys):
    before = (trained / artifacts.MARGINS_TRAIN).stat().st_mtime_ns
    assert run_cli("train", SMALL, "--workdir", trained, "--no-progress") == 0
    assert "already complete" in capsys.readouterr().out
    assert (trained / artifacts.MARGINS_TRAIN).stat().st_mtime_ns == before


def test_different_config_is_refused_naming_the_field(trained, capsys):
    listing = sorted(p.name for p in trained.iterdir())
    assert run_cli("train", SMALL, "--workdir", trained, "--set", "train.epochs=4") == 2
    err = capsys.readouterr().err
    assert "train.epochs: 3 vs 4" in err
    assert sorted(p.name for p in trained.iterdir()) == listing


def test_bad_override_writes_nothing(tmp_path, capsys):
    workdir = tmp_path / "never"
    assert run_cli("train", SMALL, "--workdir", workdir, "--set", "train.num_models=-1") == 2
    assert "train.num_models=-1" in capsys.readouterr().err
    assert not workdir.exists()


def test_non_run_directory_is_refused(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("keep me")
    assert run_cli("train", SMALL, "--workdir", tmp_path, "--no-progress") == 2
    assert "holds no config.json" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]
