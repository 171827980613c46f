"""Effects of a two-level factorial design measured with paired seeds.

The ablation of the critique's four corrections (rate, definition, threshold, leakage) is a
2^k factorial: every cell is one protocol, and its response is the paired removal effect of
that protocol (selected minus class-matched random removal, in percentage points), measured
on the same S seeds in every cell. With the usual -1/+1 coding of a factor's levels, the
*main effect* of factor f is the mean response of the cells where f is on minus the mean
where it is off, and the *interaction* of f and g is the same contrast with the sign
``sign_f * sign_g`` (half the difference between f's effect with g on and with g off).

Because every cell shares the seeds, a contrast is computed per seed first and its interval
comes from resampling seeds (:mod:`jmem.scores.paired`): the seed-to-seed correlation between
cells is kept, which unpaired intervals would ignore.

Pure numpy (and :mod:`jmem.scores.paired`); no jax.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from jmem.errors import JmemError
from jmem.jsonable import to_jsonable
from jmem.scores import paired


@dataclasses.dataclass(frozen=True)
class Effect:
    """One factorial contrast: ``factors`` (one name: a main effect; two: an interaction).

    estimate, ci_low, ci_high: percentage points (seed-bootstrap percentile interval);
    p_perm: two-sided sign-flip permutation p-value of the per-seed contrasts; p_holm: Holm
    adjusted over all contrasts of the same order (None until adjusted).
    """

    factors: tuple[str, ...]
    estimate: float
    ci_low: float
    ci_high: float
    p_perm: float
    p_holm: float | None = None

    def to_json(self) -> dict:
        """Plain JSON values (non-finite numbers become null), plus ``factor`` (the names
        joined by " x ") and ``effect_pp`` (the estimate, the report's key)."""
        out = to_jsonable(dataclasses.asdict(self))
        return {**out, "factor": " x ".join(self.factors), "effect_pp": out["estimate"]}


def cell_levels(factors: list[str]) -> list[dict]:
    """Every cell of a full 2^k design: a list of {factor: bool} in a fixed order
    (the last factor varies fastest; all-off first)."""
    if len(set(factors)) != len(factors) or not factors:
        raise JmemError(f"factors={factors!r} must be distinct and non-empty")
    return [dict(zip(factors, bits)) for bits in itertools.product((False, True), repeat=len(factors))]


def contrast_signs(levels: list[dict], factors: tuple[str, ...]) -> np.ndarray:
    """float64[C]: the -1/+1 contrast of ``factors`` over the cells ``levels``, scaled so that
    ``signs @ cell_means`` is the effect (mean where the product sign is +1 minus mean where -1)."""
    sign = np.ones(len(levels))
    for f in factors:
        sign *= np.array([1.0 if cell[f] else -1.0 for cell in levels])
    return sign / (len(levels) / 2)


def per_seed_contrast(responses: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """float64[S]: the contrast of every seed. responses: float[S, C] (pp), NaN-free."""
    responses = np.asarray(responses, np.float64)
    if responses.ndim != 2 or responses.shape[1] != signs.shape[0]:
        raise JmemError(f"responses has shape {responses.shape}; expected [S, {signs.shape[0]}]")
    if not np.all(np.isfinite(responses)):
        raise JmemError("responses has non-finite values")
    return responses @ signs


def factorial_effects(responses, levels: list[dict], *, order: int = 2, level: float = 0.95,
                      resamples: int = 10_000, rng: np.random.Generator) -> list[Effect]:
    """Main effects (and interactions up to ``order``) of a paired 2^k design.

    responses: float[S, C], the response of seed s in cell c (pp); levels: the C cells as
    {factor: bool} (:func:`cell_levels`), every combination present exactly once.
    Returns the main effects first, then the two-factor interactions, ...; Holm-adjusted
    within each order.
    """
    if not levels:
        raise JmemError("levels is empty")
    factors = list(levels[0])
    combos = {tuple(cell[f] for f in factors) for cell in levels}
    if len(combos) != len(levels) or len(levels) != 2 ** len(factors):
        raise JmemError(f"levels must hold each of the {2 ** len(factors)} cells of {factors} exactly once")
    effects: list[Effect] = []
    for k in range(1, min(order, len(factors)) + 1):
        group = []
        for names in itertools.combinations(factors, k):
            d = per_seed_contrast(responses, contrast_signs(levels, names))
            low, high = paired.bootstrap_mean_ci(d, level=level, resamples=resamples, rng=rng)
            group.append(Effect(names, float(d.mean()), low, high, paired.sign_flip_pvalue(d, rng=rng)))
        adjusted = paired.holm([e.p_perm for e in group])
        effects += [dataclasses.replace(e, p_holm=float(p)) for e, p in zip(group, adjusted)]
    return effects
