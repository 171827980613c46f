"""jmem.scores.protocols: the four switches, the rule of every cell, size matching, canaries
never eligible."""

import numpy as np
import pytest

from jmem.errors import JmemError
from jmem.scores import calibration, estimators, protocols, thresholds


@pytest.fixture(scope="module")
def scored():
    """200 models at one rate, 300 examples: 0-29 memorized (right only when trained on),
    30-59 weakly (right in 70% of in-models, 50% of out-models), the rest always right."""
    gen = np.random.default_rng(0)
    keep = gen.random((200, 300)) < 0.7
    correct = np.ones((200, 300), bool)
    correct[:, :30] = keep[:, :30]
    weak = np.where(keep[:, 30:60], gen.random((200, 30)) < 0.7, gen.random((200, 30)) < 0.5)
    correct[:, 30:60] = weak
    return estimators.compute_scores(keep, np.where(correct, 1.0, -1.0).astype(np.float32))


def test_sixteen_cells_with_fz_first_and_corrected_last():
    cells = protocols.all_protocols()
    assert len(cells) == 16 and len(set(cells)) == 16
    assert cells[0] == protocols.FZ and cells[0].name == "fz"
    assert cells[-1] == protocols.CORRECTED and cells[-1].name == "corrected"
    assert protocols.Protocol(True, False, False, True).name == "rate+leakage"
    assert len({c.selection_key for c in cells}) == 8


def test_each_cell_applies_the_critiques_definition_and_threshold(scored):
    s = scored
    opt = protocols.SelectionOptions()
    assert protocols.FZ.rule == "fixed" and protocols.CORRECTED.rule == "calibrated_fractional"
    np.testing.assert_array_equal(protocols.apply_rule("fixed", s, opt).selected, s.mem >= 0.25)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(protocols.apply_rule("fractional", s, opt).selected, s.fractional >= 0.25)
    # The definition on is the fractional difference, the threshold on the calibrated cut on it.
    cal = protocols.apply_rule("calibrated_fractional", s, opt)
    direct = calibration.calibrated_threshold(s.fractional, protocols.counts_of(s), "fractional", 0.05)
    np.testing.assert_array_equal(cal.selected, direct.selected)
    assert cal.score == "fractional" and cal.method == "calibrated"
    fdr = protocols.apply_rule("fdr", s, opt)
    np.testing.assert_array_equal(fdr.selected, thresholds.fdr_threshold(s.p_value, s.mem, 0.1, 0.1).selected)
    with pytest.raises(JmemError, match="selection rule"):
        protocols.apply_rule("null", s, opt)


def test_rules_find_the_memorized_block(scored):
    for rule in protocols.ALL_RULES:
        sel = protocols.apply_rule(rule, scored).selected
        assert sel[:30].all(), rule            # strongly memorized: every rule finds them
        assert not sel[60:].any(), rule        # never-wrong examples: none selects them


def test_ineligible_examples_are_never_selected_and_leave_the_tests(scored):
    eligible = np.ones(300, bool)
    eligible[:10] = False  # e.g. canaries
    for rule in protocols.ALL_RULES:
        sel = protocols.apply_rule(rule, scored, eligible=eligible).selected
        assert not sel[:10].any() and sel[10:30].all(), rule
    fdr = protocols.apply_rule("fdr", scored, eligible=eligible)
    assert fdr.details["n_tests"] == int((~np.isnan(scored.p_value[10:])).sum())


def test_top_k_is_size_matched_and_skips_ineligible():
    score = np.array([0.9, 0.8, np.nan, 0.8, 0.1, 0.5])
    np.testing.assert_array_equal(protocols.top_k(score, 3), [True, True, False, True, False, False])
    eligible = np.array([False, True, True, True, True, True])
    np.testing.assert_array_equal(protocols.top_k(score, 3, eligible), [False, True, False, True, False, True])
    assert protocols.top_k(score, 10).sum() == 5  # only finite scores


def test_cell_and_size_matched_selections_read_each_rate():
    gen = np.random.default_rng(1)
    low = estimators.compute_scores(gen.random((40, 50)) < 0.7, gen.normal(1, 1, (40, 50)))
    high = estimators.compute_scores(gen.random((60, 50)) < 0.95, gen.normal(1, 1, (60, 50)))
    by_rate = {0.7: low, 0.95: high}
    cells = protocols.cell_selections(by_rate, 0.7, 0.95, protocols.SelectionOptions())
    assert len(cells) == 8
    np.testing.assert_array_equal(cells[(False, False, False)].selected, low.mem >= 0.25)
    np.testing.assert_array_equal(cells[(True, False, False)].selected, high.mem >= 0.25)
    matched = protocols.size_matched_selections(by_rate, 0.7, 0.95, 7)
    assert len(matched) == 4 and all(m.sum() == 7 for m in matched.values())
    np.testing.assert_array_equal(matched[(True, True)], protocols.top_k(high.fractional, 7))


def test_with_every_model_fitting_its_training_data_the_definitions_rank_alike():
    """acc_in = 1 everywhere: fractional = (1 - a) / (1 + a) is monotone in mem = 1 - a, so
    size-matched top-k sets coincide (the definition factor is not estimable there)."""
    acc_out = np.linspace(0, 1, 50)
    frac = estimators.fractional_score(np.ones(50), acc_out)
    mem = estimators.memorization(np.ones(50), acc_out)
    np.testing.assert_array_equal(protocols.top_k(frac, 10), protocols.top_k(mem, 10))


def test_rate_rows():
    rates = np.array([0.7, 0.95, 0.7])
    np.testing.assert_array_equal(protocols.rate_rows(rates, 0.7), [True, False, True])
    with pytest.raises(JmemError, match="rate=0.5 matches no model"):
        protocols.rate_rows(rates, 0.5)
