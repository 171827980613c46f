"""Tests of jmem.scores.thresholds: selections, BH, the placebo null, ROC/AUROC, canary metrics."""

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats

from jmem.scores import estimators, thresholds
from jmem.errors import JmemError


def strict_json(d):
    return json.loads(json.dumps(d, allow_nan=False))


# ---------------------------------------------------------------------------------------------
# Simple selections
# ---------------------------------------------------------------------------------------------

def test_fixed_threshold_and_nan():
    r = thresholds.fixed_threshold(np.array([0.3, 0.25, 0.1, np.nan]), 0.25)
    np.testing.assert_array_equal(r.selected, [True, True, False, False])
    assert r.to_dict() == {"method": "fixed", "score": "mem", "threshold": 0.25,
                           "n_selected": 2, "n_nan": 1}


# ---------------------------------------------------------------------------------------------
# Benjamini-Hochberg
# ---------------------------------------------------------------------------------------------

def test_bh_adjust_hand_and_scipy():
    p = np.array([0.01, 0.04, 0.03, 0.20, np.nan])
    # m = 4 finite: sorted 0.01, 0.03, 0.04, 0.20 -> 0.04, 0.06, 0.0533, 0.20 -> monotone.
    np.testing.assert_allclose(thresholds.bh_adjust(p)[:4], [0.04, 0.16 / 3, 0.16 / 3, 0.2])
    assert np.isnan(thresholds.bh_adjust(p)[4])
    rng = np.random.default_rng(0)
    p = rng.uniform(size=500) ** 3
    np.testing.assert_allclose(thresholds.bh_adjust(p), stats.false_discovery_control(p), rtol=1e-12)


def test_bh_controls_fdr_on_simulated_counts():
    """Simulated examples with known acc_in/acc_out, Fisher p-values, BH at q: mean FDP <= q."""
    rng = np.random.default_rng(2)
    q, reps, m = 0.1, 60, 2000
    n_in, n_out = 70, 30
    fdps, powers = [], []
    for _ in range(reps):
        p_out = rng.uniform(0.2, 0.95, m)
        memorized = rng.random(m) < 0.1
        p_in = np.where(memorized, np.minimum(p_out + 0.4, 1.0), p_out)
        k_in, k_out = rng.binomial(n_in, p_in), rng.binomial(n_out, p_out)
        pv = estimators.fisher_one_sided(k_in, np.full(m, n_in), k_out, np.full(m, n_out))
        r = thresholds.fdr_threshold(pv, k_in / n_in - k_out / n_out, q=q, min_effect=0.0)
        n_sel = r.n_selected
        fdps.append((r.selected & ~memorized).sum() / max(n_sel, 1))
        powers.append((r.selected & memorized).sum() / memorized.sum())
    assert np.mean(fdps) <= q, np.mean(fdps)
    assert np.mean(powers) > 0.5  # and it does discover things


def test_fdr_threshold_min_effect_and_details():
    p = np.array([1e-6, 1e-5, 0.5, np.nan])
    eff = np.array([0.5, 0.05, 0.0, 0.9])
    r = thresholds.fdr_threshold(p, eff, q=0.1, min_effect=0.1)
    np.testing.assert_array_equal(r.selected, [True, False, False, False])
    d = strict_json(r.to_dict())
    assert d["n_bh_rejected"] == 2 and d["n_below_min_effect"] == 1 and d["n_tests"] == 3
    assert d["expected_false_discoveries_bound"] == pytest.approx(0.2)
    assert d["threshold"] == pytest.approx(1e-5)
    with pytest.raises(JmemError, match="fdr_q"):
        thresholds.fdr_threshold(p, eff, q=1.5)


# ---------------------------------------------------------------------------------------------
# Placebo null
# ---------------------------------------------------------------------------------------------

def null_run(seed, R=200, N=3000, rate=0.7):
    """No memorization: each example has one accuracy for in and out models."""
    rng = np.random.default_rng(seed)
    keep = rng.random((R, N)) < rate
    acc = rng.uniform(0.3, 0.99, N)
    margins = np.where(rng.random((R, N)) < acc, 1.0, -1.0).astype(np.float32)
    return keep, margins


def test_placebo_deterministic_and_shapes():
    keep, margins = null_run(0, R=40, N=2100)
    keep[:, 0] = False      # no model in -> NaN
    keep[:, 1] = True       # no model out -> NaN
    keep[:, 2] = False
    keep[0, 2] = True       # one model in: cannot split -> NaN
    a = thresholds.placebo_scores(keep, margins, seed=3)
    b = thresholds.placebo_scores(keep, margins, seed=3)
    c = thresholds.placebo_scores(keep, margins, seed=4)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert not np.array_equal(np.nan_to_num(a.scores), np.nan_to_num(c.scores))
    assert np.isnan(a.scores[:3]).all() and not np.isnan(a.scores[3:]).any()
    n_in = keep.sum(0)
    np.testing.assert_array_equal(a.n_pseudo_in[3:], np.clip(np.rint(n_in[3:] ** 2 / 40), 1,
                                                             n_in[3:] - 1))
    np.testing.assert_array_equal(a.n_pseudo_in[3:] + a.n_pseudo_out[3:], n_in[3:])


def test_placebo_uses_only_in_models():
    """Out models' margins must not affect the placebo score at all."""
    keep, margins = null_run(1, R=30, N=50)
    other = np.where(keep, margins, -margins)
    a = thresholds.placebo_scores(keep, margins, seed=0)
    b = thresholds.placebo_scores(keep, other, seed=0)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_null_threshold_calibrated_on_null_data():
    """On data with no memorization, the placebo threshold's real FPR is near the target."""
    keep, margins = null_run(5)
    s = estimators.compute_scores(keep, margins)
    fprs, raw_fprs = [], []
    for seed in range(4):
        pl = thresholds.placebo_scores(keep, margins, seed=seed)
        fprs.append(thresholds.null_threshold(s.mem, pl.scores, fpr=0.05).selected.mean())
        raw = thresholds.placebo_scores(keep, margins, seed=seed, match_variance=False)
        raw_fprs.append(thresholds.null_threshold(s.mem, raw.scores, fpr=0.05).selected.mean())
    assert abs(np.mean(fprs) - 0.05) < 0.015, fprs
    # Without variance matching the null is wider: conservative, clearly below target.
    assert np.mean(raw_fprs) < 0.035, raw_fprs


def test_null_threshold_details_json():
    rng = np.random.default_rng(0)
    null = rng.normal(0, 0.05, 1000)
    s = np.r_[rng.normal(0, 0.05, 900), np.full(100, 0.6), [np.nan]]
    r = thresholds.null_threshold(s, null, fpr=0.05)
    d = strict_json(r.to_dict())
    assert d["null_exceedance"] <= 0.05
    assert 100 <= d["n_selected"] <= 185  # 100 true + ~45 null exceedances
    assert [c["fpr"] for c in d["calibration"]] == list(thresholds.NULL_CALIBRATION_FPRS)
    sels = [c["n_selected"] for c in d["calibration"]]
    assert sels == sorted(sels)  # looser FPR never selects fewer
    assert d["n_nan"] == 1


# ---------------------------------------------------------------------------------------------
# ROC, AUROC, canaries
# ---------------------------------------------------------------------------------------------

def brute_auroc(s, pos):
    sp, sn = s[pos], s[~pos]
    return np.mean((sp[:, None] > sn[None, :]) + 0.5 * (sp[:, None] == sn[None, :]))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=2, max_size=40))
def test_auroc_matches_pair_counting_with_ties(data):
    s = np.array([d[0] for d in data], float)
    pos = np.array([d[1] for d in data])
    a = thresholds.auroc(s, pos)
    if pos.all() or not pos.any():
        assert np.isnan(a)
    else:
        assert a == pytest.approx(brute_auroc(s, pos))
        # The trapezoid under the tie-aware ROC is the same number.
        fpr, tpr, _ = thresholds.roc_curve(s, pos)
        assert np.trapezoid(tpr, fpr) == pytest.approx(a)


def test_auroc_hand_cases_and_nan():
    pos = np.array([True, True, False, False])
    assert thresholds.auroc(np.array([3, 4, 1, 2.0]), pos) == 1.0
    assert thresholds.auroc(np.array([1, 2, 3, 4.0]), pos) == 0.0
    assert thresholds.auroc(np.ones(4), pos) == 0.5
    assert thresholds.auroc(np.array([3, np.nan, 1, 2.0]), pos) == 1.0  # NaN left out


def test_roc_and_fpr_at_tpr():
    # 20 positives at 1.0 except one at 0.0; 10 negatives: 1 at 0.5, rest 0.0.
    s = np.r_[np.ones(19), 0.0, 0.5, np.zeros(9)]
    pos = np.r_[np.ones(20, bool), np.zeros(10, bool)]
    fpr, tpr, thr = thresholds.roc_curve(s, pos)
    np.testing.assert_allclose(tpr, [0, 0.95, 0.95, 1.0])
    np.testing.assert_allclose(fpr, [0, 0, 0.1, 1.0])
    assert thresholds.fpr_at_tpr(fpr, tpr, 0.95) == 0.0
    assert thresholds.fpr_at_tpr(fpr, tpr, 0.96) == 1.0  # the tie at 0 comes all at once
    ev = thresholds.evaluate_canaries(s, pos)
    d = strict_json(ev.to_dict())
    assert d["fpr_at_95tpr"] == 0.0 and d["n_canaries"] == 20 and d["roc"]["threshold"][0] is None


def test_selection_metrics_and_canary_threshold():
    sel = np.array([1, 1, 0, 0, 1], bool)
    pos = np.array([1, 0, 1, 0, 1], bool)
    m = thresholds.selection_metrics(sel, pos)
    assert m == {"tp": 2, "fp": 1, "fn": 1, "tn": 1, "tpr": 2 / 3, "fpr": 0.5,
                 "precision": 2 / 3}
    rng = np.random.default_rng(0)
    s = rng.normal(size=200)
    canary = rng.random(200) < 0.2
    s[canary] += 2
    r = thresholds.canary_threshold(s, canary, tpr=0.95)
    assert r.details["canary_tpr"] >= 0.95
    assert (s[canary] >= r.threshold).mean() == pytest.approx(r.details["canary_tpr"])
    strict_json(r.to_dict())
    assert thresholds.canary_threshold(s, np.zeros(200, bool)).n_selected == 0


def test_mask_validation():
    with pytest.raises(JmemError, match="canary_mask"):
        thresholds.evaluate_canaries(np.zeros(3), np.zeros(4, bool))
    with pytest.raises(JmemError, match="canary_mask"):
        thresholds.auroc(np.zeros(3), np.array([0, 2, 1]))
