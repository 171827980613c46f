"""The protocols of the removal question: Feldman & Zhang's, the critique's corrected one, and
every cell of the ablation between them. Pure numpy: scores in, selections out.

A protocol is four switches, one per correction the 2026 critique names (BACKGROUND
section 1; OpenReview eAVPivm2jv), each defined here and nowhere else:

========== ========================================= ==========================================
factor     off (Feldman & Zhang 2020)                on (the critique's correction)
========== ========================================= ==========================================
rate       scores from the models trained at rate    scores from the models at rate 0.95
           0.7 (F&Z's subsampling)                   (closer to leave-one-out: less bias)
definition ``mem = acc_in - acc_out`` (F&Z eq. 1)    the fractional difference
                                                     ``(acc_in - acc_out) / (acc_in + acc_out)``
                                                     (0 below ``fractional_floor`` of acc_in)
threshold  hand-picked: ``score >= 0.25`` (F&Z's     null-calibrated: the cut on the same score
           cut for mem; the same number for the      whose estimated false discovery rate under
           fractional score, ``fractional_threshold``) each example's exact null is at most
                                                     ``calibrated_q`` (:mod:`.calibration`)
leakage    accuracy on the original test set         on the leakage-free test set (test
                                                     examples with a training near-duplicate
                                                     removed)
========== ========================================= ==========================================

Every score a selection reads comes from the models of one inclusion rate (pooling rates
biases ``mem`` upward: the high-rate models are mostly "in" and more accurate). The first
three factors decide *which examples are removed*, the fourth only *where the effect is
measured*: 16 cells, 8 removal sets. Each cell's rule is one of four (:data:`RULES`);
jmem's own rule, a one-sided Fisher test per example with Benjamini-Hochberg at ``fdr_q``
and a minimum effect ``mem >= min_effect`` (``"fdr"``), is an extra arm beyond the factorial.

Canaries (labels re-drawn at random) validate the scores; they are never eligible for a
selection (``eligible`` masks them out) and never enter a removal set.

Size-matched selections (:func:`top_k`): every cell's own top ``k`` by its own score, so a
comparison across cells says what changing *which* examples does, not *how many*. Under
size matching the threshold factor changes nothing (a cut on a score and the top k of the
same score rank alike), which is why it is estimable only "as defined".
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jmem.errors import JmemError
from jmem.scores import calibration, estimators, thresholds

FACTORS = ("rate", "definition", "threshold", "leakage")

# (definition on, threshold on) -> the rule that cell applies.
RULES = {(False, False): "fixed", (True, False): "fractional",
         (False, True): "calibrated", (True, True): "calibrated_fractional"}
EXTRA_RULES = ("fdr",)
ALL_RULES = tuple(RULES.values()) + EXTRA_RULES
RULE_SCORE = {"fixed": "mem", "fractional": "fractional", "calibrated": "mem",
              "calibrated_fractional": "fractional", "fdr": "mem"}
RULE_TEXT = {"fixed": "mem >= {fixed_threshold:g} (F&Z's hand-picked cut)",
             "fractional": "fractional >= {fractional_threshold:g} (hand-picked)",
             "calibrated": "mem >= the null-calibrated cut (estimated FDR <= {calibrated_q:g})",
             "calibrated_fractional": "fractional >= the null-calibrated cut (estimated FDR <= {calibrated_q:g})",
             "fdr": "one-sided Fisher p, Benjamini-Hochberg q <= {fdr_q:g}, mem >= {min_effect:g} (jmem)"}


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
    def rule(self) -> str:
        return RULES[(self.definition, self.threshold)]

    @property
    def score(self) -> str:
        """The score the cell ranks by: "mem" or "fractional"."""
        return "fractional" if self.definition else "mem"

    @property
    def name(self) -> str:
        """``fz`` for all-off, ``corrected`` for all-on, else the corrections that are on."""
        on = [f for f in FACTORS if getattr(self, f)]
        if not on:
            return "fz"
        return "corrected" if len(on) == len(FACTORS) else "+".join(on)


FZ = Protocol(False, False, False, False)
CORRECTED = Protocol(True, True, True, True)


def all_protocols() -> list[Protocol]:
    """The 16 cells, all-off (F&Z) first and all-on (corrected) last, in binary order of
    (rate, definition, threshold, leakage) with rate the slowest."""
    cells = []
    for code in range(16):
        bits = [(code >> (3 - i)) & 1 for i in range(4)]
        cells.append(Protocol(*map(bool, bits)))
    return cells


@dataclasses.dataclass(frozen=True)
class SelectionOptions:
    """The numbers of the rules (defaults: ``jmem.config.ScoreConfig``'s)."""

    fixed_threshold: float = 0.25
    fractional_threshold: float = 0.25
    calibrated_q: float = 0.05
    fractional_floor: float = estimators.DEFAULT_FRACTIONAL_FLOOR
    fdr_q: float = 0.1
    min_effect: float = 0.1

    def describe(self, rule: str) -> str:
        return RULE_TEXT[rule].format(**dataclasses.asdict(self))


def counts_of(scores: estimators.ExampleScores) -> estimators.Counts:
    """The integer counts behind ``scores`` (margin moments left NaN)."""
    nan = np.full(scores.n_in.shape, np.nan)
    return estimators.Counts(scores.n_in, scores.n_out, scores.correct_in, scores.correct_out,
                             nan, nan, nan, nan)


def _eligible(eligible, n: int) -> np.ndarray:
    if eligible is None:
        return np.ones(n, bool)
    eligible = np.asarray(eligible, bool)
    if eligible.shape != (n,):
        raise JmemError(f"eligible has shape {eligible.shape}; expected bool[{n}]")
    return eligible


def apply_rule(rule: str, scores: estimators.ExampleScores, options: SelectionOptions = SelectionOptions(),
               eligible=None) -> thresholds.ThresholdResult:
    """The examples ``rule`` selects from ``scores`` (the models of one rate).

    eligible: bool[N] or None: the candidates (every non-canary example); the others are
    never selected and (for the calibrated rules and BH) do not enter the null or the count
    of tests.
    """
    n = scores.mem.shape[0]
    ok = _eligible(eligible, n)
    if rule == "fixed":
        result = thresholds.fixed_threshold(scores.mem, options.fixed_threshold, "mem")
    elif rule == "fractional":
        result = thresholds.fixed_threshold(scores.fractional, options.fractional_threshold, "fractional")
    elif rule in ("calibrated", "calibrated_fractional"):
        definition = RULE_SCORE[rule]
        return calibration.calibrated_threshold(getattr(scores, definition), counts_of(scores), definition,
                                                options.calibrated_q, options.fractional_floor, eligible=ok)
    elif rule == "fdr":
        p = np.where(ok, scores.p_value, np.nan)  # ineligible examples are not tested
        return thresholds.fdr_threshold(p, scores.mem, options.fdr_q, options.min_effect)
    else:
        raise JmemError(f"selection rule {rule!r} is not one of {', '.join(ALL_RULES)}")
    return dataclasses.replace(result, selected=result.selected & ok,
                               details={**result.details, "n_eligible": int(ok.sum())})


def top_k(score, k: int, eligible=None) -> np.ndarray:
    """bool[N]: the ``k`` eligible examples with the highest finite ``score`` (ties to the
    lower index): a size-matched selection. Fewer if fewer are eligible and finite."""
    score = np.asarray(score, np.float64)
    ok = _eligible(eligible, score.size) & np.isfinite(score)
    if k < 0:
        raise JmemError(f"size-matched k={k} must be >= 0")
    candidates = np.flatnonzero(ok)
    order = candidates[np.argsort(-score[candidates], kind="stable")]
    out = np.zeros(score.size, bool)
    out[order[:k]] = True
    return out


def rate_rows(model_rates, rate: float) -> np.ndarray:
    """bool[R]: the models drawn at inclusion rate ``rate`` (to 6 decimals)."""
    rates = np.round(np.asarray(model_rates, np.float64), estimators.RATE_DECIMALS)
    rows = rates == round(float(rate), estimators.RATE_DECIMALS)
    if not rows.any():
        raise JmemError(f"rate={rate} matches no model; the run's rates are {sorted(set(rates.tolist()))}")
    return rows


def scores_at(keep, margins, rows, **kwargs) -> estimators.ExampleScores:
    """The per-example scores of the models ``rows`` (bool[R] or int indices) of one rate."""
    rows = np.asarray(rows)
    rows = np.flatnonzero(rows) if rows.dtype == bool else rows
    return estimators.compute_scores(np.asarray(keep)[rows], np.asarray(margins)[rows], **kwargs)


def cell_selections(by_rate: dict, low_rate: float, high_rate: float, options: SelectionOptions,
                    eligible=None) -> dict:
    """The 8 removal sets of the ablation as defined: selection_key -> ThresholdResult.

    by_rate: {rate: ExampleScores} of the models that select (one rate each, e.g. one
    cross-fitting half); the rate factor reads ``low_rate`` (off) or ``high_rate`` (on).
    """
    out = {}
    for high in (False, True):
        scores = by_rate[high_rate if high else low_rate]
        for definition in (False, True):
            for threshold in (False, True):
                cell = Protocol(high, definition, threshold, False)
                out[cell.selection_key] = apply_rule(cell.rule, scores, options, eligible)
    return out


def size_matched_selections(by_rate: dict, low_rate: float, high_rate: float, k: int,
                            eligible=None) -> dict:
    """The size-matched removal sets: (rate, definition) -> bool[N], each cell's top ``k`` by
    its own score at its own rate (the threshold factor has no size-matched version)."""
    out = {}
    for high in (False, True):
        scores = by_rate[high_rate if high else low_rate]
        for definition in (False, True):
            name = "fractional" if definition else "mem"
            out[(high, definition)] = top_k(getattr(scores, name), k, eligible)
    return out
