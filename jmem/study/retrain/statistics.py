"""The statistics of the removal experiment (pure numpy): accuracies per arm, paired
comparisons, Feldman & Zhang's share of change, the factorial ablation.

Arms are compared paired over seeds with :mod:`jmem.scores.paired`. Diverged models are left
out of every statistic (a comparison uses the seeds where neither arm diverged). Every
random draw comes from a numpy stream keyed by what it is for (:func:`stat_generator`), so a
statistic never changes when another is added.
"""

from __future__ import annotations

import math
import warnings
import zlib

import numpy as np

from jmem import rng
from jmem.errors import JmemError
from jmem.jsonable import to_jsonable
from jmem.scores import paired, protocols
from jmem.study.retrain.design import (ABLATION_PREFIX, SALT_ABLATION, SALT_ACCURACY, SALT_COMPARISON,
                                       Design, cell_group)
from jmem.study.retrain.measurement import Outcomes, columns, test_set_names


def stat_generator(seed: int, salt: int, *names: str) -> np.random.Generator:
    """The numpy stream of one statistic (``salt``: its kind; ``names``: what it compares)."""
    return rng.numpy_stream(seed, "retrain", salt, zlib.crc32("|".join(names).encode()))


def _accuracy_entry(acc: np.ndarray, resamples: int, generator) -> dict:
    if acc.size == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "n_models": 0}
    low, high = paired.bootstrap_mean_ci(paired.PP * acc, resamples=resamples, rng=generator)
    return {"mean": paired.PP * float(acc.mean()), "ci_low": low, "ci_high": high,
            "n_models": int(acc.size)}


def arm_accuracies(design: Design, outcomes: Outcomes, seed: int, resamples: int) -> dict:
    """{arm: {test_set: {"mean", "ci_low", "ci_high" (pp, seed bootstrap), "n_models"}}}.

    ``influenced`` / ``rest`` are the arm's own group's T_h and its complement; ``full``
    has ``influenced:<group>`` / ``rest:<group>`` for every group instead.
    """
    names = test_set_names(outcomes)
    out = {}
    for arm in design.arms:
        rows = design.rows(arm.name)
        rows = rows[~outcomes.diverged[rows]]
        entry = {}
        targets = ([(t, arm.group) for t in names] if arm.group else
                   [(t, None) for t in names if t not in ("influenced", "rest")]
                   + [(f"{t}:{g}", g) for g in design.groups for t in ("influenced", "rest")])
        for label, group in targets:
            base = label.split(":", 1)[0]
            cols = columns(design, outcomes, base, group)[rows]
            if cols.shape[1] == 0:
                entry[label] = {"mean": None, "ci_low": None, "ci_high": None,
                                "n_models": int(rows.size), "n_examples": 0}
                continue
            acc = cols.mean(axis=1)
            entry[label] = {**_accuracy_entry(acc, resamples,
                                              stat_generator(seed, SALT_ACCURACY, arm.name, label)),
                            "n_examples": int(cols.shape[1])}
        out[arm.name] = entry
    return out


def comparison_plan(design: Design) -> list[tuple[str, str, str]]:
    """(group, arm a, arm b) of every comparison, a minus b."""
    plan = []
    for g in design.groups.values():
        arms = {a.kind: a.name for a in design.arms if a.group == g.name}
        pairs = [("selected", "matched")]
        if "random" in arms:
            pairs += [("selected", "random")]
        pairs += [("selected", "full"), ("matched", "full")]
        if "random" in arms:
            pairs += [("random", "full")]
        if "lowest" in arms:
            pairs += [("lowest", "matched")]
        for ka, kb in pairs:
            plan.append((g.name, arms[ka], "full" if kb == "full" else arms[kb]))
    return plan


def holm_family(entry: dict) -> tuple:
    """The Holm family of a comparison: the same pair of arm kinds on the same test set
    across the methods, or across the sweep points (any other group is its own family)."""
    family = "sweep" if entry["tau"] is not None and entry["method"] is None else (
        "method" if entry["method"] else entry["group"])
    kinds = (entry["a"].rsplit(":", 1)[-1], entry["b"].rsplit(":", 1)[-1])
    return family, kinds, entry["test_set"]


def compare_arms(design: Design, outcomes: Outcomes, seed: int, resamples: int) -> list[dict]:
    """Every planned comparison on every test set (paired over the seeds where neither arm
    diverged), Holm-adjusted within families (:func:`holm_family`).

    Returns entries {"name", "a", "b", "test_set", "group", "method", "tau", "comparison":
    paired.Comparison, "family_size"}.
    """
    entries = []
    for group, a, b in comparison_plan(design):
        ra, rb = design.rows(a), design.rows(b)
        ok = ~outcomes.diverged[ra] & ~outcomes.diverged[rb]
        for test_set in test_set_names(outcomes):
            ca = columns(design, outcomes, test_set, group)[ra[ok]]
            cb = columns(design, outcomes, test_set, group)[rb[ok]]
            if ca.shape[1] == 0 or ca.shape[0] < 2:
                continue
            with warnings.catch_warnings():  # Welch on near-constant arms: scipy's precision note
                warnings.simplefilter("ignore", RuntimeWarning)
                c = paired.compare(ca.mean(axis=1), cb.mean(axis=1), correct_a=ca, correct_b=cb,
                                   resamples=resamples,
                                   rng=stat_generator(seed, SALT_COMPARISON, a, b, test_set))
            g = design.groups[group]
            entries.append({"name": f"{a} vs {b}", "a": a, "b": b, "test_set": test_set,
                            "group": group, "method": g.method, "tau": g.tau, "comparison": c})
    families: dict = {}
    for i, e in enumerate(entries):
        families.setdefault(holm_family(e), []).append(i)
    for members in families.values():
        for i, c in zip(members, paired.adjust_holm([entries[i]["comparison"] for i in members])):
            entries[i]["comparison"] = c
            entries[i]["family_size"] = len(members)
    return entries


def shares(design: Design, outcomes: Outcomes, seed: int, resamples: int) -> dict:
    """F&Z's accounting per group: the share of (selected minus full) test-accuracy change
    carried by the group's influenced test examples."""
    out = {}
    total = outcomes.correct["test"].shape[1]
    for g in design.groups.values():
        size = int(g.influenced.sum())
        entry = {"estimate": None, "low": None, "high": None, "influenced_size": size,
                 "delta_influenced": None, "delta_all": None}
        ra, rb = design.rows(f"{g.name}:selected"), design.rows("full")
        ok = ~outcomes.diverged[ra] & ~outcomes.diverged[rb]
        if size and ok.sum() >= 2:
            test = outcomes.correct["test"]
            sub = test[:, g.influenced]
            r = paired.share_of_change(sub[ra[ok]].mean(1), sub[rb[ok]].mean(1),
                                       test[ra[ok]].mean(1), test[rb[ok]].mean(1), size / total,
                                       resamples=resamples,
                                       rng=stat_generator(seed, SALT_COMPARISON, "share", g.name))
            entry.update(estimate=r["estimate"], low=r["low"], high=r["high"],
                         delta_influenced=r["delta_sub"], delta_all=r["delta_all"])
        out[g.name] = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                       for k, v in entry.items()}
    return out


def ablation_record(design: Design, outcomes: Outcomes, seed: int, resamples: int) -> dict:
    """The factorial ablation (``ablation.json``): every cell's paired removal effect, selected
    minus class-matched random (pp), on the test set its leakage factor names, over the seeds
    where no ablation model diverged; an empty removal set has effect 0 (nothing removed)."""
    cell_arms = [a for a in design.arms if a.group and a.group.startswith(ABLATION_PREFIX)]
    ok = np.ones(design.seeds, bool)
    for arm in cell_arms:
        ok &= ~outcomes.diverged[design.rows(arm.name)]
    if ok.sum() < 2:
        raise JmemError("the ablation has fewer than 2 seeds where no model diverged")
    diffs = {}
    for cell in protocols.all_protocols():
        group = cell_group(cell.selection_key)
        if group not in design.groups:  # selected nothing: removing nothing changes nothing
            diffs[cell] = np.zeros(int(ok.sum()))
            continue
        correct = outcomes.correct["test_clean" if cell.leakage else "test"]
        sel = correct[design.rows(f"{group}:selected")[ok]].mean(axis=1)
        matched = correct[design.rows(f"{group}:matched")[ok]].mean(axis=1)
        diffs[cell] = paired.paired_differences(sel, matched)
    out = protocols.ablation_summary(diffs, resamples=resamples,
                                     rng=stat_generator(seed, SALT_ABLATION, "ablation"))
    for row in out["cells"]:
        cell = protocols.Protocol.from_levels(row["levels"])
        group = design.groups.get(cell_group(cell.selection_key))
        row["removed"] = int(group.removed.sum()) if group is not None else 0
        row["test_set"] = "test_clean" if cell.leakage else "test"
    out["rates"] = list(design.ablation_rates)
    out["excluded_seeds"] = int((~ok).sum())
    return to_jsonable(out)
