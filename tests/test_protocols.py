"""jmem.scores.protocols: the four switches and the selection rule of every cell."""

import numpy as np
import pytest

from jmem.errors import JmemError
from jmem.scores import estimators, thresholds
from jmem.scores import protocols


@pytest.fixture(scope="module")
def scored():
    """200 models, 300 examples: 0-29 memorized (right only when trained on), 30-59 weakly
    (right in 70% of in-models, 50% of out-models), the rest always right."""
    gen = np.random.default_rng(0)
    keep = gen.random((200, 300)) < 0.7
    correct = np.ones((200, 300), bool)
    correct[:, :30] = keep[:, :30]
    weak = np.where(keep[:, 30:60], gen.random((200, 30)) < 0.7, gen.random((200, 30)) < 0.5)
    correct[:, 30:60] = weak
    margins = np.where(correct, 1.0, -1.0).astype(np.float32)
    s = estimators.compute_scores(keep, margins)
    placebo = thresholds.placebo_scores(keep, margins, seed=0).scores
    return s, placebo


def test_sixteen_cells_with_fz_first_and_corrected_last():
    cells = protocols.all_protocols()
    assert len(cells) == 16 and len(set(cells)) == 16
    assert cells[0] == protocols.FZ and cells[0].name == "fz"
    assert cells[-1] == protocols.CORRECTED and cells[-1].name == "corrected"
    assert protocols.Protocol(True, False, False, True).name == "rate+leakage"
    assert len({c.selection_key for c in cells}) == 8


def test_each_rule_is_the_documented_one(scored):
    s, placebo = scored
    fz = protocols.select(protocols.FZ, s, placebo)
    np.testing.assert_array_equal(fz.selected, s.mem >= 0.25)
    assert fz.method == "fixed"
    fdr = protocols.select(protocols.Protocol(False, True, True, False), s, placebo)
    assert fdr.method == "fdr"
    np.testing.assert_array_equal(fdr.selected, thresholds.fdr_threshold(s.p_value, s.mem, 0.1, 0.1).selected)
    raw = protocols.select(protocols.Protocol(False, True, False, False), s, placebo)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(raw.selected, (s.p_value <= 0.05) & (s.mem >= 0.1))
    null = protocols.select(protocols.Protocol(False, False, True, False), s, placebo)
    assert null.method == "null"
    # leakage and rate do not change the rule applied to given scores
    np.testing.assert_array_equal(protocols.select(protocols.Protocol(True, False, False, True), s, placebo).selected, fz.selected)


def test_rules_find_the_memorized_block(scored):
    s, placebo = scored
    for cell in protocols.all_protocols():
        sel = protocols.select(cell, s, placebo).selected
        assert sel[:30].all(), cell.name            # strongly memorized: every rule finds them
        assert not sel[60:].any(), cell.name        # never-wrong examples: none selects them
    # the uncorrected per-example p cut selects at least what BH selects
    raw = protocols.select(protocols.Protocol(False, True, False, False), s, placebo).selected
    bh = protocols.select(protocols.Protocol(False, True, True, False), s, placebo).selected
    assert (bh <= raw).all()


def test_bad_alpha():
    with pytest.raises(JmemError, match="raw_alpha"):
        protocols.pvalue_threshold(np.zeros(3), np.zeros(3), alpha=1.5)


def test_cell_selections_use_each_rates_models():
    gen = np.random.default_rng(1)
    keep = gen.random((40, 50)) < 0.7
    margins = np.where(keep, 1.0, -1.0).astype(np.float32)  # everything memorized at both rates
    rates = np.array([0.7, 0.95] * 20)
    sel = protocols.cell_selections(keep, margins, rates, low_rate=0.7, high_rate=0.95, placebo_seed=0)
    assert len(sel) == 8
    assert sel[(False, False, False)].selected.all()
    with pytest.raises(JmemError, match="rate=0.5 matches no model"):
        protocols.cell_selections(keep, margins, rates, low_rate=0.5, high_rate=0.95, placebo_seed=0)


def test_ablation_summary_recovers_the_rate_effect():
    gen = np.random.default_rng(2)
    shared = gen.normal(0, 2, 30)
    diffs = {c: shared + (-1.0 if c.rate else 0.0) + gen.normal(0, 0.3, 30) for c in protocols.all_protocols()}
    out = protocols.ablation_summary(diffs, resamples=1000, rng=np.random.default_rng(3))
    main = {e["factor"]: e for e in out["main_effects"]}
    assert main["rate"]["effect_pp"] == pytest.approx(-1.0, abs=0.15)
    assert main["rate"]["ci_high"] < 0
    assert abs(main["leakage"]["effect_pp"]) < 0.15
    assert len(out["cells"]) == 16 and len(out["interactions"]) == 6
    with pytest.raises(JmemError, match="all 16 cells"):
        protocols.ablation_summary({protocols.FZ: shared}, rng=np.random.default_rng(0))
