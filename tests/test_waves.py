"""The wave runner (``jmem.study.waves``) under ``jmem train``: nothing computed is lost, and wave
size does not change results. (Kills, checkpoints and SIGTERM: tests/test_resume.py.)"""

import numpy as np
import pytest

from jmem.study import rundir, training, waves
from jmem.config import apply_overrides, load_experiment
from jmem.data.loaders import load_dataset

ARRAYS = (rundir.KEEP, rundir.LABELS_TRAIN, rundir.MARGINS_TRAIN, rundir.MARGINS_TEST)


def small_config(*overrides):
    config = load_experiment("experiments/digits.py:small")
    return apply_overrides(config, ["train.num_models=8", "train.epochs=2", *overrides])


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, digits):
    workdir = tmp_path_factory.mktemp("reference")
    training.run_training(small_config("train.wave_size=2"), workdir, digits, progress=False, log=lambda *_: None)
    return workdir


def test_pending_waves():
    done = np.array([1, 1, 0, 0, 0, 1, 0, 0], bool)
    assert waves.pending_waves(done, 2) == [(2, 4), (4, 5), (6, 8)]
    assert waves.pending_waves(np.ones(3, bool), 4) == []
    assert waves.pending_waves(np.zeros(5, bool), 10) == [(0, 5)]


def test_interrupted_run_resumes_without_recomputing(tmp_path, monkeypatch, digits, reference):
    config = small_config("train.wave_size=2")
    calls = []
    real_train_wave = waves.train_wave

    def train_wave_then_die(job, start, stop, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append((start, stop))
        return real_train_wave(job, start, stop, **kwargs)

    monkeypatch.setattr(waves, "train_wave", train_wave_then_die)
    with pytest.raises(KeyboardInterrupt):
        training.run_training(config, tmp_path, digits, progress=False, log=lambda *_: None)
    assert waves.finished_models(tmp_path, 8).tolist() == [True] * 4 + [False] * 4
    assert not (tmp_path / rundir.MARGINS_TRAIN).exists()

    calls.clear()
    monkeypatch.setattr(waves, "train_wave",
                        lambda *a, **k: (calls.append(a[1:]), real_train_wave(*a, **k))[1])
    training.run_training(config, tmp_path, digits, progress=False, log=lambda *_: None)
    assert calls == [(4, 6), (6, 8)]  # only the unfinished waves were trained
    for name in ARRAYS:
        np.testing.assert_array_equal(np.load(tmp_path / name), np.load(reference / name), err_msg=name)


def test_wave_size_does_not_change_results(tmp_path, digits, reference):
    training.run_training(small_config("train.wave_size=8"), tmp_path, digits, progress=False, log=lambda *_: None)
    np.testing.assert_array_equal(np.load(tmp_path / rundir.KEEP), np.load(reference / rundir.KEEP))
    np.testing.assert_allclose(np.load(tmp_path / rundir.MARGINS_TRAIN),
                               np.load(reference / rundir.MARGINS_TRAIN), rtol=1e-4, atol=1e-4)
