"""The `jmem` command end to end on small configs: run directory, resume, refusals, errors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from jmem.cli import main
from jmem.study import rundir, waves

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
    keep = np.load(trained / rundir.KEEP)
    n = np.load(trained / rundir.LABELS_TRAIN).shape[0]
    t = np.load(trained / rundir.LABELS_TEST).shape[0]
    assert keep.shape == (16, n) and keep.dtype == bool
    assert np.all(keep.sum(1) == round(0.7 * n))
    margins_train = np.load(trained / rundir.MARGINS_TRAIN)
    margins_test = np.load(trained / rundir.MARGINS_TEST)
    assert margins_train.shape == (16, n) and margins_train.dtype == np.float32
    assert margins_test.shape == (16, t)
    assert np.all(np.isfinite(margins_train))
    assert np.load(trained / rundir.CANARIES).sum() == round(0.02 * n)
    config = json.loads((trained / rundir.CONFIG).read_text())
    assert config["train"]["num_models"] == 16
    lines = (trained / rundir.MODEL_METRICS).read_text().splitlines()
    assert lines[0].startswith("model,rate,subset_size,diverged,final_loss,test_accuracy")
    assert len(lines) == 17
    assert not (trained / waves.WAVES_DIR).exists()
    # Even 3 epochs on 70% of digits is far above chance (10%).
    assert (margins_test > 0).mean() > 0.5
    # Each model's training curve: one mean loss per epoch, falling, listed in the manifest.
    history = np.load(trained / rundir.LOSS_HISTORY)
    assert history.shape == (16, 3) and history.dtype == np.float32
    assert np.all(np.isfinite(history)) and np.all(history[:, -1] < history[:, 0])
    assert rundir.LOSS_HISTORY in json.loads((trained / rundir.MANIFEST).read_text())["outputs"]


def test_commands_end_with_what_they_wrote_and_what_to_run_next(trained, tmp_path, capsys):
    """No JSON dicts: `jmem train` ends with a summary line, the files and `jmem score`;
    `jmem score` with its three files and `jmem retrain` / `jmem report`."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    capsys.readouterr()
    assert run_cli("train", SMALL, "--workdir", run, "--no-progress") == 0
    out = capsys.readouterr().out
    assert "{" not in out and "estimation: 16 models, all trained before" in out
    assert f"wrote {run}/: margins_train.npy" in out and f"next: jmem score {run}" in out
    assert run_cli("score", run) == 0
    out = capsys.readouterr().out
    assert f"wrote {run}/: scores.csv, thresholds.json, pairs.csv" in out
    assert f"next: jmem retrain {run}" in out and f"  or: jmem report {run}" in out


def test_run_derives_its_workdir_from_the_config_and_variant_and_names_its_stages(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    experiment = Path(__file__).resolve().parents[1] / "experiments" / "digits.py"
    assert run_cli("run", f"{experiment}:small", "--no-progress", "--set", "retrain.resamples=200") == 0
    out = capsys.readouterr().out
    workdir = Path("runs") / "digits_small"
    assert (tmp_path / workdir / rundir.REPORT).exists()
    assert out.startswith(f"run directory: {workdir} (--workdir chooses another)")
    stages = [line for line in out.splitlines() if line.startswith("stage ")]
    assert stages == ["stage 1/4: training the estimation models", "stage 2/4: scoring",
                      "stage 3/4: the removal experiment", "stage 4/4: the report"]
    assert out.rstrip().splitlines()[-2:] == [f"next: read {workdir / rundir.REPORT}",
                                             f"  or: jmem loo {workdir}   # check the scores against exact leave-one-out"]


def test_rerun_is_a_no_op(trained, capsys):
    before = (trained / rundir.MARGINS_TRAIN).stat().st_mtime_ns
    assert run_cli("train", SMALL, "--workdir", trained, "--no-progress") == 0
    assert "already complete" in capsys.readouterr().out
    assert (trained / rundir.MARGINS_TRAIN).stat().st_mtime_ns == before


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
    out = capsys.readouterr().out.splitlines()
    # One line of findings, then what was written and what next (the table only with --details).
    assert out[0].startswith("Leakage in digits: 8 of 445 test examples (1.80%)") and out[1].startswith("wrote ")
    assert "next: jmem leakage digits --details" in out[2]
    assert run_cli("leakage", "digits", "--out", by_name, "--details") == 0
    out = capsys.readouterr().out
    assert "Per class" in out and "  pixel    (cosine, threshold 0.02): 8 (1.80%)" in out
    lines = by_name.read_text().splitlines()
    assert lines[0] == "test_index,train_index,distance,detector" and len(lines) > 1
    # A run directory uses its recorded dataset and settings: the same pairs as the run wrote.
    by_run = tmp_path / "by_run.csv"
    assert run_cli("leakage", trained, "--out", by_run) == 0
    assert by_run.read_text() == (trained / rundir.DUPLICATES).read_text() == by_name.read_text()
    # --set with the same grammar as every command: a stricter threshold finds fewer pairs.
    strict = tmp_path / "strict.csv"
    assert run_cli("leakage", "digits", "--set", "leakage.threshold=0.005", "--out", strict) == 0
    assert 1 <= len(strict.read_text().splitlines()) < len(lines)
    # ... but never into a run directory, whose duplicates.csv is the one it trained with
    assert run_cli("leakage", trained, "--set", "leakage.threshold=0.005") == 2
    err = capsys.readouterr().err
    assert "leakage.threshold: 0.0 vs 0.005" in err and "give --out" in err
    assert run_cli("leakage", "digits", "--set", "leakage.treshold=1") == 2
    assert "did you mean 'threshold'" in capsys.readouterr().err


def test_version(capsys):
    import jmem

    with pytest.raises(SystemExit) as exit_:
        run_cli("--version")
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"jmem {jmem.__version__}"


def test_config_command_prints_the_resolved_config_and_the_variants(capsys, tmp_path):
    assert run_cli("config", SMALL, "--set", "score.fdr_q=0.05") == 0
    out = capsys.readouterr().out
    record, _, variants = out.partition("\n}\n")
    record = json.loads(record + "\n}")
    assert record["train"]["num_models"] == 16 and record["score"]["fdr_q"] == 0.05
    assert "variants of experiments/digits.py (this is 'small'):" in variants
    assert "  fz: subsets.design=fixed" in variants and "  sweep: " in variants
    assert not list(tmp_path.iterdir())  # runs nothing, writes nothing
    assert run_cli("config", "experiments/digits.py:huge") == 2
    assert "unknown variant 'huge'" in capsys.readouterr().err


def test_every_stage_takes_set_with_one_grammar(trained, tmp_path, capsys):
    """`jmem run --set score.*` scores with it; `jmem score` and `jmem retrain` take their own
    section only, naming the field of a mistyped or section-less override."""
    run = tmp_path / "run"
    assert run_cli("run", SMALL, "--workdir", run, "--no-progress", "--set", "score.fdr_q=0.05",
                   "--set", "retrain.resamples=200") == 0
    assert json.loads((run / rundir.THRESHOLDS).read_text())["options"]["fdr_q"] == 0.05
    assert json.loads((run / rundir.CONFIG).read_text())["score"]["fdr_q"] == 0.05
    capsys.readouterr()
    for command, override, message in [
            ("score", "fdr_q=0.2", "unknown config field 'fdr_q'; did you mean 'score.fdr_q'?"),
            ("score", "train.epochs=2", "jmem score takes only score.* fields"),
            ("retrain", "score.fdr_q=0.2", "jmem retrain takes only retrain.* fields"),
            ("retrain", "retrain.seed=4", "did you mean 'seeds'")]:
        assert run_cli(command, run, "--set", override) == 2
        assert message in capsys.readouterr().err
    assert run_cli("score", run, "--set", "score.fdr_q=0.2") == 0
    assert json.loads((run / rundir.THRESHOLDS).read_text())["options"]["fdr_q"] == 0.2
    # retrain/ was computed from scores with fdr_q=0.05: never reused with other scores
    capsys.readouterr()
    assert run_cli("retrain", run) == 2
    assert "computed from other inputs (score.fdr_q: 0.05 vs 0.2)" in capsys.readouterr().err
    assert run_cli("score", run, "--set", "score.fdr_q=0.05") == 0  # the same scores again
    capsys.readouterr()
    assert run_cli("retrain", run) == 0 and "already complete" in capsys.readouterr().out
    assert run_cli("retrain", run, "--set", "retrain.seeds=4") == 2
    assert "holds a different removal experiment (retrain.seeds: 2 vs 4)" in capsys.readouterr().err
