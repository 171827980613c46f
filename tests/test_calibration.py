"""The null-calibrated threshold on data where the answer is known by construction."""

import numpy as np
import pytest

from jmem.scores import calibration, estimators, thresholds
from jmem.scores.calibration import calibrated_threshold, exact_null, score_of_counts, shuffled_null


def _balanced_keep(num_models, num_examples, rate, gen):
    """Every example in exactly rate * R models (the LiRA design)."""
    u = gen.random((num_models, num_examples))
    ranks = np.argsort(np.argsort(u, axis=0), axis=0)
    return ranks < round(rate * num_models)


def _simulate(num_models, rate, acc_in, acc_out, seed):
    """keep bool[R, N] and margins (+1 correct, -1 wrong) with P(correct) = acc_in[i] for
    models trained on i and acc_out[i] for the others."""
    gen = np.random.default_rng(seed)
    keep = _balanced_keep(num_models, acc_in.size, rate, gen)
    p = np.where(keep, acc_in[None, :], acc_out[None, :])
    correct = gen.random(keep.shape) < p
    return keep, np.where(correct, 1.0, -1.0)


def _digits_mix(num_examples, gen, memorized_share=0.0):
    """93% easy (always right), the rest hard (held-out accuracy 0.2-0.9, no memorization),
    of which ``memorized_share`` of all examples memorized (in 0.95, out 0-0.3)."""
    acc = np.ones(num_examples)
    hard = gen.random(num_examples) >= 0.93
    acc[hard] = gen.uniform(0.2, 0.9, hard.sum())
    acc_in, acc_out = acc.copy(), acc.copy()
    mem = np.zeros(num_examples, bool)
    if memorized_share:
        mem[gen.choice(np.flatnonzero(~hard), int(memorized_share * num_examples), replace=False)] = True
        acc_in[mem], acc_out[mem] = 0.95, gen.uniform(0.0, 0.3, mem.sum())
    return acc_in, acc_out, hard & ~mem, mem


# Equal held-out precision: 48 out-models per example at either rate.
RATES = [(0.7, 160), (0.95, 960)]


@pytest.mark.parametrize("rate,num_models", RATES)
@pytest.mark.parametrize("definition", ["mem", "fractional"])
def test_null_share_selected_is_below_q(rate, num_models, definition):
    gen = np.random.default_rng(1)
    q, selected_null, hard_total = 0.05, 0, 0
    for rep in range(3):
        acc_in, acc_out, hard, _ = _digits_mix(2000, gen)
        keep, margins = _simulate(num_models, rate, acc_in, acc_out, seed=100 + rep)
        counts = estimators.example_counts(keep, margins)
        scores = score_of_counts(definition, counts.correct_in, counts.n_in, counts.correct_out, counts.n_out)
        result = calibrated_threshold(scores, counts, definition, q=q)
        selected_null += int(result.selected[hard].sum())
        hard_total += int(hard.sum())
        assert not result.selected[~hard].any()  # easy examples have a null at exactly 0
    assert selected_null / hard_total <= q


def test_pooled_placebo_quantile_collapses_where_the_exact_null_does_not():
    """The defect this module fixes: with most examples easy, the pooled placebo quantile is 0
    and selects about half of the hard null examples."""
    gen = np.random.default_rng(2)
    acc_in, acc_out, hard, _ = _digits_mix(2000, gen)
    keep, margins = _simulate(160, 0.7, acc_in, acc_out, seed=3)
    scores = estimators.compute_scores(keep, margins)
    placebo = thresholds.placebo_scores(keep, margins, seed=0).scores
    pooled = thresholds.null_threshold(scores.mem, placebo, fpr=0.05)
    assert pooled.threshold == 0.0 and pooled.selected[hard].mean() > 0.3
    counts = estimators.example_counts(keep, margins)
    exact = calibrated_threshold(scores.mem, counts, "mem", q=0.05)
    assert exact.selected[hard].mean() <= 0.05


@pytest.mark.parametrize("rate,num_models", RATES)
@pytest.mark.parametrize("definition", ["mem", "fractional"])
def test_planted_memorized_examples_are_found(rate, num_models, definition):
    gen = np.random.default_rng(4)
    acc_in, acc_out, hard_null, mem = _digits_mix(2000, gen, memorized_share=0.02)
    keep, margins = _simulate(num_models, rate, acc_in, acc_out, seed=5)
    counts = estimators.example_counts(keep, margins)
    scores = score_of_counts(definition, counts.correct_in, counts.n_in, counts.correct_out, counts.n_out)
    result = calibrated_threshold(scores, counts, definition, q=0.05)
    assert result.selected[mem].mean() >= 0.9
    false = result.selected & ~mem
    assert false.sum() / max(1, result.n_selected) <= 0.1  # FDR 0.05, one draw
    assert result.selected[hard_null].mean() <= 0.05
    assert result.details["estimated_fdr"] <= 0.05 and result.threshold > 0


def test_eligible_examples_only():
    """Canaries (or any excluded example) are never selected and do not enter the null."""
    gen = np.random.default_rng(6)
    acc_in, acc_out, _, mem = _digits_mix(1000, gen, memorized_share=0.05)
    keep, margins = _simulate(160, 0.7, acc_in, acc_out, seed=7)
    counts = estimators.example_counts(keep, margins)
    scores = estimators.scores_from_counts(counts).mem
    excluded = mem & (np.arange(1000) % 2 == 0)
    result = calibrated_threshold(scores, counts, "mem", q=0.05, eligible=~excluded)
    assert not result.selected[excluded].any()
    assert result.selected[mem & ~excluded].mean() >= 0.9
    assert result.details["n_eligible"] == 1000 - excluded.sum()


def test_exact_null_matches_simulation():
    """E0(t) for one example equals the hypergeometric tail, checked by simulation."""
    counts = estimators.Counts(*(np.array([v]) for v in (30, 10, 12, 5, np.nan, np.nan, np.nan, np.nan)))
    null = exact_null(counts, "mem")
    gen = np.random.default_rng(8)
    correct = np.array([1] * 17 + [0] * 23)
    draws = np.array([gen.permutation(correct)[:30].sum() for _ in range(20000)])
    sim_mem = draws / 30 - (17 - draws) / 10
    for t in (0.0, 0.1, 0.2, 0.3):
        assert null.expected_at_least(t) == pytest.approx(np.mean(sim_mem >= t - 1e-12), abs=0.01)
    assert null.expected_at_least(10.0) == 0.0
    assert float(null.expected_at_least(-10.0)) == pytest.approx(1.0)


def test_shuffled_null_keeps_counts_and_breaks_memorization():
    gen = np.random.default_rng(9)
    acc_in, acc_out, _, mem = _digits_mix(1000, gen, memorized_share=0.05)
    keep, margins = _simulate(160, 0.7, acc_in, acc_out, seed=10)
    null_keep = shuffled_null(keep, seed=11)
    assert (null_keep.sum(axis=0) == keep.sum(axis=0)).all()
    counts = estimators.example_counts(null_keep, margins)
    scores = estimators.scores_from_counts(counts).mem
    assert calibrated_threshold(scores, counts, "mem", q=0.05).selected.mean() <= 0.05


def test_no_cut_reaches_q_selects_nothing():
    counts = estimators.Counts(*(np.array([v, v]) for v in (5, 5, 3, 2, np.nan, np.nan, np.nan, np.nan)))
    result = calibrated_threshold(np.array([0.2, 0.2]), counts, "mem", q=0.05)
    assert result.n_selected == 0 and np.isnan(result.threshold)


def test_bad_inputs_name_the_field():
    counts = estimators.Counts(*(np.array([1]) for _ in range(8)))
    with pytest.raises(Exception, match="calibrated_q"):
        calibrated_threshold(np.array([0.1]), counts, "mem", q=1.5)
    with pytest.raises(Exception, match="definition"):
        calibration.score_of_counts("lira", 1, 1, 1, 1)
