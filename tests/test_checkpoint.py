"""Segments and checkpoints of a wave: exact round trips, damaged steps, types kept."""

import dataclasses
from pathlib import Path

import jax
import numpy as np
import pytest

from jmem.engine import checkpoint
from jmem.engine import trainer
from jmem.data.loaders import load_dataset
from jmem.engine.hparams import ModelConfig, TrainConfig

MLP = ModelConfig(kind="mlp", width=16)
BN_CNN = ModelConfig(kind="cnn", width=4, depth=1, norm="batchnorm")
CFG = TrainConfig(epochs=4, batch_size=64)


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    return dataclasses.replace(ds, x_train=ds.x_train[:400], y_train=ds.y_train[:400])


def _keep(num_models, n, seed=0):
    return np.random.RandomState(seed).rand(num_models, n) < 0.7


def _assert_same(a, b):
    leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("model_cfg", [MLP, BN_CNN], ids=["mlp", "bn-cnn"])
def test_segments_and_host_round_trips_are_bitwise_identical(digits, model_cfg):
    """One call over all epochs == four one-epoch segments, each through a host copy."""
    keep = _keep(3, digits.num_train)
    wave = trainer.prepare_wave(keep, digits, model_cfg, CFG, seed=0)
    whole = trainer.finish(wave, trainer.train_epochs(wave, trainer.init_state(wave), 0, CFG.epochs))

    wave = trainer.prepare_wave(keep, digits, model_cfg, CFG, seed=0)
    state = trainer.init_state(wave)
    for epoch in range(CFG.epochs):
        state = trainer.train_epochs(wave, state, epoch, epoch + 1)
        state = trainer.state_from_host(wave, trainer.state_to_host(wave, state))
    pieces = trainer.finish(wave, state)
    _assert_same((whole.params, whole.model_state, whole.loss_history, whole.steps),
                 (pieces.params, pieces.model_state, pieces.loss_history, pieces.steps))
    assert np.all(np.isfinite(pieces.loss_history))


def test_train_models_matches_the_segmented_api(digits):
    keep = _keep(2, digits.num_train)
    result = trainer.train_models(keep, digits, MLP, CFG, seed=0, model_ids=[5, 9])
    wave = trainer.prepare_wave(keep, digits, MLP, CFG, seed=0, model_ids=[5, 9])
    state = trainer.train_epochs(wave, trainer.init_state(wave), 0, 1)
    state = trainer.train_epochs(wave, state, 1, CFG.epochs)
    _assert_same(result.params, trainer.finish(wave, state).params)
    with pytest.raises(Exception, match=r"epochs \[3, 9\)"):
        trainer.train_epochs(wave, state, 3, 9)


# orbax's (one process) and the plain files of a multi-process job: one behaviour
KINDS = pytest.mark.parametrize("kind", [checkpoint.WaveCheckpoints, checkpoint.FileWaveCheckpoints],
                                ids=["orbax", "files"])


def _saved_wave(tmp_path, digits, epochs=(1, 2), kind=checkpoint.WaveCheckpoints):
    """A wave checkpointed after each epoch in ``epochs``; returns (wave, ckpts, states)."""
    keep = _keep(3, digits.num_train)
    wave = trainer.prepare_wave(keep, digits, MLP, CFG, seed=0, model_ids=[4, 5, 6])
    ckpts = kind(tmp_path / "wave")
    state, done, states = trainer.init_state(wave), 0, {}
    for epoch in epochs:
        state = trainer.train_epochs(wave, state, done, epoch)
        done = epoch
        states[epoch] = trainer.state_to_host(wave, state)
        ckpts.save(epoch, wave.model_ids, states[epoch])
    ckpts.wait()
    return wave, ckpts, states


@KINDS
def test_checkpoint_round_trip_keeps_values_and_optax_types(tmp_path, digits, kind):
    wave, ckpts, states = _saved_wave(tmp_path, digits, kind=kind)
    assert ckpts.steps() == [1, 2]
    epoch, restored = ckpts.restore_latest(trainer.abstract_state(wave), wave.model_ids)
    assert epoch == 2
    _assert_same(restored, states[2])
    assert isinstance(restored, trainer.TrainState)
    assert type(restored.opt_state) is type(states[2].opt_state)
    assert "learning_rate" in restored.opt_state.hyperparams  # a named tuple, not a list
    assert restored.history.shape == (3, CFG.epochs) and np.isnan(restored.history[:, 2:]).all()
    # The restored state trains on exactly like the original.
    a = trainer.train_epochs(wave, trainer.state_from_host(wave, restored), 2, CFG.epochs)
    b = trainer.train_epochs(wave, trainer.state_from_host(wave, states[2]), 2, CFG.epochs)
    _assert_same(a, b)
    ckpts.close()


def _damage(step_dir: Path, how: str):
    files = sorted((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    biggest = files[-1]
    if how == "truncate":
        biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])
    else:  # garble every byte of every file, sizes kept
        for path in files:
            path.write_bytes(np.random.RandomState(0).bytes(path.stat().st_size))


# Reading a truncated file makes tensorstore complete a future on orbax's already-closed
# asyncio loop; the error is raised and handled, the callback's complaint is noise.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("how", ["truncate", "garble"])
@KINDS
def test_damaged_latest_checkpoint_falls_back_to_the_previous(tmp_path, digits, how, kind):
    wave, ckpts, states = _saved_wave(tmp_path, digits, kind=kind)
    ckpts.close()
    _damage(tmp_path / "wave" / "2", how)
    warnings = []
    ckpts = kind(tmp_path / "wave")
    epoch, restored = ckpts.restore_latest(trainer.abstract_state(wave), wave.model_ids, warn=warnings.append)
    assert epoch == 1
    _assert_same(restored, states[1])
    assert len(warnings) == 1 and "wave/2" in warnings[0] and "falling back" in warnings[0]
    assert ckpts.steps() == [1]  # the damaged step is gone, so it cannot shadow a new save
    ckpts.close()


@KINDS
def test_every_checkpoint_damaged_means_start_over(tmp_path, digits, kind):
    wave, ckpts, _ = _saved_wave(tmp_path, digits, epochs=(1,), kind=kind)
    ckpts.close()
    _damage(tmp_path / "wave" / "1", "garble")
    ckpts = kind(tmp_path / "wave")
    warnings = []
    assert ckpts.restore_latest(trainer.abstract_state(wave), wave.model_ids, warn=warnings.append) is None
    assert len(warnings) == 1
    ckpts.close()


@KINDS
def test_checkpoint_of_other_models_is_refused(tmp_path, digits, kind):
    wave, ckpts, _ = _saved_wave(tmp_path, digits, epochs=(1,), kind=kind)
    with pytest.raises(checkpoint.CheckpointError, match="holds models"):
        ckpts.restore(1, trainer.abstract_state(wave), np.array([7, 8, 9]))
    ckpts.close()


def test_checksum_sees_values_shapes_and_dtypes():
    a = np.arange(6, dtype=np.float32)
    base = checkpoint.checksum([a])
    assert checkpoint.checksum([a.copy()]) == base
    assert checkpoint.checksum([a.reshape(2, 3)]) != base
    assert checkpoint.checksum([a.astype(np.int32)]) != base
    b = a.copy()
    b[3] = np.nextafter(b[3], np.float32(10))
    assert checkpoint.checksum([b]) != base


def test_file_checkpoints_keep_the_newest_and_replace_a_step(tmp_path, digits):
    """Plain-file checkpoints (multi-process jobs) keep the two newest steps, and a second
    save of one epoch (after a resume) replaces it."""
    wave, ckpts, states = _saved_wave(tmp_path, digits, epochs=(1, 2, 3),
                                      kind=checkpoint.FileWaveCheckpoints)
    assert ckpts.steps() == [2, 3]
    ckpts.save(3, wave.model_ids, states[2])
    assert ckpts.steps() == [2, 3] and sorted(p.name for p in (tmp_path / "wave").iterdir()) == ["2", "3"]
    _assert_same(ckpts.restore(3, trainer.abstract_state(wave), wave.model_ids), states[2])
