"""How reliable are a run's per-example scores? Split halves, stability, models needed.

Pure numpy/scipy. All scores are computed by :func:`jmem.scores.estimators.compute_scores`
from ``keep: bool[R, N]`` and ``margins: float[R, N]`` (row ``r`` = model id ``r``); nothing
here re-defines a score or a selection method.

- :func:`split_half`: scores from the even-id models against scores from the odd-id models
  (in a multi-rate run, even and odd within each rate: :func:`alternating_halves`).
  Spearman rank correlation per score, the Jaccard overlap of each selection method's selected
  set (methods are supplied by the caller as a *selector*, so the very thresholds of the
  scoring stage are used), and the Spearman-Brown projection of the half-vs-half correlation
  to estimates from ``R`` and from ``2R`` models. Feldman & Zhang (2020) compare two
  independent 2,000-model estimates on CIFAR-100 (Jaccard >= 0.7 of the selected sets);
  split halves are two *R/2*-model estimates, so their overlap is a pessimistic bound on
  the overlap of two R-model runs.
- :func:`stability`: scores from the first ``k`` models (k = 8, 16, 32, ... R) against the
  scores from all R: how far the estimate still moves as models are added. The first k are
  part of all R, so the agreement at k is optimistic relative to two independent k-model
  runs; it shows convergence, :func:`split_half` shows reproducibility.
- :func:`models_needed_table`: from the observed per-example accuracies, how many models give
  a target half-width of the ``mem`` interval at each inclusion rate. With ``n_in = rate R``
  and ``n_out = (1 - rate) R`` models, ``Var(mem_hat) = a_in (1 - a_in) / n_in +
  a_out (1 - a_out) / n_out`` (two independent binomial proportions), so the Wald half-width
  ``z sqrt(Var)`` equals ``h`` at
  ``R = z^2 (a_in (1 - a_in) / rate + a_out (1 - a_out) / (1 - rate)) / h^2``.
  The accuracies are the run's own, smoothed by half a count (``(k + 0.5) / (n + 1)``) so
  an example every model gets right still has a non-zero variance; they are assumed not to
  change with the rate (they do: ``acc_out`` rises with the rate), so read rates far from the
  run's as rough guidance. The worst case ``a_in = a_out = 1/2`` bounds every example.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import numpy as np
from scipy import stats

from jmem.errors import JmemError
from jmem.scores import estimators

SCORE_NAMES = ("mem", "cscore", "fractional", "lira")
DEFAULT_RATES = (0.5, 0.7, 0.9, 0.95)
DEFAULT_QUANTILES = (0.5, 0.9, 0.99)

# A selector maps the scores of a set of models (and the models' keep/margins, which e.g. a
# placebo null needs) to {method name: bool[N] selected}.
Selector = Callable[[estimators.ExampleScores, np.ndarray, np.ndarray], Mapping[str, np.ndarray]]


# ---------------------------------------------------------------------------------------------
# Agreement measures
# ---------------------------------------------------------------------------------------------

def spearman(a, b) -> tuple[float, int]:
    """Spearman rank correlation of ``a`` and ``b`` (float[N]) over entries finite in both.

    Returns (rho, n_used); rho is NaN when fewer than 3 pairs remain or either side is
    constant (a rank correlation is undefined then, not 0).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise JmemError(f"spearman needs two float[N] arrays; got shapes {a.shape} and {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    n = int(ok.sum())
    if n < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan"), n
    return float(stats.spearmanr(a[ok], b[ok]).statistic), n


def jaccard(a, b) -> float:
    """``|a & b| / |a | b|`` of two selections (bool[N]); NaN when both are empty."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise JmemError(f"jaccard needs two bool[N] masks of one shape; got {a.shape} and {b.shape}")
    union = int((a | b).sum())
    return float((a & b).sum() / union) if union else float("nan")


def spearman_brown(r, factor: float):
    """Spearman-Brown prophecy: reliability of an estimate ``factor`` times longer.

    ``factor * r / (1 + (factor - 1) * r)``; ``r`` is the correlation of two parallel halves
    (float or array; NaN passes through). From two R/2-model halves, ``factor=2`` projects
    to the full R-model estimate and ``factor=4`` to 2R models. The formula assumes
    parallel measurements and a linear correlation; applied to a rank correlation it is an
    approximation.
    """
    if not factor > 0:
        raise JmemError(f"Spearman-Brown factor={factor} must be > 0")
    r = np.asarray(r, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = factor * r / (1 + (factor - 1) * r)
    return float(out) if out.ndim == 0 else out


def _score_arrays(s: estimators.ExampleScores, names) -> dict:
    missing = [n for n in names if not hasattr(s, n)]
    if missing:
        raise JmemError(f"unknown score name(s) {missing}; known: {', '.join(SCORE_NAMES)}, ...")
    return {n: getattr(s, n) for n in names}


# ---------------------------------------------------------------------------------------------
# Split-half reliability
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SplitHalf:
    """Even-id against odd-id models.

    spearman, n_defined: score -> rank correlation between the halves / examples used.
    projected_r, projected_2r: score -> Spearman-Brown projection to R and to 2R models.
    jaccard: method -> overlap of the halves' selected sets (NaN if both empty);
    n_selected: method -> [selected in the even half, selected in the odd half].
    """

    num_models: tuple[int, int]
    spearman: dict
    n_defined: dict
    projected_r: dict
    projected_2r: dict
    jaccard: dict
    n_selected: dict
    scores: tuple  # (ExampleScores even, ExampleScores odd), for plots; left out of to_dict

    def to_dict(self) -> dict:
        return {"num_models": list(self.num_models), "spearman": self.spearman,
                "n_defined": self.n_defined, "projected_r": self.projected_r,
                "projected_2r": self.projected_2r, "jaccard": self.jaccard,
                "n_selected": self.n_selected}


def alternating_halves(num_models: int, model_rates=None):
    """The two halves of a split: (rows_a, rows_b), int64 model rows.

    Without rates: even and odd model ids. With ``model_rates: float[R]``: even and odd
    positions *within each rate group*, so both halves hold every rate equally (a run whose
    rates cycle with an even period would otherwise put different rates in the two halves).
    """
    if model_rates is None:
        rows = np.arange(num_models)
        return rows[0::2], rows[1::2]
    _, group = estimators.group_rates(model_rates, num_models)
    a, b = [], []
    for g in np.unique(group):
        rows = np.flatnonzero(group == g)
        a.append(rows[0::2])
        b.append(rows[1::2])
    return np.sort(np.concatenate(a)), np.sort(np.concatenate(b))


def split_half(keep, margins, *, selector: Selector | None = None, halves=None,
               score_names=SCORE_NAMES, **score_kwargs) -> SplitHalf:
    """Split-half reliability of the scores of ``keep: bool[R, N]``, ``margins: float[R, N]``.

    By default models with even row index (model id) form one half, odd the other; ``halves``
    = (rows_a, rows_b) chooses others (see :func:`alternating_halves` for multi-rate runs).
    ``selector`` (see :data:`Selector`) gives each half's selections for the Jaccard
    overlaps; None = no overlaps. ``score_kwargs`` go to
    :func:`jmem.scores.estimators.compute_scores`. Needs R >= 4.
    """
    keep = estimators.as_keep(keep)
    num_models = keep.shape[0]
    if num_models < 4:
        raise JmemError(f"split-half reliability needs at least 4 models; the run has {num_models}")
    margins = estimators.check_margins(margins, *keep.shape, score_kwargs.get("name", "margins"))
    if halves is None:
        # Basic slicing: views, even of memory maps.
        parts = [(keep[0::2], margins[0::2]), (keep[1::2], margins[1::2])]
    else:
        rows_a, rows_b = (np.asarray(h, np.int64) for h in halves)
        if np.intersect1d(rows_a, rows_b).size or min(rows_a.size, rows_b.size) < 2 or \
                rows_a.min() < 0 or max(rows_a.max(), rows_b.max()) >= num_models:
            raise JmemError(f"halves must be two disjoint sets of >= 2 model rows in [0, {num_models})")
        parts = [(keep[rows_a], margins[rows_a]), (keep[rows_b], margins[rows_b])]
    halves = []
    for k, m in parts:
        s = estimators.compute_scores(k, m, **score_kwargs)
        sel = dict(selector(s, k, m)) if selector is not None else {}
        halves.append((s, sel))
    (sa, sel_a), (sb, sel_b) = halves
    rho, n_def = {}, {}
    arr_a, arr_b = _score_arrays(sa, score_names), _score_arrays(sb, score_names)
    for name in score_names:
        rho[name], n_def[name] = spearman(arr_a[name], arr_b[name])
    jac = {m: jaccard(sel_a[m], sel_b[m]) for m in sel_a if m in sel_b}
    n_sel = {m: [int(np.sum(sel_a[m])), int(np.sum(sel_b[m]))] for m in jac}
    return SplitHalf(num_models=(sa.num_models, sb.num_models), spearman=rho, n_defined=n_def,
                     projected_r={n: spearman_brown(r, 2) for n, r in rho.items()},
                     projected_2r={n: spearman_brown(r, 4) for n, r in rho.items()},
                     jaccard=jac, n_selected=n_sel, scores=(sa, sb))


# ---------------------------------------------------------------------------------------------
# Stability versus the number of models
# ---------------------------------------------------------------------------------------------

def default_model_counts(num_models: int, start: int = 8) -> list[int]:
    """``start, 2 start, 4 start, ...`` below ``num_models``, then ``num_models`` itself."""
    ks, k = [], start
    while k < num_models:
        ks.append(k)
        k *= 2
    return ks + [num_models]


def interleaved_order(model_rates) -> np.ndarray:
    """Model rows in round-robin order over the rate groups (ids ascending within a group).

    The first k of this order hold every rate in about its share of the run, so "the first k
    models" of a multi-rate run is not the first rate's models only. float[R] -> int64[R].
    """
    _, group = estimators.group_rates(model_rates, np.asarray(model_rates).shape[0])
    position = np.empty(group.size, np.int64)
    for g in np.unique(group):
        rows = np.flatnonzero(group == g)
        position[rows] = np.arange(rows.size)
    # Sort by (position within the group, group): one model of each rate, then the next.
    return np.lexsort((group, position)).astype(np.int64)


def stability(keep, margins, *, model_counts=None, order=None, score_names=("mem", "cscore"),
              full=None, **score_kwargs) -> list[dict]:
    """Scores of the first ``k`` models against the scores of all R, for each ``k``.

    keep: bool[R, N]; margins: float[R, N]; model_counts: increasing ints in [2, R] (default
    :func:`default_model_counts`); order: int[R] model rows in the order they are added
    (default ``0..R-1``; see :func:`interleaved_order`); full: the scores of all R models if
    already computed. Returns one JSON-ready dict per k: ``k``, and per score ``spearman_<s>``,
    ``mean_abs_diff_<s>`` (mean ``|s_k - s_R|`` over examples defined in both) and
    ``n_defined_<s>`` (with few models some examples have no out model yet).
    """
    keep = estimators.as_keep(keep)
    num_models = keep.shape[0]
    margins = estimators.check_margins(margins, *keep.shape, score_kwargs.get("name", "margins"))
    ks = default_model_counts(num_models) if model_counts is None else [int(k) for k in model_counts]
    if any(k < 2 or k > num_models for k in ks) or sorted(set(ks)) != ks:
        raise JmemError(f"model_counts={ks} must be increasing integers in [2, {num_models}]")
    if order is not None:
        order = np.asarray(order, np.int64)
        if sorted(order.tolist()) != list(range(num_models)):
            raise JmemError(f"order must be a permutation of the {num_models} model rows")
    if full is None:
        full = estimators.compute_scores(keep, margins, **score_kwargs)
    ref = _score_arrays(full, score_names)
    rows = []
    for k in ks:
        sel = slice(0, k) if order is None else np.sort(order[:k])
        s = full if k == num_models and order is None else \
            estimators.compute_scores(keep[sel], margins[sel], **score_kwargs)
        row = {"k": k}
        for name, arr in _score_arrays(s, score_names).items():
            rho, n = spearman(arr, ref[name])
            ok = np.isfinite(arr) & np.isfinite(ref[name])
            row[f"spearman_{name}"] = rho
            row[f"mean_abs_diff_{name}"] = float(np.abs(arr[ok] - ref[name][ok]).mean()) if n else float("nan")
            row[f"n_defined_{name}"] = n
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# Models needed for a target interval half-width
# ---------------------------------------------------------------------------------------------

def smoothed_accuracy(correct, n) -> np.ndarray:
    """``(correct + 0.5) / (n + 1)``: float64[N], never exactly 0 or 1 (NaN where n == 0)."""
    correct, n = np.asarray(correct, np.float64), np.asarray(n, np.float64)
    return np.where(n > 0, (correct + 0.5) / (n + 1), np.nan)


def models_needed(acc_in, acc_out, rate: float, half_width: float = 0.1,
                  confidence: float = 0.95) -> np.ndarray:
    """Models R for which the ``mem`` interval's half-width is ``half_width`` at ``rate``.

    acc_in, acc_out: float[N] (or scalars) in [0, 1]. Returns float64 of their shape:
    ``z^2 (a_in (1 - a_in) / rate + a_out (1 - a_out) / (1 - rate)) / h^2`` (module
    docstring), not rounded; NaN where an accuracy is NaN.
    """
    if not 0 < rate < 1:
        raise JmemError(f"rate={rate} must be in (0, 1)")
    if not 0 < half_width <= 1:
        raise JmemError(f"half_width={half_width} must be in (0, 1]")
    if not 0 < confidence < 1:
        raise JmemError(f"confidence={confidence} must be in (0, 1)")
    z = stats.norm.ppf(0.5 + confidence / 2)
    a_in, a_out = np.asarray(acc_in, np.float64), np.asarray(acc_out, np.float64)
    var_per_model = a_in * (1 - a_in) / rate + a_out * (1 - a_out) / (1 - rate)
    return z * z * var_per_model / (half_width * half_width)


def models_needed_table(acc_in, acc_out, rates=DEFAULT_RATES, *, half_width: float = 0.1,
                        confidence: float = 0.95, quantiles=DEFAULT_QUANTILES,
                        subset=None) -> list[dict]:
    """Per rate, the models needed over the examples: quantiles, max and the worst case.

    acc_in, acc_out: float[N] (use :func:`smoothed_accuracy`; NaN entries are left out);
    rates: the inclusion rates to tabulate (duplicates removed, sorted); subset: optional
    bool[N], e.g. the examples some method selects, whose median is reported as
    ``subset_median``. Returns JSON-ready rows ``{"rate", "worst_case", "q50", "q90", ...,
    "max", "subset_median", "n_examples"}``; model counts are rounded up to integers.
    """
    a_in, a_out = np.asarray(acc_in, np.float64), np.asarray(acc_out, np.float64)
    if a_in.shape != a_out.shape or a_in.ndim != 1:
        raise JmemError(f"acc_in and acc_out must be float[N] of one shape; got {a_in.shape}, {a_out.shape}")
    ok = np.isfinite(a_in) & np.isfinite(a_out)
    if subset is not None:
        subset = np.asarray(subset, bool)
        if subset.shape != a_in.shape:
            raise JmemError(f"subset has shape {subset.shape}; expected {a_in.shape}")
    rows = []
    for rate in sorted({round(float(r), 6) for r in rates}):
        need = models_needed(a_in[ok], a_out[ok], rate, half_width, confidence)
        row = {"rate": rate,
               "worst_case": int(np.ceil(models_needed(0.5, 0.5, rate, half_width, confidence)))}
        for q in quantiles:
            row[f"q{round(q * 100):d}"] = int(np.ceil(np.quantile(need, q))) if need.size else None
        row["max"] = int(np.ceil(need.max())) if need.size else None
        if subset is not None:
            sub = need[subset[ok]]
            row["subset_median"] = int(np.ceil(np.median(sub))) if sub.size else None
        row["n_examples"] = int(need.size)
        rows.append(row)
    return rows


def variance_check(half_a: estimators.ExampleScores, half_b: estimators.ExampleScores,
                   acc_in, acc_out) -> dict:
    """Does the binomial variance behind :func:`models_needed` match the run's own noise?

    half_a, half_b: the split halves' scores; acc_in, acc_out: float[N] accuracies of the
    whole run (e.g. :func:`smoothed_accuracy`). Two independent halves give
    ``E[(mem_a - mem_b)^2] = Var(mem_a) + Var(mem_b)``; the binomial formula predicts each
    from the halves' own ``n_in``/``n_out``. Returns JSON-ready ``observed`` (mean squared
    difference), ``predicted`` (mean predicted variance of the difference), ``ratio``
    (observed / predicted: below 1 means models_needed is conservative) and ``n_examples``.
    """
    a_in, a_out = np.asarray(acc_in, np.float64), np.asarray(acc_out, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = sum(a_in * (1 - a_in) / h.n_in + a_out * (1 - a_out) / h.n_out
                  for h in (half_a, half_b))
        diff2 = (half_a.mem - half_b.mem) ** 2
    ok = np.isfinite(var) & np.isfinite(diff2)
    if not ok.any():
        return {"observed": None, "predicted": None, "ratio": None, "n_examples": 0}
    observed, predicted = float(diff2[ok].mean()), float(var[ok].mean())
    return {"observed": observed, "predicted": predicted,
            "ratio": observed / predicted if predicted > 0 else None, "n_examples": int(ok.sum())}
