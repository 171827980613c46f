"""Leave-one-out ground truth: the sample, the exact quantities, and how estimators compare.

Memorization is defined by leave-one-out (Feldman 2020): how much more likely a model trained
with example i classifies i correctly than one trained without it. The subsampled estimator
(F&Z) replaces "without i" by "a random 70% subset without i"; the critique says this biases
it. jmem measures the real quantity on a sample of K examples:

* **The design** (:func:`loo_rows`): S paired seeds; seed s trains one model on the full
  training set and, for each sampled example i, one on the full set minus i, all with model
  id s (the same initialisation, data order and augmentation) and the coupled data order, so
  model (s, i) differs from the full model at seed s in example i alone. The S full models
  are shared by all K examples: S x (K + 1) models in all.
* **LOO memorization** of i: ``mean_s correct_full[s, i] - correct_without_i[s, i]``, with
  Newcombe's interval for a difference of paired proportions (Newcombe 1998, Stat. Med.
  17:2635, method 10). **LOO influence** of i on test example j: the same on j.
* **The sample** (:func:`stratified_sample`): a partition of the eligible examples into
  strata (every example some protocol selected; ten deciles of the highest memorization
  over the run's rates among the rest; "easy": never wrong, mem 0 at every rate), with a
  known share drawn from each. Each sampled example carries the weight
  ``N_h / n_h`` of its stratum, so population figures (recall, bias over the dataset) are
  inverse-probability weighted; figures "on the sample" say so.
* **Validation** (:func:`compare_estimator`, :func:`selection_recovery`): bias, RMSE and
  Spearman of any per-example estimate against LOO memorization, precision and recall of
  any selection against "LOO-memorized" (:func:`loo_memorized`), each with a stratified
  bootstrap interval over the sampled examples.

Pure numpy/scipy: the stage (``jmem loo``) trains the models and calls these.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats

from jmem.errors import JmemError
from jmem.scores.estimators import wilson_interval

NUM_DECILES = 10


# ---------------------------------------------------------------------------------------------
# The sample
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LooSample:
    """K sampled training examples.

    index: int64[K], training indices (ascending); stratum: int64[K], each one's stratum;
    weight: float64[K], ``N_h / n_h`` of its stratum (the number of eligible examples it
    stands for); strata: list of {"name", "population", "sampled"}.
    """

    index: np.ndarray
    stratum: np.ndarray
    weight: np.ndarray
    strata: list

    def to_json(self) -> dict:
        return {"size": int(self.index.size), "strata": self.strata}

    def subset(self, mask) -> "LooSample":
        """The sampled examples where ``mask: bool[K]`` holds (e.g. one stratum), with their
        weights: figures on it describe that part of the dataset."""
        mask = np.asarray(mask, bool)
        return LooSample(self.index[mask], self.stratum[mask], self.weight[mask], self.strata)


def strata_of(mem_by_rate: dict, selected_any, never_wrong, eligible) -> tuple[np.ndarray, list[str]]:
    """int64[N] stratum of each eligible example (-1: not eligible) and the strata's names.

    mem_by_rate: {rate: float[N]} the run's memorization at each rate; selected_any: bool[N],
    selected by some protocol; never_wrong: bool[N], every model classified it correctly at
    every rate (an "ordinary easy" example). Strata: 0 "selected", 1 "easy", then
    "mem decile 1" .. "mem decile 10" of the highest mem over the rates among the rest.
    """
    eligible = np.asarray(eligible, bool)
    selected_any = np.asarray(selected_any, bool) & eligible
    easy = np.asarray(never_wrong, bool) & eligible & ~selected_any
    mems = np.stack([np.asarray(m, np.float64) for m in mem_by_rate.values()])
    top = np.nanmax(np.where(np.isnan(mems), -np.inf, mems), axis=0)
    rest = eligible & ~selected_any & ~easy
    stratum = np.full(eligible.shape, -1, np.int64)
    stratum[selected_any], stratum[easy] = 0, 1
    if rest.any():
        # Ranks, not values, so ties at 0 spread over deciles instead of one stratum.
        order = np.argsort(top[rest], kind="stable")
        decile = np.empty(order.size, np.int64)
        decile[order] = np.arange(order.size) * NUM_DECILES // order.size
        stratum[rest] = 2 + decile
    names = ["selected", "easy"] + [f"mem decile {d + 1}" for d in range(NUM_DECILES)]
    return stratum, names


def stratified_sample(stratum: np.ndarray, names: list[str], size: int, seed: int,
                      selected_share: float = 0.4, easy_share: float = 0.1) -> LooSample:
    """Draw ``size`` examples: ``selected_share`` of them from the "selected" stratum (all of
    it if smaller), ``easy_share`` from "easy", the rest equally over the deciles; shares a
    small stratum cannot fill go to the deciles. Without replacement, from numpy's
    generator seeded with ``seed``.
    """
    stratum = np.asarray(stratum, np.int64)
    if size < 1:
        raise JmemError(f"loo.examples={size} must be >= 1")
    population = np.array([(stratum == h).sum() for h in range(len(names))])
    if size > population.sum():
        raise JmemError(f"loo.examples={size} is more than the {population.sum()} eligible examples")
    want = np.zeros(len(names), np.int64)
    want[0] = min(population[0], int(round(selected_share * size)))
    want[1] = min(population[1], int(round(easy_share * size)))
    left = size - want[:2].sum()
    deciles = np.arange(2, len(names))
    while left > 0:  # fill the deciles evenly, skipping exhausted ones (then any stratum)
        room = [h for h in deciles if want[h] < population[h]] or [h for h in range(len(names)) if want[h] < population[h]]
        for h in room[:left]:
            want[h] += 1
        left = size - want.sum()
    gen = np.random.default_rng(seed)
    index, label = [], []
    for h, n_h in enumerate(want):
        if n_h:
            members = np.flatnonzero(stratum == h)
            index.append(gen.choice(members, size=n_h, replace=False))
            label.append(np.full(n_h, h))
    index, label = np.concatenate(index), np.concatenate(label)
    order = np.argsort(index)
    index, label = index[order], label[order]
    weight = population[label] / want[label]
    strata = [{"name": name, "population": int(population[h]), "sampled": int(want[h])}
              for h, name in enumerate(names)]
    return LooSample(index.astype(np.int64), label, weight.astype(np.float64), strata)


def loo_rows(num_examples: int, sample_index: np.ndarray, base=None) -> np.ndarray:
    """bool[K + 1, N]: row 0 the full training set (``base``, default all N), row 1 + k the
    full set minus ``sample_index[k]``. Each row differs from row 0 in exactly one position."""
    full = np.ones(num_examples, bool) if base is None else np.asarray(base, bool).copy()
    sample_index = np.asarray(sample_index, np.int64)
    if not full[sample_index].all():
        raise JmemError("every sampled example must be in the full training set")
    rows = np.repeat(full[None], sample_index.size + 1, axis=0)
    rows[1 + np.arange(sample_index.size), sample_index] = False
    return rows


# ---------------------------------------------------------------------------------------------
# Exact quantities
# ---------------------------------------------------------------------------------------------

def paired_difference_interval(with_: np.ndarray, without: np.ndarray, confidence: float = 0.95):
    """Newcombe's method 10 interval for ``P(with) - P(without)`` from paired 0/1 outcomes.

    with_, without: bool[S, ...] (seeds first). Returns (difference, low, high), each
    float64[...]: the mean paired difference and its interval, within [-1, 1].
    """
    a_ = np.asarray(with_, bool)
    b_ = np.asarray(without, bool)
    if a_.shape != b_.shape or a_.ndim < 1:
        raise JmemError(f"paired outcomes have shapes {a_.shape} and {b_.shape}; need two bool[S, ...]")
    n = a_.shape[0]
    both = (a_ & b_).sum(0)
    only_with = (a_ & ~b_).sum(0)
    only_without = (~a_ & b_).sum(0)
    neither = n - both - only_with - only_without
    k1, k2 = both + only_with, both + only_without
    l1, u1 = wilson_interval(k1, np.full_like(k1, n), confidence)
    l2, u2 = wilson_interval(k2, np.full_like(k2, n), confidence)
    p1, p2 = k1 / n, k2 / n
    margins = (k1 * (n - k1) * k2 * (n - k2)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        phi = np.where(margins > 0, (both * neither - only_with * only_without) / np.sqrt(margins), 0.0)
    diff = p1 - p2
    low = diff - np.sqrt(np.maximum((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0))
    high = diff + np.sqrt(np.maximum((p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2, 0))
    return diff, np.clip(low, -1, 1), np.clip(high, -1, 1)


def loo_memorized(diff, low, min_effect: float = 0.1) -> np.ndarray:
    """bool[K]: "LOO-memorized" = the interval excludes 0 from above (``low > 0``) and the
    estimate is at least ``min_effect`` (a size cut: a 0.02 effect measured very precisely
    is not what anyone means by a memorized example)."""
    return (np.asarray(low) > 0) & (np.asarray(diff) >= min_effect)


# ---------------------------------------------------------------------------------------------
# Validation against the truth
# ---------------------------------------------------------------------------------------------

def _stratified_resamples(stratum: np.ndarray, resamples: int, gen: np.random.Generator):
    """Yield index arrays: each stratum's members resampled with replacement."""
    groups = [np.flatnonzero(stratum == h) for h in np.unique(stratum)]
    for _ in range(resamples):
        yield np.concatenate([g[gen.integers(0, g.size, g.size)] for g in groups])


def _interval(values: list, level: float) -> tuple:
    arr = np.asarray([v for v in values if np.isfinite(v)])
    if arr.size < 10:
        return None, None
    return float(np.quantile(arr, (1 - level) / 2)), float(np.quantile(arr, (1 + level) / 2))


def _spearman(x, y) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return float("nan")
    return float(stats.spearmanr(x[ok], y[ok]).statistic)


def compare_estimator(estimate, truth, sample: LooSample, *, level: float = 0.95,
                      resamples: int = 1000, seed: int = 0) -> dict:
    """Bias (weighted mean of estimate - truth over the dataset), RMSE (weighted) and Spearman
    (on the sample) of ``estimate: float[K]`` against LOO ``truth: float[K]``, each with a
    stratified bootstrap interval. NaN estimates are left out and counted.

    ``float[K, P]`` arrays (P values per sampled example, e.g. its test partners' influence)
    are compared entry by entry, each weighted by its example's weight; the bootstrap
    resamples examples with all their entries (a cluster bootstrap)."""
    estimate, truth = np.asarray(estimate, np.float64), np.asarray(truth, np.float64)
    if estimate.shape != truth.shape or estimate.shape[:1] != sample.index.shape:
        raise JmemError(f"estimate {estimate.shape} and truth {truth.shape} must both lead with "
                        f"the {sample.index.size} sampled examples")
    ok = np.isfinite(estimate) & np.isfinite(truth)
    weight = np.broadcast_to(sample.weight.reshape((-1,) + (1,) * (truth.ndim - 1)), truth.shape)

    def figures(idx):
        keep = ok[idx]
        if not keep.any():
            return float("nan"), float("nan"), float("nan")
        w, est, tru = weight[idx][keep], estimate[idx][keep], truth[idx][keep]
        err = est - tru
        return (float(np.sum(w * err) / w.sum()), float(np.sqrt(np.sum(w * err ** 2) / w.sum())),
                _spearman(est, tru))

    point = figures(np.arange(truth.shape[0]))
    boot = [figures(idx) for idx in _stratified_resamples(sample.stratum, resamples, np.random.default_rng(seed))]
    out = {"n": int(ok.sum()), "n_nan": int((~ok).sum())}
    for i, name in enumerate(("bias", "rmse", "spearman")):
        low, high = _interval([b[i] for b in boot], level)
        out[name], out[f"{name}_ci"] = point[i], [low, high]
    return out


def weighted_mean(values, sample: LooSample, *, level: float = 0.95, resamples: int = 1000,
                  seed: int = 0) -> dict:
    """The dataset mean of ``values: float[K]`` (inverse-probability weighted; NaN left out)
    with a stratified bootstrap interval: e.g. mean LOO mem, or the share LOO-memorized."""
    values = np.asarray(values, np.float64)
    ok = np.isfinite(values)

    def mean(idx):
        idx = idx[ok[idx]]
        return float(np.sum(sample.weight[idx] * values[idx]) / sample.weight[idx].sum()) if idx.size else float("nan")

    boot = [mean(idx) for idx in _stratified_resamples(sample.stratum, resamples, np.random.default_rng(seed))]
    return {"mean": mean(np.arange(values.size)), "mean_ci": list(_interval(boot, level))}


def selection_recovery(selected, memorized, sample: LooSample, *, level: float = 0.95,
                       resamples: int = 1000, seed: int = 0) -> dict:
    """Precision and recall of ``selected: bool[K]`` (a rule's choice on the sampled
    examples) against ``memorized: bool[K]`` (LOO-memorized), inverse-probability weighted
    (recall over the dataset, not over a sample enriched in selected examples), with
    stratified bootstrap intervals. None where undefined (nothing selected / memorized)."""
    selected, memorized = np.asarray(selected, bool), np.asarray(memorized, bool)

    def figures(idx):
        w, s, m = sample.weight[idx], selected[idx], memorized[idx]
        hit = np.sum(w * (s & m))
        precision = hit / np.sum(w * s) if (w * s).sum() > 0 else float("nan")
        recall = hit / np.sum(w * m) if (w * m).sum() > 0 else float("nan")
        return precision, recall

    point = figures(np.arange(selected.size))
    boot = [figures(idx) for idx in _stratified_resamples(sample.stratum, resamples, np.random.default_rng(seed))]
    out = {"selected_in_sample": int(selected.sum()), "memorized_in_sample": int(memorized.sum())}
    for i, name in enumerate(("precision", "recall")):
        value = point[i]
        out[name] = None if not np.isfinite(value) else float(value)
        out[f"{name}_ci"] = list(_interval([b[i] for b in boot], level))
    return out


def precision_at_k(score, memorized, k: int | None = None, confidence: float = 0.95) -> dict:
    """On the sample: of the ``k`` sampled examples with the highest ``score: float[K]``
    (default k = the number LOO-memorized, ``memorized: bool[K]``), the share LOO-memorized,
    with a Wilson interval. NaN scores rank last; ties are broken by position (stable).
    Unweighted: the sample is enriched in selected examples, so this compares scores with
    each other, not with the dataset's base rate."""
    score, memorized = np.asarray(score, np.float64), np.asarray(memorized, bool)
    k = int(memorized.sum()) if k is None else int(k)
    if k <= 0:
        return {"k": 0, "hits": 0, "precision": None, "precision_ci": [None, None]}
    order = np.argsort(np.where(np.isfinite(score), -score, np.inf), kind="stable")[:k]
    hits = int(memorized[order].sum())
    low, high = wilson_interval(np.array([hits]), np.array([k]), confidence)
    return {"k": k, "hits": hits, "precision": hits / k, "precision_ci": [float(low[0]), float(high[0])]}


def spearman_interval(x, y, confidence: float = 0.95) -> dict:
    """Spearman's rho of ``x`` and ``y`` (float[N], finite pairs only) with the Fisher-z
    interval of Bonett & Wright (2000, Psychometrika 65:23): ``var(z) = (1 + rho^2 / 2) /
    (n - 3)``. Closed form, for correlations over a whole dataset where a bootstrap is slow."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    rho, n = _spearman(x, y), int(ok.sum())
    if not np.isfinite(rho) or n < 4:
        return {"spearman": None, "spearman_ci": [None, None], "n": n}
    half = stats.norm.ppf((1 + confidence) / 2) * np.sqrt((1 + rho ** 2 / 2) / (n - 3))
    z = np.arctanh(np.clip(rho, -0.999999, 0.999999))
    return {"spearman": rho, "spearman_ci": [float(np.tanh(z - half)), float(np.tanh(z + half))], "n": n}
