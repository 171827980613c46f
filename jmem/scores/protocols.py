"""The protocols of the removal question: Feldman & Zhang's, the corrected one, and every cell
of the ablation between them.

A protocol is four switches, one per correction the 2026 critique names (BACKGROUND section 1):

========== ======================================= ============================================
factor     off (Feldman & Zhang 2020)              on (corrected)
========== ======================================= ============================================
rate       scores from the 0.7-rate models         scores from the 0.95-rate models (closer to
                                                   leave-one-out, less subsampling bias)
definition ``mem = acc_in - acc_out``              a test: one-sided Fisher p of
                                                   ``acc_in > acc_out`` with ``mem >= min_effect``
threshold  hand-picked (``mem >= 0.25``; for the   calibrated (placebo-null quantile at
           test definition ``p <= 0.05`` per       ``null_fpr`` for mem; Benjamini-Hochberg at
           example, no multiplicity control)       ``fdr_q`` for the test)
leakage    accuracy on the original test set       on the leakage-free test set
========== ======================================= ============================================

The first three decide *which examples are removed*; the fourth only *where the effect is
measured*, so the 16 cells need 8 removal sets. Pure numpy: scores in, selections out.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jmem.errors import JmemError
from jmem.scores import estimators, factorial, paired, thresholds

FACTORS = ("rate", "definition", "threshold", "leakage")


@dataclasses.dataclass(frozen=True)
class Protocol:
    """One cell of the ablation: each correction on (True) or off (False)."""

    rate: bool
    definition: bool
    threshold: bool
    leakage: bool

    @classmethod
    def from_levels(cls, levels: dict) -> "Protocol":
        return cls(**{f: bool(levels[f]) for f in FACTORS})

    @property
    def levels(self) -> dict:
        return {f: getattr(self, f) for f in FACTORS}

    @property
    def selection_key(self) -> tuple[bool, bool, bool]:
        """The factors that decide the removal set (leakage only changes the test set)."""
        return (self.rate, self.definition, self.threshold)

    @property
    def name(self) -> str:
        """``fz`` for all-off, ``corrected`` for all-on, else the corrections that are on."""
        on = [f for f in FACTORS if getattr(self, f)]
        if not on:
            return "fz"
        return "corrected" if len(on) == len(FACTORS) else "+".join(on)


FZ = Protocol(False, False, False, False)
CORRECTED = Protocol(True, True, True, True)


@dataclasses.dataclass(frozen=True)
class SelectionOptions:
    """Numbers of the four selection rules (defaults: the scoring stage's)."""

    fixed_threshold: float = 0.25   # F&Z's hand-picked mem cut
    raw_alpha: float = 0.05         # the hand-picked per-example p cut of the test definition
    fdr_q: float = 0.1
    min_effect: float = 0.1
    null_fpr: float = 0.05


def pvalue_threshold(p_values, effect, alpha: float = 0.05, min_effect: float = 0.1) -> thresholds.ThresholdResult:
    """Select ``p <= alpha`` and ``effect >= min_effect``, one test per example with no
    multiplicity control: the test definition with a hand-picked cut (p_values, effect: float[N])."""
    p = np.asarray(p_values, np.float64)
    effect = np.asarray(effect, np.float64)
    if p.shape != effect.shape or p.ndim != 1:
        raise JmemError(f"p_values has shape {p.shape} and effect {effect.shape}; expected two float[N]")
    if not 0 < alpha < 1:
        raise JmemError(f"raw_alpha={alpha} must be in (0, 1)")
    with np.errstate(invalid="ignore"):
        selected = (p <= alpha) & (effect >= min_effect)
    n_tests = int((~np.isnan(p)).sum())
    return thresholds.ThresholdResult("raw_p", "p_value", float(alpha), selected, {
        "alpha": alpha, "min_effect": min_effect, "n_tests": n_tests,
        "expected_false_positives_if_all_null": alpha * n_tests, "n_nan": int(np.isnan(p).sum())})


def select(protocol: Protocol, scores: estimators.ExampleScores, placebo: np.ndarray,
           options: SelectionOptions = SelectionOptions()) -> thresholds.ThresholdResult:
    """The removal set of ``protocol`` from the scores of the models at its rate.

    scores: the example scores of those models; placebo: float[N], their placebo-null
    memorization (:func:`jmem.scores.thresholds.placebo_scores`).
    """
    if protocol.definition:
        if protocol.threshold:
            return thresholds.fdr_threshold(scores.p_value, scores.mem, options.fdr_q, options.min_effect)
        return pvalue_threshold(scores.p_value, scores.mem, options.raw_alpha, options.min_effect)
    if protocol.threshold:
        return thresholds.null_threshold(scores.mem, placebo, options.null_fpr)
    return thresholds.fixed_threshold(scores.mem, options.fixed_threshold)


def all_protocols() -> list[Protocol]:
    """The 16 cells, all-off (F&Z) first, in the order of :func:`jmem.scores.factorial.cell_levels`."""
    return [Protocol.from_levels(levels) for levels in factorial.cell_levels(list(FACTORS))]


def rate_rows(model_rates, rate: float) -> np.ndarray:
    """bool[R]: the models drawn at inclusion rate ``rate`` (to 6 decimals)."""
    rates = np.round(np.asarray(model_rates, np.float64), 6)
    rows = rates == round(float(rate), 6)
    if not rows.any():
        raise JmemError(f"rate={rate} matches no model; the run's rates are {sorted(set(rates.tolist()))}")
    return rows


def cell_selections(keep, margins, model_rates, *, low_rate: float, high_rate: float, placebo_seed,
                    rows=None, options: SelectionOptions = SelectionOptions()) -> dict:
    """The 8 removal sets of the ablation: selection_key -> ThresholdResult.

    keep: bool[R, N]; margins: float[R, N]; model_rates: float[R]. The rate factor chooses
    the models of ``low_rate`` (off) or ``high_rate`` (on); ``rows`` (bool[R], optional)
    restricts them further, e.g. to one cross-fitting half (:func:`jmem.scores.reliability.alternating_halves`). placebo_seed: entropy of the
    placebo null (see :func:`jmem.scores.thresholds.placebo_scores`).
    """
    out = {}
    for high in (False, True):
        use = rate_rows(model_rates, high_rate if high else low_rate)
        if rows is not None:
            use &= np.asarray(rows, bool)
        k, m = np.asarray(keep)[use], np.asarray(margins)[use]
        scores = estimators.compute_scores(k, m)
        placebo = thresholds.placebo_scores(k, m, seed=placebo_seed).scores
        for definition in (False, True):
            for threshold in (False, True):
                cell = Protocol(high, definition, threshold, False)
                out[cell.selection_key] = select(cell, scores, placebo, options)
    return out


def ablation_summary(diffs: dict, *, level: float = 0.95, resamples: int = 10_000,
                     rng: np.random.Generator) -> dict:
    """The ablation's JSON record from each cell's per-seed paired differences.

    diffs: Protocol -> float[S] (selected minus class-matched random removal, pp, on the
    cell's test set; the same S seeds in every cell). Returns {"factors", "cells": [{"name",
    "levels", "diff_pp", "ci_low", "ci_high", "p_perm"}], "main_effects", "interactions"}.
    """
    cells = all_protocols()
    missing = [c.name for c in cells if c not in diffs]
    if missing:
        raise JmemError(f"ablation needs all 16 cells; missing {missing[:3]}")
    responses = np.stack([np.asarray(diffs[c], np.float64) for c in cells], axis=1)
    cell_rows = []
    for c, col in zip(cells, responses.T):
        low, high = paired.bootstrap_mean_ci(col, level=level, resamples=resamples, rng=rng)
        cell_rows.append({"name": c.name, "levels": c.levels, "diff_pp": float(col.mean()),
                          "ci_low": low, "ci_high": high, "p_perm": paired.sign_flip_pvalue(col, rng=rng)})
    effects = factorial.factorial_effects(responses, [c.levels for c in cells], order=2, level=level,
                                          resamples=resamples, rng=rng)
    return {"factors": list(FACTORS), "seeds": int(responses.shape[0]), "cells": cell_rows,
            "main_effects": [e.to_json() for e in effects if len(e.factors) == 1],
            "interactions": [e.to_json() for e in effects if len(e.factors) == 2]}
