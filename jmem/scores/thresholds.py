"""Which examples count as memorized: thresholds, FDR control, empirical nulls, canary ROC.

Pure numpy/scipy. Every selection method returns a :class:`ThresholdResult`: the selected
``bool[N]``, the threshold value, and the numbers that justify it, JSON-ready via
``to_dict()``. NaN scores (examples with no model in or out) are never selected and are
counted in ``n_nan``.

Methods (the critique's third correction, BACKGROUND section 3):

- :func:`fixed_threshold`: ``score >= t`` (Feldman & Zhang 2020 use ``mem >= 0.25``).
- :func:`fdr_threshold`: Benjamini & Hochberg (1995) step-up at level ``q`` on the per-example
  p-values, intersected with a minimum effect size ``mem >= min_effect``.
- :func:`null_threshold` with :func:`placebo_scores`: an empirical null from placebo splits
  (pseudo in/out labels among models that all trained on the example, so only seed noise
  remains); threshold at a chosen false-positive level.
- :func:`canary_threshold`: the threshold at which a target share of known positives
  (random-label canaries) is recovered.

Canary evaluation (:func:`evaluate_canaries`): AUROC (Mann-Whitney, ties count 1/2), ROC
points, FPR at 95% TPR; :func:`selection_metrics` gives TPR, FPR and precision of a selection.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats

from jmem.errors import JmemError
from jmem.jsonable import to_jsonable
from jmem.scores.estimators import as_keep, check_finite, check_margins

PLACEBO_BLOCK = 1024  # columns per placebo RNG block; fixed so results never depend on chunking


# ---------------------------------------------------------------------------------------------
# Result object
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ThresholdResult:
    """One selection: ``selected: bool[N]``, ``threshold`` and justifying ``details``.

    method: short name ("fixed", "fdr", "null", "canary").
    score: name of the thresholded score ("mem", "p_value", ...).
    threshold: the cut-off on that score (a p-value cut-off for "fdr"); NaN if none exists.
    details: method-specific numbers (expected false discoveries, calibration points, ...).
    """

    method: str
    score: str
    threshold: float
    selected: np.ndarray
    details: dict

    @property
    def n_selected(self) -> int:
        return int(self.selected.sum())

    def to_dict(self) -> dict:
        """JSON-serialisable summary (the mask itself is left out: it is a scores.csv column)."""
        return to_jsonable({"method": self.method, "score": self.score,
                          "threshold": self.threshold, "n_selected": self.n_selected,
                          **self.details})


def _as_scores(scores, name: str = "scores") -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise JmemError(f"{name} has shape {scores.shape}; expected float[N] (1-D)")
    return scores


def _as_mask(mask, n: int, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != (n,):
        raise JmemError(f"{name} has shape {mask.shape}; expected bool[{n}]")
    if mask.dtype != np.bool_:
        if not np.issubdtype(mask.dtype, np.integer) or (mask.size and (mask.min() < 0 or mask.max() > 1)):
            raise JmemError(f"{name} has dtype {mask.dtype}; expected bool")
        mask = mask.astype(bool)
    return mask


# ---------------------------------------------------------------------------------------------
# Simple thresholds
# ---------------------------------------------------------------------------------------------

def fixed_threshold(scores, threshold: float = 0.25, score_name: str = "mem") -> ThresholdResult:
    """Select ``scores >= threshold`` (Feldman & Zhang 2020 use ``mem >= 0.25``).

    scores: float[N]. No error control: the number is chosen by hand, which is the critique's
    third flaw; compare with :func:`fdr_threshold` and :func:`null_threshold`.
    """
    scores = _as_scores(scores, score_name)
    with np.errstate(invalid="ignore"):
        selected = scores >= threshold
    return ThresholdResult("fixed", score_name, float(threshold), selected,
                           {"n_nan": int(np.isnan(scores).sum())})


# ---------------------------------------------------------------------------------------------
# Benjamini-Hochberg
# ---------------------------------------------------------------------------------------------

def bh_adjust(p_values) -> np.ndarray:
    """Benjamini-Hochberg (1995) adjusted p-values (q-values), float64[N].

    ``scipy.stats.false_discovery_control`` over the finite p-values: NaN p-values
    (untestable examples) stay NaN and do not count as tests. Rejecting ``q <= alpha`` is the
    BH step-up procedure at level alpha.
    """
    p = _as_scores(p_values, "p_values")
    q = np.full(p.shape, np.nan)
    finite = ~np.isnan(p)
    if finite.any():
        q[finite] = stats.false_discovery_control(p[finite])
    return q


def fdr_threshold(p_values, effect, q: float = 0.1, min_effect: float = 0.1,
                  effect_name: str = "mem") -> ThresholdResult:
    """BH step-up at FDR level ``q``, then keep only effects ``>= min_effect``.

    p_values: float[N] (one-sided, e.g. Fisher); effect: float[N] (mem). A significant but
    tiny difference is not memorization, hence the effect-size floor (critique, correction 2).
    ``threshold`` is the BH p-value cut-off. BH bounds the expected false discoveries among
    its ``n_bh_rejected`` rejections by ``q * n_bh_rejected`` (independent or PRDS tests);
    the effect filter only removes rejections.
    """
    p = _as_scores(p_values, "p_values")
    effect = _as_scores(effect, effect_name)
    if effect.shape != p.shape:
        raise JmemError(f"{effect_name} has shape {effect.shape}; p_values has {p.shape}")
    if not 0 < q < 1:
        raise JmemError(f"score.fdr_q={q} must be in (0, 1)")
    q_values = bh_adjust(p)
    with np.errstate(invalid="ignore"):
        rejected = q_values <= q
        selected = rejected & (effect >= min_effect)
    n_tests = int((~np.isnan(p)).sum())
    n_rej = int(rejected.sum())
    cutoff = float(p[rejected].max()) if n_rej else float("nan")
    return ThresholdResult("fdr", "p_value", cutoff, selected, {
        "q": q, "min_effect": min_effect, "effect": effect_name, "n_tests": n_tests,
        "n_bh_rejected": n_rej, "n_below_min_effect": n_rej - int(selected.sum()),
        "expected_false_discoveries_bound": q * n_rej,
        "n_nan": int(np.isnan(p).sum()),
    })


# ---------------------------------------------------------------------------------------------
# Placebo (seed-noise) null
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PlaceboNull:
    """Placebo memorization per example under pseudo in/out splits of its IN models.

    scores: float64[N] (NaN where fewer than 2 in models or no out model);
    n_pseudo_in, n_pseudo_out: int64[N]; variance_matched: whether scores were rescaled.
    """

    scores: np.ndarray
    n_pseudo_in: np.ndarray
    n_pseudo_out: np.ndarray
    variance_matched: bool


def placebo_scores(keep, margins, *, seed, match_variance: bool = True,
                   name: str = "margins") -> PlaceboNull:
    """Placebo memorization: the seed-noise null (critique, correction 3).

    For example ``i`` with ``n_in`` in models out of ``R``, randomly split its in models into
    pseudo-in (``round(n_in**2 / R)`` models, the real in-proportion ``n_in / R``) and
    pseudo-out (the rest), and compute ``acc(pseudo-in) - acc(pseudo-out)``. All these models
    trained on ``i``, so any difference is seed noise.

    The pseudo groups are smaller than the real ones; for ``Var[p1 - p2] = p(1-p)(1/a + 1/b)``
    the placebo variance is ``1/rho`` times the real null's at in-proportion ``rho``. With
    ``match_variance`` (default) each placebo score is multiplied by
    ``sqrt((1/n_in + 1/n_out) / (1/a + 1/b))`` so its spread matches a real-split null;
    without it the null is wider and thresholds are conservative.

    keep: bool[R, N]; margins: float[R, N]. seed: an int or a sequence of ints, the entropy
    of numpy's SeedSequence; the scoring stage passes the words of the "placebo" stream of
    :mod:`jmem.rng` (``rng.stream_words(seed, "placebo")``), so this module needs no JAX.
    One generator per fixed block of 1024 examples, so results do not depend on any chunk
    size or on other settings.
    """
    entropy = [int(seed)] if np.ndim(seed) == 0 else [int(w) for w in seed]
    keep = as_keep(keep)
    num_models, num_examples = keep.shape
    margins = check_margins(margins, num_models, num_examples, name)
    out = np.full(num_examples, np.nan)
    n_a = np.zeros(num_examples, np.int64)
    n_b = np.zeros(num_examples, np.int64)
    ranks_base = np.arange(num_models)[None, :]
    for block, start in enumerate(range(0, num_examples, PLACEBO_BLOCK)):
        sl = slice(start, min(start + PLACEBO_BLOCK, num_examples))
        # Work example-major ([n, R]): sorting along the contiguous axis is faster.
        k = np.asarray(keep[:, sl]).T
        m = np.asarray(margins[:, sl])
        check_finite(m, name, start)
        correct = m.T > 0
        gen = np.random.default_rng([*entropy, block])
        # Random order among in models; out models sort last (u = 2 > any uniform draw).
        # A stable sort makes tied draws resolve by model index on every platform.
        u = np.where(k, gen.random(k.shape, dtype=np.float32), np.float32(2))
        order = np.argsort(u, axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.broadcast_to(ranks_base, order.shape), axis=1)
        n_in = k.sum(axis=1)
        n_out = num_models - n_in
        a = np.clip(np.rint(n_in.astype(np.float64) ** 2 / num_models), 1, np.maximum(n_in - 1, 1))
        a = a.astype(np.int64)
        b = n_in - a
        pseudo_in = rank < a[:, None]            # the first a in models in random order
        pseudo_out = k & ~pseudo_in
        valid = (n_in >= 2) & (n_out >= 1) & (b >= 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            diff = (correct & pseudo_in).sum(1) / a - (correct & pseudo_out).sum(1) / b
            if match_variance:
                diff = diff * np.sqrt((1 / n_in + 1 / n_out) / (1 / a + 1 / b))
        out[sl] = np.where(valid, diff, np.nan)
        n_a[sl] = np.where(valid, a, 0)
        n_b[sl] = np.where(valid, b, 0)
    return PlaceboNull(out, n_a, n_b, match_variance)


NULL_CALIBRATION_FPRS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)


def null_threshold(scores, null_scores, fpr: float = 0.05, score_name: str = "mem",
                   calibration_fprs=NULL_CALIBRATION_FPRS) -> ThresholdResult:
    """Select ``scores > t`` where ``t`` is the ``1 - fpr`` quantile of an empirical null.

    scores: float[N] (real mem); null_scores: float[M] (e.g. :func:`placebo_scores`; NaN
    ignored). ``details`` carries the realised null exceedance ``P_null(score > t)``, the
    expected false positives ``exceedance * n_defined`` (if every example were null), an
    estimated FDR and a calibration curve (threshold and selections at several FPR levels).
    """
    scores = _as_scores(scores, score_name)
    null = _as_scores(null_scores, "null_scores")
    null = np.sort(null[~np.isnan(null)])
    if not 0 < fpr < 1:
        raise JmemError(f"score.null_fpr={fpr} must be in (0, 1)")
    n_defined = int((~np.isnan(scores)).sum())

    def at(level):
        if null.size == 0:
            return float("nan"), float("nan"), np.zeros(scores.shape, bool)
        # "higher" makes the cut an observed null value, so P_null(> t) <= level.
        t = float(np.quantile(null, 1 - level, method="higher"))
        exceed = float((null > t).mean())
        with np.errstate(invalid="ignore"):
            return t, exceed, scores > t

    t, exceed, selected = at(fpr)
    curve = []
    for level in calibration_fprs:
        lt, le, ls = at(level)
        curve.append({"fpr": level, "threshold": lt, "null_exceedance": le,
                      "n_selected": int(ls.sum())})
    n_sel = int(selected.sum())
    expected_fp = exceed * n_defined if not math.isnan(exceed) else float("nan")
    return ThresholdResult("null", score_name, t, selected, {
        "fpr": fpr, "null_size": int(null.size), "null_exceedance": exceed,
        "expected_false_positives": expected_fp,
        "estimated_fdr": min(1.0, expected_fp / n_sel) if n_sel else None,
        "calibration": curve, "n_nan": int(np.isnan(scores).sum()),
    })


# ---------------------------------------------------------------------------------------------
# Canaries: ROC, AUROC, FPR at a TPR, canary-calibrated threshold
# ---------------------------------------------------------------------------------------------

def _finite_pair(scores, positives):
    scores = _as_scores(scores)
    positives = _as_mask(positives, scores.shape[0], "canary_mask")
    ok = ~np.isnan(scores)
    return scores[ok], positives[ok], int((~ok).sum())


def roc_curve(scores, positives):
    """ROC of ``scores`` (higher = more likely positive) against ``positives: bool[N]``.

    NaN scores are left out. Tied scores form one step (no arbitrary tie order).
    Returns (fpr, tpr, thresholds) float64 arrays starting at (0, 0, +inf); point ``i``
    selects ``scores >= thresholds[i]``. NaN rates if there are no positives / negatives.
    """
    s, pos, _ = _finite_pair(scores, positives)
    order = np.argsort(-s, kind="stable")
    s, pos = s[order], pos[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1] if s.size else np.empty(0, int)
    tp = np.cumsum(pos)[last_of_tie]
    fp = np.cumsum(~pos)[last_of_tie]
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.r_[0.0, tp / n_pos] if n_pos else np.full(tp.size + 1, np.nan)
        fpr = np.r_[0.0, fp / n_neg] if n_neg else np.full(fp.size + 1, np.nan)
    return fpr, tpr, np.r_[np.inf, s[last_of_tie]]


def auroc(scores, positives) -> float:
    """Area under the ROC: P(score_pos > score_neg) + P(tie) / 2 (Mann-Whitney U / n+ n-).

    Rank-based with average ranks for ties; NaN scores left out; NaN if either class is empty.
    """
    s, pos, _ = _finite_pair(scores, positives)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(s)  # average ranks: a tie contributes 1/2
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def fpr_at_tpr(fpr: np.ndarray, tpr: np.ndarray, target: float = 0.95) -> float:
    """Lowest FPR among ROC points with ``TPR >= target`` (no interpolation: attainable)."""
    ok = tpr >= target
    return float(fpr[ok].min()) if ok.any() else float("nan")


def selection_metrics(selected, positives) -> dict:
    """TP/FP/FN/TN counts, TPR, FPR and precision of ``selected: bool[N]`` vs ``positives``."""
    positives = np.asarray(positives, bool)
    selected = _as_mask(selected, positives.shape[0], "selected")
    tp = int((selected & positives).sum())
    fp = int((selected & ~positives).sum())
    fn = int((~selected & positives).sum())
    tn = int((~selected & ~positives).sum())
    div = lambda a, b: a / b if b else None  # noqa: E731
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "tpr": div(tp, tp + fn),
            "fpr": div(fp, fp + tn), "precision": div(tp, tp + fp)}


@dataclasses.dataclass(frozen=True)
class CanaryEvaluation:
    """How well one score ranks the canaries (known positives) above the other examples."""

    score: str
    auroc: float
    fpr_at_tpr: float
    tpr_target: float
    n_canaries: int
    n_negatives: int
    n_nan: int
    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray

    def to_dict(self, max_points: int = 101) -> dict:
        """JSON summary with at most ``max_points`` ROC points (evenly spaced, ends kept)."""
        n = self.fpr.size
        idx = np.unique(np.linspace(0, n - 1, min(n, max_points)).round().astype(int)) if n else []
        return to_jsonable({
            "score": self.score, "auroc": self.auroc,
            f"fpr_at_{round(self.tpr_target * 100)}tpr": self.fpr_at_tpr,
            "tpr_target": self.tpr_target, "n_canaries": self.n_canaries,
            "n_negatives": self.n_negatives, "n_nan": self.n_nan,
            "roc": {"fpr": self.fpr[idx], "tpr": self.tpr[idx],
                    "threshold": [None if not np.isfinite(t) else float(t)
                                  for t in self.thresholds[idx]]},
        })


def evaluate_canaries(scores, canary_mask, tpr_target: float = 0.95,
                      score_name: str = "mem") -> CanaryEvaluation:
    """AUROC, ROC and FPR at ``tpr_target`` TPR of ``scores: float[N]`` for ``canary_mask: bool[N]``.

    The critique's evaluation: random-label canaries are the ground-truth memorized set and a
    good score flags them at a low false-positive rate. NaN scores are left out and counted.
    """
    s = _as_scores(scores, score_name)
    mask = _as_mask(canary_mask, s.shape[0], "canary_mask")
    fpr, tpr, thr = roc_curve(s, mask)
    ok = ~np.isnan(s)
    return CanaryEvaluation(score_name, auroc(s, mask), fpr_at_tpr(fpr, tpr, tpr_target),
                            tpr_target, int((mask & ok).sum()), int((~mask & ok).sum()),
                            int((~ok).sum()), fpr, tpr, thr)


def canary_threshold(scores, canary_mask, tpr: float = 0.95,
                     score_name: str = "mem") -> ThresholdResult:
    """Select ``scores >= t`` with ``t`` the highest cut that recovers ``tpr`` of the canaries.

    The non-canaries above ``t`` estimate the false-positive rate at that recall (canaries
    stand in for truly memorized points; the selection includes the canaries themselves).
    """
    s = _as_scores(scores, score_name)
    mask = _as_mask(canary_mask, s.shape[0], "canary_mask")
    if not 0 < tpr <= 1:
        raise JmemError(f"score.canary_tpr={tpr} must be in (0, 1]")
    canary = np.sort(s[mask & ~np.isnan(s)])[::-1]
    if canary.size == 0:
        return ThresholdResult("canary", score_name, float("nan"), np.zeros(s.shape, bool),
                               {"tpr_target": tpr, "n_canaries": 0})
    t = float(canary[math.ceil(tpr * canary.size) - 1])
    with np.errstate(invalid="ignore"):
        selected = s >= t
    return ThresholdResult("canary", score_name, t, selected, {
        "tpr_target": tpr, "n_canaries": int(canary.size),
        **{f"canary_{k}": v for k, v in selection_metrics(selected, mask).items()},
        "n_nan": int(np.isnan(s).sum()),
    })
