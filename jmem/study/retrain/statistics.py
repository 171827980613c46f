"""The statistics of the removal experiment (pure numpy): comparisons with intervals that
generalise, the factorial effects of the four corrections, the headline family, arm
accuracies, F&Z's share of change, how well the arms pair.

Every comparison is ``selected minus baseline`` over pools x seeds x test examples
(:func:`jmem.study.retrain.measurement.paired_differences`). Its **decisive interval** is the
generalising one (:func:`jmem.scores.generalising.crossed_interval`: new seeds, new test
examples and, with two pools, a new estimation run's selection); the **seed-only** interval
(bootstrap over the seeds, test set and selection fixed) is kept as a labelled secondary
figure. Differences are in percentage points.

**Factor effects** (:func:`factor_effects`): for a factor, every pair of cells that differ in
that factor alone gives a simple effect (its d arrays subtracted, so the design is kept); the
main effect is their mean. Cells that select nothing are *not estimable* and leave the pairs
that need them out (never entered as 0); a factor whose levels give identical removal sets
and test sets in every estimable pair (leakage where no duplicate was found; the threshold
under size matching) is *not estimable* and dropped.

**The headline family** (:func:`headline`): the two protocols, each on the test set and the
leakage-free test set, and the estimable main effects (as defined and size-matched),
Holm-adjusted together at ``retrain.alpha``; their decision intervals are at the Bonferroni
level ``1 - alpha / m`` and their minimum detectable effects at ``alpha / m``, so the words
and the power figure rest on the same interval. Everything else is exploratory.

Every random draw comes from a numpy stream keyed by what it is for (:func:`stat_generator`).
"""

from __future__ import annotations

import itertools
import zlib

import numpy as np

from jmem import rng
from jmem.scores import generalising, paired, protocols
from jmem.study.retrain.design import SALT_ACCURACY, SALT_COMPARISON, Design, arm_name
from jmem.study.retrain.measurement import (Outcomes, arms_of, healthy_seeds, paired_differences,
                                            subset_mask, test_set_names)

PP = 100.0
FZ_KEY = protocols.FZ.selection_key
CORRECTED_KEY = protocols.CORRECTED.selection_key


def stat_generator(seed: int, salt: int, *names: str) -> np.random.Generator:
    """The numpy stream of one statistic (``salt``: its kind; ``names``: what it compares)."""
    return rng.numpy_stream(seed, "retrain", salt, zlib.crc32("|".join(names).encode()))


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.size < 3 or np.std(a) == 0 or np.std(b) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def summarize(d: np.ndarray, acc_a: np.ndarray | None, acc_b: np.ndarray | None, *, level: float,
              resamples: int, generator: np.random.Generator, selection: tuple | None = None) -> dict:
    """One comparison's record: estimate, the generalising interval at ``level`` with its
    p-value, df and variance shares, the seed-only interval (95%, labelled), and how well the
    arms paired (correlation of their per-seed accuracies, spreads)."""
    ci = generalising.crossed_interval(d, level, selection)
    per_seed = d.mean(axis=2).ravel()  # the accuracy difference of each (pool, seed)
    low, high = paired.bootstrap_mean_ci(PP * per_seed, resamples=resamples, rng=generator)
    out = {**ci.to_json(PP), "p": generalising.p_value(ci),
           "seed_only": {"ci_low": low, "ci_high": high, "level": 0.95,
                         "note": "seeds resampled; test set and selection held fixed"},
           "n_seeds": int(d.shape[1])}
    if acc_a is not None:
        a, b = acc_a.ravel(), acc_b.ravel()
        out.update(mean_a_pp=PP * float(a.mean()), mean_b_pp=PP * float(b.mean()),
                   pairing={"correlation": _corr(a, b), "sd_diff_pp": PP * float(np.std(a - b, ddof=1)),
                            "sd_arm_pp": PP * float(np.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2))})
    return out


def with_mde(record: dict, d: np.ndarray, alpha: float, selection: tuple | None = None) -> dict:
    """``record`` with the minimum detectable effect (pp, 80% power) at two-sided ``alpha``."""
    ci = generalising.crossed_interval(d, 1 - alpha, selection)
    return {**record, "mde_pp": PP * generalising.minimum_detectable_effect(ci.se, ci.df, alpha),
            "mde_alpha": alpha}


# ---------------------------------------------------------------------------------------------
# Selection noise, pooled over the experiment's removal sets
# ---------------------------------------------------------------------------------------------

def pooled_selection(design: Design, outcomes: Outcomes) -> dict:
    """The between-pool (selection) variance pooled over every removal set of the experiment
    (selected minus matched, test set): {"sigma2": float (units of a difference of
    accuracies, squared), "df": float, "sets": int}; None-free even with one pool (0, inf, 0).

    With two pools each set's own estimate has one degree of freedom, which makes an interval
    jump between a normal quantile and t with 1 df as the estimate crosses 0; pooled over the
    sets (the assumption: every set of one experiment is about as noisy from one estimation
    run to another), it has about as many degrees of freedom as sets. Simulated coverage at
    0.95 with 12 sets: 0.95-0.97 whatever the selection noise (tests/test_generalising.py).
    """
    if design.pools < 2:
        return {"sigma2": 0.0, "df": float("inf"), "sets": 0}
    ds = []
    for g in design.groups.values():
        out = paired_differences(design, outcomes, g.name, "selected", "matched", "test")
        if out is not None:
            ds.append(out[0])
    sigma2, df = generalising.pooled_selection_variance(ds)
    return {"sigma2": sigma2, "df": df, "sets": len(ds)}


def _selection(pooled: dict | None, weight2: float = 1.0):
    """The ``selection`` argument of the interval: the pooled variance times the sum of the
    squared weights the comparison puts on its removal sets (1 for one set)."""
    if pooled is None or not pooled["sets"]:
        return None
    return (pooled["sigma2"] * weight2, pooled["df"])


# ---------------------------------------------------------------------------------------------
# Exploratory comparisons: every group
# ---------------------------------------------------------------------------------------------

def comparison_plan(design: Design) -> list[tuple[str, str, str]]:
    """(group, a kind, b kind) of every comparison, a minus b."""
    plan = []
    for g in design.groups.values():
        kinds = {a.kind for a in design.arms if a.group == g.name}
        pairs = [("selected", "matched")]
        if "random" in kinds:
            pairs.append(("selected", "random"))
        pairs.append(("selected", "full"))
        if "lowest" in kinds:
            pairs.append(("lowest", "matched"))
        plan += [(g.name, a, b) for a, b in pairs]
    return plan


def compare_all(design: Design, outcomes: Outcomes, seed: int, resamples: int, alpha: float,
                pooled: dict | None = None) -> list[dict]:
    """Every planned comparison on every test set, at level 0.95 (exploratory); with ``pooled``
    (:func:`pooled_selection`) the selection component is the pooled one."""
    entries = []
    sel = _selection(pooled)
    for group, a, b in comparison_plan(design):
        for test_set in test_set_names(outcomes):
            out = paired_differences(design, outcomes, group, a, b, test_set)
            if out is None:
                continue
            d, acc_a, acc_b = out
            rec = summarize(d, acc_a, acc_b, level=0.95, resamples=resamples,
                            generator=stat_generator(seed, SALT_COMPARISON, group, a, b, test_set), selection=sel)
            entries.append({"name": f"{group}: {a} vs {b}", "group": group, "a": a, "b": b,
                            "test_set": test_set, **with_mde(rec, d, alpha, sel)})
    return entries


# ---------------------------------------------------------------------------------------------
# Factor effects
# ---------------------------------------------------------------------------------------------

def cell_groups(design: Design, kind: str) -> dict:
    """{selection key: group name} of the groups of ``kind`` ("cell" or "matched")."""
    return {g.key: g.name for g in design.groups.values() if g.kind == kind}


def _cell_arrays(design: Design, outcomes: Outcomes, groups: dict, keys: list) -> tuple[dict, np.ndarray]:
    """{key + (leakage,): d} of every estimable cell over common healthy seeds, and the seeds."""
    names = [n for k in keys if k in groups for pair in arms_of(design, groups[k], "selected", "matched")
             for n in pair]
    seeds = healthy_seeds(design, outcomes, names)
    cells = {}
    for key in keys:
        for leak in (False, True):
            out = None
            if key in groups and seeds.size >= 2:
                out = paired_differences(design, outcomes, groups[key], "selected", "matched",
                                         "test_clean" if leak else "test", seeds)
            cells[key + (leak,)] = None if out is None else out[0]
    return cells, seeds


def factor_effects(design: Design, outcomes: Outcomes, kind: str, level: float = 0.95,
                   pooled: dict | None = None) -> list[dict]:
    """The main effect of every factor, as defined (``kind="cell"``: rate, definition,
    threshold, leakage) or size-matched (``kind="matched"``: rate, definition, leakage):
    the mean simple effect (on minus off) over the pairs of estimable cells, each cell's
    effect being ``selected minus matched random``. Each entry: {"factor", "estimand",
    "status" ("estimable" or why not), "pairs", and the interval fields}.

    With ``pooled`` the selection component of a contrast is the pooled variance times the sum
    of the squared weights the contrast puts on each removal set (cells that differ only in
    the test set share their set, so the leakage contrast puts none on selection); treating
    the sets as independent is conservative, since a pool's sets are positively correlated."""
    groups = cell_groups(design, kind)
    factors = list(protocols.FACTORS) if kind == "cell" else ["rate", "definition", "leakage"]
    width = len(factors) - 1  # the selection factors; leakage is the last key entry
    keys = [tuple(k) for k in itertools.product((False, True), repeat=width)]
    cells, _ = _cell_arrays(design, outcomes, groups, keys)
    out = []
    for f, factor in enumerate(factors):
        entry = {"factor": factor, "estimand": "as defined" if kind == "cell" else "size-matched"}
        pairs = []
        for key in cells:
            if key[f]:
                off = key[:f] + (False,) + key[f + 1:]
                if cells[key] is not None and cells[off] is not None:
                    pairs.append((key, off))
        if not pairs:
            entry["status"] = "not estimable: every pair of cells it compares has an empty removal set"
        elif all(_identical(design, groups, outcomes, on, off, f, len(factors)) for on, off in pairs):
            entry["status"] = ("not estimable: no train-test duplicates were found, so both levels "
                               "measure on the same test set" if factor == "leakage" else
                               "not estimable: both levels select identical removal sets")
        else:
            d = np.mean([cells[on] - cells[off] for on, off in pairs], axis=0)
            weights: dict = {}
            for on, off in pairs:  # per removal set: (selection key) without the leakage level
                weights[on[:-1]] = weights.get(on[:-1], 0.0) + 1 / len(pairs)
                weights[off[:-1]] = weights.get(off[:-1], 0.0) - 1 / len(pairs)
            sel = _selection(pooled, sum(w * w for w in weights.values()))
            entry.update(status="estimable", pairs=len(pairs), _d=d, _sel=sel,
                         **{k: v for k, v in summarize(d, None, None, level=level, resamples=1000,
                                                       generator=np.random.default_rng(0), selection=sel).items()
                            if k != "seed_only"})
            entry["seed_only"] = _seed_only(d)
        out.append(entry)
    return out


def _seed_only(d: np.ndarray) -> dict:
    per_seed = PP * d.mean(axis=2).ravel()
    low, high = paired.bootstrap_mean_ci(per_seed, resamples=2000, rng=np.random.default_rng(0))
    return {"ci_low": low, "ci_high": high, "level": 0.95,
            "note": "seeds resampled; test set and selection held fixed"}


def _identical(design, groups, outcomes, on, off, f, num_factors) -> bool:
    """True if cells ``on`` and ``off`` remove the same sets in every pool and measure on the
    same test examples."""
    if f == num_factors - 1:  # leakage: the same sets, a test set that differs only if duplicates exist
        return bool(outcomes.clean.all())
    return on[-1] == off[-1] and np.array_equal(design.groups[groups[on[:-1]]].removed,
                                                design.groups[groups[off[:-1]]].removed)


# ---------------------------------------------------------------------------------------------
# The headline family
# ---------------------------------------------------------------------------------------------

def headline(design: Design, outcomes: Outcomes, alpha: float, seed: int, resamples: int) -> dict:
    """The protocols' comparisons and the estimable main effects, Holm-adjusted together
    (module docstring). Returns {"alpha", "m", "level", "protocols": [...], "effects": [...]};
    each entry has ``p_holm``, the decision interval at ``level`` and ``mde_pp`` at alpha/m.
    The selection component is pooled over the experiment's removal sets
    (:func:`pooled_selection`, recorded as ``selection_variance``)."""
    pooled = pooled_selection(design, outcomes)
    protocol_entries = []
    cells = cell_groups(design, "cell")
    for key, label in ((FZ_KEY, "Feldman & Zhang"), (CORRECTED_KEY, "corrected")):
        for test_set in ("test", "test_clean"):
            entry = {"protocol": label, "group": cells.get(key), "test_set": test_set}
            out = (paired_differences(design, outcomes, cells[key], "selected", "matched", test_set)
                   if key in cells else None)
            if out is None:
                reason = design.skipped.get(f"cell:{protocols.Protocol(*key, False).name}", "no healthy seeds")
                entry["status"] = f"not estimable: {reason}"
            else:
                entry.update(status="estimable", _d=out[0], _acc=(out[1], out[2]), _sel=_selection(pooled))
            protocol_entries.append(entry)
    effects = []
    if cells:
        effects += factor_effects(design, outcomes, "cell", pooled=pooled)
    if cell_groups(design, "matched"):
        effects += factor_effects(design, outcomes, "matched", pooled=pooled)
    members = [e for e in protocol_entries + effects if e["status"] == "estimable"]
    m = max(1, len(members))
    level = 1 - alpha / m
    for e in members:
        acc = e.pop("_acc", (None, None))
        d, sel = e.pop("_d"), e.pop("_sel")
        rec = summarize(d, *acc, level=level, resamples=resamples, selection=sel,
                        generator=stat_generator(seed, SALT_COMPARISON, "headline", str(e.get("group")),
                                                 e.get("test_set", ""), e.get("factor", "")))
        e.update(with_mde(rec, d, alpha / m, sel))
    pvalues = [e["p"] for e in members]
    for e, p_holm in zip(members, paired.holm(np.asarray(pvalues)) if members else []):
        e["p_holm"] = float(p_holm)
    for e in effects:
        e.pop("_d", None)
        e.pop("_sel", None)
    return {"alpha": alpha, "m": len(members), "level": level,
            "selection_variance": {"pooled_pp2": PP * PP * pooled["sigma2"], "df": pooled["df"],
                                   "removal_sets": pooled["sets"]},
            "adjustment": f"Holm over the {len(members)} headline comparisons; intervals at the "
                          f"Bonferroni level 1 - {alpha:g}/{m}",
            "protocols": protocol_entries, "effects": effects}


# ---------------------------------------------------------------------------------------------
# Accuracies and shares
# ---------------------------------------------------------------------------------------------

def arm_accuracies(design: Design, outcomes: Outcomes, seed: int, resamples: int) -> dict:
    """{arm: {test_set: {"mean", "ci_low", "ci_high" (pp, seed bootstrap), "n_models"}}} on the
    main and leakage-free test sets and every extra one."""
    names = [t for t in test_set_names(outcomes) if t not in ("influenced", "rest")]
    out = {}
    for arm in design.arms:
        rows = design.rows(arm.name)
        rows = rows[~outcomes.diverged[rows]]
        entry = {}
        for t in names:
            if t in ("test", "test_clean"):
                cols = outcomes.correct["test"][rows][:, subset_mask(design, outcomes, t, None, 0)]
            else:
                cols = outcomes.correct[t][rows]
            if rows.size == 0 or cols.shape[1] == 0:
                entry[t] = {"mean": None, "ci_low": None, "ci_high": None, "n_models": int(rows.size)}
                continue
            acc = PP * cols.mean(axis=1)
            low, high = paired.bootstrap_mean_ci(acc, resamples=resamples,
                                                 rng=stat_generator(seed, SALT_ACCURACY, arm.name, t))
            entry[t] = {"mean": float(acc.mean()), "ci_low": low, "ci_high": high, "n_models": int(rows.size)}
        out[arm.name] = entry
    return out


def shares(design: Design, outcomes: Outcomes, seed: int, resamples: int) -> dict:
    """F&Z's accounting per group: the share of (selected minus full) test-accuracy change
    carried by the group's influenced test examples (seeds of every pool together)."""
    out = {}
    test = outcomes.correct["test"]
    total = test.shape[1]
    for g in design.groups.values():
        sub_a, sub_b, all_a, all_b, sizes = [], [], [], [], []
        for p in range(design.pools):
            ra, rb = design.rows(arm_name(g.name, "selected", p)), design.rows(arm_name(None, "full", p))
            ok = ~outcomes.diverged[ra] & ~outcomes.diverged[rb]
            mask = g.influenced[p]
            sizes.append(int(mask.sum()))
            if mask.any():
                sub_a.append(test[ra[ok]][:, mask].mean(1))
                sub_b.append(test[rb[ok]][:, mask].mean(1))
                all_a.append(test[ra[ok]].mean(1))
                all_b.append(test[rb[ok]].mean(1))
        entry = {"estimate": None, "low": None, "high": None, "influenced_size": sizes}
        if sub_a and sum(a.size for a in sub_a) >= 2:
            r = paired.share_of_change(np.concatenate(sub_a), np.concatenate(sub_b), np.concatenate(all_a),
                                       np.concatenate(all_b), float(np.mean(sizes)) / total,
                                       resamples=resamples, rng=stat_generator(seed, SALT_COMPARISON, "share", g.name))
            entry.update({k: (None if not np.isfinite(v) else float(v)) for k, v in
                          (("estimate", r["estimate"]), ("low", r["low"]), ("high", r["high"]))})
        out[g.name] = entry
    return out
