"""Paired statistics of a removal experiment: arms compared seed by seed.

A removal experiment trains several *arms* (e.g. the full training set, and the set with the
most memorized examples removed), each with the same ``S`` seeds. Seed ``s`` of every arm
shares its initialisation and data order, so most seed noise cancels in the arm-to-arm
difference at seed ``s``: every comparison here is **paired over seeds**.

Units and signs:

- accuracies are fractions in ``[0, 1]`` (``float[S]``: one per seed, on one test set), or
  per-example correctness ``bool[S, T]``;
- differences, intervals, standard deviations and detectable effects are in **percentage
  points** (pp = 100 x fraction), always **arm a minus arm b**.

Pieces: :func:`paired_differences`; intervals :func:`bootstrap_mean_ci` (seeds) and
:func:`two_level_bootstrap_ci` (seeds and test examples); tests :func:`sign_flip_pvalue`
(paired) and :func:`welch_pvalue` (unpaired, for contrast); :func:`holm`;
:func:`min_detectable_effect`; :func:`effect_size`; :func:`share_of_change` (Feldman & Zhang's
subset accounting); and the report :func:`compare` -> :class:`Comparison`,
:func:`adjust_holm`. The verdict's wording is ``jmem.study.retrain.verdict``.

Randomness: every random function takes an explicit ``np.random.Generator`` and draws in
chunks whose size depends only on the input shapes (``CHUNK_ELEMENTS``), so the same generator
state and inputs give the same result, with memory bounded by the chunk, never ``B x S x T``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import optimize, stats

from jmem.errors import JmemError

PP = 100.0                  # percentage points per unit of accuracy
CHUNK_ELEMENTS = 1 << 20    # numbers per random draw chunk: ~8 MB of int64/float64
MAX_EXACT_SEEDS = 24        # exact sign-flip enumeration costs 2^S * S: cap it
ZERO_CHANGE = 1e-9          # |mean accuracy change| (fraction) at or below this is "no change":
                            # no test set has 10^9 examples, so it can only be rounding
ACCURACY_TOLERANCE = 1e-6   # per-seed accuracy vs mean of its correctness row (float32 rounding)


# ---------------------------------------------------------------------------------------------
# Validation (every message names the argument)
# ---------------------------------------------------------------------------------------------

def _vector(x, name: str, *, min_len: int = 1) -> np.ndarray:
    """``x`` as finite ``float64[n]`` with ``n >= min_len``."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise JmemError(f"{name}: not an array of numbers ({err})") from None
    if arr.ndim != 1:
        raise JmemError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    if arr.size < min_len:
        raise JmemError(f"{name}: need at least {min_len} values, got {arr.size}")
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise JmemError(f"{name}: {bad} non-finite value(s) (NaN or inf)")
    return arr


def _accuracy(x, name: str, *, min_len: int = 1) -> np.ndarray:
    """``x`` as ``float64[S]`` accuracies in [0, 1] (catches pp passed by mistake)."""
    arr = _vector(x, name, min_len=min_len)
    if arr.size and (arr.min() < 0 or arr.max() > 1):
        raise JmemError(f"{name}: accuracies must be fractions in [0, 1], got range "
                        f"[{arr.min():g}, {arr.max():g}]")
    return arr


def _same_length(reference: np.ndarray, other: np.ndarray, name: str) -> None:
    if other.shape != reference.shape:
        raise JmemError(f"{name}: has {other.size} seeds, expected {reference.size} "
                        "(seed s of every arm is paired)")


def _correctness(x, name: str) -> np.ndarray:
    """``x`` as ``bool[S, T]`` (bool or 0/1 integers)."""
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.size == 0:
        raise JmemError(f"{name}: expected non-empty bool[S, T], got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr
    if not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() > 1:
        raise JmemError(f"{name}: expected bool (or 0/1 integers), got dtype {arr.dtype}")
    return arr.astype(bool)


def _probability(x, name: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)) \
            or not 0 < x < 1:
        raise JmemError(f"{name}: must be a number strictly between 0 and 1, got {x!r}")
    return float(x)


def _count(x, name: str, *, minimum: int = 1) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < minimum:
        raise JmemError(f"{name}: must be an integer >= {minimum}, got {x!r}")
    return int(x)


def _generator(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise JmemError(f"rng: expected a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    return rng


# ---------------------------------------------------------------------------------------------
# Shared machinery
# ---------------------------------------------------------------------------------------------

def _chunks(total: int, width: int):
    """``(start, rows)`` blocks covering ``range(total)`` with ``rows * width <= CHUNK_ELEMENTS``.

    The block size depends only on ``width``, so draws (and results) never depend on the
    machine.
    """
    rows = max(1, CHUNK_ELEMENTS // max(1, width))
    for start in range(0, total, rows):
        yield start, min(rows, total - start)


def _resample_counts(rng: np.random.Generator, n: int, rows: int) -> np.ndarray:
    """``float64[rows, n]``: how often each of ``n`` items is drawn in a bootstrap resample.

    Multinomial(n, uniform) counts, made by bincounting ``n`` uniform indices per row: the
    same distribution as ``rng.multinomial`` but one vectorised draw instead of ``n``
    sequential binomials per row (the difference matters at n = 10,000 test examples).
    """
    idx = rng.integers(0, n, size=(rows, n)) + (np.arange(rows) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float64)


def _seed_bootstrap(columns: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``float64[B, K]``: column means of ``columns: float[S, K]`` over resampled seeds.

    All columns share each replicate's seeds: that is what keeps arms (and subsets) paired.
    """
    num_seeds = columns.shape[0]
    return np.concatenate([
        _resample_counts(rng, num_seeds, rows) @ columns / num_seeds
        for _, rows in _chunks(resamples, num_seeds * columns.shape[1])
    ])


def _percentile_interval(replicates: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0
    low, high = np.nanquantile(replicates, [tail, 1.0 - tail])
    return float(low), float(high)


def _sd(values: np.ndarray) -> float:
    """Sample standard deviation (``ddof=1``); exactly 0 for constant input (no rounding)."""
    return 0.0 if np.ptp(values) == 0 else float(np.std(values, ddof=1))


# ---------------------------------------------------------------------------------------------
# Differences, intervals, tests
# ---------------------------------------------------------------------------------------------

def paired_differences(acc_a, acc_b) -> np.ndarray:
    """Per-seed accuracy differences ``a - b`` in pp.

    Args:
        acc_a, acc_b: ``float[S]`` accuracies (fractions in [0, 1]); index ``s`` is seed ``s``
            of each arm.

    Returns:
        ``float64[S]``: ``100 * (acc_a - acc_b)``.
    """
    a = _accuracy(acc_a, "acc_a")
    b = _accuracy(acc_b, "acc_b")
    _same_length(a, b, "acc_b")
    return PP * (a - b)


def bootstrap_mean_ci(diffs, *, level: float = 0.95, resamples: int = 10_000,
                      rng: np.random.Generator) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of ``diffs`` over seeds.

    Seeds are the independent units (each seed is a fresh initialisation and data order shared
    by the arms), so they are resampled with replacement, ``resamples`` times, and the interval
    is the ``(1-level)/2`` and ``(1+level)/2`` quantiles of the resampled means. The percentile
    method is chosen for simplicity and because the mean of S >= 20 paired differences is
    close to symmetric. Like every plug-in bootstrap it is a little narrow for few seeds (its
    spread uses the ``ddof=0`` variance and normal-like rather than t quantiles), so coverage
    falls below ``level`` for S below about 10.

    Args:
        diffs: ``float[S]`` paired differences (any unit; the interval is in the same unit).
        level: confidence level in (0, 1).
        resamples: number of bootstrap replicates B; drawn in chunks of ``CHUNK_ELEMENTS``.
        rng: the source of randomness.

    Returns:
        ``(low, high)`` floats.
    """
    d = _vector(diffs, "diffs")
    means = _seed_bootstrap(d[:, None], _count(resamples, "resamples"), _generator(rng))
    return _percentile_interval(means[:, 0], _probability(level, "level"))


def two_level_bootstrap_ci(correct_a, correct_b, *, level: float = 0.95,
                           resamples: int = 10_000,
                           rng: np.random.Generator) -> tuple[float, float]:
    """Percentile interval for the mean accuracy difference (pp), resampling seeds AND examples.

    The seed-only interval treats the test set as fixed; this one also asks how the difference
    would move on another test set of the same size from the same distribution. Each replicate
    draws seed multiplicities ``w: [S]`` and test-example multiplicities ``v: [T]``, the same
    for both arms (paired in seeds and in examples), and its mean difference is
    ``w^T D v / (S T)`` with ``D = correct_a - correct_b: float[S, T]``. ``D @ V`` is one matrix
    product per chunk of replicates, so memory is ``O(S T + chunk x (S + T))``, never
    ``B x S x T``.

    Resampling both levels counts the seed-by-example noise (e.g. a borderline example that
    flips between seeds) at each level, so the interval is conservative (coverage above
    ``level``) when that noise dominates; it is the right interval for a claim about the test
    distribution, where the seed-only one undercovers.

    Args:
        correct_a, correct_b: ``bool[S, T]`` per-seed, per-example correctness on one test set.
        level, resamples, rng: as in :func:`bootstrap_mean_ci`.

    Returns:
        ``(low, high)`` in pp.
    """
    a = _correctness(correct_a, "correct_a")
    b = _correctness(correct_b, "correct_b")
    if a.shape != b.shape:
        raise JmemError(f"correct_b: shape {b.shape} differs from correct_a's {a.shape}")
    level = _probability(level, "level")
    resamples = _count(resamples, "resamples")
    rng = _generator(rng)
    num_seeds, num_examples = a.shape
    diff = a.astype(np.float64) - b                          # [S, T] in {-1, 0, 1}
    replicates = []
    for _, rows in _chunks(resamples, num_seeds + num_examples):
        w = _resample_counts(rng, num_seeds, rows)           # [rows, S]
        v = _resample_counts(rng, num_examples, rows)        # [rows, T]
        dv = diff @ v.T                                      # [S, rows]
        replicates.append(np.einsum("rs,sr->r", w, dv))
    means = PP * np.concatenate(replicates) / (num_seeds * num_examples)
    return _percentile_interval(means, level)


def sign_flip_pvalue(diffs, *, exact_limit: int = 16, resamples: int = 100_000,
                     rng: np.random.Generator) -> float:
    """Two-sided paired permutation (sign-flip) test of ``mean(diffs) = 0``.

    Under the null the arms are exchangeable within each seed, so each difference is equally
    likely to carry either sign. The p-value is the share of sign vectors whose
    ``|mean(signs * diffs)|`` reaches the observed ``|mean(diffs)|``: exact (all ``2^S``
    vectors) when ``S <= exact_limit``, else ``resamples`` random vectors with the +1
    correction ``(count + 1) / (resamples + 1)``, which keeps the Monte Carlo test valid.
    Sums equal up to rounding (``1e-12`` of ``sum |diffs|``) count as reaching the observed
    value, so floating-point ties cannot flip the answer. All-zero differences give 1.

    Args:
        diffs: ``float[S]`` paired differences.
        exact_limit: enumerate exactly up to this many seeds (at most ``MAX_EXACT_SEEDS``).
        resamples: Monte Carlo sign vectors when ``S > exact_limit``.
        rng: the source of randomness (unused on the exact path, required for uniformity).

    Returns:
        p-value in (0, 1].
    """
    d = _vector(diffs, "diffs")
    exact_limit = _count(exact_limit, "exact_limit", minimum=0)
    if exact_limit > MAX_EXACT_SEEDS:
        raise JmemError(f"exact_limit: at most {MAX_EXACT_SEEDS} (2^S sign vectors), "
                        f"got {exact_limit}")
    resamples = _count(resamples, "resamples")
    rng = _generator(rng)
    scale = float(np.abs(d).sum())
    if scale == 0:
        return 1.0                     # every sign vector gives mean 0: no evidence at all
    num_seeds = d.size
    threshold = abs(d.sum()) - 1e-12 * scale
    exact = num_seeds <= exact_limit
    total = 2 ** num_seeds if exact else resamples
    count = 0
    for start, rows in _chunks(total, num_seeds):
        if exact:                      # bit j of the code is the sign of seed j
            codes = np.arange(start, start + rows, dtype=np.int64)[:, None]
            bits = (codes >> np.arange(num_seeds)) & 1
        else:
            bits = rng.integers(0, 2, size=(rows, num_seeds))
        count += int(np.count_nonzero(np.abs((1 - 2 * bits) @ d) >= threshold))
    return count / total if exact else (count + 1) / (resamples + 1)


def welch_pvalue(a, b) -> float:
    """Two-sided Welch t-test of equal means, treating the arms as independent samples.

    Equals ``scipy.stats.ttest_ind(a, b, equal_var=False).pvalue``. It ignores the pairing, so
    next to :func:`sign_flip_pvalue` it shows how much pairing seeds buys. When both samples
    are constant the t statistic is 0/0; we return 1.0 if the constants are equal (no
    difference) and 0.0 otherwise (a difference with no noise at all).

    Args:
        a: ``float[S1]``, b: ``float[S2]``, each with at least 2 values.
    """
    a = _vector(a, "a", min_len=2)
    b = _vector(b, "b", min_len=2)
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return 1.0 if a[0] == b[0] else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def holm(pvalues) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values, in the input order (scipy has no Holm
    adjustment; statsmodels' ``multipletests(method="holm")`` is the peer, not a dependency).

    With ``p_(1) <= ... <= p_(K)``: ``adj_(i) = max_{j <= i} min(1, (K - j + 1) p_(j))``.
    Rejecting ``adj <= alpha`` controls the family-wise error rate at ``alpha``; it never
    rejects more than unadjusted tests, and its smallest value is Bonferroni's ``K p_(1)``.

    Args:
        pvalues: ``float[K]`` in [0, 1] (``K`` may be 0).

    Returns:
        ``float64[K]``.
    """
    p = _vector(pvalues, "pvalues", min_len=0)
    if p.size and (p.min() < 0 or p.max() > 1):
        raise JmemError(f"pvalues: must lie in [0, 1], got range [{p.min():g}, {p.max():g}]")
    order = np.argsort(p, kind="stable")
    scaled = (p.size - np.arange(p.size)) * p[order]
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return adjusted


def min_detectable_effect(sd_diff: float, num_seeds: int, *, alpha: float = 0.05,
                          power: float = 0.8) -> float:
    """Smallest true mean paired difference a two-sided paired test detects with ``power``.

    Exact for the paired t-test with normal differences: the t statistic has a noncentral t
    distribution (``df = S - 1``, noncentrality ``delta sqrt(S) / sd``), and we solve
    ``P(|T| > t_{1-alpha/2, S-1}) = power`` for the noncentrality (root finding). The sign-flip
    test has asymptotically the same power. For large S this approaches the normal formula
    ``(z_{1-alpha/2} + z_power) sd / sqrt(S)``; for few seeds it is noticeably larger.

    Args:
        sd_diff: standard deviation of the paired differences over seeds (``ddof=1``), >= 0.
        num_seeds: S >= 2.
        alpha: two-sided significance level in (0, 1).
        power: target power in (alpha, 1).

    Returns:
        The effect in the units of ``sd_diff`` (0 when ``sd_diff`` is 0: without noise any
        non-zero difference is detected).
    """
    sd = float(_vector([sd_diff], "sd_diff")[0])
    if sd < 0:
        raise JmemError(f"sd_diff: must be >= 0, got {sd_diff!r}")
    num_seeds = _count(num_seeds, "num_seeds", minimum=2)
    alpha = _probability(alpha, "alpha")
    power = _probability(power, "power")
    if power <= alpha:
        raise JmemError(f"power: must exceed alpha ({alpha:g}), got {power:g}")
    if sd == 0:
        return 0.0
    df = num_seeds - 1
    critical = stats.t.ppf(1 - alpha / 2, df)

    def shortfall(ncp: float) -> float:
        # Lower tail P(T < -c | ncp) written as P(T > c | -ncp): scipy's nct.cdf far in the
        # left tail can return NaN, its sf does not.
        return stats.nct.sf(critical, df, ncp) + stats.nct.sf(critical, df, -ncp) - power

    high = critical + stats.norm.ppf(power) + 1.0
    while shortfall(high) < 0:         # heavy tails at tiny df need a wider bracket
        high *= 2
    ncp = optimize.brentq(shortfall, 0.0, high, xtol=1e-10)
    return ncp * sd / math.sqrt(num_seeds)


def effect_size(diffs) -> float:
    """Cohen's ``d_z = mean(diffs) / sd(diffs)`` (``ddof=1``), the standardised paired effect.

    With zero spread: NaN when the mean is also 0 (no effect, no scale), ``+-inf`` with the
    mean's sign otherwise (a noiseless difference).

    Args:
        diffs: ``float[S]``, S >= 2.
    """
    d = _vector(diffs, "diffs", min_len=2)
    mean, sd = float(d.mean()), _sd(d)
    if sd == 0:
        return math.nan if mean == 0 else math.copysign(math.inf, mean)
    return mean / sd


def share_of_change(acc_sub_a, acc_sub_b, acc_all_a, acc_all_b, sub_fraction: float, *,
                    level: float = 0.95, resamples: int = 10_000,
                    rng: np.random.Generator) -> dict:
    """How much of the total accuracy change a test subset ``T_h`` carries (Feldman & Zhang).

    With ``Delta(X) = mean_s(acc_a(X) - acc_b(X))`` (arm a minus arm b, over seeds) and
    ``f = |T_h| / |T|``, ``acc(T) = f acc(T_h) + (1 - f) acc(T \\ T_h)`` gives
    ``share = f Delta(T_h) / Delta(T)``: 1 when all the change is on ``T_h``, ``f`` when
    ``T_h`` changes like the rest (the sign convention cancels in the ratio).
    The interval is a percentile bootstrap over seeds, the same seeds for all four inputs.

    Undefined (NaN) cases, by design rather than as huge numbers:

    - ``estimate``, ``low``, ``high`` are NaN when ``|Delta(T)| <= ZERO_CHANGE``: there is no
      change to share out.
    - ``low``, ``high`` are NaN when the bootstrap interval of ``Delta(T)`` at ``level``
      contains 0: the ratio's confidence set is then unbounded (as in Fieller's interval), so
      report ``delta_all`` and ``delta_sub`` instead. Otherwise the (fewer than
      ``(1-level)/2``) replicates with ``|Delta*(T)| <= ZERO_CHANGE`` are left out.

    Args:
        acc_sub_a, acc_sub_b: ``float[S]`` accuracies on ``T_h``.
        acc_all_a, acc_all_b: ``float[S]`` accuracies on the whole test set ``T``.
        sub_fraction: ``|T_h| / |T|`` in (0, 1].
        level, resamples, rng: as in :func:`bootstrap_mean_ci`.

    Returns:
        ``{"estimate", "low", "high"}`` (fractions of the change) plus ``"delta_sub"`` and
        ``"delta_all"`` (pp).
    """
    sub_a = _accuracy(acc_sub_a, "acc_sub_a")
    inputs = {"acc_sub_b": acc_sub_b, "acc_all_a": acc_all_a, "acc_all_b": acc_all_b}
    sub_b, all_a, all_b = (_accuracy(v, k) for k, v in inputs.items())
    for name, arr in zip(inputs, (sub_b, all_a, all_b)):
        _same_length(sub_a, arr, name)
    if isinstance(sub_fraction, bool) or not isinstance(sub_fraction, (int, float, np.number)) \
            or not 0 < sub_fraction <= 1:
        raise JmemError(f"sub_fraction: must be |T_h| / |T| in (0, 1], got {sub_fraction!r}")
    level = _probability(level, "level")
    resamples = _count(resamples, "resamples")
    rng = _generator(rng)

    def share(delta_sub, delta_all):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(np.abs(delta_all) > ZERO_CHANGE,
                            sub_fraction * delta_sub / delta_all, np.nan)

    deltas = np.stack([sub_a - sub_b, all_a - all_b], axis=1)   # [S, 2]: sub, all
    delta_sub, delta_all = deltas.mean(axis=0)
    result = {"estimate": float(share(delta_sub, delta_all)), "low": math.nan,
              "high": math.nan, "delta_sub": PP * float(delta_sub),
              "delta_all": PP * float(delta_all)}
    if math.isnan(result["estimate"]):
        return result
    boot = _seed_bootstrap(deltas, resamples, rng)               # [B, 2]
    all_low, all_high = _percentile_interval(boot[:, 1], level)
    if all_low > ZERO_CHANGE or all_high < -ZERO_CHANGE:         # Delta(T) interval excludes 0
        result["low"], result["high"] = _percentile_interval(share(boot[:, 0], boot[:, 1]),
                                                             level)
    return result


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Comparison:
    """Arm a vs arm b on one test set, paired over seeds. Means and differences in pp.

    ``ci_*``: seed bootstrap of the mean difference; ``ci2_*``: two-level (seeds and test
    examples) bootstrap, ``None`` without per-example correctness; ``p_perm``: paired
    sign-flip test; ``p_welch``: unpaired Welch test (for contrast); ``sd_diff``: sd of the
    per-seed differences; ``mde``: minimum detectable effect at alpha 0.05 and 80% power;
    ``p_holm``: Holm-adjusted ``p_perm`` across a family (:func:`adjust_holm`), else ``None``.
    """

    n_seeds: int
    level: float
    mean_a: float
    mean_b: float
    mean_diff: float
    ci_low: float
    ci_high: float
    ci2_low: float | None
    ci2_high: float | None
    p_perm: float
    p_welch: float
    effect_size: float
    sd_diff: float
    mde: float
    p_holm: float | None = None

    def to_json(self) -> dict:
        """Plain ``int``/``float``/``None`` fields; NaN and inf become ``None`` (JSON null)."""
        def plain(value):
            if value is None or isinstance(value, int):
                return value
            return float(value) if math.isfinite(value) else None
        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def compare(acc_a, acc_b, *, correct_a=None, correct_b=None, level: float = 0.95,
            resamples: int = 10_000, rng: np.random.Generator) -> Comparison:
    """Compare two arms on one test set: effect, intervals, tests, detectable effect.

    Args:
        acc_a, acc_b: ``float[S]`` accuracies (fractions), S >= 2, seed-paired.
        correct_a, correct_b: optional ``bool[S, T]`` correctness on the same test set (both
            or neither); their row means must equal ``acc_a`` / ``acc_b``. Enables the
            two-level interval.
        level: confidence level of both intervals.
        resamples: bootstrap replicates (the permutation test uses its own default).
        rng: the source of randomness, consumed in a fixed order.
    """
    d = paired_differences(acc_a, acc_b)
    if d.size < 2:
        raise JmemError(f"acc_a: need at least 2 seeds to compare arms, got {d.size}")
    if (correct_a is None) != (correct_b is None):
        raise JmemError("correct_b: give both correct_a and correct_b, or neither")
    a, b = np.asarray(acc_a, np.float64), np.asarray(acc_b, np.float64)
    ci_low, ci_high = bootstrap_mean_ci(d, level=level, resamples=resamples, rng=rng)
    ci2_low = ci2_high = None
    if correct_a is not None:
        for name, correct, acc in (("correct_a", correct_a, a), ("correct_b", correct_b, b)):
            rows = _correctness(correct, name).mean(axis=1)
            if rows.shape != acc.shape:
                raise JmemError(f"{name}: has {rows.size} seeds (rows), expected {acc.size}")
            gap = float(np.abs(rows - acc).max())
            if gap > ACCURACY_TOLERANCE:   # different models or test set: the report would lie
                raise JmemError(f"{name}: row means differ from the accuracies by up to {gap:g};"
                                " they must describe the same models on the same test set")
        ci2_low, ci2_high = two_level_bootstrap_ci(correct_a, correct_b, level=level,
                                                   resamples=resamples, rng=rng)
    sd = _sd(d)
    return Comparison(
        n_seeds=int(d.size), level=float(level), mean_a=PP * float(a.mean()),
        mean_b=PP * float(b.mean()), mean_diff=float(d.mean()), ci_low=ci_low,
        ci_high=ci_high, ci2_low=ci2_low, ci2_high=ci2_high,
        p_perm=sign_flip_pvalue(d, rng=rng), p_welch=welch_pvalue(a, b),
        effect_size=effect_size(d), sd_diff=sd, mde=min_detectable_effect(sd, d.size))


def adjust_holm(comparisons: list[Comparison]) -> list[Comparison]:
    """Copies of ``comparisons`` with ``p_holm``: Holm-adjusted ``p_perm`` over the family."""
    adjusted = holm([c.p_perm for c in comparisons])
    return [dataclasses.replace(c, p_holm=float(p)) for c, p in zip(comparisons, adjusted)]
