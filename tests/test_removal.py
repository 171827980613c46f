"""Removal-set builders of the removal experiment (pure numpy) and the retrain config section."""

import numpy as np
import pytest

from jmem.config import Config, apply_overrides, first_difference, to_dict
from jmem.data import removal
from jmem.errors import JmemError

LABELS = np.array([0] * 10 + [1] * 6 + [2] * 4)


def test_matched_random_has_exactly_the_class_counts_and_is_reproducible():
    counts = np.array([3, 0, 2])
    a = removal.matched_random(LABELS, counts, np.random.default_rng(1))
    assert removal.class_counts(a, LABELS, 3).tolist() == [3, 0, 2]
    b = removal.matched_random(LABELS, counts, np.random.default_rng(1))
    assert np.array_equal(a, b)
    draws = {removal.matched_random(LABELS, counts, np.random.default_rng(s)).tobytes()
             for s in range(20)}
    assert len(draws) > 10  # fresh draws differ
    with pytest.raises(JmemError, match="class 2 has 4 examples; cannot remove 5"):
        removal.matched_random(LABELS, np.array([0, 0, 5]), np.random.default_rng(0))


def test_uniform_lowest_and_at_least():
    u = removal.uniform_random(20, 7, np.random.default_rng(0))
    assert u.sum() == 7
    scores = np.array([0.5, np.nan, -0.1, 0.2, -0.1, 0.9])
    assert np.flatnonzero(removal.lowest(scores, 3)).tolist() == [2, 3, 4]  # ties: lower index
    assert not removal.lowest(scores, 5)[1]                                  # NaN never
    with pytest.raises(JmemError, match="only 5 have a defined score"):
        removal.lowest(scores, 6)
    assert np.flatnonzero(removal.at_least(scores, 0.5)).tolist() == [0, 5]


def test_check_removal_refuses_a_whole_class_or_everything():
    mask = np.zeros(20, bool)
    mask[16:] = True
    with pytest.raises(JmemError, match=r"^X removes all 4 training examples of class 2;"):
        removal.check_removal(mask, LABELS, 3, "X")
    with pytest.raises(JmemError, match="removes all 20 training examples; nothing"):
        removal.check_removal(np.ones(20, bool), LABELS, 3, "X")
    mask[16] = False
    removal.check_removal(mask, LABELS, 3, "X")


def test_load_removal_indices_masks_and_errors(tmp_path):
    np.save(tmp_path / "idx.npy", np.array([1, 3]))
    assert np.flatnonzero(removal.load_removal(str(tmp_path / "idx.npy"), 5)).tolist() == [1, 3]
    np.save(tmp_path / "mask.npy", np.array([True, False, False, False, True]))
    assert np.flatnonzero(removal.load_removal(str(tmp_path / "mask.npy"), 5)).tolist() == [0, 4]
    np.save(tmp_path / "bad.npy", np.array([0, 5]))
    with pytest.raises(JmemError, match=r"retrain.remove=.*bad.npy': index 5 is outside \[0, 5\)"):
        removal.load_removal(str(tmp_path / "bad.npy"), 5)
    with pytest.raises(JmemError, match="need bool\\[6\\]"):
        removal.load_removal(str(tmp_path / "mask.npy"), 6)
    with pytest.raises(JmemError, match="no such file"):
        removal.load_removal(str(tmp_path / "none.npy"), 5)
    with pytest.raises(JmemError, match="must be a .npy file"):
        removal.load_removal(str(tmp_path / "x.txt"), 5)


def test_retrain_config_overrides_and_training_ignores_it():
    c = apply_overrides(Config(), ["retrain.seeds=32", "retrain.sweep=0.1,0.3",
                                   "retrain.methods=fixed", "retrain.lowest=true"])
    assert (c.retrain.seeds, c.retrain.sweep, c.retrain.method_list, c.retrain.lowest) == \
        (32, (0.1, 0.3), ("fixed",), True)
    assert first_difference(to_dict(Config()), to_dict(c)) is None  # jmem train resumes
    assert first_difference(to_dict(Config()), to_dict(c), ignore=(), ignore_sections=()) \
        == "retrain.lowest: False vs True"
    with pytest.raises(JmemError, match="retrain.seeds=1 must be an integer >= 2"):
        apply_overrides(Config(), ["retrain.seeds=1"])
    with pytest.raises(JmemError, match="unknown config field 'retrain.seed'"):
        apply_overrides(Config(), ["retrain.seed=3"])
