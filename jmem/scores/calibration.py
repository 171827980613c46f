"""A threshold that holds its error rate: the memorization score cut-off at which the expected
share of false selections is at most ``q``, from each example's own exact null.

The critique's third correction asks for a threshold "from a null" instead of F&Z's
hand-picked ``mem >= 0.25``. A single quantile of a null pooled over all examples fails on
real data: most examples are easy, their null scores are exact zeros, so the quantile is 0
and the rule selects every example with ``mem > 0`` (BACKGROUND section 3). Here the null is
per example and exact:

* **Per-example null.** Under H0 "training on example i does not change whether a model
  classifies i correctly", the models' correctness on i is exchangeable between the in and
  out groups, so given the total number of correct models ``K`` the number correct among the
  ``n_in`` in models is hypergeometric: ``k_in ~ Hypergeom(n_in + n_out, K, n_in)``. This is
  the distribution behind Fisher's exact test. It depends on the example's own held-out
  difficulty through ``K``: an example every model gets right has a null at exactly 0, a
  hard one a wide null.
* **Any definition.** The score of a count, ``S(k_in)``, is whichever definition is in force
  (F&Z's ``mem = acc_in - acc_out`` or the critique's fractional difference, with its
  floor), so the null distribution of the score itself is exact, per example.
* **One cut-off on the score**, chosen like Benjamini-Hochberg's step-up but on the score
  scale (Storey's estimate of the false discovery rate with every example counted as null,
  pi0 = 1, which is conservative): for a candidate cut ``t``, the expected number of null
  examples scoring ``>= t`` is ``E0(t) = sum_i P0_i(S_i >= t)``; the rule takes the smallest
  observed positive ``t`` with ``E0(t) / #{S_i >= t} <= q`` and selects ``S_i >= t``. The
  result is a threshold on the definition's own scale, comparable with F&Z's 0.25.

The sum over examples is computed once per distinct count triple ``(n_in, n_out, K)``: a
balanced design has at most R + 1 of them, so N = 60,000 costs milliseconds.

Test on known answers (tests/test_calibration.py): with no memorization and 93% easy
examples the share of null examples selected stays below ``q``; planted memorized examples
are found. :func:`shuffled_null` builds the exact null of a real run (in/out labels shuffled
per example among the models of one rate) for the same check on real margins.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats

from jmem.errors import JmemError
from jmem.scores.estimators import DEFAULT_FRACTIONAL_FLOOR, Counts, fractional_score, memorization
from jmem.scores.thresholds import ThresholdResult

DEFINITIONS = ("mem", "fractional")


def score_of_counts(definition: str, correct_in, n_in, correct_out, n_out,
                    floor: float = DEFAULT_FRACTIONAL_FLOOR) -> np.ndarray:
    """The score ``definition`` ("mem" or "fractional") of count arrays (any equal shapes).

    float64, NaN where ``n_in == 0`` or ``n_out == 0``. "fractional" is 0 where
    ``acc_in < floor`` (:func:`jmem.scores.estimators.fractional_score`).
    """
    if definition not in DEFINITIONS:
        raise JmemError(f"score definition {definition!r} is not one of {', '.join(DEFINITIONS)}")
    with np.errstate(invalid="ignore", divide="ignore"):
        acc_in = np.where(n_in > 0, correct_in / np.maximum(n_in, 1), np.nan)
        acc_out = np.where(n_out > 0, correct_out / np.maximum(n_out, 1), np.nan)
    acc_in, acc_out = np.broadcast_arrays(acc_in, acc_out)
    undefined = np.isnan(acc_in) | np.isnan(acc_out)
    acc_in = np.where(undefined, np.nan, acc_in)
    acc_out = np.where(undefined, np.nan, acc_out)
    if definition == "mem":
        return memorization(acc_in, acc_out)
    return fractional_score(acc_in, acc_out, floor)


@dataclasses.dataclass(frozen=True)
class ExactNull:
    """The pooled exact null of a set of examples: every value a null example's score can take,
    with its expected number of examples. ``values``: float64[M] ascending; ``tail``:
    float64[M], ``tail[m]`` = expected number of null examples scoring ``>= values[m]``."""

    values: np.ndarray
    tail: np.ndarray

    def expected_at_least(self, t) -> np.ndarray:
        """``E0(t)``: expected number of null examples with score >= t (t: float or float[])."""
        pos = np.searchsorted(self.values, np.asarray(t, np.float64), side="left")
        padded = np.append(self.tail, 0.0)
        return padded[pos]


def exact_null(counts: Counts, definition: str, floor: float = DEFAULT_FRACTIONAL_FLOOR,
               rows=None) -> ExactNull:
    """The exact conditional null of the score ``definition`` over the examples of ``counts``
    (or those where ``rows: bool[N]`` is True; examples with no in or no out model are left
    out: they have no score)."""
    n_in, n_out = np.asarray(counts.n_in), np.asarray(counts.n_out)
    total_correct = np.asarray(counts.correct_in) + np.asarray(counts.correct_out)
    use = (n_in > 0) & (n_out > 0)
    if rows is not None:
        use &= np.asarray(rows, bool)
    triples, weight = np.unique(np.stack([n_in[use], n_out[use], total_correct[use]], axis=1),
                                axis=0, return_counts=True)
    values, masses = [], []
    for (a, b, k_total), w in zip(triples, weight):
        k = np.arange(max(0, k_total - b), min(a, k_total) + 1)
        pmf = stats.hypergeom.pmf(k, a + b, k_total, a)
        values.append(score_of_counts(definition, k, a, k_total - k, b, floor))
        masses.append(w * pmf)
    if not values:
        return ExactNull(np.zeros(0), np.zeros(0))
    values, masses = np.concatenate(values), np.concatenate(masses)
    order = np.argsort(values, kind="stable")
    values, masses = values[order], masses[order]
    tail = np.cumsum(masses[::-1])[::-1]
    # Equal values share the tail of their first occurrence (P(S >= t) counts all of them).
    unique, first = np.unique(values, return_index=True)
    return ExactNull(unique, tail[first])


def calibrated_threshold(scores, counts: Counts, definition: str, q: float = 0.05,
                         floor: float = DEFAULT_FRACTIONAL_FLOOR, eligible=None) -> ThresholdResult:
    """The smallest positive cut ``t`` on ``scores`` whose estimated false discovery rate
    ``E0(t) / #{S >= t}`` is at most ``q``; selects ``scores >= t`` (module docstring).

    scores: float[N], the score ``definition`` of the same models as ``counts`` (NaN: never
    selected). eligible: bool[N] or None: the candidates (e.g. every non-canary example);
    the null and the counts of selections use those only. Returns a
    :class:`~jmem.scores.thresholds.ThresholdResult` with method "calibrated"; its threshold
    is NaN and nothing is selected when no cut reaches ``q``.
    """
    if not 0 < q < 1:
        raise JmemError(f"score.calibrated_q={q} must be in (0, 1)")
    scores = np.asarray(scores, np.float64)
    n = scores.shape[0]
    eligible = np.ones(n, bool) if eligible is None else np.asarray(eligible, bool)
    if eligible.shape != (n,) or np.asarray(counts.n_in).shape != (n,):
        raise JmemError(f"scores ({n}), eligible {eligible.shape} and counts "
                        f"{np.asarray(counts.n_in).shape} must describe the same examples")
    null = exact_null(counts, definition, floor, rows=eligible)
    usable = eligible & np.isfinite(scores)
    candidates = np.unique(scores[usable & (scores > 0)])[::-1]  # descending
    observed = np.sort(scores[usable])
    at_least = observed.size - np.searchsorted(observed, candidates, side="left")
    expected = null.expected_at_least(candidates)
    with np.errstate(invalid="ignore", divide="ignore"):
        fdr = expected / np.maximum(at_least, 1)
    passing = np.flatnonzero(fdr <= q)
    details = {"definition": definition, "q": q, "n_eligible": int(eligible.sum()),
               "n_nan": int((eligible & ~np.isfinite(scores)).sum()),
               "null": "exact conditional (hypergeometric given the example's total correct)"}
    if definition == "fractional":
        details["fractional_floor"] = floor
    if passing.size == 0:
        return ThresholdResult("calibrated", definition, float("nan"), np.zeros(n, bool),
                               {**details, "estimated_fdr": None, "expected_null_selected": None})
    best = passing[-1]  # candidates descend: the last passing one is the smallest cut
    t = float(candidates[best])
    with np.errstate(invalid="ignore"):
        selected = usable & (scores >= t)
    return ThresholdResult("calibrated", definition, t, selected, {
        **details, "estimated_fdr": float(fdr[best]), "expected_null_selected": float(expected[best])})


def shuffled_null(keep, seed: int) -> np.ndarray:
    """The exact null of a run: ``keep: bool[R, N]`` with each example's column permuted
    across the R models (pass the models of one rate only). Every example keeps its number of
    in models and every model its correctness, but being "in" no longer means anything, so
    any example a rule selects from these masks is a false positive."""
    keep = np.asarray(keep, bool)
    gen = np.random.default_rng(seed)
    order = np.argsort(gen.random(keep.shape), axis=0, kind="stable")
    return np.take_along_axis(keep, order, axis=0)
