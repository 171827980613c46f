"""The removal experiment's design (``jmem.study.retrain.design``) and the pools of its
selection (``jmem.study.retrain.selection``) on small arrays, without training."""

import numpy as np
import pytest

from jmem.config import RetrainConfig
from jmem.data import removal
from jmem.errors import JmemError
from jmem.study.retrain import design, selection

LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])  # N = 12, three classes of 4
ALL = np.ones(12, bool)


def candidate(name, removed, kind="sweep", pools=2, method=None):
    removed = np.broadcast_to(np.asarray(removed, bool), (pools, 12)).copy()
    return selection.Candidate(name, kind, removed, 0.7, np.zeros((pools, 5), bool), [{}] * pools, name,
                               method=method)


def build(candidates, seeds=3, lowest=False, eligible=ALL):
    score = np.broadcast_to(np.linspace(0, 1, 12), (candidates[0].removed.shape[0], 12))
    return design.build_design(candidates, LABELS, 3, eligible=eligible, score=score, seeds=seeds,
                               seed=0, lowest=lowest)


def test_every_pool_gets_its_arms_and_a_rule_gets_the_baselines():
    picked = np.isin(np.arange(12), [0, 4, 5])
    d = build([candidate("method:fixed", picked, "method", method="fixed"), candidate("sweep:0.5", picked)],
              lowest=True)
    names = [a.name for a in d.arms]
    assert names[:2] == ["full:p0", "full:p1"]
    for p in (0, 1):
        for kind in ("selected", "matched", "random", "lowest"):
            assert f"method:fixed:{kind}:p{p}" in names
        assert f"sweep:0.5:selected:p{p}" in names and f"sweep:0.5:random:p{p}" not in names
    arms = {a.name: a for a in d.arms}
    assert (arms["method:fixed:selected:p1"].removed == picked).all()  # the same set at every seed
    for s in range(3):
        assert removal.class_counts(arms["method:fixed:matched:p0"].removed[s], LABELS, 3).tolist() == [1, 2, 0]
        assert arms["method:fixed:random:p0"].removed[s].sum() == 3
    assert np.flatnonzero(arms["method:fixed:lowest:p0"].removed[0]).tolist() == [0, 1, 2]
    assert d.groups["sweep:0.5"].info["jaccard_pools"] == 1.0


def test_seeds_are_nested_in_pools_and_paired_across_arms():
    d = build([candidate("sweep:0.5", np.isin(np.arange(12), [0]))], seeds=4)
    ids = d.model_ids
    for arm in d.arms:
        rows = d.rows(arm.name)
        assert list(ids[rows] - design.MODEL_ID_OFFSET) == list(arm.pool * 4 + np.arange(4))
    keep = d.keep
    assert keep.shape == (len(d.arms) * 4, 12)
    np.testing.assert_array_equal(keep[d.rows("sweep:0.5:selected:p1")][:, 0], False)


def test_random_arms_never_draw_an_ineligible_example():
    eligible = ALL.copy()
    eligible[[1, 2, 5, 9]] = False  # canaries
    picked = np.isin(np.arange(12), [0, 4, 8])
    d = build([candidate("method:fixed", picked, "method", method="fixed")], seeds=20, eligible=eligible)
    for arm in d.arms:
        if arm.kind in ("matched", "random"):
            assert not arm.removed[:, ~eligible].any(), arm.name
    with pytest.raises(JmemError, match="canary"):
        build([candidate("user", np.isin(np.arange(12), [1]))], eligible=eligible)


def test_empty_sets_are_skipped_and_a_set_emptying_a_class_is_refused():
    picked = np.zeros((2, 12), bool)
    picked[0, 0] = True  # pool 1 selects nothing
    d = build([candidate("sweep:0.9", picked[0]), selection.Candidate(
        "cell:fz", "cell", picked, 0.7, np.zeros((2, 5), bool), [{}, {}], "cell fz")])
    assert "cell:fz" in d.skipped and "pool 1" in d.skipped["cell:fz"]
    with pytest.raises(JmemError, match="class 0"):
        build([candidate("user", LABELS == 0)])
    with pytest.raises(JmemError, match="nothing to retrain"):
        build([candidate("sweep:1", np.zeros(12, bool))])


def test_arm_streams_depend_on_the_arm_and_the_seed_only():
    a = design.arm_generator(0, "cell:fz:matched:p0", 3).integers(0, 10**9, 4)
    assert (a == design.arm_generator(0, "cell:fz:matched:p0", 3).integers(0, 10**9, 4)).all()
    assert (a != design.arm_generator(0, "cell:fz:matched:p0", 4).integers(0, 10**9, 4)).any()
    assert (a != design.arm_generator(0, "cell:fz:matched:p1", 3).integers(0, 10**9, 4)).any()


def test_methods_are_checked():
    assert selection.check_methods(RetrainConfig(methods="fixed, calibrated"), False) == ("fixed", "calibrated")
    with pytest.raises(JmemError, match="unknown rule 'null'"):
        selection.check_methods(RetrainConfig(methods="null"), False)
    with pytest.raises(JmemError, match="no canaries"):
        selection.check_methods(RetrainConfig(methods="canary"), False)
    with pytest.raises(JmemError, match="nothing to remove"):
        selection.check_methods(RetrainConfig(methods=""), False)


def test_pools_are_the_halves_within_each_rate():
    class Run:
        keep = np.zeros((8, 3), bool)
        model_rates = np.array([0.7, 0.7, 0.95, 0.95, 0.7, 0.7, 0.95, 0.95])

    sel, infl = selection.pool_rows(Run, 2)
    assert len(sel) == 2 and set(sel[0]) | set(sel[1]) == set(range(8)) and not set(sel[0]) & set(sel[1])
    for rows in sel:  # each half holds both rates equally
        assert sorted(Run.model_rates[rows].tolist()) == [0.7, 0.7, 0.95, 0.95]
    np.testing.assert_array_equal(infl[0], sel[1])
    one_sel, one_infl = selection.pool_rows(Run, 1)
    np.testing.assert_array_equal(one_sel[0], np.arange(8))
