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


# ----------------------------------------------------------------------------- waves by subset size

# Two rates alternating by model (subsets.equal_heldout=false): rows 0, 2, 4, 6 keep 50% of
# the examples, rows 1, 3, 5, 7 keep 95%.
ALTERNATING = ("subsets.rates=0.5,0.95", "train.wave_size=2")


def _steps(keep, config):
    from jmem.engine.batches import steps_per_epoch

    return steps_per_epoch(keep, config.train)


def test_wave_order_sorts_rows_by_steps_per_epoch():
    from jmem.engine.hparams import TrainConfig

    sizes = np.array([50, 95, 50, 95, 49, 96])
    keep = np.arange(100)[None, :] < sizes[:, None]
    compact = TrainConfig(batch_size=10, data_order="compact")
    assert waves.wave_order(keep, compact).tolist() == [0, 2, 4, 1, 3, 5]  # 5 steps, then 10
    # Equal steps keep the row order: the coupled order runs N / B steps for every model.
    assert waves.wave_order(keep, TrainConfig(batch_size=10, data_order="coupled")).tolist() == list(range(6))
    assert waves.wave_order(keep[[0, 2, 1, 3]], compact).tolist() == [0, 1, 2, 3]
    assert waves.wave_order(keep, compact).dtype == np.int64


def test_waves_grouped_by_subset_size_change_no_result(tmp_path, digits, monkeypatch):
    """Each wave of an alternating two-rate design holds models of one step count, and every
    model ends as it ends in the row-order waves that mix the rates (float rounding aside);
    the arrays are in row order (model r in row r) either way."""
    config = small_config(*ALTERNATING)
    trained = []
    real_train_wave = waves.train_wave

    def recording(job, start, stop, **kwargs):
        trained.append(job.order[start:stop])
        return real_train_wave(job, start, stop, **kwargs)

    monkeypatch.setattr(waves, "train_wave", recording)
    training.run_training(config, tmp_path / "grouped", digits, progress=False, log=lambda *_: None)
    keep = np.load(tmp_path / "grouped" / rundir.KEEP)
    steps = _steps(keep, config)
    assert len(set(steps.tolist())) == 2
    assert [sorted(rows.tolist()) for rows in trained] == [[0, 2], [4, 6], [1, 3], [5, 7]]
    assert all(len(set(steps[rows])) == 1 for rows in trained)

    monkeypatch.setattr(waves, "wave_order", lambda keep, train: np.arange(keep.shape[0]))
    training.run_training(config, tmp_path / "rows", digits, progress=False, log=lambda *_: None)
    for name in ARRAYS + (rundir.MODEL_RATES,):
        grouped, rows = np.load(tmp_path / "grouped" / name), np.load(tmp_path / "rows" / name)
        np.testing.assert_allclose(grouped, rows, rtol=1e-5, atol=1e-5, err_msg=name)
    sizes = rundir.read_csv_columns(tmp_path / "grouped" / rundir.MODEL_METRICS)["subset_size"]
    assert sizes.tolist() == keep.sum(axis=1).tolist()


def test_grouped_waves_resume_bitwise_and_replace_waves_of_another_order(tmp_path, digits, monkeypatch):
    """Killed after two waves, a run resumes the same grouped waves and ends bitwise as an
    uninterrupted run; a wave file of another order (a run started by a jmem that cut waves
    in row order) is deleted with a warning and its models are trained again."""
    config = small_config(*ALTERNATING)
    quiet = dict(progress=False, log=lambda *_: None)
    training.run_training(config, tmp_path / "whole", digits, **quiet)
    real_train_wave = waves.train_wave

    def die_after(n):
        calls = []

        def train_wave(job, start, stop, **kwargs):
            if len(calls) == n:
                raise KeyboardInterrupt
            calls.append((start, stop))
            return real_train_wave(job, start, stop, **kwargs)
        return calls, train_wave

    for name, order in (("resumed", None), ("other_order", lambda keep, train: np.arange(keep.shape[0]))):
        with monkeypatch.context() as patch:
            if order is not None:
                patch.setattr(waves, "wave_order", order)
            patch.setattr(waves, "train_wave", die_after(2)[1])
            with pytest.raises(KeyboardInterrupt):
                training.run_training(config, tmp_path / name, digits, **quiet)
        calls, train_wave = die_after(99)
        warnings = []
        monkeypatch.setattr(waves, "train_wave", train_wave)
        monkeypatch.setattr(training, "warn", warnings.append)
        training.run_training(config, tmp_path / name, digits, **quiet)
        if order is None:
            assert calls == [(4, 6), (6, 8)] and warnings == []
        else:  # its waves (0,2) and (2,4) held rows 0-1 and 2-3, not 0,2 and 4,6: trained again
            assert calls == [(0, 2), (2, 4), (4, 6), (6, 8)]
            assert len(warnings) == 2 and all("holds models" in w for w in warnings), warnings
        for array in ARRAYS:
            np.testing.assert_array_equal(np.load(tmp_path / name / array),
                                          np.load(tmp_path / "whole" / array), err_msg=f"{name} {array}")


def test_row_writer_puts_rows_where_they_belong(tmp_path):
    """Assembly of grouped waves writes rows out of order: the file is still np.save's."""
    a = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    np.save(tmp_path / "ref.npy", a)
    writer = rundir.NpyRowWriter(tmp_path / "rows.npy", a.shape, np.float32)
    for rows in ([0, 2], [4, 1], [3, 5]):
        writer.write_rows(a[rows], np.array(rows))
    with pytest.raises(Exception, match="written twice"):
        writer.write_rows(a[:1], np.array([2]))
    writer.commit()
    assert (tmp_path / "rows.npy").read_bytes() == (tmp_path / "ref.npy").read_bytes()
