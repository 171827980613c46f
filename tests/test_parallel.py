"""Several devices and several processes: sharded waves, no collectives, one run directory.

Host-platform CPU devices must be requested before JAX starts, so the multi-device checks
run in a child process with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``; the
multi-process checks start two ``jmem train`` or ``jmem run`` processes joined by
``jax.distributed`` on 127.0.0.1 and compare their run directory with a single process's
(stopped, killed and resumed too).
"""

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from jmem.engine import parallel
from jmem.cli import main
from child_env import child_env

REPO = Path(__file__).resolve().parents[1]
SMALL = ["experiments/digits.py:small", "--set", "train.num_models=6", "--set", "train.epochs=2",
         "--set", "train.wave_size=2", "--no-progress"]


def public_files(workdir: Path) -> dict:
    return {str(p.relative_to(workdir)): p.read_bytes() for p in sorted(workdir.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(workdir).parts)}


# ----------------------------------------------------------------------------- pure helpers


def test_padding_and_round_robin():
    assert [parallel.padded_size(n, 4) for n in (1, 4, 5, 8)] == [4, 4, 8, 8]
    padded = parallel.pad_models(np.array([[1, 2], [3, 4], [5, 6]]), 4)
    np.testing.assert_array_equal(padded, [[1, 2], [3, 4], [5, 6], [1, 2]])
    assert parallel.pad_models(np.arange(3), 3).tolist() == [0, 1, 2]
    waves = [(0, 2), (2, 4), (4, 6), (6, 7)]
    assert parallel.my_waves(waves, 0, 2) == [(0, 2), (4, 6)]
    assert parallel.my_waves(waves, 1, 2) == [(2, 4), (6, 7)]
    assert parallel.my_waves(waves, 0, 1) == waves


def test_collectives_in_reads_hlo_op_names():
    assert parallel.collectives_in("%x = f32[4] add(%a, %b)") == []
    assert parallel.collectives_in("%y = f32[8] all-gather(%x), dimensions={0}") == ["all-gather"]
    assert parallel.collectives_in("%s = all-reduce-start(%x)") == ["all-reduce"]


def test_bad_distributed_flags_are_one_line_errors():
    with pytest.raises(Exception, match="give all three"):
        parallel.initialize_distributed("127.0.0.1:1234", None, 0)
    with pytest.raises(Exception, match=r"--process-id=2 must be in \[0, --num-processes=2\)"):
        parallel.initialize_distributed("127.0.0.1:1234", 2, 2)
    assert parallel.initialize_distributed() is False


def test_too_many_devices_is_refused():
    with pytest.raises(Exception, match="--devices=64 but this process has only"):
        parallel.local_devices(64)


# ----------------------------------------------------------------------------- several devices

_FOUR_DEVICES = textwrap.dedent("""
    import dataclasses, json, sys
    import jax, numpy as np
    from jmem.engine import parallel
    from jmem.engine import trainer
    from jmem.study import training, waves
    from jmem.config import apply_overrides, load_experiment
    from jmem.data.loaders import load_dataset
    from jmem.engine.hparams import ModelConfig, TrainConfig

    out = {"devices": len(jax.local_devices())}
    # Positive control: a program that does reduce over the model axis is caught.
    mesh = parallel.model_mesh(jax.local_devices())
    psum = jax.jit(parallel.shard_over_models(lambda x: jax.lax.psum(x, "models"), mesh, 0, 1))
    out["control"] = parallel.collectives_in(psum.lower(np.ones(8, np.float32)).compile().as_text())
    ds = load_dataset("digits")
    ds = dataclasses.replace(ds, x_train=ds.x_train[:400], y_train=ds.y_train[:400])
    keep = np.random.RandomState(1).rand(8, ds.num_train) < 0.7
    cfg = TrainConfig(epochs=2, batch_size=32)
    for name, model in (("mlp", ModelConfig(kind="mlp", width=16)),
                        ("cnn", ModelConfig(kind="cnn", width=4, depth=2, norm="batchnorm"))):
        wave = trainer.prepare_wave(keep, ds, model, cfg, 0, devices=parallel.local_devices(4))
        out[name + "_collectives"] = parallel.collectives_in(trainer.segment_hlo(wave))
        for w, strategy in ((8, "auto"), (5, "auto"), (3, "sequential"))[:3 if name == "cnn" else 2]:
            # 8: 2 models per device; 5: padded to 8 with 3 dummies; sequential: round-robin
            c = dataclasses.replace(cfg, strategy=strategy)
            a = trainer.train_models(keep[:w], ds, model, c, seed=0, devices=parallel.local_devices(4))
            b = trainer.train_models(keep[:w], ds, model, c, seed=0, devices=parallel.local_devices(1))
            assert jax.tree_util.tree_leaves(a.params)[0].shape[0] == w  # dummies dropped
            diffs = [float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in
                     zip(jax.tree_util.tree_leaves((a.params, a.model_state, a.loss_history)),
                         jax.tree_util.tree_leaves((b.params, b.model_state, b.loss_history)))]
            out[f"{name}_{w}_{strategy}_max_diff"] = max(diffs)

    config = apply_overrides(load_experiment("experiments/digits.py:small"),
                             ["train.num_models=6", "train.epochs=2", "train.wave_size=3"])
    for n in (4, 1):
        training.run_training(config, f"{sys.argv[1]}/devices{n}", ds, progress=False,
                              log=lambda *_: None, execution=waves.Execution(devices=n))
    print("RESULT " + json.dumps(out))
""")


def test_four_host_devices_match_one(tmp_path):
    """A wave sharded over 4 CPU devices: no collectives, and the same models as on one device.

    Not bitwise: XLA:CPU rounds a vmapped matmul differently for different batch sizes (2
    models per device vs 8 on one), so parameters differ by float32 rounding (~1e-7), and the
    run directories' margins by < 1e-4; inputs (masks, labels, config) are identical.
    """
    run = subprocess.run([sys.executable, "-c", _FOUR_DEVICES, str(tmp_path)], cwd=REPO,
                         env=child_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.split("RESULT ", 1)[1])
    assert out["devices"] == 4
    assert out["control"] == ["all-reduce"]
    assert out["mlp_collectives"] == [] and out["cnn_collectives"] == []
    for key, diff in out.items():
        if key.endswith("max_diff"):
            assert diff < 1e-5, (key, diff)
    # One model per call runs the same program on any device: bitwise.
    assert out["cnn_3_sequential_max_diff"] == 0
    four, one = tmp_path / "devices4", tmp_path / "devices1"
    files_four, files_one = public_files(four), public_files(one)
    assert sorted(files_four) == sorted(files_one)
    for name in files_four:
        if name.startswith("margins_") or name == "loss_history.npy":  # float32 rounding, as above
            np.testing.assert_allclose(np.load(four / name), np.load(one / name), atol=1e-4, err_msg=name)
        elif name == "manifest.json":  # holds the checksums of those margins: compare the rest
            manifest_four, manifest_one = json.loads(files_four[name]), json.loads(files_one[name])
            for section in ("dataset", "inputs"):
                assert manifest_four[section] == manifest_one[section], section
            assert sorted(manifest_four["outputs"]) == sorted(manifest_one["outputs"])
        elif name != "models.csv":  # final_loss printed to 6 digits may differ in the last one
            assert files_four[name] == files_one[name], name


# ----------------------------------------------------------------------------- several processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_write_the_single_process_run_directory(tmp_path):
    """Two `jmem train` processes (one CPU device each) joined by jax.distributed train the
    waves round-robin into one shared run directory, bitwise equal to a single process's
    (this test process, one CPU device)."""
    env = child_env(JMEM_CPU_DEVICES="1")
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "jmem", "train", *SMALL,
                               "--workdir", str(tmp_path / "multi"),
                               "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                               "--process-id", str(i)],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    try:
        main(["train", *SMALL, "--workdir", str(tmp_path / "single")])
        outs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    # waves (0,2),(4,6) to process 0, (2,4) to process 1; process 0 speaks for the run
    assert "estimation: 6 models, 4 trained now at" in outs[0][0]
    assert "process 1: trained 2 models in" in outs[1][0]
    multi, single = public_files(tmp_path / "multi"), public_files(tmp_path / "single")
    assert sorted(multi) == sorted(single)
    assert [name for name in multi if multi[name] != single[name]] == []


# ----------------------------------------------------------------------------- jmem run, two processes

# A tiny digits study (70: a balanced model count at both rates) with leave-one-out (2 x 12
# models: a wave for each process); train.wave_size fixed so that one process and two cut the
# same waves (the automatic size is capped per process).
STUDY = ["experiments/digits.py", "--set", "train.num_models=70", "--set", "train.epochs=2",
         "--set", "train.wave_size=12", "--set", "retrain.seeds=2", "--set", "retrain.curve=",
         "--set", "retrain.resamples=200", "--set", "loo.enabled=true", "--set", "loo.examples=11",
         "--set", "loo.seeds=2", "--no-progress"]


def _jmem_run(workdir: Path, *extra, kill_at: str | None = None, process: tuple | None = None):
    """A `jmem run` of STUDY in a child process on one CPU device; ``process``: (port, id) of
    a two-process job; ``kill_at``: a fault point (jmem.study.faults)."""
    from jmem.study.faults import KILL_ENV

    flags = [] if process is None else ["--coordinator", f"127.0.0.1:{process[0]}",
                                        "--num-processes", "2", "--process-id", str(process[1])]
    env = child_env(JMEM_CPU_DEVICES="1", **({KILL_ENV: kill_at} if kill_at else {}))
    return subprocess.Popen([sys.executable, "-m", "jmem", "run", *STUDY, "--workdir", str(workdir),
                             *extra, *flags], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(procs, timeout=400) -> list:
    """[(returncode, stdout, stderr)] of ``procs`` once all have exited (a hang fails the
    test: every process is killed after ``timeout`` seconds)."""
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs)]


def _two_process_run(workdir: Path, *extra, kill_at=(None, None)) -> list:
    port = _free_port()
    return _finish([_jmem_run(workdir, *extra, kill_at=kill_at[i], process=(port, i)) for i in range(2)])


def _study_differences(a: Path, b: Path) -> list:
    """The files of two study directories that differ (report.md names its directory and
    time, and the manifest records report.md's checksum: those two are left out)."""
    files_a, files_b = public_files(a), public_files(b)
    if sorted(files_a) != sorted(files_b):
        return sorted(set(files_a) ^ set(files_b))
    differ = [name for name in files_a if name not in ("report.md", "manifest.json")
              and files_a[name] != files_b[name]]
    manifests = [json.loads(files["manifest.json"]) for files in (files_a, files_b)]
    for manifest in manifests:
        del manifest["stages"]["report"]
    return differ + (["manifest.json"] if manifests[0] != manifests[1] else [])


@pytest.fixture(scope="module")
def one_process_study(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("study") / "one"
    ((code, _, err),) = _finish([_jmem_run(workdir)])
    assert code == 0, err[-3000:]
    return workdir


def test_two_process_jmem_run_completes_every_stage_like_one_process(one_process_study, tmp_path):
    """`jmem run` in two processes: SIGTERM to process 0 after scoring stops both (neither
    waits for the other); run again, both train the removal experiment's and the
    leave-one-out waves, process 0 writes the statistics and the report, both exit 0, and
    every file of the study (scores, thresholds, retrain.json, verdict, loo.json, arrays,
    plots) is the single process's, bitwise."""
    work = tmp_path / "two"
    stopped = _two_process_run(work, kill_at=("stage:1:TERM", None))
    assert [code for code, _, _ in stopped] == [143, 143], [err[-2000:] for _, _, err in stopped]
    assert "another process was stopped" in stopped[1][2]
    assert (work / "scores.csv").exists() and not (work / "retrain").exists()
    done = _two_process_run(work)
    assert [code for code, _, _ in done] == [0, 0], [err[-2000:] for _, _, err in done]
    assert "already scored" in done[0][1] and "next: read " in done[0][1]
    for name in ("retrain/retrain.json", "retrain/verdict.txt", "loo/loo.json", "report.md"):
        assert (work / name).exists(), name
    assert _study_differences(work, one_process_study) == []


def test_two_process_run_killed_in_the_retrain_resumes_to_the_same_files(one_process_study, tmp_path):
    """Process 1 SIGKILLed in the removal experiment's training (its first retrain wave, after
    the epoch-1 checkpoint), process 0 killed too; both restarted: the waves and checkpoints
    left behind are resumed (another process may resume process 1's checkpoint) and the
    study's files are the single process's, bitwise."""
    work = tmp_path / "two"
    port = _free_port()
    # Process 1's estimation: 3 waves x 2 segments (2 epochs); segment 8 ends its first retrain wave.
    procs = [_jmem_run(work, "--checkpoint-every-epochs", "1", process=(port, 0)),
             _jmem_run(work, "--checkpoint-every-epochs", "1", process=(port, 1), kill_at="segment:8")]
    try:
        assert procs[1].wait(timeout=400) == -9, procs[1].stderr.read()[-2000:]
    finally:
        for p in procs:
            p.kill()
        _finish(procs)
    assert (work / "retrain" / "config.json").exists() and not (work / "retrain" / "retrain.json").exists()
    assert list((work / "retrain" / "checkpoints").glob("wave_*/1"))  # process 1's, at epoch 1
    done = _two_process_run(work, "--checkpoint-every-epochs", "1")
    assert [code for code, _, _ in done] == [0, 0], [err[-2000:] for _, _, err in done]
    assert "resumed at epoch 1 of 2" in done[0][1] + done[1][1]
    assert _study_differences(work, one_process_study) == []
