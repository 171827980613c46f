"""Per-example memorization, C-scores, tests, intervals and influence: pure numpy/scipy.

Everything here is computed from two arrays written by the trainer (see DESIGN):

- ``keep: bool[R, N]``: model ``r`` was trained on example ``i``;
- ``margins: float[R, N]``: ``logit_y - max_{c != y} logit_c`` of model ``r`` on example ``i``.
  Correctness is ``margins > 0``.

Definitions (one example ``i``; "in" = models with ``keep[:, i]``, "out" = the rest):

- ``acc_in``, ``acc_out``: fraction of in / out models classifying ``i`` correctly.
- Memorization (Feldman & Zhang 2020, eq. 1, subsampled estimator):
  ``mem = acc_in - acc_out``, in ``[-1, 1]``.
- C-score (Jiang et al., ICML 2021): expected held-out accuracy ``acc_out``; over several
  inclusion rates, the mean over rates (:func:`cscore_over_rates`).
- Fractional score (ICLR 2026 critique, "Is Memorization Actually Necessary for
  Generalization", as described by its reviews): ``(acc_in - acc_out) / (acc_in + acc_out)``.
  It is 1 whenever ``acc_out = 0``, however small ``acc_in`` is, so jmem applies a floor:
  **when ``acc_in < floor`` the score is 0**, not NaN. Below the floor ``mem <= acc_in < floor``,
  so the example cannot be memorized to any useful degree and ranks with the unmemorized;
  NaN stays reserved for "no models in or out" (no data at all).
- LiRA-style statistic (Carlini et al. 2022, "Membership Inference Attacks From First
  Principles", offline variant): LiRA fits a Gaussian to the OUT models' statistic and scores
  a target observation ``m`` by ``(m - mu_out) / sigma_out``. We store margins, not LiRA's
  logit-scaled confidence ``log p_y - log(1 - p_y)`` (it cannot be recovered from the margin
  alone), so **the margin itself is the per-model statistic**. Averaging the offline statistic
  over the IN models gives the per-example score ``lira = (margin_in - margin_out) / sigma_out``
  (``sigma_out``: sample std of the out margins, ``ddof=1``, floored at ``min_std``; NaN when
  fewer than 2 out models). It is "how many out-standard-deviations training moves the margin".
- Interval for ``mem``: Newcombe's hybrid score interval for a difference of independent
  proportions (Newcombe 1998, Stat. Med. 17:873, method 10), built from Wilson intervals.
- p-value: one-sided Fisher exact test of H0 ``acc_in = acc_out`` vs H1 ``acc_in > acc_out``,
  conditional on the total number of correct models: ``k_in ~ Hypergeom(R, K, n_in)``.
  Exact and conservative for discrete data (``P(p <= a) <= a`` under H0).
- Influence of training example ``i`` on test example ``j`` (Feldman & Zhang 2020, eq. 2):
  ``infl = keep.T @ correct_test / n_in - (~keep).T @ correct_test / n_out``. Computed in
  chunks of training examples so the ``N x T`` matrix never exists at once; since
  ``(~keep).T @ C = colsum(C) - keep.T @ C`` one matrix product per chunk suffices.

Examples with no model in or no model out get NaN for every score that needs both groups;
they are counted (:attr:`ExampleScores.n_undefined`), never silently dropped or set to 0.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
from scipy import stats

from jmem.errors import JmemError

DEFAULT_CHUNK = 2048        # training examples per chunk: R=4000 -> ~65 MB of float64 margins
DEFAULT_FRACTIONAL_FLOOR = 0.1
DEFAULT_MIN_STD = 1e-6
RATE_DECIMALS = 6           # model rates equal to this many decimals form one group


# ---------------------------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------------------------

def as_keep(keep, name: str = "keep") -> np.ndarray:
    """Check ``keep`` is a 2-D 0/1 mask and return it as ``bool[R, N]`` (no copy if bool)."""
    keep = np.asarray(keep) if not isinstance(keep, np.ndarray) else keep
    if keep.ndim != 2:
        raise JmemError(f"{name} has shape {keep.shape}; expected bool[R, N] (2-D)")
    if keep.dtype == np.bool_:
        return keep
    if not np.issubdtype(keep.dtype, np.integer):
        raise JmemError(f"{name} has dtype {keep.dtype}; expected bool (or 0/1 integers)")
    if keep.size and (keep.min() < 0 or keep.max() > 1):
        raise JmemError(f"{name} has values outside {{0, 1}} (min {keep.min()}, max {keep.max()})")
    return keep.astype(bool)


def check_margins(margins, num_models: int, num_examples: int | None, name: str) -> np.ndarray:
    """Check ``margins`` is ``float[R, N]`` matching ``keep``; finiteness is checked per chunk."""
    margins = np.asarray(margins) if not isinstance(margins, np.ndarray) else margins
    if margins.ndim != 2:
        raise JmemError(f"{name} has shape {margins.shape}; expected float[R, N] (2-D)")
    if not np.issubdtype(margins.dtype, np.floating):
        raise JmemError(f"{name} has dtype {margins.dtype}; expected a float array")
    if margins.shape[0] != num_models:
        raise JmemError(f"{name} has {margins.shape[0]} models (rows); keep has {num_models}")
    if num_examples is not None and margins.shape[1] != num_examples:
        raise JmemError(f"{name} has shape {margins.shape}; expected ({num_models}, {num_examples}) like keep")
    return margins


def check_finite(block: np.ndarray, name: str, col_offset: int = 0) -> None:
    """Raise a :class:`JmemError` naming the first non-finite entry of ``block`` (``[R, n]``)."""
    bad = ~np.isfinite(block)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise JmemError(
            f"{name} has {int(bad.sum())} non-finite value(s) in columns "
            f"{col_offset}..{col_offset + block.shape[1] - 1}, first {block[r, c]} at "
            f"model {r}, example {col_offset + c}")


def _chunks(n: int, size: int) -> Iterator[slice]:
    if size < 1:
        raise JmemError(f"chunk_size={size} must be >= 1")
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


# ---------------------------------------------------------------------------------------------
# Per-example counts and margin moments
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Counts:
    """Sufficient statistics of one example under the in/out split. All arrays have shape [N].

    n_in, n_out, correct_in, correct_out: int64[N].
    margin_in, margin_out: float64[N], mean margin of the in / out models (NaN if none).
    std_in, std_out: float64[N], sample std (ddof=1) of those margins (NaN if fewer than 2).
    """

    n_in: np.ndarray
    n_out: np.ndarray
    correct_in: np.ndarray
    correct_out: np.ndarray
    margin_in: np.ndarray
    margin_out: np.ndarray
    std_in: np.ndarray
    std_out: np.ndarray

    @property
    def num_models(self) -> int:
        return int(self.n_in[0] + self.n_out[0]) if self.n_in.size else 0


def _masked_mean_std(m: np.ndarray, mask: np.ndarray, n: np.ndarray):
    """Column means and ddof=1 stds of ``m[mask]``: two-pass (centred) for float accuracy."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(mask, m, 0.0).sum(axis=0) / n
        dev = np.where(mask, m - mean, 0.0)
        var = (dev * dev).sum(axis=0) / (n - 1)
    mean = np.where(n > 0, mean, np.nan)
    std = np.where(n > 1, np.sqrt(var), np.nan)
    return mean, std


def example_counts(keep, margins, *, chunk_size: int = DEFAULT_CHUNK,
                   name: str = "margins") -> Counts:
    """Counts and margin moments per training example, computed in column chunks.

    keep: bool[R, N]; margins: float[R, N] (may be a memory map). Correct = ``margins > 0``.
    Returns :class:`Counts` with arrays of shape [N]. Memory is O(R * chunk_size).
    Raises JmemError on shape mismatch or a non-finite margin (naming ``name``).
    """
    keep = as_keep(keep)
    num_models, num_examples = keep.shape
    margins = check_margins(margins, num_models, num_examples, name)
    out = {f: np.empty(num_examples, np.int64) for f in ("n_in", "n_out", "correct_in", "correct_out")}
    out.update({f: np.empty(num_examples) for f in ("margin_in", "margin_out", "std_in", "std_out")})
    for sl in _chunks(num_examples, chunk_size):
        k = np.asarray(keep[:, sl])
        m = np.asarray(margins[:, sl], dtype=np.float64)
        check_finite(m, name, sl.start)
        correct = m > 0
        n_in = k.sum(axis=0)
        n_out = num_models - n_in
        c_in = (correct & k).sum(axis=0)
        out["n_in"][sl], out["n_out"][sl] = n_in, n_out
        out["correct_in"][sl] = c_in
        out["correct_out"][sl] = correct.sum(axis=0) - c_in
        out["margin_in"][sl], out["std_in"][sl] = _masked_mean_std(m, k, n_in)
        out["margin_out"][sl], out["std_out"][sl] = _masked_mean_std(m, ~k, n_out)
    return Counts(**out)


# ---------------------------------------------------------------------------------------------
# Scores from counts (all elementwise over N)
# ---------------------------------------------------------------------------------------------

def accuracies(correct: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``correct / n`` as float64[N]; NaN where ``n == 0`` (no models: undefined, not 0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, correct / np.maximum(n, 1), np.nan)


def memorization(acc_in: np.ndarray, acc_out: np.ndarray) -> np.ndarray:
    """Feldman & Zhang (2020) memorization ``acc_in - acc_out``: float64[N] in [-1, 1]."""
    return acc_in - acc_out


def fractional_score(acc_in: np.ndarray, acc_out: np.ndarray,
                     floor: float = DEFAULT_FRACTIONAL_FLOOR) -> np.ndarray:
    """The critique's fractional difference ``(acc_in - acc_out) / (acc_in + acc_out)``.

    acc_in, acc_out: float[N]. Returns float64[N] in [-1, 1]: 0 where ``acc_in < floor``
    (so it is never 1 on noise; see the module docstring), NaN where either input is NaN.
    ``floor`` must be in (0, 1]; a positive floor also rules out the 0/0 case.
    """
    if not 0 < floor <= 1:
        raise JmemError(f"score.fractional_floor={floor} must be in (0, 1]")
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = (acc_in - acc_out) / (acc_in + acc_out)
    frac = np.where(acc_in < floor, 0.0, frac)
    return np.where(np.isnan(acc_in) | np.isnan(acc_out), np.nan, frac)


def lira_statistic(margin_in: np.ndarray, margin_out: np.ndarray, std_out: np.ndarray,
                   min_std: float = DEFAULT_MIN_STD) -> np.ndarray:
    """Mean over IN models of LiRA's offline statistic ``(m - mu_out) / sigma_out``, on margins.

    Carlini et al. (2022), offline LiRA with the margin as per-model statistic (module docstring).
    Inputs float[N]; returns float64[N]; NaN where ``std_out`` is NaN (fewer than 2 out models)
    or ``margin_in`` is NaN (no in models).
    """
    return (margin_in - margin_out) / np.maximum(std_out, min_std)


def wilson_interval(k: np.ndarray, n: np.ndarray, confidence: float = 0.95):
    """Wilson score interval for a binomial proportion ``k / n`` (Wilson 1927).

    k, n: int[N]. Returns (low, high) float64[N]; NaN where ``n == 0``.
    """
    z = stats.norm.ppf(0.5 + confidence / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = n.astype(np.float64)
        p = k / n
        denom = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Clip guards the rounding error of centre +- half at p in {0, 1}.
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def newcombe_interval(correct_in, n_in, correct_out, n_out, confidence: float = 0.95):
    """Newcombe's hybrid score interval for ``acc_in - acc_out`` (Newcombe 1998, method 10).

    All inputs int[N]. Returns (low, high) float64[N] within [-1, 1]; NaN where ``n_in == 0``
    or ``n_out == 0``. Coverage is close to nominal even for small counts, unlike Wald.
    """
    l1, u1 = wilson_interval(correct_in, n_in, confidence)
    l2, u2 = wilson_interval(correct_out, n_out, confidence)
    with np.errstate(invalid="ignore", divide="ignore"):
        p1, p2 = correct_in / n_in, correct_out / n_out
    diff = p1 - p2
    low = diff - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = diff + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return low, high


def fisher_one_sided(correct_in, n_in, correct_out, n_out) -> np.ndarray:
    """One-sided Fisher exact p-value for H1 ``acc_in > acc_out``, vectorized over N.

    Conditional on the total correct ``K = correct_in + correct_out`` out of ``n_in + n_out``
    models, ``correct_in`` is hypergeometric under H0; p = P(X >= correct_in).
    All inputs int[N]; returns float64[N] in (0, 1]; NaN where ``n_in == 0`` or ``n_out == 0``.
    """
    total = n_in + n_out
    k_total = correct_in + correct_out
    valid = (n_in > 0) & (n_out > 0)
    p = np.full(np.shape(n_in), np.nan)
    p[valid] = stats.hypergeom.sf(correct_in[valid] - 1, total[valid], k_total[valid], n_in[valid])
    # sf can round a hair above 1 or to exactly 0 deep in the tail; keep p in (0, 1].
    return np.clip(p, np.finfo(np.float64).tiny, 1.0)


# ---------------------------------------------------------------------------------------------
# All per-example scores at once
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ExampleScores:
    """Every per-example score of one set of models. Arrays have shape [N].

    Counts (int64): n_in, n_out, correct_in, correct_out.
    float64, NaN where n_in == 0 or n_out == 0 (see :attr:`undefined`): mem (Feldman &
    Zhang), mem_ci_low / mem_ci_high (Newcombe interval), fractional (floored), p_value
    (one-sided Fisher), lira (NaN also when n_out < 2).
    float64, NaN only where their own group is empty: acc_in, margin_in (n_in == 0);
    acc_out, cscore (held-out accuracy, = acc_out for one rate), margin_out (n_out == 0).
    """

    n_in: np.ndarray
    n_out: np.ndarray
    correct_in: np.ndarray
    correct_out: np.ndarray
    acc_in: np.ndarray
    acc_out: np.ndarray
    mem: np.ndarray
    mem_ci_low: np.ndarray
    mem_ci_high: np.ndarray
    cscore: np.ndarray
    fractional: np.ndarray
    margin_in: np.ndarray
    margin_out: np.ndarray
    lira: np.ndarray
    p_value: np.ndarray
    num_models: int
    confidence: float

    @property
    def undefined(self) -> np.ndarray:
        """bool[N]: examples with no model in or no model out (their scores are NaN)."""
        return (self.n_in == 0) | (self.n_out == 0)

    def nan_counts(self) -> dict:
        """How many examples lack in models, out models, either; JSON-ready ints."""
        return {"zero_in": int((self.n_in == 0).sum()), "zero_out": int((self.n_out == 0).sum()),
                "undefined": int(self.undefined.sum())}

    def columns(self) -> dict:
        """The per-example arrays by name (for tables), in a stable order."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("num_models", "confidence")}


def scores_from_counts(counts: Counts, *, confidence: float = 0.95,
                       fractional_floor: float = DEFAULT_FRACTIONAL_FLOOR,
                       min_std: float = DEFAULT_MIN_STD) -> ExampleScores:
    """Turn :class:`Counts` into :class:`ExampleScores` (pure, elementwise over N)."""
    if not 0 < confidence < 1:
        raise JmemError(f"score.confidence={confidence} must be in (0, 1)")
    acc_in = accuracies(counts.correct_in, counts.n_in)
    acc_out = accuracies(counts.correct_out, counts.n_out)
    undefined = (counts.n_in == 0) | (counts.n_out == 0)
    # An example seen by every model still has acc_in, but mem and friends need both groups.
    acc_in_d = np.where(undefined, np.nan, acc_in)
    acc_out_d = np.where(undefined, np.nan, acc_out)
    low, high = newcombe_interval(counts.correct_in, counts.n_in,
                                  counts.correct_out, counts.n_out, confidence)
    return ExampleScores(
        n_in=counts.n_in, n_out=counts.n_out,
        correct_in=counts.correct_in, correct_out=counts.correct_out,
        acc_in=acc_in, acc_out=acc_out,
        mem=memorization(acc_in_d, acc_out_d),
        mem_ci_low=low, mem_ci_high=high,
        cscore=acc_out,
        fractional=fractional_score(acc_in_d, acc_out_d, fractional_floor),
        margin_in=counts.margin_in, margin_out=counts.margin_out,
        lira=lira_statistic(counts.margin_in, counts.margin_out, counts.std_out, min_std),
        p_value=fisher_one_sided(counts.correct_in, counts.n_in,
                                 counts.correct_out, counts.n_out),
        num_models=counts.num_models, confidence=confidence,
    )


def compute_scores(keep, margins, *, confidence: float = 0.95,
                   fractional_floor: float = DEFAULT_FRACTIONAL_FLOOR,
                   min_std: float = DEFAULT_MIN_STD, chunk_size: int = DEFAULT_CHUNK,
                   name: str = "margins") -> ExampleScores:
    """All per-example scores of one set of models.

    keep: bool[R, N]; margins: float[R, N] (correct = margin > 0). Returns
    :class:`ExampleScores` (arrays [N]). Memory O(R * chunk_size) beyond the inputs.
    """
    counts = example_counts(keep, margins, chunk_size=chunk_size, name=name)
    return scores_from_counts(counts, confidence=confidence, fractional_floor=fractional_floor,
                              min_std=min_std)


# ---------------------------------------------------------------------------------------------
# Several inclusion rates in one run
# ---------------------------------------------------------------------------------------------

def group_rates(model_rates, num_models: int):
    """Group models by inclusion rate.

    model_rates: float[R]. Returns (rates float64[G] sorted, group int64[R] with
    ``rates[group[r]]`` the rate of model r). Rates equal to 6 decimals share a group.
    """
    rates = np.asarray(model_rates, dtype=np.float64)
    if rates.shape != (num_models,):
        raise JmemError(f"model_rates has shape {rates.shape}; expected ({num_models},) (one per model)")
    if not np.all(np.isfinite(rates)) or rates.min() < 0 or rates.max() > 1:
        raise JmemError("model_rates has values outside [0, 1] or non-finite values")
    unique, group = np.unique(np.round(rates, RATE_DECIMALS), return_inverse=True)
    return unique, group.reshape(-1)


def scores_by_rate(keep, margins, model_rates, **kwargs) -> dict:
    """:func:`compute_scores` separately for the models of each inclusion rate.

    keep: bool[R, N]; margins: float[R, N]; model_rates: float[R]. Returns
    ``{rate: ExampleScores}`` in increasing rate order. Scores at different rates are never
    pooled: the critique's first correction compares them rate by rate.
    """
    keep = as_keep(keep)
    rates, group = group_rates(model_rates, keep.shape[0])
    margins = check_margins(margins, *keep.shape, kwargs.get("name", "margins"))
    result = {}
    for g, rate in enumerate(rates):
        rows = np.flatnonzero(group == g)
        result[float(rate)] = compute_scores(keep[rows], margins[rows], **kwargs)
    return result


def cscore_over_rates(by_rate: dict) -> np.ndarray:
    """Jiang et al. (2021) C-score: held-out accuracy averaged over rates, float64[N].

    Rates at which an example has no out model are skipped; NaN if it has none at any rate.
    """
    acc_out = np.stack([s.acc_out for s in by_rate.values()])
    with np.errstate(invalid="ignore"):
        valid = ~np.isnan(acc_out)
        total = np.where(valid, acc_out, 0.0).sum(axis=0)
        count = valid.sum(axis=0)
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def rate_curve(by_rate: dict, mem_threshold: float = 0.25) -> list:
    """Summary of the scores at each rate: the curve over the inclusion rate, JSON-ready.

    Per rate: number of models, mean and median mem and C-score over examples with defined
    scores, fraction with ``mem >= mem_threshold``, and the number of undefined examples.
    """
    curve = []
    for rate, s in by_rate.items():
        defined = ~s.undefined
        mem = s.mem[defined]
        curve.append({
            "rate": rate, "num_models": s.num_models,
            "mean_mem": _nan_to_none(np.mean(mem)) if mem.size else None,
            "median_mem": _nan_to_none(np.median(mem)) if mem.size else None,
            "mean_cscore": _nan_to_none(np.mean(s.cscore[defined])) if mem.size else None,
            "frac_mem_above_threshold": float(np.mean(mem >= mem_threshold)) if mem.size else None,
            "mem_threshold": mem_threshold,
            **s.nan_counts(),
        })
    return curve


def _nan_to_none(x):
    x = float(x)
    return None if np.isnan(x) else x


# ---------------------------------------------------------------------------------------------
# Influence (Feldman & Zhang 2020, eq. 2) in chunks
# ---------------------------------------------------------------------------------------------

def correct_matrix(margins_test, num_models: int, name: str = "margins_test",
                   chunk_size: int = 8192) -> np.ndarray:
    """``float32[R, T]`` of 0/1 correctness (``margins_test > 0``), checked finite per chunk.

    float32 keeps the influence products on the fast SGEMM path; sums of 0/1 values stay exact
    in float32 up to 2**24 models.
    """
    margins_test = check_margins(margins_test, num_models, None, name)
    out = np.empty(margins_test.shape, np.float32)
    for sl in _chunks(margins_test.shape[1], chunk_size):
        block = np.asarray(margins_test[:, sl])
        check_finite(block, name, sl.start)
        out[:, sl] = block > 0
    return out


def iter_influence(keep, correct_test: np.ndarray, *, chunk_size: int = DEFAULT_CHUNK):
    """Yield ``(train_slice, infl)`` with ``infl: float32[T, n_chunk]`` = influence.T of a chunk.

    keep: bool[R, N]; correct_test: float32[R, T] from :func:`correct_matrix`.
    ``infl[j, c]`` is the influence of training example ``train_slice.start + c`` on test
    example ``j``: ``mean(correct_test[:, j] | in) - mean(correct_test[:, j] | out)``;
    NaN columns for examples with no model in or out. Peak extra memory is about
    ``T * chunk_size * 8`` bytes.
    """
    keep = as_keep(keep)
    num_models, num_examples = keep.shape
    if correct_test.shape[0] != num_models:
        raise JmemError(f"correct_test has {correct_test.shape[0]} models; keep has {num_models}")
    correct_test = np.asarray(correct_test, dtype=np.float32)
    col_total = correct_test.sum(axis=0, dtype=np.float64).astype(np.float32)[:, None]  # [T, 1]
    ct = correct_test.T  # [T, R] view; numpy passes the transpose flag to SGEMM, no copy
    for sl in _chunks(num_examples, chunk_size):
        k = np.asarray(keep[:, sl])
        n_in = k.sum(axis=0).astype(np.float32)
        n_out = np.float32(num_models) - n_in
        hits_in = ct @ k.astype(np.float32)              # [T, n]: correct AND in, exact counts
        with np.errstate(invalid="ignore", divide="ignore"):
            # (~keep).T @ C = colsum(C) - keep.T @ C: one product per chunk instead of two.
            inv_in = np.where(n_in > 0, 1 / n_in, np.nan).astype(np.float32)
            inv_out = np.where(n_out > 0, 1 / n_out, np.nan).astype(np.float32)
            infl = hits_in * (inv_in + inv_out)
            infl -= col_total * inv_out
        yield sl, infl


@dataclasses.dataclass(frozen=True)
class InfluenceSummary:
    """Top influencers per test example and high-influence pairs from one chunked pass.

    top_index: int64[T, k], training indices by decreasing influence (-1 where fewer than k
      training examples have a defined influence); top_value: float32[T, k] (NaN there).
    pair_train, pair_test: int64[P]; pair_infl: float32[P]: every pair with
      ``mem[i] >= mem_threshold``, ``infl >= infl_threshold`` and (if ``same_class``)
      ``labels_train[i] == labels_test[j]`` (Feldman & Zhang 2020, section 4), sorted by
      (train, test).
    """

    top_index: np.ndarray
    top_value: np.ndarray
    pair_train: np.ndarray
    pair_test: np.ndarray
    pair_infl: np.ndarray
    mem_threshold: float
    infl_threshold: float
    same_class: bool


def _top_k_columns(val: np.ndarray, k: int):
    """Positions and values of the k largest entries of each row of ``val: [T, n]``.

    NaN counts as -inf. Returns (pos int64[T, min(k, n)], values), unordered.
    """
    if val.shape[1] <= k:
        return np.broadcast_to(np.arange(val.shape[1]), val.shape), val
    # numpy orders NaN after every number, so on -val the NaNs (undefined) come last.
    pos = np.argpartition(-val, k - 1, axis=1)[:, :k]
    return pos, np.take_along_axis(val, pos, axis=1)


def _merge_top_k(best_idx, best_val, infl, offset, k):
    """Merge a chunk's top k (training indices ``offset + column``) into the running top k."""
    pos, val = _top_k_columns(infl, k)  # shrink the chunk first: concatenating [T, k] is cheap
    all_val = np.concatenate([best_val, val], axis=1)
    all_idx = np.concatenate([best_idx, pos + offset], axis=1)
    pos, top = _top_k_columns(all_val, k)
    return np.take_along_axis(all_idx, pos, axis=1), top


def influence_summary(keep, margins_test, mem, labels_train, labels_test, *, k: int = 10,
                      mem_threshold: float = 0.25, infl_threshold: float = 0.15,
                      same_class: bool = True, chunk_size: int = DEFAULT_CHUNK,
                      max_pairs: int = 10_000_000,
                      name: str = "margins_test") -> InfluenceSummary:
    """Top-k influencers per test example and F&Z high-influence pairs, without N x T memory.

    keep: bool[R, N]; margins_test: float[R, T]; mem: float[N] (memorization of the same
    models); labels_train: int[N]; labels_test: int[T]. One pass of chunked SGEMMs
    (``2 R N T`` flops in all); peak extra memory about ``2 * T * (chunk_size + k) * 4`` bytes.
    Raises JmemError if more than ``max_pairs`` pairs pass the thresholds (thresholds too low).
    """
    keep = as_keep(keep)
    num_models, num_examples = keep.shape
    correct = correct_matrix(margins_test, num_models, name)
    num_test = correct.shape[1]
    mem = np.asarray(mem, dtype=np.float64)
    labels_train, labels_test = np.asarray(labels_train), np.asarray(labels_test)
    if mem.shape != (num_examples,):
        raise JmemError(f"mem has shape {mem.shape}; expected ({num_examples},)")
    if labels_train.shape != (num_examples,):
        raise JmemError(f"labels_train has shape {labels_train.shape}; expected ({num_examples},)")
    if labels_test.shape != (num_test,):
        raise JmemError(f"labels_test has shape {labels_test.shape}; expected ({num_test},) like {name}")
    if k < 0:
        raise JmemError(f"score.influencers_k={k} must be >= 0")
    k = min(k, num_examples)
    best_idx = np.full((num_test, 0), -1, np.int64)
    best_val = np.full((num_test, 0), np.nan, np.float32)
    pairs_train, pairs_test, pairs_infl = [], [], []
    n_pairs = 0
    with np.errstate(invalid="ignore"):
        candidates = mem >= mem_threshold
    for sl, infl in iter_influence(keep, correct, chunk_size=chunk_size):
        if k:
            best_idx, best_val = _merge_top_k(best_idx, best_val, infl, sl.start, k)
        cols = np.flatnonzero(candidates[sl])
        if cols.size:
            sub = infl[:, cols]                                       # [T, c]
            hit = sub >= infl_threshold
            if same_class:
                hit &= labels_test[:, None] == labels_train[sl][cols][None, :]
            j, c = np.nonzero(hit)
            n_pairs += j.size
            if n_pairs > max_pairs:
                raise JmemError(f"more than max_pairs={max_pairs} high-influence pairs; "
                                f"raise score.influence_threshold={infl_threshold} or "
                                f"score.pair_mem_threshold={mem_threshold}")
            pairs_train.append(sl.start + cols[c])
            pairs_test.append(j)
            pairs_infl.append(sub[j, c])
    # Sort the final top-k by decreasing influence (argpartition leaves them unordered).
    key = np.where(np.isnan(best_val), -np.inf, best_val)
    order = np.argsort(-key, axis=1, kind="stable")
    top_val = np.take_along_axis(best_val, order, axis=1)
    top_idx = np.where(np.isnan(top_val), -1, np.take_along_axis(best_idx, order, axis=1))
    pt = np.concatenate(pairs_train) if pairs_train else np.empty(0, np.int64)
    pj = np.concatenate(pairs_test) if pairs_test else np.empty(0, np.int64)
    pv = np.concatenate(pairs_infl) if pairs_infl else np.empty(0, np.float32)
    order = np.lexsort((pj, pt))
    return InfluenceSummary(top_index=top_idx.astype(np.int64), top_value=top_val,
                            pair_train=pt[order].astype(np.int64),
                            pair_test=pj[order].astype(np.int64), pair_infl=pv[order],
                            mem_threshold=mem_threshold, infl_threshold=infl_threshold,
                            same_class=same_class)
