"""Preemption without loss: `jmem train` killed anywhere, resumed, equals an uninterrupted run.

Each run is a real process (``python -m jmem train``) killed by a fault point
(``JMEM_TEST_KILL_AT``, see ``jmem.study.faults``) rather than by a timer, so every
test is deterministic. The run directories are compared file by file, byte for byte.
"""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from jmem.cli import main
from jmem.study import rundir, training, waves, workdir
from jmem.study.faults import KILL_ENV
from child_env import child_env

REPO = Path(__file__).resolve().parents[1]
SETTINGS = ["--set", "train.num_models=6", "--set", "train.epochs=4", "--set", "train.wave_size=3"]


def jmem_train(workdir, *flags, kill_at=None, timeout=120) -> subprocess.CompletedProcess:
    env = child_env(JMEM_CPU_DEVICES="2", **({KILL_ENV: kill_at} if kill_at else {}))
    argv = [sys.executable, "-m", "jmem", "train", "experiments/digits.py:small", *SETTINGS,
            "--workdir", str(workdir), "--no-progress", "--checkpoint-every-epochs", "1", *flags]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def public_files(workdir: Path) -> dict:
    """Relative path -> bytes of every file not hidden (the lock file and temporaries are)."""
    return {str(p.relative_to(workdir)): p.read_bytes() for p in sorted(workdir.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(workdir).parts)}


def assert_same_run(a: Path, b: Path):
    files_a, files_b = public_files(a), public_files(b)
    assert sorted(files_a) == sorted(files_b)
    different = [name for name in files_a if files_a[name] != files_b[name]]
    assert not different, f"files differ: {different}"


def _checkpoint_steps(workdir: Path, start: int, stop: int) -> list[int]:
    directory = workdir / "checkpoints" / f"wave_{start:07d}_{stop:07d}"
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.exists() else []


def test_killed_anywhere_then_resumed_is_bitwise_identical(tmp_path, capsys):
    """One run directory through a chain of kills (6 models, 2 waves of 3, 4 epochs,
    a checkpoint after every epoch), against an uninterrupted run without checkpoints.

    Along the way: a damaged newest checkpoint is skipped with a warning, SIGTERM
    checkpoints and exits 143, a different config and a concurrent start are refused.
    """
    reference = tmp_path / "reference"
    ref_proc = subprocess.Popen(
        [sys.executable, "-m", "jmem", "train", "experiments/digits.py:small", *SETTINGS,
         "--workdir", str(reference), "--no-progress", "--checkpoint-every-seconds", "0"],
        cwd=REPO, env=child_env(JMEM_CPU_DEVICES="2"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        work = tmp_path / "work"

        # 1. Killed after the first epoch of the first wave, before any checkpoint.
        assert jmem_train(work, kill_at="segment:1").returncode == -signal.SIGKILL
        assert (work / rundir.CONFIG).exists() and not (work / "checkpoints").exists()

        # 2. Killed mid-wave, right after its second checkpoint is on disk.
        assert jmem_train(work, kill_at="checkpoint_saved:2").returncode == -signal.SIGKILL
        assert _checkpoint_steps(work, 0, 3) == [1, 2]

        # A different config is refused, naming the field; a concurrent start too.
        assert main(["train", "experiments/digits.py:small", *SETTINGS, "--set", "train.epochs=5",
                     "--workdir", str(work), "--no-progress"]) == 2
        assert "train.epochs: 4 vs 5" in capsys.readouterr().err
        holder = _hold_lock(work)
        try:
            assert main(["train", "experiments/digits.py:small", *SETTINGS, "--workdir", str(work),
                         "--no-progress"]) == 2
            err = capsys.readouterr().err.strip()
            assert "\n" not in err and str(work) in err and f"pid {holder.pid}@" in err
        finally:
            holder.kill()
            holder.wait()

        # 3. The newest checkpoint is damaged: the resume falls back to epoch 1, warns, and
        #    SIGTERM (a preemption notice) after its second segment checkpoints and exits 143.
        for path in (work / "checkpoints" / "wave_0000000_0000003" / "2").rglob("*"):
            if path.is_file():
                path.write_bytes(b"\0" * path.stat().st_size)
        run = jmem_train(work, kill_at="segment:2:TERM")
        assert run.returncode == waves.EXIT_PREEMPTED, run.stderr[-2000:]
        assert "falling back" in run.stderr and "resumed at epoch 1 of 4" in run.stdout
        assert "stopped by SIGTERM" in run.stderr and "checkpointed at epoch 3" in run.stderr
        assert _checkpoint_steps(work, 0, 3) == [2, 3]

        # 4. Resumes at epoch 3, finishes wave 0; killed while wave 1's first checkpoint is
        #    being written (asynchronously).
        run = jmem_train(work, kill_at="checkpoint_started:1")
        assert run.returncode == -signal.SIGKILL and "resumed at epoch 3 of 4" in run.stdout
        assert waves.finished_models(work, 6).tolist() == [True] * 3 + [False] * 3
        assert not (work / "checkpoints" / "wave_0000000_0000003").exists()

        # 5. Killed between waves: wave 1's file written, its checkpoints not yet deleted.
        assert jmem_train(work, kill_at="wave_written:1").returncode == -signal.SIGKILL
        assert waves.finished_models(work, 6).all()

        # 6. Killed during assembly, after the first final array.
        assert jmem_train(work, kill_at="assembly:1").returncode == -signal.SIGKILL
        assert (work / rundir.MARGINS_TRAIN).exists() and not training.is_complete(work)

        # 7. The last resume only assembles.
        run = jmem_train(work)
        assert run.returncode == 0, run.stderr[-2000:]
        assert "estimation: 6 models, all trained before" in run.stdout
        assert not (work / waves.WAVES_DIR).exists() and not (work / "checkpoints").exists()
    finally:
        ref_err = ref_proc.communicate(timeout=120)[1]
    assert ref_proc.returncode == 0, ref_err[-2000:]
    assert not (reference / "checkpoints").exists()
    assert_same_run(work, reference)


def _hold_lock(workdir: Path) -> subprocess.Popen:
    """A process holding the workdir's lock through jmem's own code until killed."""
    code = textwrap.dedent(f"""
        import time
        from jmem.study.waves import workdir_lock
        with workdir_lock({str(workdir)!r}):
            print("locked", flush=True)
            time.sleep(120)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=child_env(JMEM_CPU_DEVICES="2"),
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_kill_between_models_csv_and_cleanup_completes_on_rerun(tmp_path):
    run = jmem_train(tmp_path, "--set", "train.epochs=1", kill_at="cleanup")
    assert run.returncode == -signal.SIGKILL
    assert training.is_complete(tmp_path) and (tmp_path / waves.WAVES_DIR).exists()
    margins = np.load(tmp_path / rundir.MARGINS_TRAIN)
    run = jmem_train(tmp_path, "--set", "train.epochs=1")
    assert run.returncode == 0 and "already complete" in run.stdout
    assert not (tmp_path / waves.WAVES_DIR).exists()
    np.testing.assert_array_equal(np.load(tmp_path / rundir.MARGINS_TRAIN), margins)


def test_partial_inputs_do_not_block_a_rerun(tmp_path):
    """Killed while writing the inputs (no config.json yet): the directory is reused."""
    (tmp_path / rundir.KEEP).write_bytes(b"half")
    (tmp_path / f".{rundir.LABELS_TRAIN}.abc.tmp").write_bytes(b"")
    (tmp_path / waves.LOCK).write_text("1@host\n")
    assert training.check_workdir(tmp_path, config=None) is False
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(Exception, match="not empty and holds no config.json"):
        training.check_workdir(tmp_path, config=None)


def test_workdir_lock_is_exclusive_and_names_the_holder(tmp_path):
    """Another process is refused (naming the holder); this process may take it again
    (`jmem run` holds it across its stages); released on exit."""
    holder = _hold_lock(tmp_path)
    try:
        with pytest.raises(Exception, match=rf"in use by another jmem process \(pid {holder.pid}@"):
            with waves.workdir_lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with waves.workdir_lock(tmp_path):
        with waves.workdir_lock(tmp_path):  # re-entrant
            pass
        assert os.path.realpath(tmp_path / waves.LOCK) in workdir._HELD
    assert not workdir._HELD
    again = _hold_lock(tmp_path)  # released: another process takes it
    again.kill()
    again.wait()


def test_segments_and_checkpoint_schedule():
    assert waves.next_segment(0, 10, 4, every_epochs=0) == 4
    assert waves.next_segment(8, 10, 4, every_epochs=0) == 10
    assert waves.next_segment(1, 10, 8, every_epochs=3) == 3
    assert waves.next_segment(3, 10, 8, every_epochs=3) == 6
    assert waves.segment_length(1.0, 1, target_seconds=2.0) == 2
    assert waves.segment_length(10.0, 1, target_seconds=2.0) == 1
    assert waves.segment_length(0.1, 2, target_seconds=2.0) == 40
