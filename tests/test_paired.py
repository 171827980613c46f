"""Paired statistics of removal experiments (jmem.scores.paired): exactness, calibration."""

import dataclasses
import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats

from jmem.errors import JmemError
from jmem.scores import paired


def _rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------
# paired_differences and validation
# ---------------------------------------------------------------------------------------------

def test_paired_differences_in_pp():
    np.testing.assert_allclose(paired.paired_differences([0.9, 0.8], [0.85, 0.81]), [5.0, -1.0])


@pytest.mark.parametrize("acc_a, acc_b, name", [
    ([0.9, np.nan], [0.9, 0.9], "acc_a"),
    ([0.9, 0.8], [0.9], "acc_b"),
    ([[0.9, 0.8]], [0.9, 0.8], "acc_a"),
    ([90.0, 80.0], [0.9, 0.8], "acc_a"),        # pp instead of fractions
    ([0.9, 0.8], ["x", "y"], "acc_b"),
])
def test_paired_differences_rejects_bad_input_naming_it(acc_a, acc_b, name):
    with pytest.raises(JmemError, match=name):
        paired.paired_differences(acc_a, acc_b)


@pytest.mark.parametrize("kwargs, name", [
    ({"level": 1.5}, "level"), ({"resamples": 0}, "resamples"), ({"rng": 3}, "rng"),
])
def test_random_functions_validate_options(kwargs, name):
    options = {"level": 0.95, "resamples": 100, "rng": _rng()} | kwargs
    with pytest.raises(JmemError, match=name):
        paired.bootstrap_mean_ci([1.0, 2.0], **options)


# ---------------------------------------------------------------------------------------------
# Sign-flip permutation test
# ---------------------------------------------------------------------------------------------

def _brute_force_sign_flip(int_diffs):
    """Exact two-sided p on integer differences (no rounding at all)."""
    observed = abs(sum(int_diffs))
    hits = [abs(sum(s * d for s, d in zip(signs, int_diffs))) >= observed
            for signs in itertools.product((1, -1), repeat=len(int_diffs))]
    return sum(hits) / len(hits)


@pytest.mark.parametrize("seed", range(4))
def test_sign_flip_exact_equals_brute_force_including_ties(seed):
    # Accuracy differences on a finite test set are multiples of 1/T, so exact ties between
    # sign vectors are common; 0.01 pp steps are not exact in binary floating point.
    ints = _rng(seed).integers(-30, 31, size=10).tolist()
    p = paired.sign_flip_pvalue(np.array(ints) * 0.01, rng=_rng())
    assert p == _brute_force_sign_flip(ints)


def test_sign_flip_matches_scipy_permutation_test():
    rng = _rng(1)
    x = rng.normal(0.9, 0.01, size=11)
    y = x - rng.normal(0.004, 0.006, size=11)
    expected = stats.permutation_test(
        (x, y), lambda a, b, axis: np.mean(a - b, axis=axis), permutation_type="samples",
        vectorized=True, n_resamples=np.inf, alternative="two-sided").pvalue
    assert paired.sign_flip_pvalue(paired.paired_differences(x, y), rng=rng) == pytest.approx(expected)


def test_sign_flip_monte_carlo_agrees_with_exact_and_is_deterministic():
    diffs = _rng(2).normal(0.3, 1.0, size=12)
    exact = paired.sign_flip_pvalue(diffs, rng=_rng())
    resamples = 20_000
    mc = paired.sign_flip_pvalue(diffs, exact_limit=0, resamples=resamples, rng=_rng(5))
    assert abs(mc - exact) < 4 * math.sqrt(exact * (1 - exact) / resamples) + 1 / resamples
    assert mc == paired.sign_flip_pvalue(diffs, exact_limit=0, resamples=resamples, rng=_rng(5))


def test_sign_flip_all_zero_is_one_and_caps_exact_limit():
    assert paired.sign_flip_pvalue(np.zeros(30), rng=_rng()) == 1.0
    assert paired.sign_flip_pvalue(np.zeros(5), rng=_rng()) == 1.0
    with pytest.raises(JmemError, match="exact_limit"):
        paired.sign_flip_pvalue([1.0, 2.0], exact_limit=40, rng=_rng())


def test_sign_flip_is_calibrated_under_the_null():
    # Two arms with the same mean and independent seed noise; S=20 takes the Monte Carlo path.
    rng = _rng(3)
    acc_a = rng.normal(0.9, 0.005, size=(400, 20))
    acc_b = rng.normal(0.9, 0.005, size=(400, 20))
    p = np.array([paired.sign_flip_pvalue(paired.paired_differences(a, b), resamples=999, rng=rng)
                  for a, b in zip(acc_a, acc_b)])
    assert 0.02 <= np.mean(p < 0.05) <= 0.09
    assert stats.kstest(p, "uniform").pvalue > 0.001


# ---------------------------------------------------------------------------------------------
# Bootstrap intervals
# ---------------------------------------------------------------------------------------------

def test_seed_bootstrap_coverage_is_near_nominal():
    rng = _rng(4)
    true_mean = -0.4
    diffs = rng.normal(true_mean, 0.7, size=(1000, 50))
    intervals = np.array([paired.bootstrap_mean_ci(d, resamples=2000, rng=rng) for d in diffs])
    covered = (intervals[:, 0] <= true_mean) & (true_mean <= intervals[:, 1])
    assert 0.92 <= covered.mean() <= 0.98


def test_seed_bootstrap_is_deterministic():
    diffs = _rng(5).normal(size=30)
    first = paired.bootstrap_mean_ci(diffs, resamples=500, rng=_rng(9))
    assert first == paired.bootstrap_mean_ci(diffs, resamples=500, rng=_rng(9))
    assert first[0] < diffs.mean() < first[1]


def _shared_and_per_seed_flips(rng, num_seeds, num_examples, shared_rate, seed_rate):
    """Arm b = arm a with some examples flipped for every seed (example-level variance) and a
    few flipped per seed (seed-level variance)."""
    base = rng.random(num_examples) < 0.8
    correct_a = np.broadcast_to(base, (num_seeds, num_examples)).copy()
    flips = (rng.random(num_examples) < shared_rate) | (rng.random(correct_a.shape) < seed_rate)
    return correct_a, correct_a ^ flips


def test_two_level_interval_is_wider_when_examples_add_variance():
    rng = _rng(6)
    correct_a, correct_b = _shared_and_per_seed_flips(rng, 10, 400, 0.1, 0.01)
    diffs = paired.paired_differences(correct_a.mean(1), correct_b.mean(1))
    seed_low, seed_high = paired.bootstrap_mean_ci(diffs, resamples=2000, rng=rng)
    low, high = paired.two_level_bootstrap_ci(correct_a, correct_b, resamples=2000, rng=rng)
    assert high - low > 2 * (seed_high - seed_low)


def test_two_level_reduces_to_each_level_on_constant_rows_or_columns():
    rng = _rng(7)
    # Same difference on every example of a seed: only seeds vary -> the seed bootstrap.
    per_seed = rng.integers(0, 2, size=(12, 1)).astype(bool)
    rows_a = np.broadcast_to(per_seed, (12, 50))
    rows_b = np.zeros((12, 50), bool)
    two = paired.two_level_bootstrap_ci(rows_a, rows_b, resamples=4000, rng=rng)
    one = paired.bootstrap_mean_ci(100.0 * per_seed[:, 0], resamples=4000, rng=rng)
    np.testing.assert_allclose(two, one, atol=3.0)
    # Same correctness for every seed: only examples vary -> an example bootstrap.
    per_example = rng.random(200) < 0.3
    cols_a = np.broadcast_to(per_example, (5, 200))
    two = paired.two_level_bootstrap_ci(cols_a, np.zeros((5, 200), bool), resamples=4000, rng=rng)
    half = 1.96 * 100.0 * per_example.std() / math.sqrt(200)
    np.testing.assert_allclose(two, [100 * per_example.mean() - half,
                                     100 * per_example.mean() + half], atol=1.0)
    # Identical arms: a point.
    assert paired.two_level_bootstrap_ci(cols_a, cols_a, resamples=100, rng=rng) == (0.0, 0.0)


def test_two_level_chunking_keeps_the_distribution(monkeypatch):
    correct_a, correct_b = _shared_and_per_seed_flips(_rng(8), 8, 300, 0.1, 0.02)
    one_chunk = paired.two_level_bootstrap_ci(correct_a, correct_b, resamples=3000, rng=_rng(1))
    monkeypatch.setattr(paired, "CHUNK_ELEMENTS", 5000)      # ~16 replicates per chunk
    many = paired.two_level_bootstrap_ci(correct_a, correct_b, resamples=3000, rng=_rng(1))
    assert many == paired.two_level_bootstrap_ci(correct_a, correct_b, resamples=3000, rng=_rng(1))
    np.testing.assert_allclose(many, one_chunk, atol=0.6)     # Monte Carlo error ~0.2 pp


def test_two_level_coverage_on_fresh_test_sets():
    # A population of examples with fixed per-arm correctness probabilities; each experiment
    # draws a fresh test set and fresh seeds. The target is the population mean difference.
    rng = _rng(9)
    pop_a = rng.beta(4, 1, size=50_000)
    pop_b = np.clip(pop_a + rng.choice([0.25, -0.15, 0.0], p=[0.3, 0.3, 0.4], size=50_000), 0, 1)
    truth = 100 * np.mean(pop_a - pop_b)
    covered_two, covered_seed = [], []
    for _ in range(150):
        examples = rng.integers(0, pop_a.size, size=300)
        correct_a = rng.random((10, 300)) < pop_a[examples]
        correct_b = rng.random((10, 300)) < pop_b[examples]
        low, high = paired.two_level_bootstrap_ci(correct_a, correct_b, resamples=500, rng=rng)
        covered_two.append(low <= truth <= high)
        diffs = paired.paired_differences(correct_a.mean(1), correct_b.mean(1))
        low, high = paired.bootstrap_mean_ci(diffs, resamples=500, rng=rng)
        covered_seed.append(low <= truth <= high)
    assert 0.9 <= np.mean(covered_two) <= 1.0
    assert np.mean(covered_seed) < np.mean(covered_two)    # the fixed test set is not the truth


def test_two_level_rejects_mismatched_shapes():
    with pytest.raises(JmemError, match="correct_b"):
        paired.two_level_bootstrap_ci(np.ones((3, 4), bool), np.ones((3, 5), bool), rng=_rng())
    with pytest.raises(JmemError, match="correct_a"):
        paired.two_level_bootstrap_ci(np.full((3, 4), 0.5), np.ones((3, 4), bool), rng=_rng())


# ---------------------------------------------------------------------------------------------
# Welch, Holm
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_welch_matches_scipy(seed):
    rng = _rng(seed)
    a, b = rng.normal(0, 1, size=7), rng.normal(0.5, 2, size=13)
    assert paired.welch_pvalue(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)


def test_welch_constant_samples():
    assert paired.welch_pvalue([0.5, 0.5], [0.5, 0.5, 0.5]) == 1.0
    assert paired.welch_pvalue([0.5, 0.5], [0.6, 0.6]) == 0.0
    with pytest.raises(JmemError, match="b"):
        paired.welch_pvalue([0.5, 0.6], [0.5])


def test_holm_hand_example():
    # Sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06.
    np.testing.assert_allclose(paired.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(paired.holm([0.5, 0.9]), [1.0, 1.0])       # capped at 1
    assert paired.holm([]).shape == (0,)


def test_holm_properties():
    p = _rng(10).uniform(0, 0.2, size=15) ** 2
    adjusted = paired.holm(p)
    assert adjusted.min() == pytest.approx(min(1.0, p.size * p.min()))      # Bonferroni
    assert np.all(np.diff(adjusted[np.argsort(p)]) >= 0)                   # monotone
    assert np.all(adjusted >= p) and np.all(adjusted <= 1)
    for alpha in np.linspace(0.001, 0.2, 50):
        assert np.sum(adjusted <= alpha) <= np.sum(p <= alpha)
    with pytest.raises(JmemError, match="pvalues"):
        paired.holm([0.1, 1.2])


# ---------------------------------------------------------------------------------------------
# Minimum detectable effect, effect size
# ---------------------------------------------------------------------------------------------

def test_mde_gives_the_target_power():
    rng = _rng(11)
    num_seeds, sd = 12, 0.5
    effect = paired.min_detectable_effect(sd, num_seeds)
    diffs = rng.normal(effect, sd, size=(500, num_seeds))
    t_power = np.mean(stats.ttest_1samp(diffs, 0.0, axis=1).pvalue < 0.05)
    perm_power = np.mean([paired.sign_flip_pvalue(d, rng=rng) < 0.05 for d in diffs])
    assert 0.70 <= t_power <= 0.90
    assert 0.70 <= perm_power <= 0.90


def test_mde_shape():
    values = [paired.min_detectable_effect(1.0, s) for s in (2, 3, 5, 10, 20, 50, 200)]
    assert all(np.diff(values) < 0)
    normal = (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) / math.sqrt(2000)
    assert paired.min_detectable_effect(1.0, 2000) == pytest.approx(normal, rel=0.01)
    assert paired.min_detectable_effect(3.0, 20) == pytest.approx(3 * paired.min_detectable_effect(1.0, 20))
    assert paired.min_detectable_effect(0.0, 20) == 0.0
    with pytest.raises(JmemError, match="num_seeds"):
        paired.min_detectable_effect(1.0, 1)
    with pytest.raises(JmemError, match="sd_diff"):
        paired.min_detectable_effect(-1.0, 5)


def test_effect_size():
    assert paired.effect_size([1.0, 2.0, 3.0]) == pytest.approx(2.0)
    assert math.isnan(paired.effect_size([0.0, 0.0]))
    assert paired.effect_size([-0.5, -0.5]) == -math.inf


# ---------------------------------------------------------------------------------------------
# Share of change
# ---------------------------------------------------------------------------------------------

def _arms_with_subset(rng, sub_change, rest_change, f=0.1, num_seeds=20):
    """Per-seed accuracies of both arms on T_h and on all of T (= f T_h + (1 - f) rest)."""
    sub_a, rest_a = rng.normal(0.6, 0.01, num_seeds), rng.normal(0.95, 0.003, num_seeds)
    sub_b = sub_a - sub_change - rng.normal(0, 0.005, num_seeds)
    rest_b = rest_a - rest_change
    return sub_a, sub_b, f * sub_a + (1 - f) * rest_a, f * sub_b + (1 - f) * rest_b


def test_share_is_one_when_all_change_is_on_the_subset():
    sub_a, sub_b, all_a, all_b = _arms_with_subset(_rng(12), 0.05, 0.0)
    share = paired.share_of_change(sub_a, sub_b, all_a, all_b, 0.1, resamples=1000, rng=_rng())
    for key in ("estimate", "low", "high"):
        assert share[key] == pytest.approx(1.0, abs=1e-9)
    assert share["delta_all"] == pytest.approx(0.1 * share["delta_sub"])


def test_share_is_the_subset_fraction_when_the_subset_changes_like_the_rest():
    sub_a, sub_b, all_a, all_b = _arms_with_subset(_rng(13), 0.02, 0.02)
    share = paired.share_of_change(sub_a, sub_b, all_a, all_b, 0.1, resamples=2000, rng=_rng())
    assert share["low"] < 0.1 < share["high"]
    assert share["estimate"] == pytest.approx(0.1, abs=0.02)


def test_share_is_undefined_without_a_total_change():
    sub_a, sub_b, all_a, all_b = _arms_with_subset(_rng(14), 0.0, 0.0)
    share = paired.share_of_change(sub_a, sub_a, all_a, all_a, 0.1, resamples=100, rng=_rng())
    assert all(math.isnan(share[k]) for k in ("estimate", "low", "high"))
    # A small total change that seeds can erase: estimate defined, interval not.
    noisy_b = all_a - _rng(15).normal(0.0001, 0.01, all_a.size)
    share = paired.share_of_change(sub_a, sub_b, all_a, noisy_b, 0.1, resamples=500, rng=_rng())
    assert math.isfinite(share["estimate"]) and math.isnan(share["low"])
    with pytest.raises(JmemError, match="sub_fraction"):
        paired.share_of_change(sub_a, sub_b, all_a, all_b, 0.0, rng=_rng())
    with pytest.raises(JmemError, match="acc_all_b"):
        paired.share_of_change(sub_a, sub_b, all_a, all_b[:-1], 0.1, rng=_rng())


# ---------------------------------------------------------------------------------------------
# compare, adjust_holm
# ---------------------------------------------------------------------------------------------

def _experiment(seed, effect, num_seeds=20, num_examples=500):
    rng = _rng(seed)
    difficulty = rng.random(num_examples)
    correct_a = rng.random((num_seeds, num_examples)) < 0.2 + 0.7 * difficulty
    correct_b = rng.random((num_seeds, num_examples)) < 0.2 + 0.7 * difficulty - effect
    return correct_a, correct_b


def test_compare_fields_and_json():
    correct_a, correct_b = _experiment(16, 0.05)
    acc_a, acc_b = correct_a.mean(1), correct_b.mean(1)
    c = paired.compare(acc_a, acc_b, correct_a=correct_a, correct_b=correct_b,
                  resamples=1000, rng=_rng(1))
    assert c == paired.compare(acc_a, acc_b, correct_a=correct_a, correct_b=correct_b,
                          resamples=1000, rng=_rng(1))
    assert c.n_seeds == 20 and c.p_holm is None
    assert c.mean_diff == pytest.approx(c.mean_a - c.mean_b)
    assert c.ci_low < c.mean_diff < c.ci_high and c.ci2_low < c.mean_diff < c.ci2_high
    assert c.sd_diff == pytest.approx(np.std(100 * (acc_a - acc_b), ddof=1))
    assert c.mde == pytest.approx(paired.min_detectable_effect(c.sd_diff, 20))
    assert c.p_perm < 0.001
    assert json.loads(json.dumps(c.to_json(), allow_nan=False)) == c.to_json()

    seed_only = paired.compare(acc_a, acc_a, resamples=100, rng=_rng())
    blob = seed_only.to_json()
    assert blob["ci2_low"] is None and blob["effect_size"] is None      # NaN -> null
    json.dumps(blob, allow_nan=False)


def test_compare_rejects_inconsistent_inputs():
    correct_a, correct_b = _experiment(17, 0.0)
    acc_a, acc_b = correct_a.mean(1), correct_b.mean(1)
    with pytest.raises(JmemError, match="correct_b"):
        paired.compare(acc_a, acc_b, correct_a=correct_a, rng=_rng())
    with pytest.raises(JmemError, match="correct_b"):
        paired.compare(acc_a, acc_b, correct_a=correct_a, correct_b=correct_a, rng=_rng())
    with pytest.raises(JmemError, match="acc_a"):
        paired.compare([0.5], [0.5], rng=_rng())


def test_adjust_holm_adds_p_holm():
    comparisons = [paired.compare(*(c.mean(1) for c in _experiment(seed, effect)),
                             resamples=200, rng=_rng())
                   for seed, effect in ((18, 0.0), (19, 0.05))]
    adjusted = paired.adjust_holm(comparisons)
    np.testing.assert_allclose([c.p_holm for c in adjusted],
                               paired.holm([c.p_perm for c in comparisons]))
    assert [dataclasses.replace(c, p_holm=None) for c in adjusted] == comparisons
