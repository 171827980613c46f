"""The `jmem` command end to end on small configs: run directory, resume, refusals, errors."""

import json

import numpy as np
import pytest

from jmem.study import rundir as artifacts
from jmem.study import training as runner
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


# ----------------------------------------------------------------------------- devices, signals


def _child(code: str, **env):
    import os
    import subprocess
    import sys

    full_env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JMEM_CPU_DEVICES")}
    full_env.update(JAX_PLATFORMS="cpu", **env)
    run = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.strip()


_COUNT_DEVICES = ("import sys; from jmem.engine.host_devices import configure_host_devices; "
                  "configure_host_devices(sys.argv[1:] or {argv}); import jax; "
                  "print(len(jax.devices()))")


@pytest.mark.parametrize("argv,env,expected", [
    (["train", "x.py", "--devices", "3"], {}, "3"),
    (["train", "x.py"], {"JMEM_CPU_DEVICES": "2"}, "2"),
    (["train", "x.py", "--devices=3"], {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}, "1"),
])
def test_cli_exposes_cpu_cores_as_devices_before_jax_starts(argv, env, expected):
    assert _child(_COUNT_DEVICES.format(argv=argv), **env) == expected


def test_importing_the_cli_imports_no_jax():
    code = "import sys, jmem.cli, jmem.study.training; print(sorted(m for m in sys.modules if m.startswith('jax')))"
    assert _child(code) == "[]"


def test_host_device_flag_is_added_once_and_never_overrides_the_user():
    from jmem.engine.host_devices import xla_flags_with_host_devices

    count, eigen = "--xla_force_host_platform_device_count", "--xla_cpu_multi_thread_eigen"
    assert xla_flags_with_host_devices("", 2) == f"{count}=2 {eigen}=false"
    assert xla_flags_with_host_devices("--xla_foo=1", 4) == f"--xla_foo=1 {count}=4 {eigen}=false"
    assert xla_flags_with_host_devices(f"{eigen}=true", 4) == f"{eigen}=true {count}=4"
    mine = f"{count}=8"
    assert xla_flags_with_host_devices(mine, 2) == mine


def test_bad_execution_flags_are_one_line_errors(tmp_path, capsys):
    assert run_cli("train", SMALL, "--workdir", tmp_path / "w", "--checkpoint-every-epochs", "-1") == 2
    assert "--checkpoint-every-epochs=-1 must be >= 0" in capsys.readouterr().err
    assert run_cli("train", SMALL, "--workdir", tmp_path / "w", "--coordinator", "127.0.0.1:1") == 2
    assert "give all three" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_leakage_command_on_a_dataset_and_on_a_run_directory(trained, tmp_path, capsys):
    by_name = tmp_path / "by_name.csv"
    assert run_cli("leakage", "digits", "--out", by_name) == 0
    assert "Leakage in digits" in capsys.readouterr().out
    lines = by_name.read_text().splitlines()
    assert lines[0] == "test_index,train_index,distance,detector" and len(lines) > 1
    # A run directory uses its recorded dataset and settings: the same pairs as the run wrote.
    by_run = tmp_path / "by_run.csv"
    assert run_cli("leakage", trained, "--out", by_run) == 0
    assert by_run.read_text() == (trained / artifacts.DUPLICATES).read_text() == by_name.read_text()
