"""Tests of jmem.scores.reliability on synthetic keep/margins with known answers."""

import numpy as np
import pytest
from scipy import stats

from jmem.errors import JmemError
from jmem.scores import estimators, protocols, reliability, thresholds


def fixed_selector(s, keep, margins):
    return {"fixed": thresholds.fixed_threshold(s.mem, 0.25).selected,
            "top_k": protocols.top_k(s.mem, 50)}


def graded_run(seed, R, N, rate=0.7):
    """Examples with graded memorization: P(correct | in) = 1, P(correct | out) = q_i."""
    rng = np.random.default_rng(seed)
    keep = rng.random((R, N)) < rate
    q = np.linspace(0, 1, N)
    correct = np.where(keep, True, rng.random((R, N)) < q)
    margins = np.where(correct, 1.0, -1.0) * rng.uniform(0.5, 2, (R, N))
    return keep, margins.astype(np.float32), q


def test_identical_halves_are_perfectly_reliable():
    keep, margins, _ = graded_run(0, 30, 300)
    # Model 2j+1 is a copy of model 2j: the two halves see exactly the same evidence.
    keep, margins = np.repeat(keep, 2, axis=0), np.repeat(margins, 2, axis=0)
    sh = reliability.split_half(keep, margins, selector=fixed_selector)
    assert sh.num_models == (30, 30)
    for name in ("mem", "cscore", "fractional", "lira"):
        assert sh.spearman[name] == pytest.approx(1.0), name
        assert sh.projected_r[name] == pytest.approx(1.0)
    assert sh.jaccard == {"fixed": 1.0, "top_k": 1.0}
    assert sh.n_selected["top_k"] == [50, 50]
    assert set(sh.to_dict()) >= {"spearman", "jaccard", "projected_2r"}


def test_pure_noise_is_unreliable_and_signal_is_reliable():
    rng = np.random.default_rng(1)
    R, N = 40, 3000
    keep = rng.random((R, N)) < 0.5
    margins = rng.normal(size=(R, N)).astype(np.float32)  # correctness independent of everything
    sh = reliability.split_half(keep, margins, selector=fixed_selector)
    for name in ("mem", "cscore", "lira"):
        assert abs(sh.spearman[name]) < 0.08, (name, sh.spearman[name])  # sd ~ 1/sqrt(N) = 0.018
    assert sh.jaccard["top_k"] < 0.15
    keep, margins, q = graded_run(2, 200, 500)
    sh = reliability.split_half(keep, margins)
    assert sh.spearman["mem"] > 0.9 and sh.spearman["cscore"] > 0.9
    assert sh.projected_2r["mem"] > sh.projected_r["mem"] > sh.spearman["mem"]
    assert sh.jaccard == {}


def test_spearman_brown_formula_and_prophecy():
    assert reliability.spearman_brown(0.5, 2) == pytest.approx(2 / 3)
    assert reliability.spearman_brown(0.5, 4) == pytest.approx(0.8)
    assert reliability.spearman_brown(0.0, 3) == 0.0 and reliability.spearman_brown(1.0, 7) == 1.0
    np.testing.assert_allclose(reliability.spearman_brown(np.array([0.2, 0.6]), 2), [1 / 3, 0.75])
    # The prophecy: the correlation of two 4-item means equals SB(r of one item pair, 4).
    rng = np.random.default_rng(3)
    t = rng.normal(size=200_000)
    items = t[:, None] + rng.normal(scale=1.5, size=(200_000, 8))
    r1 = np.corrcoef(items[:, 0], items[:, 1])[0, 1]
    r4 = np.corrcoef(items[:, :4].mean(1), items[:, 4:].mean(1))[0, 1]
    assert reliability.spearman_brown(r1, 4) == pytest.approx(r4, abs=0.01)
    with pytest.raises(JmemError, match="factor"):
        reliability.spearman_brown(0.5, 0)


def test_spearman_and_jaccard_edge_cases():
    assert np.isnan(reliability.spearman([1, 1, 1, 1], [1, 2, 3, 4])[0])
    rho, n = reliability.spearman([1, 2, np.nan, 4, 5], [2, 4, 6, np.nan, 10])
    assert rho == pytest.approx(1.0) and n == 3
    assert reliability.jaccard([1, 1, 0, 0], [0, 1, 1, 0]) == pytest.approx(1 / 3)
    assert np.isnan(reliability.jaccard([0, 0], [0, 0]))
    with pytest.raises(JmemError, match="at least 4 models"):
        reliability.split_half(np.ones((3, 5), bool), np.ones((3, 5), np.float32))


def test_stability_converges_to_the_full_estimate():
    keep, margins, _ = graded_run(4, 128, 400)
    rows = reliability.stability(keep, margins)
    assert [r["k"] for r in rows] == [8, 16, 32, 64, 128]
    assert rows[-1]["spearman_mem"] == pytest.approx(1.0) and rows[-1]["mean_abs_diff_mem"] == 0
    mad = [r["mean_abs_diff_mem"] for r in rows]
    assert all(a > b for a, b in zip(mad, mad[1:])), mad
    assert rows[0]["spearman_cscore"] < rows[-2]["spearman_cscore"]
    # With 8 models some examples have no out model: they are left out and counted.
    assert rows[0]["n_defined_mem"] <= 400 and rows[-1]["n_defined_mem"] == 400
    full = estimators.compute_scores(keep, margins)
    again = reliability.stability(keep, margins, model_counts=[16, 128], full=full,
                                  order=np.arange(128)[::-1])
    assert again[-1]["spearman_mem"] == pytest.approx(1.0)
    with pytest.raises(JmemError, match="model_counts"):
        reliability.stability(keep, margins, model_counts=[16, 8])
    with pytest.raises(JmemError, match="permutation"):
        reliability.stability(keep, margins, order=np.zeros(128, int))


def test_interleaved_order_takes_every_rate_first():
    rates = np.array([0.7] * 4 + [0.95] * 4)
    order = reliability.interleaved_order(rates)
    assert order.tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    assert reliability.default_model_counts(100) == [8, 16, 32, 64, 100]
    assert reliability.default_model_counts(8) == [8]


def test_models_needed_formula_matches_a_simulation():
    a_in, a_out, rate, h = 0.8, 0.4, 0.7, 0.1
    need = reliability.models_needed(a_in, a_out, rate, h)
    z = stats.norm.ppf(0.975)
    assert need == pytest.approx(z**2 * (0.16 / 0.7 + 0.24 / 0.3) / 0.01)
    # Simulate estimates from R = need models (fixed design): the 95% spread of mem_hat is +-h.
    R = int(np.ceil(need))
    n_in = int(round(rate * R))
    rng = np.random.default_rng(5)
    mem_hat = rng.binomial(n_in, a_in, 200_000) / n_in - rng.binomial(R - n_in, a_out, 200_000) / (R - n_in)
    half = np.quantile(np.abs(mem_hat - (a_in - a_out)), 0.95)
    assert half == pytest.approx(h, rel=0.06)
    # Halving the half-width needs four times the models; extreme rates need more.
    assert reliability.models_needed(a_in, a_out, rate, h / 2) == pytest.approx(4 * need)
    assert reliability.models_needed(0.5, 0.5, 0.95) > reliability.models_needed(0.5, 0.5, 0.5)
    with pytest.raises(JmemError, match="rate"):
        reliability.models_needed(0.5, 0.5, 1.0)


def test_models_needed_table():
    acc_in = np.array([1.0, 0.9, 0.5, np.nan])
    acc_out = np.array([1.0, 0.3, 0.5, 0.2])
    rows = reliability.models_needed_table(acc_in, acc_out, rates=(0.95, 0.5, 0.5),
                                           subset=np.array([0, 1, 1, 0], bool))
    assert [r["rate"] for r in rows] == [0.5, 0.95]
    for r in rows:
        assert r["n_examples"] == 3
        # The worst case bounds every example; the example at 1/2, 1/2 attains it.
        assert r["max"] == r["worst_case"]
        assert r["q50"] <= r["q90"] <= r["q99"] <= r["max"]
        assert r["subset_median"] >= r["q50"]
    assert rows[0]["worst_case"] == int(np.ceil(stats.norm.ppf(0.975) ** 2 * 0.25 * 4 / 0.01))
    sm = reliability.smoothed_accuracy(np.array([10, 0]), np.array([10, 0]))
    assert sm[0] == pytest.approx(10.5 / 11) and np.isnan(sm[1])


def test_halves_of_a_multi_rate_run_hold_every_rate():
    rates = np.tile([0.1, 0.3, 0.5, 0.7], 6)  # cycles with period 4: even ids would be 0.1/0.5
    a, b = reliability.alternating_halves(24, rates)
    assert a.size == b.size == 12 and np.intersect1d(a, b).size == 0
    for r in (0.1, 0.3, 0.5, 0.7):
        assert (rates[a] == r).sum() == (rates[b] == r).sum() == 3
    even, odd = reliability.alternating_halves(5)
    assert even.tolist() == [0, 2, 4] and odd.tolist() == [1, 3]
    keep, margins, _ = graded_run(6, 24, 200)
    sh = reliability.split_half(keep, margins, halves=(a, b))
    assert sh.num_models == (12, 12)
    with pytest.raises(JmemError, match="disjoint"):
        reliability.split_half(keep, margins, halves=(a, a))


def test_variance_check_matches_binomial_noise():
    # Examples with fixed true accuracies: the halves' disagreement is pure binomial noise.
    rng = np.random.default_rng(7)
    R, N = 200, 4000
    keep = np.zeros((R, N), bool)
    for i in range(N):  # a fixed design: exactly 140 of 200 models in
        keep[rng.choice(R, 140, replace=False), i] = True
    p_in, p_out = rng.uniform(0.3, 1, N), rng.uniform(0, 0.9, N)
    correct = np.where(keep, rng.random((R, N)) < p_in, rng.random((R, N)) < p_out)
    margins = np.where(correct, 1.0, -1.0).astype(np.float32)
    sh = reliability.split_half(keep, margins)
    check = reliability.variance_check(*sh.scores, p_in, p_out)
    assert check["ratio"] == pytest.approx(1.0, abs=0.06) and check["n_examples"] == N
