"""The generalising interval: coverage on simulations with a known effect, test-example
heterogeneity, seed noise and selection noise; the seed-only interval's failure there."""

import numpy as np
import pytest
from scipy import stats

from jmem.scores.generalising import crossed_interval, minimum_detectable_effect, p_value

HARD_SHARE, MU = 0.15, -0.05  # the true effect is HARD_SHARE * MU = -0.75 pp


def simulate(gen, pools=2, seeds=20, tests=400, selection_sd=0.01, seed_sd=0.02, pool_x_test_sd=0.05):
    """d[k, s, j] for a removal that lowers the accuracy of hard test examples.

    Test examples are drawn from a population: 15% hard (accuracy 0.3-0.7, removal effect
    MU + N(0, 0.08)), the rest always right. Each estimation pool's selection shifts the
    effect on hard examples (selection_sd, common; pool_x_test_sd, per example); each seed
    adds noise (seed_sd). Paired arms share a uniform per (pool, seed, example), as coupled
    training makes their outcomes correlated.
    """
    hard = gen.random(tests) < HARD_SHARE
    p = np.where(hard, gen.uniform(0.3, 0.7, tests), 0.99)
    effect = np.where(hard, MU + gen.normal(0, 0.08, tests), 0.0)
    pool_effect = (effect[None]
                   + hard[None] * (gen.normal(0, selection_sd, (pools, 1)) + gen.normal(0, pool_x_test_sd, (pools, tests))))
    shift = pool_effect[:, None, :] + hard[None, None] * gen.normal(0, seed_sd, (pools, seeds))[:, :, None]
    u = gen.random((pools, seeds, tests))
    return (u < p + shift).astype(float) - (u < p)


def coverage(pools, selection_sd, reps=1000, seed=0):
    gen = np.random.default_rng(seed)
    truth = HARD_SHARE * MU
    hits = 0
    for _ in range(reps):
        ci = crossed_interval(simulate(gen, pools=pools, selection_sd=selection_sd))
        hits += ci.low <= truth <= ci.high
    return hits / reps


@pytest.mark.parametrize("pools,selection_sd", [(2, 0.0), (2, 0.01), (1, 0.0), (4, 0.03)])
def test_coverage_is_nominal(pools, selection_sd):
    assert 0.93 <= coverage(pools, selection_sd) <= 0.97


def test_seed_only_interval_undercovers_new_test_data():
    """The defect the generalising interval fixes: seeds alone, test set fixed."""
    gen = np.random.default_rng(1)
    truth, hits, reps = HARD_SHARE * MU, 0, 400
    for _ in range(reps):
        per_seed = simulate(gen, pools=1)[0].mean(axis=1)  # accuracy difference per seed
        half = stats.t.ppf(0.975, per_seed.size - 1) * per_seed.std(ddof=1) / np.sqrt(per_seed.size)
        hits += abs(per_seed.mean() - truth) <= half
    assert hits / reps < 0.8


def test_components_and_shapes():
    gen = np.random.default_rng(2)
    ci = crossed_interval(simulate(gen, pools=2, selection_sd=0.05))
    assert ci.selection_covered and ci.pools == 2 and ci.seeds == 20 and ci.tests == 400
    assert ci.low < ci.estimate < ci.high
    assert sum(ci.components.values()) == pytest.approx(1.0)
    assert set(ci.components) == {"selection", "seeds", "test_examples", "selection_x_test", "cells"}
    one = crossed_interval(simulate(gen, pools=1)[0])  # [S, T] is one pool
    assert not one.selection_covered and set(one.components) == {"seeds", "test_examples", "seed_x_test"}
    record = ci.to_json()
    assert record["ci_low"] == pytest.approx(100 * ci.low)
    # a stricter level (a multiplicity-adjusted decision) widens the interval
    strict = crossed_interval(simulate(np.random.default_rng(2), pools=2, selection_sd=0.05), level=0.99)
    assert strict.high - strict.low > ci.high - ci.low


def test_exact_zero_differences():
    ci = crossed_interval(np.zeros((2, 5, 10)))
    assert ci.estimate == 0 and ci.se == 0 and ci.low == ci.high == 0
    assert p_value(ci) == 1.0


def test_mde():
    assert minimum_detectable_effect(1.0, float("inf"), 0.05, 0.8) == pytest.approx(1.959964 + 0.841621, rel=1e-5)
    assert minimum_detectable_effect(1.0, 5, 0.05) > minimum_detectable_effect(1.0, 50, 0.05)
    assert minimum_detectable_effect(1.0, 50, 0.05 / 4) > minimum_detectable_effect(1.0, 50, 0.05)


def test_bad_input():
    with pytest.raises(Exception, match="shape"):
        crossed_interval(np.zeros((2, 1, 10)))
    with pytest.raises(Exception, match="non-finite"):
        crossed_interval(np.full((2, 3, 3), np.nan))


def test_pooled_selection_variance_covers_whatever_the_selection_noise():
    """Twelve comparisons of one experiment, each with its own pool effects of one common
    variance: with the variance pooled over them, each interval covers at about 0.95 even
    where one comparison's own one-degree-of-freedom estimate under-covers (0.89)."""
    from jmem.scores.generalising import pooled_selection_variance

    truth = HARD_SHARE * MU
    for sd in (0.0, 0.05):
        gen = np.random.default_rng(7)
        hits = n = 0
        for _ in range(150):
            ds = [simulate(gen, pools=2, selection_sd=sd) for _ in range(12)]
            pooled = pooled_selection_variance(ds)
            for d in ds:
                ci = crossed_interval(d, selection=pooled)
                hits += ci.low <= truth <= ci.high
                n += 1
        assert 0.93 <= hits / n <= 0.98, (sd, hits / n)
    assert pooled_selection_variance([]) == (0.0, float("inf"))
