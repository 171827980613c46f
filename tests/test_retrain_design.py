"""The removal experiment's design (``jmem.study.retrain.design``) and selection rules
(``jmem.study.retrain.selection``) on small arrays, without training."""

import numpy as np
import pytest

from jmem.config import RetrainConfig
from jmem.data import removal
from jmem.errors import JmemError
from jmem.study.retrain import design, selection

LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])  # N = 12, three classes of 4


def candidate(name, removed, method=None, tau=None):
    return design.Candidate(name, method, tau, np.asarray(removed, bool), {"source": name}, name)


def build(candidates, seeds=3, lowest=False, mem=None, pairs=((), ())):
    mem = np.linspace(0, 1, LABELS.size) if mem is None else mem
    return design.build_design(candidates, LABELS, 3, mem=mem, pair_train=np.array(pairs[0], np.int64),
                               pair_test=np.array(pairs[1], np.int64), num_test=5, seeds=seeds,
                               seed=0, lowest=lowest)


def test_a_method_gets_the_baselines_and_other_sets_the_matched_arm():
    picked = np.isin(np.arange(12), [0, 4, 5])
    d = build([candidate("fixed", picked, method="fixed"), candidate("sweep:0.5", picked, tau=0.5)],
              lowest=True)
    assert [a.name for a in d.arms] == ["full", "fixed:selected", "fixed:matched", "fixed:random",
                                        "fixed:lowest", "sweep:0.5:selected", "sweep:0.5:matched"]
    arms = {a.name: a for a in d.arms}
    assert not arms["full"].removed.any() and arms["full"].count == 0
    assert (arms["fixed:selected"].removed == picked).all()  # the same set at every seed
    for s in range(3):
        counts = removal.class_counts(arms["fixed:matched"].removed[s], LABELS, 3)
        assert counts.tolist() == [1, 2, 0]  # the selected set's class counts, every seed
        assert arms["fixed:random"].removed[s].sum() == 3
    # lowest: the three lowest scores (mem = linspace: the first three examples)
    assert np.flatnonzero(arms["fixed:lowest"].removed[0]).tolist() == [0, 1, 2]
    # matched arms of two groups with one removal set draw from their own streams
    assert not np.array_equal(arms["fixed:matched"].removed, arms["sweep:0.5:matched"].removed)


def test_keep_matrix_rows_and_paired_model_ids():
    d = build([candidate("user", np.isin(np.arange(12), [1, 6]))], seeds=4)
    assert d.keep.shape == (3 * 4, 12)
    assert d.rows("user:matched").tolist() == [8, 9, 10, 11]
    assert (~d.keep[d.rows("user:selected")] == d.arms[1].removed).all()
    ids = d.model_ids
    assert ids.tolist() == (design.MODEL_ID_OFFSET + np.tile(np.arange(4), 3)).tolist()


def test_influenced_test_examples_are_the_removed_examples_partners():
    removed = np.isin(np.arange(12), [2, 7])
    influenced = design.influenced_by(removed, np.array([2, 2, 3, 7]), np.array([0, 4, 1, 4]), 5)
    assert influenced.tolist() == [True, False, False, False, True]
    d = build([candidate("user", removed)], pairs=([2, 2, 3, 7], [0, 4, 1, 4]))
    info = d.groups["user"].info
    assert info["influenced_test_indices"] == [0, 4] and info["influenced_size"] == 2
    assert info["removed"] == 2 and info["class_counts"] == [1, 1, 0] and info["source"] == "user"


def test_empty_sets_are_skipped_and_a_set_emptying_a_class_is_refused():
    d = build([candidate("fdr", np.zeros(12, bool), method="fdr"), candidate("user", np.eye(12, dtype=bool)[0])])
    assert d.skipped == {"fdr": "selects no example"} and list(d.groups) == ["user"]
    with pytest.raises(JmemError, match="nothing to retrain: every removal set is empty"):
        build([candidate("fdr", np.zeros(12, bool), method="fdr")])
    with pytest.raises(JmemError, match="class 1"):
        build([candidate("user", LABELS == 1)])


def test_arm_streams_depend_on_the_arm_and_the_seed_only():
    a = design.arm_generator(0, "fixed:matched", 0).random()
    assert a == design.arm_generator(0, "fixed:matched", 0).random()
    assert a != design.arm_generator(0, "fixed:matched", 1).random()
    assert a != design.arm_generator(0, "fdr:matched", 0).random()
    assert a != design.arm_generator(1, "fixed:matched", 0).random()


def test_cell_group_names():
    assert design.cell_group((False, False, False)) == "cell:fz"
    assert design.cell_group((True, True, True)).startswith(design.ABLATION_PREFIX)


def test_methods_are_checked():
    assert selection.check_methods(RetrainConfig(methods="fixed, fdr"), False) == ("fixed", "fdr")
    for methods, has_canaries, message in [("fixed,magic", True, "unknown method 'magic'"),
                                           ("canary", False, "the run has no canaries"),
                                           ("fixed,fixed", True, "repeats a method"),
                                           ("", True, "nothing to remove")]:
        with pytest.raises(JmemError, match=message):
            selection.check_methods(RetrainConfig(methods=methods), has_canaries)


def test_cross_fitting_halves_alternate_within_each_rate():
    rates = np.array([0.7, 0.95] * 4)
    sel, infl = selection.split_rows(rates, 8, None, cross_fit=True)
    assert sorted(sel.tolist() + infl.tolist()) == list(range(8))
    assert sorted(rates[sel].tolist()) == sorted(rates[infl].tolist()) == [0.7, 0.7, 0.95, 0.95]
    rows = np.array([1, 3, 5, 7])
    assert [r.tolist() for r in selection.split_rows(None, 8, rows, cross_fit=False)] == [[1, 3, 5, 7]] * 2
    with pytest.raises(JmemError, match="at least 4 estimation models"):
        selection.split_rows(None, 3, None, cross_fit=True)
