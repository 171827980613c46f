"""Faults of the stages after training (issue 24), one test or more per class of docs/faults.md.

Classes: later stages verify their inputs (a changed dataset); reuse keyed on everything
(scores, removal file); one definition of "diverged"; only listed wave files are read;
interruptions between and inside stages (SIGTERM, SIGINT, a truncated scores.csv, a failed
re-render, two reports at once); ambiguous or unlucky inputs (a 0/1 integer removal file, a
random baseline emptying a class, a design with an empty model, a selection of nothing);
environment and ranges (JAX_PLATFORMS, XLA_FLAGS, --devices, seeds, JMEM_CPU_DEVICES,
--checkpoint-every-seconds, a manifest from the future, data.idx_dir, leakage on retrain/).

Every refusal is one ``jmem: error:`` line (asserted by ``assert_error``) and leaves the run
directory as it was. Runs are tiny (8 MLPs, 1 epoch, a 300-example .npz) and in-process
where no signal is involved.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jmem import config as config_lib
from jmem.data import removal
from jmem.errors import JmemError
from jmem.study import diverged, faults, inputs, integrity, rundir, waves, workdir
from jmem.study.report import stage as report_stage
from child_env import child_env
from test_faults import SMALL, assert_error, jmem, snapshot, warnings_of, write_npz

REPO = Path(__file__).resolve().parents[1]
TINY = ["--set", "train.num_models=8", "--set", "train.epochs=1", "--set", "train.wave_size=4",
        "--set", "train.batch_size=32", "--set", "retrain.seeds=2", "--set", "retrain.resamples=100",
        "--set", "retrain.methods=", "--no-progress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_npz(tmp_path_factory.mktemp("data") / "d.npz")


@pytest.fixture(scope="module")
def remove_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("remove") / "remove.npy"
    np.save(path, np.array([3, 7, 11, 20, 40]))
    return path


def run_args(data: Path, workdir: Path, remove: Path, *extra):
    return ["run", SMALL, "--set", f"data.name={data}", *TINY, "--set", f"retrain.remove={remove}",
            *extra, "--workdir", workdir]


@pytest.fixture(scope="module")
def study(tmp_path_factory, data, remove_file) -> Path:
    """A finished tiny study: trained, scored, retrained (a user removal set), reported."""
    work = tmp_path_factory.mktemp("study") / "run"
    from jmem import cli

    assert cli.main([str(a) for a in run_args(data, work, remove_file)]) == 0
    return work


@pytest.fixture
def run(study, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(study, copy)
    return copy


@contextlib.contextmanager
def changed(data: Path, **changes):
    """The dataset file the runs were trained on, changed (``key=function``) for the block."""
    original = data.read_bytes()
    arrays = dict(np.load(data))
    for key, fn in changes.items():
        arrays[key] = fn(arrays[key].copy())
    np.savez(data, **arrays)
    try:
        yield
    finally:
        data.write_bytes(original)


def bump(a):
    a[5] = a[5] + 1.0
    return a


# ----------------------------------------------------------------------------- later stages verify inputs


@pytest.mark.parametrize("command", ["retrain", "report", "leakage"])
def test_later_stages_refuse_a_changed_dataset(command, run, data, tmp_path, capsys):
    shutil.rmtree(run / "retrain")  # retrain would otherwise be "already complete"
    before = snapshot(run)
    with changed(data, x_train=bump):
        line = assert_error(jmem(capsys, command, run), "trained on a different dataset",
                            "the values of x_train differ", "jmem run CONFIG --workdir NEW_DIR")
    assert str(run) in line
    assert snapshot(run) == before


def test_changed_training_labels_are_a_changed_dataset(run, data, capsys):
    with changed(data, y_train=lambda y: (y + 1) % 3):
        assert_error(jmem(capsys, "report", run), "different dataset", "y_train")


def test_leakage_never_rewrites_the_run_duplicates_with_other_pairs(run, capsys, monkeypatch):
    from jmem.study import leakage

    before = (run / rundir.DUPLICATES).read_bytes()
    assert jmem(capsys, "leakage", run)[0] == 0  # the same pairs: rewritten as they were
    assert (run / rundir.DUPLICATES).read_bytes() == before
    # as if the detector had changed since training: other pairs
    monkeypatch.setattr(leakage, "duplicates_csv_text", lambda result: before.decode() + "1,2,0,pixel\n")
    assert_error(jmem(capsys, "leakage", run), "other pairs than the duplicates.csv", "--out")
    assert (run / rundir.DUPLICATES).read_bytes() == before


# ----------------------------------------------------------------------------- reuse keyed on everything


def test_rerun_after_scoring_with_other_options_rescored_and_reuses(run, data, remove_file, capsys):
    """`jmem score` with another option, then the study again: the scores are recomputed
    with the study's options (named), which gives the same scores, so the removal
    experiment is reused: nothing stale, nothing lost."""
    results = {n: (run / n).read_bytes() for n in ("scores.csv", "retrain/retrain.json")}
    assert jmem(capsys, "score", run, "--set", "score.min_effect=0.3")[0] == 0
    assert_error(jmem(capsys, "retrain", run), "computed from other inputs",
                 "score.min_effect: 0.1 vs 0.3", f"rm -r {run / 'retrain'}")
    code, out, err = jmem(capsys, *run_args(data, run, remove_file))
    assert code == 0, err
    assert "scored with other options (score.min_effect: 0.3 vs 0.1); scoring again" in out
    assert "removal experiment already complete" in out
    assert {n: (run / n).read_bytes() for n in results} == results


def test_a_changed_removal_file_is_named(run, remove_file, tmp_path, capsys):
    changed = tmp_path / "remove.npy"
    shutil.copy(remove_file, changed)
    config = json.loads((run / "retrain" / "config.json").read_text())
    # the experiment as if started from `changed`: then the file changes
    depends_path = run / "retrain" / rundir.MANIFEST
    manifest = json.loads(depends_path.read_text())
    manifest["depends"]["remove"]["path"] = str(changed)
    depends_path.write_text(json.dumps(manifest))
    config["retrain"]["remove"] = str(changed)
    text = rundir.json_text(config)
    (run / "retrain" / "config.json").write_text(text)
    manifest["inputs"]["config.json"] = integrity.text_sha256(text)
    depends_path.write_text(json.dumps(manifest))
    np.save(changed, np.array([3, 7, 11, 20, 41]))
    before = snapshot(run)
    assert_error(jmem(capsys, "retrain", run, "--set", f"retrain.remove={changed}"),
                 f"the file retrain.remove={str(changed)!r} changed (sha256 now")
    assert snapshot(run) == before


def test_report_refuses_a_verdict_of_other_scores(run, capsys):
    assert jmem(capsys, "score", run, "--set", "score.pair_mem_threshold=0.5")[0] == 0
    before = snapshot(run)
    assert_error(jmem(capsys, "report", run), "computed from other scores",
                 "score.pair_mem_threshold: 0.25 vs 0.5", "jmem retrain")
    assert snapshot(run) == before


# ----------------------------------------------------------------------------- diverged


def test_the_definition_of_diverged():
    loss = np.array([0.1, np.nan, 0.2, 0.3], np.float32)
    margins_train = np.ones((4, 5), np.float32)
    margins_test = np.ones((4, 3), np.float32)
    margins_test[2, 1] = np.inf
    flags = diverged.diverged_models(loss, [margins_train, margins_test])
    assert flags.tolist() == [False, True, True, False]
    assert diverged.without(None, flags, 4).tolist() == [0, 3]
    assert diverged.without(np.array([1, 3]), flags, 4).tolist() == [3]
    assert diverged.without(None, np.zeros(4, bool), 4) is None
    with pytest.raises(JmemError, match="every one of the 2 models"):
        diverged.without(np.array([1, 2]), flags, 4)


def test_a_model_with_nan_margins_is_left_out_by_every_stage(run, capsys):
    """Finite loss, NaN test margins: scoring, the selection, the export and the report all
    leave model 2 out, so the F&Z export's tr_mem equals scores.csv's mem."""
    margins = np.load(run / rundir.MARGINS_TEST)
    margins[2, :3] = np.nan
    np.save(run / rundir.MARGINS_TEST, margins)
    manifest = json.loads((run / rundir.MANIFEST).read_text())
    manifest["outputs"][rundir.MARGINS_TEST] = integrity.file_sha256(run / rundir.MARGINS_TEST)
    (run / rundir.MANIFEST).write_text(json.dumps(manifest))
    shutil.rmtree(run / "retrain")
    code, out, err = jmem(capsys, "score", run)
    assert code == 0, err
    assert "excluded 1 diverged model(s): ids 2" in out
    code, out, err = jmem(capsys, "retrain", run, "--no-progress")
    assert code == 0, err
    record = json.loads((run / "retrain" / "retrain.json").read_text())
    assert sum(record["selection"]["models_per_pool"]) == 7
    assert jmem(capsys, "report", run)[0] == 0
    mem = rundir.read_csv_columns(run / rundir.SCORES)["mem"]
    tr_mem = np.load(run / rundir.FZ_EXPORT)["tr_mem"]
    np.testing.assert_allclose(tr_mem, mem, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- only listed wave files


class _Crash(Exception):
    pass


def _crash_after_wave(monkeypatch, nth: int = 1):
    real, seen = faults.point, {"n": 0}

    def crash(name, settle=None):
        if name == "wave_written":
            seen["n"] += 1
            if seen["n"] == nth:
                raise _Crash("killed")
        real(name, settle)

    monkeypatch.setattr(faults, "point", crash)


def test_an_unlisted_copy_of_a_wave_is_not_merged(data, remove_file, study, tmp_path, capsys, monkeypatch):
    work = tmp_path / "w"
    train = ["train", SMALL, "--set", f"data.name={data}", *TINY, "--workdir", work]
    _crash_after_wave(monkeypatch)
    assert jmem(capsys, *train)[0] == 1
    monkeypatch.undo()
    (first,) = (work / waves.WAVES_DIR).glob("*.npz")
    shutil.copy(first, waves.wave_path(work, 4, 8))  # models 0-3 saved as 4-7
    code, _, err = jmem(capsys, *train)
    assert code == 0, err
    (line,) = [w for w in warnings_of(err) if "models_0000004_0000008" in w]
    assert "holds models 0-3, not 4-7" in line and "not listed in manifest.json" in line
    reference = study / rundir.MARGINS_TRAIN
    np.testing.assert_array_equal(np.load(work / rundir.MARGINS_TRAIN), np.load(reference))


def test_a_truncated_retrain_wave_is_trained_again(run, study, capsys, monkeypatch):
    """retrain/ has a manifest of its own: a damaged wave is named and trained again, and the
    experiment equals the uninterrupted one (it used to block every rerun)."""
    shutil.rmtree(run / "retrain")
    _crash_after_wave(monkeypatch)
    assert jmem(capsys, "retrain", run, "--no-progress")[0] == 1  # died after its first wave
    monkeypatch.undo()
    (wave,) = (run / "retrain" / waves.WAVES_DIR).glob("*.npz")
    listed = json.loads((run / "retrain" / rundir.MANIFEST).read_text())["waves"]
    assert list(listed) == [f"{waves.WAVES_DIR}/{wave.name}"]
    wave.write_bytes(wave.read_bytes()[:100])
    code, _, err = jmem(capsys, "retrain", run, "--no-progress")
    assert code == 0, err
    assert any(wave.name in w and "damaged" in w for w in warnings_of(err)), err
    for name in ("retrain.json", "retrain_models.csv", "margins_test.npy"):
        assert (run / "retrain" / name).read_bytes() == (study / "retrain" / name).read_bytes(), name


# ----------------------------------------------------------------------------- interruptions


def _jmem_process(*argv, kill_at=None, env=None):
    extra = {faults.KILL_ENV: kill_at} if kill_at else {}
    return subprocess.run([sys.executable, "-m", "jmem", *map(str, argv)], cwd=REPO,
                          env=child_env(JMEM_CPU_DEVICES="2", **extra, **(env or {})),
                          capture_output=True, text=True, timeout=300)


def test_a_signal_anywhere_in_jmem_run_stops_it_and_a_rerun_continues(data, remove_file, study, tmp_path):
    """SIGTERM during training's assembly (it used to be noted and dropped: the study went on
    through score, retrain and report and exited 0), then SIGINT after scoring: each stops the
    study at the next safe point (143, 130), and the last run finishes it as if uninterrupted."""
    work = tmp_path / "w"
    for kill_at, code, name, done_last, not_yet in [
            ("assembly:1:TERM", 143, "SIGTERM", rundir.MODEL_METRICS, rundir.SCORES),
            ("stage:1:INT", 130, "SIGINT", rundir.PAIRS, "retrain")]:
        stopped = _jmem_process(*run_args(data, work, remove_file), kill_at=kill_at)
        assert stopped.returncode == code, stopped.stderr[-2000:]
        assert f"jmem: stopped by {name}" in stopped.stderr and "re-run the same command" in stopped.stderr
        assert (work / done_last).exists() and not (work / not_yet).exists()
        assert not (work / rundir.REPORT).exists()
    done = _jmem_process(*run_args(data, work, remove_file))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "already scored" in done.stdout
    for name in ("scores.csv", "retrain/retrain.json", "retrain/retrain_models.csv"):
        assert (work / name).read_bytes() == (study / name).read_bytes(), name


def test_a_truncated_scores_csv(run, data, remove_file, capsys):
    scores = run / rundir.SCORES
    good = scores.read_bytes()
    scores.write_bytes(good[: len(good) // 2])
    assert_error(jmem(capsys, "retrain", run), "scores.csv is damaged or was changed",
                 f"`jmem score {run}` recomputes")
    code, out, err = jmem(capsys, *run_args(data, run, remove_file))
    assert code == 0, err
    assert "scores.csv is damaged or was changed" in out and "scoring again" in out
    assert scores.read_bytes() == good


def test_a_failed_rerender_keeps_the_old_report(run, capsys, monkeypatch):
    before = snapshot(run)
    figures = sorted(p.name for p in (run / rundir.REPORT_FIGURES).glob("*.png"))
    assert figures

    def broken(view, fig_dir):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(report_stage.sections, "ablation_section", broken)
    assert_error(jmem(capsys, "report", run), "plotting failed", rc=1)
    after = snapshot(run)  # the report and its plots as they were (reliability.json and the
    for name in (rundir.REPORT, *[f"{rundir.REPORT_FIGURES}/{f}" for f in figures]):  # export
        assert after[name] == before[name], name                          # are single files)
    assert sorted(p.name for p in (run / rundir.REPORT_FIGURES).glob("*.png")) == figures
    assert not [p for p in run.iterdir() if p.name.startswith(".figures")]


def test_a_kill_between_the_renames_of_a_swap_is_undone(run, capsys):
    figures = run / rundir.REPORT_FIGURES
    hidden = run / f".{rundir.REPORT_FIGURES}.abcd1234.old.tmp"
    os.rename(figures, hidden)  # what a kill between the two renames leaves
    (run / f".{rundir.REPORT_FIGURES}.ffff0000.new.tmp").mkdir()
    report_stage.restore_figures(run)
    assert figures.is_dir() and not hidden.exists()
    assert not [p for p in run.iterdir() if p.name.startswith(".figures")]


def test_two_reports_at_once_are_refused(run, capsys):
    from test_resume import _hold_lock

    holder = _hold_lock(run)
    try:
        assert_error(jmem(capsys, "report", run), "in use by another jmem process", f"pid {holder.pid}@")
    finally:
        holder.kill()
        holder.wait()


# ----------------------------------------------------------------------------- ambiguous or unlucky inputs


def test_a_zero_one_integer_removal_file_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "mask.npy"
    np.save(path, (np.arange(10) % 3 == 0).astype(np.int64))
    with pytest.raises(JmemError, match=r"holds 10 integers \(int64\), all 0 or 1: a mask or the "
                                        r"indices 0 and 1\? Save a mask as bool"):
        removal.load_removal(str(path), 10)
    np.save(path, np.array([0, 1, 4]))  # indices: fine
    assert np.flatnonzero(removal.load_removal(str(path), 10)).tolist() == [0, 1, 4]
    np.save(path, np.arange(10) % 3 == 0)  # a bool mask: fine
    assert removal.load_removal(str(path), 10).sum() == 4


def test_a_uniform_random_baseline_never_empties_a_class():
    labels = np.array([0] * 50 + [1] * 48 + [2, 2])  # class 2: two examples
    for s in range(30):
        removed = removal.uniform_random(labels.size, 90, np.random.default_rng(s), labels=labels)
        assert removed.sum() == 90
        assert set(np.unique(labels[~removed]).tolist()) == {0, 1, 2}
    # the first draw is the unconditioned one: an existing run's draws do not change
    for s in range(5):
        plain = removal.uniform_random(labels.size, 10, np.random.default_rng(s))
        kept = removal.uniform_random(labels.size, 10, np.random.default_rng(s), labels=labels)
        assert np.array_equal(plain, kept)
    with pytest.raises(removal.Undrawable, match="every example of some class"):
        removal.uniform_random(labels.size, 98, np.random.default_rng(0), labels=labels)
    exclude = np.zeros(labels.size, bool)
    exclude[:5] = True  # never drawn
    removed = removal.uniform_random(labels.size, 20, np.random.default_rng(0), labels=labels,
                                     exclude=exclude)
    assert not removed[:5].any() and removed.sum() == 20
    with pytest.raises(removal.Undrawable, match="class 2 has 2 examples; cannot remove 2"):
        removal.matched_random(labels, np.array([0, 0, 2]), np.random.default_rng(0))


def test_a_design_with_an_empty_model_is_refused_before_anything_is_written(data, tmp_path, capsys):
    work = tmp_path / "w"
    args = ["train", SMALL, "--set", f"data.name={data}", *TINY, "--workdir", work]
    assert_error(jmem(capsys, *args, "--set", "subsets.design=bernoulli", "--set", "subsets.rates=0.001"),
                 "subsets.rates=[0.001]", "would train on no example", "N=300")
    assert not work.exists()
    assert jmem(capsys, *args)[0] == 0  # the corrected config runs in the same workdir


def test_a_selection_of_nothing_still_ends_with_a_report(data, tmp_path, capsys):
    work = tmp_path / "w"
    code, out, err = jmem(capsys, "run", SMALL, "--set", f"data.name={data}", *TINY,
                          "--set", "retrain.methods=fixed", "--set", "score.fixed_threshold=1.0", "--workdir", work)
    assert code == 0, err
    (line,) = [w for w in warnings_of(err) if "no removal experiment" in w]
    assert "nothing to retrain: every removal set is empty (method:fixed selects no example in pool 0)" in line
    assert (work / rundir.REPORT).exists() and "No removal experiment" in out


# ----------------------------------------------------------------------------- environment and ranges


BAD_VALUES = [
    ("seed 2^32", ["--set", "seed=4294967296"], ["seed=4294967296", "[0, 4294967295]", "unsigned 32-bit"]),
    ("seed 2^64-1", ["--set", "seed=18446744073709551615"], ["seed=18446744073709551615"]),
    ("seed -1", ["--set", "seed=-1"], ["seed=-1", "unsigned 32-bit"]),
    ("checkpoint nan", ["--checkpoint-every-seconds", "nan"], ["--checkpoint-every-seconds=nan", "finite"]),
    ("checkpoint inf", ["--checkpoint-every-seconds", "inf"], ["--checkpoint-every-seconds=inf", "finite"]),
]


@pytest.mark.parametrize("name,argv,needles", BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_bad_values_are_refused_before_anything_is_written(name, argv, needles, data, tmp_path, capsys):
    work = tmp_path / "w"
    assert_error(jmem(capsys, "train", SMALL, "--set", f"data.name={data}", *TINY, *argv,
                      "--workdir", work), *needles)
    assert not work.exists()


def test_the_largest_seed_is_a_seed_of_its_own():
    config = config_lib.Config(seed=2**32 - 1)
    assert config_lib.from_dict(config_lib.to_dict(config)).seed == 2**32 - 1


def test_jmem_cpu_devices_out_of_range(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JMEM_CPU_DEVICES", "-3")
    assert_error(jmem(capsys, "train", SMALL, "--workdir", tmp_path / "w"),
                 "$JMEM_CPU_DEVICES=-3", "[1, 1024]")
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("env,needles", [
    ({"JAX_PLATFORMS": "gpu"}, ["JAX_PLATFORMS='gpu'", "cannot start that backend"]),
    ({"XLA_FLAGS": "garbage"}, ["XLA_FLAGS='garbage'", "file of flags"]),
    ({"XLA_FLAGS": "--xla_no_such_flag=1"}, ["XLA does not know the flag --xla_no_such_flag=1"]),
])
def test_a_bad_environment_is_one_line_in_a_fresh_process(env, needles, tmp_path):
    work = tmp_path / "w"
    proc = _jmem_process("train", SMALL, "--workdir", work, env=env)
    assert_error((proc.returncode, proc.stdout, proc.stderr), *needles)
    assert not work.exists()


def test_devices_far_above_the_machine_do_not_hang(tmp_path):
    work = tmp_path / "w"
    proc = _jmem_process("train", SMALL, "--devices", "100000", "--workdir", work)
    assert_error((proc.returncode, proc.stdout, proc.stderr), "--devices=100000")
    assert not work.exists()


def test_a_manifest_from_the_future_is_refused(run, capsys):
    manifest = json.loads((run / rundir.MANIFEST).read_text())
    manifest["format"] = integrity.FORMAT + 1
    (run / rundir.MANIFEST).write_text(json.dumps(manifest))
    for command in ("score", "retrain", "report"):
        assert_error(jmem(capsys, command, run), f"has format {integrity.FORMAT + 1}, newer than",
                     "upgrade jmem")


def test_every_stage_loads_the_dataset_with_idx_dir(run, monkeypatch):
    """retrain and report read the dataset through inputs.load_dataset, which passes every
    field of the data section (idx_dir included) to the loader."""
    from jmem.data import loaders

    seen = []
    real = loaders.load_dataset
    monkeypatch.setattr(loaders, "load_dataset",
                        lambda name, **kw: seen.append(kw) or real(name, data_dir=kw.get("data_dir")))
    config = config_lib.from_dict(json.loads((run / rundir.CONFIG).read_text()))
    config = config_lib.apply_overrides(config, ["data.idx_dir=/some/idx"])
    inputs.load_dataset(config)
    assert seen[-1]["idx_dir"] == "/some/idx"
    dataset, why = inputs.report_dataset(run, {**config_lib.to_dict(config)})
    assert seen[-1]["idx_dir"] == "/some/idx" and why == ""


def test_leakage_refuses_the_retrain_folder(run, capsys):
    assert_error(jmem(capsys, "leakage", run / "retrain"), "removal experiment's folder",
                 f"give {str(run.resolve())!r}")


def test_workdir_lock_module_is_reexported():
    assert waves.workdir_lock is workdir.workdir_lock and waves.Preempted is workdir.Preempted
    assert workdir.Preempted("x", signal.SIGINT).exit_code == 130
