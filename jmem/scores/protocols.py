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
from jmem.scores import thresholds
from jmem.scores.estimators import ExampleScores
from jmem.scores.factorial import cell_levels

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


def select(protocol: Protocol, scores: ExampleScores, placebo: np.ndarray,
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
    return [Protocol.from_levels(levels) for levels in cell_levels(list(FACTORS))]
