"""Tests of jmem.scores.estimators: hand cases, a naive reference loop, invariances, statistical validity."""

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats

from jmem.scores import estimators
from jmem.errors import JmemError


# ---------------------------------------------------------------------------------------------
# Helpers: a deliberately naive per-example reference
# ---------------------------------------------------------------------------------------------

def naive_scores(keep, margins, floor=0.1):
    """Per-example Python loop over the definitions in the scoring module docstring."""
    margins = margins.astype(np.float64)
    R, N = keep.shape
    out = {k: np.full(N, np.nan) for k in
           ("acc_in", "acc_out", "mem", "fractional", "margin_in", "margin_out", "lira", "p_value")}
    out["n_in"] = np.zeros(N, int)
    out["correct_in"] = np.zeros(N, int)
    for i in range(N):
        ins = [r for r in range(R) if keep[r, i]]
        outs = [r for r in range(R) if not keep[r, i]]
        c_in = sum(margins[r, i] > 0 for r in ins)
        c_out = sum(margins[r, i] > 0 for r in outs)
        out["n_in"][i], out["correct_in"][i] = len(ins), c_in
        if ins:
            out["acc_in"][i] = c_in / len(ins)
            out["margin_in"][i] = np.mean([margins[r, i] for r in ins])
        if outs:
            out["acc_out"][i] = c_out / len(outs)
            out["margin_out"][i] = np.mean([margins[r, i] for r in outs])
        if ins and outs:
            a, b = out["acc_in"][i], out["acc_out"][i]
            out["mem"][i] = a - b
            out["fractional"][i] = 0.0 if a < floor else (a - b) / (a + b)
            # Fisher one-sided via scipy's 2x2 implementation.
            table = [[c_in, len(ins) - c_in], [c_out, len(outs) - c_out]]
            out["p_value"][i] = stats.fisher_exact(table, alternative="greater").pvalue
            if len(outs) >= 2:
                sd = np.std([margins[r, i] for r in outs], ddof=1)
                out["lira"][i] = (out["margin_in"][i] - out["margin_out"][i]) / max(sd, 1e-6)
    return out


def random_run(seed, R=40, N=30, rate=0.7):
    rng = np.random.default_rng(seed)
    keep = rng.random((R, N)) < rate
    margins = rng.normal(0.3, 1, (R, N)).astype(np.float32)
    return keep, margins


# ---------------------------------------------------------------------------------------------
# Hand-computed cases
# ---------------------------------------------------------------------------------------------

def test_hand_computed_example():
    keep = np.array([[1, 1, 0], [1, 1, 0], [0, 1, 0], [0, 1, 0]], bool)
    margins = np.array([[1, 1, 1], [2, -1, 1], [-1, 1, -1], [3, 1, 1]], np.float32)
    s = estimators.compute_scores(keep, margins)
    # Example 0: in = models 0,1 (both correct), out = models 2,3 (one correct).
    assert (s.n_in[0], s.n_out[0], s.correct_in[0], s.correct_out[0]) == (2, 2, 2, 1)
    assert s.acc_in[0] == 1.0 and s.acc_out[0] == 0.5 and s.mem[0] == 0.5
    assert s.fractional[0] == pytest.approx(0.5 / 1.5)
    assert s.margin_in[0] == 1.5 and s.margin_out[0] == 1.0
    assert s.lira[0] == pytest.approx(0.5 / np.std([-1, 3], ddof=1))
    # Fisher: 4 models, 3 correct, 2 in: P(both in correct) = C(3,2) C(1,0) / C(4,2) = 1/2.
    assert s.p_value[0] == pytest.approx(0.5)
    assert s.cscore[0] == 0.5
    # Example 1: in every model -> acc_in defined, everything needing "out" is NaN.
    assert s.acc_in[1] == 0.75 and np.isnan(s.acc_out[1])
    for f in ("mem", "mem_ci_low", "mem_ci_high", "fractional", "p_value", "lira", "cscore"):
        assert np.isnan(getattr(s, f)[1]), f
    # Example 2: in no model.
    assert np.isnan(s.acc_in[2]) and s.acc_out[2] == 0.75 and np.isnan(s.mem[2])
    assert s.nan_counts() == {"zero_in": 1, "zero_out": 1, "undefined": 2}
    np.testing.assert_array_equal(s.undefined, [False, True, True])


def test_newcombe_matches_published_values():
    """Newcombe (1998) Table II, method 10, examples (a)-(g)."""
    k1, n1 = np.array([56, 9, 6, 5, 0, 0, 10]), np.array([70, 10, 7, 56, 10, 10, 10])
    k2, n2 = np.array([48, 3, 2, 0, 0, 0, 0]), np.array([80, 10, 7, 29, 20, 10, 20])
    low, high = estimators.newcombe_interval(k1, n1, k2, n2)
    np.testing.assert_allclose(low, [0.0524, 0.1705, 0.0582, -0.0381, -0.1611, -0.2775, 0.6791],
                               atol=6e-5)
    np.testing.assert_allclose(high, [0.3339, 0.8090, 0.8062, 0.1926, 0.2775, 0.2775, 1.0],
                               atol=6e-5)


def test_wilson_matches_published_values():
    """Newcombe (1998, single proportion) Wilson intervals: 81/263, 15/148, 0/20, 1/29."""
    low, high = estimators.wilson_interval(np.array([81, 15, 0, 1]), np.array([263, 148, 20, 29]))
    np.testing.assert_allclose(low, [0.2553, 0.0624, 0.0, 0.0061], atol=6e-5)
    np.testing.assert_allclose(high, [0.3662, 0.1605, 0.1611, 0.1718], atol=6e-5)


def test_fractional_floor_never_one_on_noise():
    acc_in = np.array([0.02, 0.09, 0.1, 0.5, 1.0, np.nan])
    acc_out = np.array([0.0, 0.0, 0.0, 0.5, 0.0, 0.2])
    frac = estimators.fractional_score(acc_in, acc_out, floor=0.1)
    np.testing.assert_array_equal(frac[:5], [0.0, 0.0, 1.0, 0.0, 1.0])
    assert np.isnan(frac[5])
    with pytest.raises(JmemError, match="fractional_floor"):
        estimators.fractional_score(acc_in, acc_out, floor=0.0)


# ---------------------------------------------------------------------------------------------
# Agreement with the naive loop; invariances; ranges
# ---------------------------------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), R=st.integers(1, 25), N=st.integers(1, 12),
       rate=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]), chunk=st.integers(1, 5))
def test_matches_naive_loop(seed, R, N, rate, chunk):
    rng = np.random.default_rng(seed)
    keep = rng.random((R, N)) < rate
    keep[:, 0] = rng.random(R) < 0.5  # at least one column with a mix, usually
    margins = rng.normal(0.2, 1, (R, N)).astype(np.float32)
    s = estimators.compute_scores(keep, margins, chunk_size=chunk)
    ref = naive_scores(keep, margins)
    np.testing.assert_array_equal(s.n_in, ref["n_in"])
    np.testing.assert_array_equal(s.correct_in, ref["correct_in"])
    for f in ("acc_in", "acc_out", "mem", "fractional", "margin_in", "margin_out", "lira"):
        np.testing.assert_allclose(getattr(s, f), ref[f], rtol=1e-6, atol=1e-9, err_msg=f)
    np.testing.assert_allclose(s.p_value, ref["p_value"], rtol=1e-7, atol=1e-12)


def test_invariant_to_model_order_and_chunking():
    keep, margins = random_run(0, R=60, N=50)
    perm = np.random.default_rng(1).permutation(60)
    a = estimators.compute_scores(keep, margins, chunk_size=7)
    b = estimators.compute_scores(keep[perm], margins[perm], chunk_size=1000)
    for name, x in a.columns().items():
        np.testing.assert_allclose(x, b.columns()[name], rtol=1e-9, atol=1e-12, err_msg=name)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), R=st.integers(2, 60), N=st.integers(1, 20))
def test_ranges(seed, R, N):
    keep, margins = random_run(seed, R, N)
    s = estimators.compute_scores(keep, margins)
    ok = ~s.undefined
    assert np.all((s.mem[ok] >= -1) & (s.mem[ok] <= 1))
    assert np.all((s.fractional[ok] >= -1) & (s.fractional[ok] <= 1))
    assert np.all((s.mem_ci_low[ok] <= s.mem[ok] + 1e-12) & (s.mem[ok] <= s.mem_ci_high[ok] + 1e-12))
    assert np.all((s.mem_ci_low[ok] >= -1 - 1e-12) & (s.mem_ci_high[ok] <= 1 + 1e-12))
    assert np.all((s.p_value[ok] > 0) & (s.p_value[ok] <= 1))
    assert np.all(np.isnan(s.mem[~ok]) & np.isnan(s.p_value[~ok]))


def test_memmap_input(tmp_path):
    keep, margins = random_run(3)
    np.save(tmp_path / "k.npy", keep)
    np.save(tmp_path / "m.npy", margins)
    a = estimators.compute_scores(np.load(tmp_path / "k.npy", mmap_mode="r"),
                               np.load(tmp_path / "m.npy", mmap_mode="r"), chunk_size=4)
    b = estimators.compute_scores(keep, margins)
    np.testing.assert_array_equal(a.mem, b.mem)


# ---------------------------------------------------------------------------------------------
# Statistical validity on simulated counts with known acc_in / acc_out
# ---------------------------------------------------------------------------------------------

def test_newcombe_coverage_near_nominal():
    rng = np.random.default_rng(0)
    covs = []
    for n_in, n_out in [(70, 30), (35, 15), (140, 60)]:
        for p_in in (0.2, 0.5, 0.8, 0.95):
            for p_out in (0.1, 0.4, 0.7):
                sims = 4000
                k_in = rng.binomial(n_in, p_in, sims)
                k_out = rng.binomial(n_out, p_out, sims)
                lo, hi = estimators.newcombe_interval(k_in, np.full(sims, n_in), k_out,
                                                   np.full(sims, n_out), 0.95)
                truth = p_in - p_out
                covs.append(np.mean((lo <= truth) & (truth <= hi)))
    covs = np.array(covs)
    assert abs(covs.mean() - 0.95) < 0.02, covs.mean()
    assert covs.min() > 0.90, covs.min()  # no single scenario badly off


def test_fisher_p_values_valid_under_null_and_powerful_otherwise():
    rng = np.random.default_rng(1)
    sims = 20_000
    for n_in, n_out, p in [(70, 30, 0.5), (70, 30, 0.9), (28, 12, 0.3), (140, 60, 0.97)]:
        k_in = rng.binomial(n_in, p, sims)
        k_out = rng.binomial(n_out, p, sims)
        pv = estimators.fisher_one_sided(k_in, np.full(sims, n_in), k_out, np.full(sims, n_out))
        for alpha in (0.01, 0.05, 0.1):
            # Fisher is conservative for discrete data: P(p <= alpha) <= alpha (+ MC slack).
            assert np.mean(pv <= alpha) <= alpha + 3 * np.sqrt(alpha / sims) + 1e-3, (p, alpha)
    # Under an alternative it must reject often (guards against a p-value stuck at 1).
    k_in = rng.binomial(70, 0.9, sims)
    k_out = rng.binomial(30, 0.5, sims)
    pv = estimators.fisher_one_sided(k_in, np.full(sims, 70), k_out, np.full(sims, 30))
    assert np.mean(pv <= 0.05) > 0.9


# ---------------------------------------------------------------------------------------------
# Validation at the boundary
# ---------------------------------------------------------------------------------------------

def test_input_validation_names_the_array():
    keep, margins = random_run(0, R=5, N=4)
    with pytest.raises(JmemError, match="margins"):
        estimators.compute_scores(keep, margins[:, :3])
    with pytest.raises(JmemError, match="margins.*models"):
        estimators.compute_scores(keep, margins[:4])
    bad = margins.copy()
    bad[2, 3] = np.nan
    with pytest.raises(JmemError, match=r"margins_train.*model 2, example 3"):
        estimators.compute_scores(keep, bad, name="margins_train", chunk_size=2)
    with pytest.raises(JmemError, match="keep"):
        estimators.compute_scores(keep.astype(int) * 2, margins)
    with pytest.raises(JmemError, match="keep"):
        estimators.compute_scores(keep[0], margins)
    with pytest.raises(JmemError, match="dtype"):
        estimators.compute_scores(keep, margins.astype(int))
    # 0/1 integers are accepted as a mask.
    s = estimators.compute_scores(keep.astype(np.uint8), margins)
    np.testing.assert_array_equal(s.n_in, keep.sum(0))


# ---------------------------------------------------------------------------------------------
# Several rates
# ---------------------------------------------------------------------------------------------

def test_scores_by_rate_and_cscore():
    keep, margins = random_run(5, R=60, N=20)
    rates = np.repeat([0.3, 0.7, 0.5], 20).astype(np.float32)
    by = estimators.scores_by_rate(keep, margins, rates)
    assert list(by) == pytest.approx([0.3, 0.5, 0.7])
    ref = estimators.compute_scores(keep[40:], margins[40:])
    np.testing.assert_array_equal(by[0.5].mem, ref.mem)
    cs = estimators.cscore_over_rates(by)
    np.testing.assert_allclose(cs, np.nanmean(np.stack([s.acc_out for s in by.values()]), 0))
    curve = estimators.rate_curve(by)
    assert [c["rate"] for c in curve] == pytest.approx([0.3, 0.5, 0.7])
    assert all(c["num_models"] == 20 for c in curve)
    with pytest.raises(JmemError, match="model_rates"):
        estimators.scores_by_rate(keep, margins, rates[:10])


# ---------------------------------------------------------------------------------------------
# Influence
# ---------------------------------------------------------------------------------------------

def naive_influence(keep, margins_test):
    R, N = keep.shape
    T = margins_test.shape[1]
    correct = margins_test > 0
    out = np.full((N, T), np.nan)
    for i in range(N):
        if keep[:, i].any() and (~keep[:, i]).any():
            for j in range(T):
                out[i, j] = correct[keep[:, i], j].mean() - correct[~keep[:, i], j].mean()
    return out


def influence_matrix(keep, margins_test, chunk_size=estimators.DEFAULT_CHUNK):
    """float32[N, T]: every block of :func:`estimators.iter_influence`, put together."""
    correct = estimators.correct_matrix(margins_test, keep.shape[0])
    out = np.empty((keep.shape[1], correct.shape[1]), np.float32)
    for sl, infl in estimators.iter_influence(keep, correct, chunk_size=chunk_size):
        out[sl] = infl.T
    return out


def test_influence_hand_case():
    keep = np.array([[1, 0], [1, 1], [0, 1], [0, 1]], bool)
    mt = np.array([[1.0], [1.0], [-1.0], [1.0]], np.float32)
    infl = influence_matrix(keep, mt)
    # train 0: in {0,1} both right, out {2,3} half right -> 0.5;
    # train 1: in {1,2,3} 2/3 right, out {0} right -> -1/3.
    np.testing.assert_allclose(infl[:, 0], [0.5, -1 / 3], rtol=1e-6)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), chunk=st.integers(1, 9), k=st.integers(1, 6))
def test_influence_summary_matches_full_matrix(seed, chunk, k):
    rng = np.random.default_rng(seed)
    R, N, T = 30, 17, 11
    keep = rng.random((R, N)) < 0.6
    keep[:, 0] = True  # one undefined column
    mt = rng.normal(0, 1, (R, T)).astype(np.float32)
    full = naive_influence(keep, mt)
    np.testing.assert_allclose(influence_matrix(keep, mt, chunk_size=chunk), full,
                               rtol=1e-5, atol=1e-6)
    mem = rng.uniform(-0.2, 1, N)
    lt, lte = rng.integers(0, 2, N), rng.integers(0, 2, T)
    summ = estimators.influence_summary(keep, mt, mem, lt, lte, k=k, mem_threshold=0.25,
                                     infl_threshold=0.1, chunk_size=chunk)
    # Top-k values equal the k largest of each column of the full matrix (NaN excluded).
    key = np.where(np.isnan(full), -np.inf, full)
    expect = -np.sort(-key, axis=0)[:k].T
    np.testing.assert_allclose(summ.top_value, expect, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(full[summ.top_index, np.arange(T)[:, None]], summ.top_value,
                               rtol=1e-5, atol=1e-6)
    assert np.all(summ.top_index != 0)
    # Pairs: exactly the naive set.
    want = {(i, j) for i in range(N) for j in range(T)
            if mem[i] >= 0.25 and full[i, j] >= 0.1 - 1e-6 and lt[i] == lte[j]}
    got = set(zip(summ.pair_train.tolist(), summ.pair_test.tolist()))
    borderline = {(i, j) for i, j in want ^ got if abs(full[i, j] - 0.1) < 1e-5}
    assert want ^ got <= borderline


def test_influence_summary_refuses_too_many_pairs_and_bad_labels():
    keep, _ = random_run(0, R=20, N=10)
    mt = np.ones((20, 5), np.float32)
    with pytest.raises(JmemError, match="max_pairs"):
        estimators.influence_summary(keep, mt, np.ones(10), np.zeros(10, int), np.zeros(5, int),
                                  mem_threshold=0, infl_threshold=-1, max_pairs=3)
    with pytest.raises(JmemError, match="labels_test"):
        estimators.influence_summary(keep, mt, np.ones(10), np.zeros(10, int), np.zeros(4, int))


def test_import_graph_stays_light():
    code = ("import sys, jmem.scores.estimators, jmem.scores.thresholds, jmem.data.canaries, jmem.study.scoring; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('flax', 'optax') "
            "or m in ('jmem.engine.trainer', 'jmem.engine.models', 'jmem.engine.predict')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
