"""Leave-one-out statistics (jmem.scores.loo): the sample, the rows, the paired interval and
the validation figures, on inputs whose answers are known."""

import numpy as np
import pytest

from jmem.scores import loo


def _strata(n=1000, seed=0):
    gen = np.random.default_rng(seed)
    mem = {0.7: gen.uniform(-0.1, 0.6, n), 0.95: gen.uniform(-0.1, 0.6, n)}
    selected = np.zeros(n, bool)
    selected[:60] = True
    never_wrong = np.zeros(n, bool)
    never_wrong[500:800] = True
    eligible = np.ones(n, bool)
    eligible[990:] = False  # e.g. canaries
    return loo.strata_of(mem, selected, never_wrong, eligible)


def test_strata_partition_the_eligible_examples():
    stratum, names = _strata()
    assert (stratum[990:] == -1).all() and (stratum[:990] >= 0).all()
    assert (stratum[:60] == 0).all() and (stratum[500:800] == 1).all()
    counts = np.bincount(stratum[stratum >= 2] - 2)
    assert counts.size == loo.NUM_DECILES and counts.max() - counts.min() <= 1
    assert names[0] == "selected" and len(names) == 2 + loo.NUM_DECILES


def test_stratified_sample_shares_and_weights():
    stratum, names = _strata()
    sample = loo.stratified_sample(stratum, names, 100, seed=3)
    assert sample.index.size == 100 == np.unique(sample.index).size
    assert (np.diff(sample.index) > 0).all()
    by = {s["name"]: s for s in sample.strata}
    assert by["selected"]["sampled"] == 40 and by["easy"]["sampled"] == 10
    assert sum(by[f"mem decile {d}"]["sampled"] for d in range(1, 11)) == 50
    # Each sampled example stands for N_h / n_h examples: the weights add up to the eligible.
    assert sample.weight.sum() == pytest.approx(990)
    assert (stratum[sample.index] == sample.stratum).all()
    again = loo.stratified_sample(stratum, names, 100, seed=3)
    np.testing.assert_array_equal(sample.index, again.index)
    small = loo.stratified_sample(stratum, names, 100, seed=3, selected_share=0.9)
    assert {s["name"]: s for s in small.strata}["selected"]["sampled"] == 60  # all of it
    with pytest.raises(Exception, match="loo.examples"):
        loo.stratified_sample(stratum, names, 5000, seed=0)


def test_loo_rows_differ_from_the_full_row_in_one_position():
    rows = loo.loo_rows(50, np.array([3, 7, 49]))
    assert rows.shape == (4, 50) and rows[0].all()
    for k, i in enumerate([3, 7, 49]):
        diff = np.flatnonzero(rows[0] != rows[1 + k])
        assert list(diff) == [i]


def test_paired_interval_coverage_and_edges():
    gen = np.random.default_rng(0)
    hits, reps, seeds = 0, 2000, 50
    p_with, p_without = 0.8, 0.55
    for _ in range(reps):
        u = gen.random(seeds)  # coupled, like paired seeds
        w, wo = u < p_with, u < p_without
        flip = gen.random(seeds) < 0.1  # some pairs disagree the other way
        wo = np.where(flip, ~wo, wo)
        truth = p_with - (p_without * 0.9 + (1 - p_without) * 0.1)
        diff, low, high = loo.paired_difference_interval(w[:, None], wo[:, None])
        hits += low[0] <= truth <= high[0]
    assert 0.93 <= hits / reps <= 0.98
    same = np.ones((50, 1), bool)
    diff, low, high = loo.paired_difference_interval(same, same)
    assert diff[0] == 0 and low[0] < 0 < high[0]
    diff, low, high = loo.paired_difference_interval(same, ~same)
    assert diff[0] == 1 and low[0] > 0.85 and high[0] == 1


def test_loo_memorized_needs_interval_and_size():
    assert list(loo.loo_memorized(np.array([0.5, 0.05, 0.5]), np.array([0.2, 0.01, -0.1]))) == [True, False, False]


def test_compare_estimator_known_offset():
    stratum, names = _strata()
    sample = loo.stratified_sample(stratum, names, 100, seed=1)
    truth = np.linspace(0, 1, 100)
    result = loo.compare_estimator(truth + 0.1, truth, sample, resamples=200)
    assert result["bias"] == pytest.approx(0.1) and result["rmse"] == pytest.approx(0.1)
    assert result["spearman"] == pytest.approx(1.0)
    assert result["bias_ci"][0] == pytest.approx(0.1) and result["n_nan"] == 0
    noisy = loo.compare_estimator(truth + np.random.default_rng(0).normal(0, 0.3, 100), truth, sample, resamples=200)
    assert noisy["spearman"] < 0.9 and noisy["spearman_ci"][0] < noisy["spearman"] < noisy["spearman_ci"][1]


def test_selection_recovery_is_weighted():
    """Recall over the dataset: an over-sampled stratum counts for what it stands for."""
    sample = loo.LooSample(np.arange(4), np.array([0, 0, 1, 1]), np.array([1.0, 1.0, 10.0, 10.0]),
                           strata=[])
    selected = np.array([True, True, False, False])
    memorized = np.array([True, False, True, False])
    out = loo.selection_recovery(selected, memorized, sample, resamples=50)
    assert out["precision"] == pytest.approx(0.5)
    assert out["recall"] == pytest.approx(1 / 11)  # 1 of the 1 + 10 memorized it stands for
    none = loo.selection_recovery(np.zeros(4, bool), memorized, sample, resamples=10)
    assert none["precision"] is None and none["recall"] == 0


def test_influence_comparison_resamples_examples_with_their_partners():
    sample = loo.LooSample(np.arange(6), np.array([0, 0, 0, 1, 1, 1]), np.ones(6), strata=[])
    truth = np.tile(np.linspace(0, 0.5, 6)[:, None], (1, 3))
    truth[2, 1] = np.nan  # an example with fewer partners
    res = loo.compare_estimator(truth + 0.2, truth, sample, resamples=100)
    assert res["bias"] == pytest.approx(0.2) and res["n"] == 17 and res["n_nan"] == 1
    assert res["bias_ci"][0] == pytest.approx(0.2)
    with pytest.raises(Exception, match="must both lead"):
        loo.compare_estimator(truth[:4], truth[:4], sample)


def test_precision_at_k_ranks_and_breaks_ties_by_position():
    memorized = np.array([True, False, True, False, False])
    score = np.array([0.9, 0.8, np.nan, 0.1, 0.8])
    out = loo.precision_at_k(score, memorized)  # k = 2: positions 0 and 1 (tie with 4 by position)
    assert (out["k"], out["hits"], out["precision"]) == (2, 1, 0.5)
    assert out["precision_ci"][0] < 0.5 < out["precision_ci"][1]
    assert loo.precision_at_k(score, np.zeros(5, bool))["precision"] is None


def test_spearman_interval_covers_the_population_value():
    """Bivariate normal with r = 0.6: population Spearman (6 / pi) asin(r / 2)."""
    gen = np.random.default_rng(0)
    r, truth, hits = 0.6, 6 / np.pi * np.arcsin(0.3), 0
    for _ in range(300):
        x = gen.normal(size=150)
        y = r * x + np.sqrt(1 - r ** 2) * gen.normal(size=150)
        out = loo.spearman_interval(x, y)
        hits += out["spearman_ci"][0] <= truth <= out["spearman_ci"][1]
    assert 0.91 <= hits / 300 <= 0.99 and out["n"] == 150
    assert loo.spearman_interval(np.ones(10), y[:10])["spearman"] is None  # constant: undefined


def test_weighted_mean_stands_for_the_dataset():
    sample = loo.LooSample(np.arange(4), np.array([0, 0, 1, 1]), np.array([1.0, 1.0, 10.0, 10.0]), strata=[])
    out = loo.weighted_mean(np.array([1.0, 1.0, 0.0, 0.0]), sample, resamples=100)
    assert out["mean"] == pytest.approx(2 / 22) and out["mean_ci"] == [pytest.approx(2 / 22)] * 2
