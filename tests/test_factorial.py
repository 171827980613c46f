"""jmem.scores.factorial: main effects and interactions of a paired 2^k design."""

import numpy as np
import pytest

from jmem.errors import JmemError
from jmem.scores import factorial

FACTORS = ["rate", "definition", "threshold", "leakage"]


def simulate(effects: dict, interaction: float = 0.0, seeds: int = 40, noise: float = 0.5, seed: int = 0):
    """responses[S, 16] = sum of the main effects of the factors that are on (pp), plus
    ``interaction`` when rate and leakage are both on, plus a per-seed shift shared by every
    cell (paired seeds) and independent noise."""
    levels = factorial.cell_levels(FACTORS)
    gen = np.random.default_rng(seed)
    mean = np.array([sum(v for f, v in effects.items() if cell[f]) + interaction * (cell["rate"] and cell["leakage"])
                     for cell in levels])
    shared = gen.normal(0, 3.0, (seeds, 1))  # large seed effect: pairing must cancel it
    return levels, mean[None, :] + shared + gen.normal(0, noise, (seeds, len(levels)))


def by_name(effects):
    return {" x ".join(e.factors): e for e in effects}


def test_cells_cover_the_design_once():
    levels = factorial.cell_levels(FACTORS)
    assert len(levels) == 16
    assert len({tuple(c.values()) for c in levels}) == 16
    assert levels[0] == dict.fromkeys(FACTORS, False)


def test_contrast_signs_are_balanced():
    levels = factorial.cell_levels(FACTORS)
    for names in (("rate",), ("rate", "leakage")):
        s = factorial.contrast_signs(levels, names)
        assert s.sum() == pytest.approx(0)
        assert np.abs(s).sum() == pytest.approx(2)


def test_recovers_a_main_effect_and_nothing_else():
    levels, y = simulate({"rate": 2.0, "definition": 0.0, "threshold": 0.0, "leakage": 0.0})
    eff = by_name(factorial.factorial_effects(y, levels, resamples=2000, rng=np.random.default_rng(1)))
    assert eff["rate"].estimate == pytest.approx(2.0, abs=0.2)
    assert eff["rate"].ci_low > 0 and eff["rate"].p_perm < 0.001
    for f in ("definition", "threshold", "leakage"):
        assert abs(eff[f].estimate) < 0.2
        assert eff[f].ci_low < 0 < eff[f].ci_high or abs(eff[f].estimate) < 0.1
    # the shared seed shift (sd 3 pp) cancels in the paired contrast: intervals stay narrow
    assert eff["rate"].ci_high - eff["rate"].ci_low < 0.5


def test_recovers_an_interaction():
    levels, y = simulate({"rate": 0.0, "definition": 0.0, "threshold": 0.0, "leakage": 0.0}, interaction=4.0)
    eff = by_name(factorial.factorial_effects(y, levels, resamples=2000, rng=np.random.default_rng(2)))
    # y = 4 * [rate and leakage]: main effects 2 each, interaction (half-difference) 2
    assert eff["rate"].estimate == pytest.approx(2.0, abs=0.2)
    assert eff["leakage"].estimate == pytest.approx(2.0, abs=0.2)
    assert eff["rate x leakage"].estimate == pytest.approx(2.0, abs=0.2)
    assert abs(eff["definition x threshold"].estimate) < 0.2
    assert len([e for e in eff.values() if len(e.factors) == 2]) == 6


def test_holm_is_never_smaller_than_raw():
    levels, y = simulate({"rate": 1.0, "definition": 0.3, "threshold": 0.0, "leakage": -0.5}, seeds=12)
    for e in factorial.factorial_effects(y, levels, resamples=1000, rng=np.random.default_rng(3)):
        assert e.p_holm >= e.p_perm
        assert e.to_json()["factor"] == " x ".join(e.factors)


def test_deterministic_given_the_generator():
    levels, y = simulate({"rate": 1.0, "definition": 0, "threshold": 0, "leakage": 0}, seeds=10)
    a = factorial.factorial_effects(y, levels, resamples=500, rng=np.random.default_rng(7))
    b = factorial.factorial_effects(y, levels, resamples=500, rng=np.random.default_rng(7))
    assert a == b


def test_bad_input():
    levels = factorial.cell_levels(FACTORS)
    with pytest.raises(JmemError, match="responses has shape"):
        factorial.factorial_effects(np.zeros((5, 15)), levels, rng=np.random.default_rng(0))
    with pytest.raises(JmemError, match="exactly once"):
        factorial.factorial_effects(np.zeros((5, 15)), levels[:15], rng=np.random.default_rng(0))
    with pytest.raises(JmemError, match="non-finite"):
        factorial.factorial_effects(np.full((5, 16), np.nan), levels, rng=np.random.default_rng(0))
    with pytest.raises(JmemError, match="distinct"):
        factorial.cell_levels(["a", "a"])
