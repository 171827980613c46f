"""Bad inputs and faults through the `jmem` command: one table, one line each, no traceback.

Every case asserts the exit status, that stderr holds exactly one ``jmem: error:`` line
naming the field or file (or the ``jmem: warning:`` line of a legal but suspicious setting),
no traceback, and, where a run directory existed, that its bytes are unchanged.

Classes (issue 16): help text; silently wrong resume (changed dataset, damaged keep.npy);
tracebacks (bad .npz, truncated run files under score, truncated wave, config.json not an
object, bad config path, read-only / file / full workdir); runaway work (label 10^6,
bench --out DIR, --devices 100); accepted without a word (lr inf, momentum 2, batch > data,
rates with an empty item, one class, test-only class, deleted canaries / extra margins,
diverged models); file modes; kill and resume (here: a process dying after a wave file,
resumed bitwise identical; the full kill matrix, damaged checkpoints falling back to an older
step and SIGTERM are tests/test_resume.py).

Runs are tiny (4 MLPs, 1 epoch, a 300-example .npz) and in-process, so JAX starts once.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from jmem import cli
from jmem.study import faults, integrity, rundir, training, waves

SMALL = "experiments/digits.py:small"
TINY = ["--set", "train.num_models=4", "--set", "train.epochs=1", "--set", "train.wave_size=2",
        "--set", "train.batch_size=32", "--no-progress"]


def jmem(capsys, *argv):
    """Run ``jmem argv`` in-process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_error(result, *needles, rc=2):
    """Exit ``rc``, exactly one ``jmem: ...error:`` line holding every needle, no traceback."""
    code, _, err = result
    assert code == rc, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("jmem: ") and "error:" in line]
    assert len(errors) == 1, err
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def warnings_of(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("jmem: warning:")]


def snapshot(directory: Path) -> dict:
    """Relative path -> bytes of every file (the lock file's holder text excepted)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != waves.LOCK}


def write_npz(path: Path, **changes) -> Path:
    """A 300/100-example, 3-class, 16-feature dataset (clusters, learnable in one epoch)."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 3, (3, 16))
    y_train, y_test = np.arange(300) % 3, np.arange(100) % 3
    arrays = dict(x_train=centers[y_train] + rng.normal(0, 1, (300, 16)), y_train=y_train,
                  x_test=centers[y_test] + rng.normal(0, 1, (100, 16)), y_test=y_test)
    arrays.update(changes)
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_npz(tmp_path_factory.mktemp("data") / "d.npz")


def train_args(data: Path, workdir: Path, *extra):
    return ["train", SMALL, "--set", f"data.name={data}", *TINY, *extra, "--workdir", workdir]


@pytest.fixture(scope="module")
def complete(tmp_path_factory, data) -> Path:
    """A finished tiny run (with canaries and the leakage-free test set)."""
    workdir = tmp_path_factory.mktemp("complete") / "run"
    assert cli.main([str(a) for a in train_args(data, workdir)]) == 0
    return workdir


class _Crash(Exception):
    pass


@pytest.fixture(scope="module")
def unfinished_template(tmp_path_factory, data) -> Path:
    """A run whose process died after its first wave file (waves/ holds models 0-1)."""
    workdir = tmp_path_factory.mktemp("unfinished") / "run"
    real = faults.point

    def crash(name, settle=None):
        if name == "wave_written":
            raise _Crash("killed")
        real(name, settle)

    faults.point = crash
    try:
        assert cli.main([str(a) for a in train_args(data, workdir)]) == 1  # an "internal error"
    finally:
        faults.point = real
    assert len(list((workdir / waves.WAVES_DIR).glob("*.npz"))) == 1
    assert not training.is_complete(workdir)
    return workdir


@pytest.fixture
def unfinished(unfinished_template, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(unfinished_template, copy)
    return copy


@pytest.fixture
def finished(complete, tmp_path) -> Path:
    copy = tmp_path / "done"
    shutil.copytree(complete, copy)
    return copy


# ----------------------------------------------------------------------------- the command itself


def test_help_works_and_mentions_percent_of_peak(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    assert "% of peak" in " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_internal_error_is_one_line_with_the_debug_hint(capsys, monkeypatch):
    def broken(args):
        raise RuntimeError("something\nspanning lines")

    monkeypatch.setattr(cli, "cmd_data", broken)  # build_parser binds the handler at call time
    line = assert_error(jmem(capsys, "data", "digits"), "RuntimeError", "JMEM_DEBUG=1", rc=1)
    assert "something spanning lines" in line
    monkeypatch.setenv("JMEM_DEBUG", "1")
    code, _, err = jmem(capsys, "data", "digits")
    assert code == 1 and "Traceback" in err


# ----------------------------------------------------------------------------- the table

# (name, argv, needles of the error line): bad values refused before anything is written.
CONFIG_CASES = [
    ("lr inf", ["--set", "train.learning_rate=inf"], ["train.learning_rate=inf", "finite"]),
    ("lr nan", ["--set", "train.learning_rate=nan"], ["train.learning_rate=nan", "finite"]),
    ("momentum negative", ["--set", "train.momentum=-0.5"], ["train.momentum=-0.5", ">= 0"]),
    ("rates empty item", ["--set", "subsets.rates=0.5,,0.7"], ["subsets.rates", "item 2", "empty"]),
    ("devices 100", ["--devices", "100"], ["--devices=100", "CPU core"]),
    ("unknown field", ["--set", "train.epoch=3"], ["train.epoch", "did you mean 'epochs'"]),
]


@pytest.mark.parametrize("name,argv,needles", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_settings_are_refused_before_anything_is_written(name, argv, needles, data, tmp_path,
                                                             capsys):
    workdir = tmp_path / "w"
    assert_error(jmem(capsys, *train_args(data, workdir, *argv)), *needles)
    assert not workdir.exists()


def test_config_path_that_is_a_directory_or_not_python(tmp_path, capsys):
    assert_error(jmem(capsys, "train", tmp_path, "--workdir", tmp_path / "w"),
                 "is a directory", str(tmp_path))
    text = tmp_path / "config.json"
    text.write_text("{}")
    assert_error(jmem(capsys, "train", text, "--workdir", tmp_path / "w"),
                 "not a Python file", "config.json")
    assert not (tmp_path / "w").exists()


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("kind,needles", [
    ("truncated", ["not a readable .npz file", "BadZipFile"]),
    ("damaged member", ["is a damaged .npz file"]),
    ("empty", ["not a readable .npz file", "EOFError"]),
    ("npy renamed", ["single .npy array, not a .npz archive"]),
    ("not numpy", ["not a readable .npz file"]),
    ("label 10^6", ["1000001 classes", "only 300 training examples", "dense"]),
    ("one class", ["training set holds 1 class", "at least 2"]),
    ("class gap", ["class 1 of 0..2 has no example", "dense"]),
])
def test_bad_dataset_files(kind, needles, tmp_path, capsys):
    path = tmp_path / "bad.npz"
    if kind == "truncated":
        write_npz(path)
        _truncate(path)
    elif kind == "damaged member":  # intact zip directory, a compressed member's bytes hit
        np.savez_compressed(path, x_train=np.zeros((300, 16)), y_train=np.arange(300) % 3,
                            x_test=np.zeros((100, 16)), y_test=np.arange(100) % 3)
        raw = bytearray(path.read_bytes())
        raw[200] ^= 0xFF
        path.write_bytes(bytes(raw))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "npy renamed":
        np.save(tmp_path / "x.npy", np.zeros(3))
        (tmp_path / "x.npy").rename(path)
    elif kind == "not numpy":
        path.write_text("x_train,y_train\n1,2\n")
    elif kind == "label 10^6":
        y = np.arange(300) % 3
        y[7] = 10**6
        write_npz(path, y_train=y)
    elif kind == "one class":
        write_npz(path, y_train=np.zeros(300, int), y_test=np.arange(100) % 2)
    elif kind == "class gap":
        write_npz(path, y_train=(np.arange(300) % 2) * 2, y_test=(np.arange(100) % 2) * 2)
    assert_error(jmem(capsys, "data", path), str(path), *needles)
    # the same refusal stops `jmem train` before it writes anything
    assert_error(jmem(capsys, *train_args(path, tmp_path / "w")), *needles)
    assert not (tmp_path / "w").exists()


def test_a_test_label_absent_from_training_warns(tmp_path, capsys):
    path = write_npz(tmp_path / "d.npz", y_train=np.arange(300) % 2, y_test=np.arange(100) % 3)
    code, out, err = jmem(capsys, "data", path)
    assert code == 0 and "Traceback" not in err
    (line,) = warnings_of(err)
    assert "class 2 occurs in y_test but never in y_train" in line


def test_workdir_that_is_a_file(data, tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("not a directory")
    assert_error(jmem(capsys, *train_args(data, target)), "is a file, not a directory", str(target))
    assert_error(jmem(capsys, *train_args(data, target / "sub")), "cannot", str(target))
    assert target.read_text() == "not a directory"


@pytest.mark.parametrize("code,reason", [(errno.EACCES, "Permission denied"),
                                         (errno.EROFS, "Read-only file system"),
                                         (errno.ENOSPC, "No space left on device")])
def test_unwritable_or_full_disk_is_one_line_and_leaves_nothing_half_written(
        code, reason, data, finished, tmp_path, capsys, monkeypatch):
    def fail(path):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(rundir, "_create_tmp", fail)
    # a new run: refused at its first file, and no temporary left behind
    workdir = tmp_path / "new"
    assert_error(jmem(capsys, *train_args(data, workdir)), reason, str(workdir))
    assert not [p for p in workdir.rglob("*") if p.name != waves.LOCK]
    # scoring a finished run: nothing of the run changes
    before = snapshot(finished)
    assert_error(jmem(capsys, "score", finished), reason, str(finished))
    assert snapshot(finished) == before


def test_bench_out_checked_before_running(tmp_path, capsys):
    assert_error(jmem(capsys, "bench", "--quick", "--out", tmp_path), "--out", "is a directory")
    assert_error(jmem(capsys, "bench", "--quick", "--out", tmp_path / "no" / "b.json"),
                 "does not exist")


# ----------------------------------------------------------------------------- resume


def test_resume_with_a_changed_dataset_is_refused(unfinished, data, tmp_path, capsys):
    changed = write_npz(tmp_path / "d.npz")
    arrays = dict(np.load(changed))
    arrays["x_train"][5, 3] += 1.0
    np.savez(changed, **arrays)
    before = snapshot(unfinished)
    # same path as the config records, different contents
    shutil.copy(data, tmp_path / "orig.npz")
    shutil.copy(changed, data)
    try:
        line = assert_error(jmem(capsys, *train_args(data, unfinished)), "different dataset",
                            "x_train")
    finally:
        shutil.copy(tmp_path / "orig.npz", data)
    assert "values of x_train differ" in line
    assert snapshot(unfinished) == before


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_resume_with_a_damaged_input_is_refused(damage, unfinished, data, capsys):
    keep = unfinished / rundir.KEEP
    if damage == "flip":
        raw = bytearray(keep.read_bytes())
        raw[-1] ^= 1
        keep.write_bytes(bytes(raw))
    elif damage == "truncate":
        _truncate(keep)
    else:
        keep.unlink()
    before = snapshot(unfinished)
    needle = "keep.npy is missing" if damage == "delete" else "keep.npy is damaged"
    assert_error(jmem(capsys, *train_args(data, unfinished)), needle, str(unfinished))
    assert snapshot(unfinished) == before
    assert not training.is_complete(unfinished)


@pytest.mark.parametrize("recorded", [True, False], ids=["checksum", "read-in-full"])
def test_resume_recomputes_a_truncated_wave_and_equals_an_uninterrupted_run(
        recorded, unfinished, complete, data, capsys):
    (wave,) = (unfinished / waves.WAVES_DIR).glob("*.npz")
    _truncate(wave)
    if not recorded:  # a wave another process of a multi-process job wrote: no checksum
        manifest = json.loads((unfinished / rundir.MANIFEST).read_text())
        manifest["waves"] = {}
        (unfinished / rundir.MANIFEST).write_text(json.dumps(manifest))
    code, _, err = jmem(capsys, *train_args(data, unfinished))
    assert code == 0 and "Traceback" not in err, err
    assert any(wave.name in line and "damaged" in line for line in warnings_of(err)), err
    assert training.is_complete(unfinished)
    assert snapshot(unfinished) == snapshot(complete)  # every file, manifest.json included


def test_resume_after_a_kill_completes_identically(unfinished, complete, data, capsys):
    """The cheap member of tests/test_resume.py's kill matrix (killed after a wave file)."""
    assert jmem(capsys, *train_args(data, unfinished))[0] == 0
    assert snapshot(unfinished) == snapshot(complete)
    assert integrity.verify_run(unfinished) is not None


def test_config_json_that_is_not_an_object(unfinished, data, capsys):
    (unfinished / rundir.CONFIG).write_text("[1, 2, 3]\n")
    before = snapshot(unfinished)
    assert_error(jmem(capsys, *train_args(data, unfinished)), "config.json",
                 "not a JSON object")
    assert_error(jmem(capsys, "leakage", unfinished), "config.json is damaged or was changed")
    assert snapshot(unfinished) == before
    (unfinished / rundir.MANIFEST).unlink()  # a hand-made run directory: read as it is
    assert_error(jmem(capsys, "leakage", unfinished), "config.json", "not a JSON object")
    (unfinished / rundir.CONFIG).write_text("{not json")
    assert_error(jmem(capsys, "leakage", unfinished), "config.json", "not valid JSON")


# ----------------------------------------------------------------------------- score


@pytest.mark.parametrize("name,damage,needle", [
    (rundir.KEEP, "truncate", "keep.npy is damaged"),
    (rundir.MARGINS_TRAIN, "truncate", "margins_train.npy is damaged"),
    (rundir.CANARIES, "delete", "canaries.npy is missing"),
    ("margins_test_clean.npy", "delete", "margins_test_clean.npy is missing"),
    (rundir.MODEL_METRICS, "delete", "models.csv is missing"),
])
def test_score_refuses_a_damaged_or_incomplete_run(name, damage, needle, finished, capsys):
    path = finished / name
    assert path.exists(), name
    _truncate(path) if damage == "truncate" else path.unlink()
    before = snapshot(finished)
    assert_error(jmem(capsys, "score", finished), needle)
    assert snapshot(finished) == before


def test_score_without_a_manifest_still_names_a_truncated_file(finished, capsys):
    (finished / rundir.MANIFEST).unlink()
    _truncate(finished / rundir.MARGINS_TRAIN)
    before = snapshot(finished)
    assert_error(jmem(capsys, "score", finished), "margins_train.npy", "damaged or not a .npy file")
    assert snapshot(finished) == before


def test_score_of_an_unfinished_run(unfinished, capsys):
    assert_error(jmem(capsys, "score", unfinished), "not finished training")


def test_diverged_models_are_excluded_from_scoring(finished, capsys):
    metrics = finished / rundir.MODEL_METRICS
    lines = metrics.read_text().splitlines()
    column = lines[0].split(",").index("diverged")
    for row in (2, 4):  # models 1 and 3
        cells = lines[row].split(",")
        cells[column] = "1"
        lines[row] = ",".join(cells)
    metrics.write_text("\n".join(lines) + "\n")
    # Recorded as if training had flagged them (the manifest would hold this models.csv).
    manifest = json.loads((finished / rundir.MANIFEST).read_text())
    manifest["outputs"][rundir.MODEL_METRICS] = integrity.file_sha256(metrics)
    (finished / rundir.MANIFEST).write_text(json.dumps(manifest))
    code, out, err = jmem(capsys, "score", finished)
    assert code == 0, err
    record = json.loads((finished / rundir.THRESHOLDS).read_text())
    assert record["excluded_diverged"] == {"count": 2, "ids": [1, 3]}
    assert record["num_models"] == 2
    assert "excluded 2 diverged model(s): ids 1, 3" in out


def test_every_model_diverged_is_an_error_with_the_warnings_first(data, tmp_path, capsys):
    workdir = tmp_path / "w"
    result = jmem(capsys, *train_args(data, workdir, "--set", "train.optimizer=sgd",
                                      "--set", "train.momentum=2", "--set", "train.learning_rate=1e30",
                                      "--set", "train.batch_size=1000", "--set", "train.epochs=3"))
    assert_error(result, "all 4 models diverged", "train.learning_rate")
    warned = " | ".join(warnings_of(result[2]))
    assert "train.momentum=2 >= 1" in warned and "train.batch_size=1000 >=" in warned
    assert_error(jmem(capsys, "score", workdir), "every one of the 4 models", "diverged")


def test_some_diverged_models_are_named_in_one_warning(capsys):
    cli.report_diverged({"models": 4, "diverged_ids": [0, 2]})
    (line,) = warnings_of(capsys.readouterr().err)
    assert "2 of 4 models diverged" in line and "ids 0, 2" in line


# ----------------------------------------------------------------------------- file modes


def test_files_get_the_umask_mode(complete):
    mask = os.umask(0)
    os.umask(mask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in complete.iterdir()
             if p.is_file() and p.name != waves.LOCK}
    assert modes and set(modes.values()) == {0o666 & ~mask}, modes


# ----------------------------------------------------------------------------- the real entry point


def _subprocess(*argv):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JMEM_CPU_DEVICES")}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return subprocess.run([sys.executable, "-m", "jmem", *map(str, argv)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_help_and_devices_beyond_the_cores_in_a_fresh_process(tmp_path):
    """`python -m jmem`: host devices are configured before JAX starts (not so in-process)."""
    run = _subprocess("--help")
    assert run.returncode == 0 and "% of peak" in " ".join(run.stdout.split()), run.stderr
    cores = len(os.sched_getaffinity(0))
    run = _subprocess("train", SMALL, "--devices", cores + 98, "--workdir", tmp_path / "w")
    assert_error((run.returncode, run.stdout, run.stderr), f"--devices={cores + 98}",
                 f"{cores} CPU core")
    assert not (tmp_path / "w").exists()


def test_flag_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", SMALL])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--workdir" in err and err.startswith("jmem train: error:")


def test_leakage_out_directory_checked_before_detection(tmp_path, capsys):
    assert_error(jmem(capsys, "leakage", "digits", "--out", tmp_path), "--out", "is a directory")


def test_a_damaged_manifest_is_named_with_the_way_out(finished, capsys):
    (finished / rundir.MANIFEST).write_text("{trunc")
    assert_error(jmem(capsys, "score", finished), "manifest.json is not valid JSON", "delete it")
    (finished / rundir.MANIFEST).unlink()
    assert jmem(capsys, "score", finished)[0] == 0


def test_a_run_too_large_for_memory_is_refused_before_it_starts(data, tmp_path, capsys):
    workdir = tmp_path / "w"
    assert_error(jmem(capsys, *train_args(data, workdir, "--set", "train.num_models=1000000000")),
                 "train.num_models=1000000000", "GiB of memory")
    assert not workdir.exists()


def test_a_run_config_json_with_a_wrongly_typed_value(unfinished, capsys):
    config = json.loads((unfinished / rundir.CONFIG).read_text())
    config["train"]["epochs"] = "ten"
    (unfinished / rundir.CONFIG).write_text(json.dumps(config))
    (unfinished / rundir.MANIFEST).unlink()
    assert_error(jmem(capsys, "leakage", unfinished), "TrainConfig", "wrong type")


def test_resume_of_a_run_without_a_manifest_records_one(unfinished, complete, data, capsys):
    """A run directory of an older jmem: resumed with a warning, verified from then on."""
    (unfinished / rundir.MANIFEST).unlink()
    code, _, err = jmem(capsys, *train_args(data, unfinished))
    assert code == 0, err
    (line,) = warnings_of(err)
    assert "has no manifest.json" in line
    ours, reference = snapshot(unfinished), snapshot(complete)
    assert ours.pop(rundir.MANIFEST) and reference.pop(rundir.MANIFEST)
    assert ours == reference
    manifest = integrity.verify_run(unfinished)
    assert sorted(manifest["inputs"]) == sorted(json.loads(
        (complete / rundir.MANIFEST).read_text())["inputs"])
