"""An interval for a removal effect that holds for new test data and new selections.

A removal comparison (the set a protocol selects against a class-matched random set of the
same size) is measured on ``S`` paired retraining seeds and ``T`` test examples. The
seed-only interval (bootstrap over the seeds' accuracy differences) treats the test set and
the selection as fixed, so it answers "did removing *this* set change accuracy on *these*
test images?". A verdict about memorization needs more: the same protocol on a new
estimation run selects a somewhat different set (selection noise: two 2,000-model CIFAR-100
estimates agree at Jaccard ~0.7), and a claim about accuracy is a claim about new test
images. This module's interval treats all three as random.

Design: ``K`` independent estimation pools (the study's cross-fitting halves, K = 2), each
selecting its own removal set; ``S`` paired seeds per pool (seeds nested in pools); the same
``T`` test examples for every pool and seed (crossed). With ``d[k, s, j]`` = correct after
removing pool k's selection minus correct after its matched random removal, on test example
j at seed s, the model is the random-effects ANOVA

    d[k,s,j] = theta + P_k + S(P)_ks + J_j + PJ_kj + e_ksj,

and the grand mean's variance, ``tau_P/K + var_S/(KS) + var_J/T + var_PJ/(KT) + var_e/(KST)``,
has an unbiased estimate from the mean squares:

    K S T * Var(mean) = MS_P + MS_J - MS_PJ.

Each component is estimated from its own mean squares and truncated at 0 (the selection
component ``S T tau_P = MS_P - MS_S(P) - MS_PJ + MS_e`` is the one that can come out
negative), the degrees of freedom by Satterthwaite, and the interval is ``mean +- t * SE``.
With K = 2 pools the selection component has one degree of freedom: when selections
disagree, the interval is wide, which is the honest answer. With K = 1 the selection is
treated as fixed and the design is the two-way seeds x test examples (said in the result).

Checked by simulation with a known effect, selection noise, seed noise and test-example
heterogeneity (tests/test_generalising.py): coverage within 0.93-0.97 at 0.95.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats

from jmem.errors import JmemError


@dataclasses.dataclass(frozen=True)
class CrossedInterval:
    """The mean paired difference with its generalising interval.

    estimate: the grand mean of d (a difference of accuracies, as a fraction);
    se: its standard error; df: Satterthwaite degrees of freedom; low, high: the interval at
    ``level``; components: each source's share of the variance (fractions summing to 1);
    pools, seeds, tests: the design's K, S, T; selection_covered: K >= 2.
    """

    estimate: float
    se: float
    df: float
    low: float
    high: float
    level: float
    components: dict
    pools: int
    seeds: int
    tests: int

    @property
    def selection_covered(self) -> bool:
        return self.pools >= 2

    def to_json(self, scale: float = 100.0) -> dict:
        """JSON-ready, differences scaled (default: to percentage points)."""
        return {"estimate_pp": self.estimate * scale, "se_pp": self.se * scale, "df": self.df,
                "ci_low": self.low * scale, "ci_high": self.high * scale, "level": self.level,
                "variance_shares": self.components, "pools": self.pools, "seeds": self.seeds,
                "test_examples": self.tests, "selection_noise_covered": self.selection_covered}


def _mean_squares_two_way(d: np.ndarray) -> dict:
    """Seeds x test examples, one observation per cell: MS_S, MS_J, MS_e with their df."""
    s, t = d.shape
    grand = d.mean()
    seed_means, test_means = d.mean(axis=1), d.mean(axis=0)
    ss_s = t * np.sum((seed_means - grand) ** 2)
    ss_j = s * np.sum((test_means - grand) ** 2)
    resid = d - seed_means[:, None] - test_means[None, :] + grand
    ss_e = np.sum(resid ** 2)
    return {"S": (ss_s / max(s - 1, 1), s - 1), "J": (ss_j / max(t - 1, 1), t - 1),
            "e": (ss_e / max((s - 1) * (t - 1), 1), (s - 1) * (t - 1))}


def _mean_squares_nested(d: np.ndarray) -> dict:
    """Pools (K) with seeds nested (S each), crossed with test examples (T)."""
    k, s, t = d.shape
    grand = d.mean()
    pool = d.mean(axis=(1, 2))                 # [K]
    seed = d.mean(axis=2)                      # [K, S]
    test = d.mean(axis=(0, 1))                 # [T]
    pool_test = d.mean(axis=1)                 # [K, T]
    ss_p = s * t * np.sum((pool - grand) ** 2)
    ss_sp = t * np.sum((seed - pool[:, None]) ** 2)
    ss_j = k * s * np.sum((test - grand) ** 2)
    ss_pj = s * np.sum((pool_test - pool[:, None] - test[None, :] + grand) ** 2)
    resid = d - seed[:, :, None] - pool_test[:, None, :] + pool[:, None, None]
    ss_e = np.sum(resid ** 2)
    df = {"P": k - 1, "S": k * (s - 1), "J": t - 1, "PJ": (k - 1) * (t - 1), "e": k * (s - 1) * (t - 1)}
    ss = {"P": ss_p, "S": ss_sp, "J": ss_j, "PJ": ss_pj, "e": ss_e}
    return {name: (ss[name] / max(df[name], 1), df[name]) for name in ss}


def _satterthwaite(terms: list[tuple[float, float, float]]) -> float:
    """df of ``sum(c * MS)`` for terms (coefficient c, MS, df): (sum)^2 / sum((c MS)^2 / df)."""
    total = sum(c * ms for c, ms, _ in terms)
    denom = sum((c * ms) ** 2 / df for c, ms, df in terms if df > 0 and ms > 0)
    if denom <= 0:
        return float("inf")
    # At least one degree of freedom: a combination that nearly cancels gives ~0 otherwise.
    return max(1.0, float(total ** 2 / denom))


def _checked(d) -> np.ndarray:
    d = np.asarray(d, np.float64)
    if d.ndim == 2:
        d = d[None]
    if d.ndim != 3 or min(d.shape[1:]) < 2:
        raise JmemError(f"paired differences have shape {d.shape}; need [pools, seeds >= 2, "
                        "test examples >= 2]")
    if not np.isfinite(d).all():
        raise JmemError("paired differences contain non-finite values")
    return d


def selection_variance(d) -> tuple[float, list]:
    """The unbiased estimate of the between-pool (selection) variance component of one
    comparison, in units of d's mean (``sigma2_P``), and its Satterthwaite terms
    (coefficient, mean square, df). d: float[K >= 2, S, T]. May be negative (noise)."""
    d = _checked(d)
    k, s, t = d.shape
    ms = _mean_squares_nested(d)
    c = 1.0 / (s * t)
    terms = [(c, ms["P"][0], ms["P"][1]), (-c, ms["S"][0], ms["S"][1]), (-c, ms["PJ"][0], ms["PJ"][1]),
             (c, ms["e"][0], ms["e"][1])]
    return float(sum(a * m for a, m, _ in terms)), terms


def pooled_selection_variance(ds: list) -> tuple[float, float]:
    """(sigma2_P, df): the selection variance pooled over several comparisons of one experiment
    (the mean of their unbiased estimates, floored at 0; Satterthwaite df of that mean). The
    common-variance assumption: every removal set of the experiment is as noisy from one
    estimation pool to the other; with two pools each comparison alone has one degree of
    freedom, the pool of C comparisons about C."""
    if not ds:
        return 0.0, float("inf")
    estimates, terms = zip(*(selection_variance(d) for d in ds))
    mean = float(np.mean(estimates))
    if mean <= 0:
        return 0.0, float("inf")
    flat = [(a / len(ds), m, f) for group in terms for a, m, f in group]
    return mean, _satterthwaite(flat)


def crossed_interval(d, level: float = 0.95, selection: tuple | None = None) -> CrossedInterval:
    """The generalising interval of the mean of ``d`` (module docstring).

    d: float[K, S, T] (pools x seeds x test examples) or float[S, T] (one pool). Values are
    per-example paired differences of correctness (-1, 0 or 1) or any real differences.
    level: the interval's coverage, e.g. 1 - alpha/m for a Holm-style adjusted decision.
    selection: (sigma2_P, df) from elsewhere (:func:`pooled_selection_variance`, scaled for a
    contrast) instead of this comparison's own one-degree-of-freedom estimate (K >= 2 only).
    """
    d = _checked(d)
    if not 0 < level < 1:
        raise JmemError(f"interval level {level} must be in (0, 1)")
    k, s, t = d.shape
    if k == 1:
        ms = _mean_squares_two_way(d[0])
        parts = {"seeds": max(ms["S"][0] - ms["e"][0], 0.0),
                 "test_examples": max(ms["J"][0] - ms["e"][0], 0.0),
                 "seed_x_test": ms["e"][0]}
        terms = [(1, ms["S"][0], ms["S"][1]), (1, ms["J"][0], ms["J"][1]), (-1, ms["e"][0], ms["e"][1])]
    else:
        ms = _mean_squares_nested(d)
        m = {name: v[0] for name, v in ms.items()}
        # K S T Var(mean) = S T sigma2_P + (MS_S + MS_J - MS_e): the selection component plus the
        # rest (seeds, test examples, selection x test, cells), each from its own mean squares.
        terms = [(1, m["S"], ms["S"][1]), (1, m["J"], ms["J"][1]), (-1, m["e"], ms["e"][1])]
        if selection is None:
            own, own_terms = selection_variance(d)
            sel = max(own, 0.0) * s * t
            if own > 0:
                terms += [(a * s * t, mean_square, f) for a, mean_square, f in own_terms]
        else:
            tau2, tau_df = selection
            sel = max(tau2, 0.0) * s * t
            if sel > 0:
                terms.append((1, sel, tau_df))
        parts = {"selection": sel, "seeds": max(m["S"] - m["e"], 0.0),
                 "test_examples": max(m["J"] - m["PJ"], 0.0),
                 "selection_x_test": max(m["PJ"] - m["e"], 0.0), "cells": m["e"]}
    total = sum(parts.values())
    var = total / (k * s * t)
    se = float(np.sqrt(var))
    df = _satterthwaite(terms)
    half = stats.t.ppf(0.5 + level / 2, df) * se if np.isfinite(df) else stats.norm.ppf(0.5 + level / 2) * se
    estimate = float(d.mean())
    shares = {name: (v / total if total > 0 else 0.0) for name, v in parts.items()}
    return CrossedInterval(estimate, se, df, estimate - half, estimate + half, level, shares, k, s, t)


def minimum_detectable_effect(se: float, df: float, alpha: float, power: float = 0.8) -> float:
    """The smallest true difference a two-sided test at ``alpha`` (already adjusted for the
    family) detects with probability ``power``, for an estimate with this ``se`` and ``df``:
    ``(t_{1-alpha/2} + t_{power}) * se``."""
    if not (0 < alpha < 1 and 0 < power < 1):
        raise JmemError(f"alpha={alpha} and power={power} must be in (0, 1)")
    dist = stats.t(df) if np.isfinite(df) else stats.norm()
    return float((dist.ppf(1 - alpha / 2) + dist.ppf(power)) * se)


def p_value(interval: CrossedInterval) -> float:
    """Two-sided p-value of H0 "no difference" on the interval's t statistic and df."""
    if interval.se == 0:
        return 1.0 if interval.estimate == 0 else 0.0
    z = abs(interval.estimate) / interval.se
    dist = stats.t(interval.df) if np.isfinite(interval.df) else stats.norm()
    return float(2 * dist.sf(z))
