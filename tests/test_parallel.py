"""Several devices and several processes: sharded waves, no collectives, one run directory.

Host-platform CPU devices must be requested before JAX starts, so the multi-device checks
run in a child process with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``; the
multi-process check starts two ``jmem train`` processes joined by ``jax.distributed`` on
127.0.0.1 and compares their run directory with a single process's.
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
