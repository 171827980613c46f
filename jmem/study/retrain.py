"""``jmem retrain``: the removal experiment. Does removing memorized examples hurt?

On a scored run directory (``jmem run`` / ``jmem train`` + ``jmem score``), this stage

1. **selects** removal sets from the estimation models: for every method of
   ``retrain.methods`` its selected set (the scoring stage's own selection functions,
   :func:`jmem.study.scoring.select_all`, with the options recorded in thresholds.json), each
   point of ``retrain.sweep`` (``mem >= tau``) and the user's ``retrain.remove``;
2. builds the **arms** (a removal set per seed; see :mod:`jmem.data.removal`): ``full``;
   per method ``selected``, ``matched`` (the same number per class, drawn afresh for every
   seed from its own stream), ``random`` (the same total, uniform) and, with
   ``retrain.lowest``, ``lowest``; per sweep point and for the user set ``selected`` and
   ``matched``;
3. **trains** every arm x seed as one row of a keep matrix, with the waves, checkpoints,
   SIGTERM handling, resume and lock of ``jmem train`` (:mod:`jmem.study.training`), into
   ``RUN_DIR/retrain/``. Seed s of every arm has model id ``MODEL_ID_OFFSET + s``: the same
   initialisation and data-order keys in every arm (paired), and keys no estimation model has;
4. **measures** every model on the test set, the leakage-free test set, the influenced test
   examples T_h (test points with a removed same-class training partner at ``mem >=
   score.pair_mem_threshold`` and ``infl >= score.influence_threshold``, Feldman & Zhang's
   pairs), the rest of the test set, and every extra test set, and **compares** arms paired
   over seeds with :mod:`jmem.scores.paired`;
5. writes ``retrain.json``, ``retrain_models.csv`` and ``verdict.txt`` (README, "Removal
   experiment").

Cross-fitting (``retrain.cross_fit``, default on): selections (and sweep and lowest scores)
come from the estimation models with even ids, T_h from those with odd ids, so that noise
which put an example into the selection cannot also make "its" test points look
influenced. The split-half Spearman correlation of mem and the Jaccard index of each
method's two half selections are reported.

Diverged models are left out of every statistic (a comparison uses the seeds where neither
arm diverged) and counted in ``excluded_diverged``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import warnings
import zlib
from pathlib import Path

import numpy as np

from jmem import config as config_lib
from jmem import rng
from jmem.config import Config, RetrainConfig
from jmem.data import removal
from jmem.data.dataset import Dataset
from jmem.errors import JmemError
from jmem.jsonable import to_jsonable
from jmem.scores import estimators
from jmem.scores import paired
from jmem.scores import protocols
from jmem.scores import reliability
from jmem.scores import thresholds
from jmem.study import integrity
from jmem.study import rundir as artifacts
from jmem.study import scoring
from jmem.study import training

RETRAIN_DIR = "retrain"
CONFIG = "config.json"            # the resolved retrain section (written last of the inputs)
KEEP = "keep.npy"                 # bool[M, N], row = arm x seed
MODEL_IDS = "model_ids.npy"       # int64[M]
MODELS_CSV = "retrain_models.csv"
VERDICT = "verdict.txt"
KNOWN_METHODS = ("fixed", "fdr", "null", "top_k", "canary")
MODEL_ID_OFFSET = 2**30           # retrain seed s trains with model id 2**30 + s
_SALT_ARM, _SALT_COMPARISON, _SALT_ACCURACY, _SALT_ABLATION = 1, 2, 3, 4
SIGNIFICANCE = 0.05


# ---------------------------------------------------------------------------------------------
# The design: groups (a removal set and its influenced test points) and arms
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Group:
    """One removal hypothesis: a method's selection, a sweep point, or the user's set.

    removed: bool[N]; influenced: bool[T] over the main test set (T_h); info: JSON facts
    (threshold, sizes, class counts).
    """

    name: str
    method: str | None
    tau: float | None
    removed: np.ndarray
    influenced: np.ndarray
    info: dict


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm: ``removed: bool[S, N]`` (row s = seed s's removal set), of group ``group``."""

    name: str
    kind: str
    group: str | None
    method: str | None
    tau: float | None
    removed: np.ndarray

    @property
    def count(self) -> int:
        return int(self.removed[0].sum())


@dataclasses.dataclass(frozen=True)
class Design:
    """Every arm of an experiment and the keep matrix that trains them.

    keep: bool[M, N] with M = len(arms) * seeds, row ``a * seeds + s`` = arm a, seed s;
    model_ids: int64[M].
    """

    seeds: int
    groups: dict
    arms: list
    cross_fit: dict
    skipped: dict
    ablation_rates: tuple | None = None  # (off, on) rates of the ablation's rate factor

    @property
    def keep(self) -> np.ndarray:
        return ~np.concatenate([arm.removed for arm in self.arms])

    @property
    def model_ids(self) -> np.ndarray:
        return np.tile(MODEL_ID_OFFSET + np.arange(self.seeds, dtype=np.int64), len(self.arms))

    def rows(self, arm_name: str) -> np.ndarray:
        index = [a.name for a in self.arms].index(arm_name)
        return np.arange(index * self.seeds, (index + 1) * self.seeds)


def arm_generator(seed: int, arm_name: str, s: int) -> np.random.Generator:
    """The numpy stream of arm ``arm_name``'s seed ``s`` (keyed by the arm's name, so adding
    arms never changes another arm's draws)."""
    return rng.numpy_stream(seed, "retrain", _SALT_ARM, zlib.crc32(arm_name.encode()), s)


def _stat_generator(seed: int, salt: int, *names: str) -> np.random.Generator:
    return rng.numpy_stream(seed, "retrain", salt, zlib.crc32("|".join(names).encode()))


def split_rows(model_rates, num_models: int, rows: np.ndarray | None, cross_fit: bool):
    """(selection rows, influence rows) of the estimation models: the two alternating halves
    of the scored models ``rows`` (None = all) with cross-fitting, within each inclusion rate
    (:func:`jmem.scores.reliability.alternating_halves`); all of them twice without."""
    rows = np.arange(num_models) if rows is None else np.asarray(rows)
    if not cross_fit:
        return rows, rows
    rates = None if model_rates is None else np.asarray(model_rates)[rows]
    a, b = reliability.alternating_halves(rows.size, rates)
    if a.size < 2 or b.size < 2:
        raise JmemError(f"retrain.cross_fit=true needs at least 4 estimation models (2 per "
                        f"half); the run has {rows.size}")
    return rows[a], rows[b]


def _half_selection(run: scoring.RunArrays, rows: np.ndarray, opt: scoring.ScoreOptions):
    """(ExampleScores, {method: ThresholdResult}) of the estimation models ``rows``."""
    keep, margins = run.keep[rows], np.asarray(run.margins_train[rows])
    s = estimators.compute_scores(keep, margins, confidence=opt.confidence,
                                  fractional_floor=opt.fractional_floor,
                                  chunk_size=opt.chunk_size, name="margins_train.npy")
    placebo = thresholds.placebo_scores(keep, margins,
                                        seed=rng.stream_words(opt.placebo_seed, "placebo"),
                                        match_variance=opt.placebo_match_variance,
                                        name="margins_train.npy")
    return s, scoring.select_all(s, placebo, run.canaries, opt)


def _pairs(run: scoring.RunArrays, rows: np.ndarray, mem: np.ndarray,
           opt: scoring.ScoreOptions) -> tuple[np.ndarray, np.ndarray]:
    """F&Z high-influence pairs (train int64[P], test int64[P]) on the main test set, from
    the estimation models ``rows`` and their ``mem``."""
    margins_test, labels_test = run.test_sets["test"]
    summary = estimators.influence_summary(
        run.keep[rows], np.asarray(margins_test[rows]), mem, run.labels_train, labels_test, k=0,
        mem_threshold=opt.pair_mem_threshold, infl_threshold=opt.influence_threshold,
        same_class=opt.pair_same_class, chunk_size=opt.influence_chunk_size,
        max_pairs=opt.max_pairs, name="margins_test.npy")
    return summary.pair_train, summary.pair_test


def influenced_by(removed: np.ndarray, pair_train: np.ndarray, pair_test: np.ndarray,
                  num_test: int) -> np.ndarray:
    """bool[T]: test examples with a high-influence partner in ``removed`` (T_h)."""
    out = np.zeros(num_test, bool)
    out[pair_test[removed[pair_train]]] = True
    return out


def _jaccard(a: np.ndarray, b: np.ndarray) -> float | None:
    union = int((a | b).sum())
    return None if union == 0 else int((a & b).sum()) / union


def _spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    from scipy import stats

    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return None
    return float(stats.spearmanr(x[ok], y[ok]).statistic)


def check_methods(cfg: RetrainConfig, has_canaries: bool) -> tuple[str, ...]:
    """The method names of ``retrain.methods``, validated."""
    methods = cfg.method_list
    for m in methods:
        if m not in KNOWN_METHODS:
            raise JmemError(f"retrain.methods contains unknown method {m!r}; known: "
                            f"{', '.join(KNOWN_METHODS)}")
        if m == "canary" and not has_canaries:
            raise JmemError("retrain.methods contains 'canary' but the run has no canaries "
                            "(subsets.canary_fraction=0)")
    if len(set(methods)) != len(methods):
        raise JmemError(f"retrain.methods={cfg.methods!r} repeats a method")
    if not methods and not cfg.sweep and not cfg.remove and not cfg.ablation:
        raise JmemError("retrain.methods='' with no retrain.sweep, no retrain.remove and no "
                        "retrain.ablation: nothing to remove")
    return methods


ABLATION_PREFIX = "cell:"


def cell_group(key: tuple[bool, bool, bool]) -> str:
    """The group name of an ablation removal set: ``cell:`` + the protocol's name with the
    leakage correction off (``cell:fz``, ``cell:rate+definition+threshold``, ...)."""
    return ABLATION_PREFIX + protocols.Protocol(*key, False).name


def ablation_rates(run: scoring.RunArrays) -> tuple[float, float]:
    """(off, on) inclusion rates of the rate factor: the run's lowest and highest rate."""
    if run.model_rates is None:
        raise JmemError("retrain.ablation=true needs model_rates.npy (a run with two inclusion "
                        "rates, e.g. --set subsets.rates=0.7,0.95)")
    rates = estimators.group_rates(run.model_rates, run.keep.shape[0])[0]
    if rates.size < 2:
        raise JmemError(f"retrain.ablation=true needs a run with two inclusion rates (the rate "
                        f"factor); this run has only {rates[0]:g} (set subsets.rates=0.7,0.95)")
    if "test_clean" not in run.test_sets:
        raise JmemError("retrain.ablation=true needs the leakage-free test set (leakage.clean_test=true)")
    return float(rates.min()), float(rates.max())


def ablation_selections(run: scoring.RunArrays, sel_rows: np.ndarray, opt: scoring.ScoreOptions) -> dict:
    """The 8 removal sets of the ablation's cells (selection_key -> ThresholdResult), from the
    selection half of the estimation models, with the scoring stage's numbers."""
    low, high = ablation_rates(run)
    rows = np.zeros(run.keep.shape[0], bool)
    rows[sel_rows] = True
    options = protocols.SelectionOptions(fixed_threshold=opt.fixed_threshold, fdr_q=opt.fdr_q,
                                         min_effect=opt.min_effect, null_fpr=opt.null_fpr)
    return protocols.cell_selections(run.keep, run.margins_train, run.model_rates, low_rate=low,
                                     high_rate=high, rows=rows, options=options,
                                     placebo_seed=rng.stream_words(opt.placebo_seed, "placebo"))


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
                                     rng=_stat_generator(seed, _SALT_ABLATION, "ablation"))
    for row in out["cells"]:
        cell = protocols.Protocol.from_levels(row["levels"])
        group = design.groups.get(cell_group(cell.selection_key))
        row["removed"] = int(group.removed.sum()) if group is not None else 0
        row["test_set"] = "test_clean" if cell.leakage else "test"
    out["rates"] = list(design.ablation_rates)
    out["excluded_seeds"] = int((~ok).sum())
    return to_jsonable(out)


def build_design(run: scoring.RunArrays, cfg: RetrainConfig, opt: scoring.ScoreOptions,
                 seed: int, num_classes: int) -> Design:
    """Selections, influenced test sets and every arm's removal sets (no training, no files).

    Raises JmemError for an unknown method, a bad user set, or any removal set that removes
    every example or every example of a class.
    """
    methods = check_methods(cfg, run.canaries is not None and bool(run.canaries.any()))
    labels = np.asarray(run.labels_train)
    n = labels.size
    user = removal.load_removal(cfg.remove, n) if cfg.remove else None
    sel_rows, infl_rows = split_rows(run.model_rates, run.keep.shape[0], scoring._primary_rows(run, opt.rate),
                                     cfg.cross_fit)
    s_sel, chosen = _half_selection(run, sel_rows, opt)
    s_infl = s_sel if not cfg.cross_fit else estimators.compute_scores(
        run.keep[infl_rows], np.asarray(run.margins_train[infl_rows]), confidence=opt.confidence,
        fractional_floor=opt.fractional_floor, chunk_size=opt.chunk_size,
        name="margins_train.npy")
    pair_train, pair_test = _pairs(run, infl_rows, s_infl.mem, opt)
    num_test = run.test_sets["test"][1].shape[0]

    cross = {"enabled": cfg.cross_fit, "selection_models": int(sel_rows.size),
             "influence_models": int(infl_rows.size), "spearman_mem": None, "jaccard": {}}
    if cfg.cross_fit:
        cross["spearman_mem"] = _spearman(s_sel.mem, s_infl.mem)
        _, other = _half_selection(run, infl_rows, opt)
        cross["jaccard"] = {m: _jaccard(chosen[m].selected, other[m].selected) for m in methods}

    compared = ["selected", "matched"]
    with_baselines = compared + ["random"] + (["lowest"] if cfg.lowest else [])
    candidates = []  # (name, method, tau, removed, info, arm kinds, what the set is)
    for m in methods:
        res = chosen[m]
        candidates.append((m, m, None, np.asarray(res.selected, bool), res.to_dict(), with_baselines,
                           f"retrain.methods: {m}"))
    for tau in cfg.sweep:
        candidates.append((f"sweep:{tau:g}", None, tau, removal.at_least(s_sel.mem, tau),
                           {"threshold": tau, "score": "mem"}, compared, f"retrain.sweep: mem >= {tau:g}"))
    if user is not None:
        candidates.append(("user", None, None, user, {"path": cfg.remove}, compared,
                           f"retrain.remove={cfg.remove!r}"))
    if cfg.ablation:
        for key, res in ablation_selections(run, sel_rows, opt).items():
            name = cell_group(key)
            candidates.append((name, None, None, np.asarray(res.selected, bool),
                               {**res.to_dict(), "cell": protocols.Protocol(*key, False).levels},
                               compared, f"retrain.ablation: cell {name}"))

    groups, skipped, arms = {}, {}, []
    full = np.zeros((cfg.seeds, n), bool)
    arms.append(Arm("full", "full", None, None, None, full))
    for name, method, tau, removed, info, kinds, what in candidates:
        if not removed.any():
            skipped[name] = "selects no example"
            continue
        removal.check_removal(removed, labels, num_classes, what)
        counts = removal.class_counts(removed, labels, num_classes)
        influenced = influenced_by(removed, pair_train, pair_test, num_test)
        info = {**info, "removed": int(removed.sum()), "class_counts": counts.tolist(),
                "influenced_size": int(influenced.sum()),
                "influenced_test_indices": np.flatnonzero(influenced).tolist()}
        groups[name] = Group(name, method, tau, removed, influenced, info)
        for kind in kinds:
            arm_name = f"{name}:{kind}"
            if kind == "selected":
                masks = np.broadcast_to(removed, (cfg.seeds, n)).copy()
            elif kind == "matched":
                masks = np.stack([removal.matched_random(labels, counts,
                                                         arm_generator(seed, arm_name, s))
                                  for s in range(cfg.seeds)])
            elif kind == "random":
                masks = np.stack([removal.uniform_random(n, int(removed.sum()),
                                                         arm_generator(seed, arm_name, s))
                                  for s in range(cfg.seeds)])
            else:
                masks = np.broadcast_to(removal.lowest(s_sel.mem, int(removed.sum())),
                                        (cfg.seeds, n)).copy()
            for s in (range(cfg.seeds) if kind in ("matched", "random") else range(1)):
                removal.check_removal(masks[s], labels, num_classes, f"arm {arm_name} (seed {s})")
            arms.append(Arm(arm_name, kind, name, method, tau, masks))
    if len(arms) == 1:
        raise JmemError("nothing to retrain: every removal set is empty ("
                        + ", ".join(f"{k} {v}" for k, v in skipped.items()) + ")")
    return Design(cfg.seeds, groups, arms, cross, skipped,
                  ablation_rates(run) if cfg.ablation else None)


# ---------------------------------------------------------------------------------------------
# Measuring: accuracies per arm and test set, paired comparisons
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Outcomes:
    """What the retrained models did. correct: test set name -> bool[M, T_k]; diverged:
    bool[M]; train_accuracy: float64[M] (on each model's kept examples); final_loss."""

    correct: dict
    diverged: np.ndarray
    train_accuracy: np.ndarray
    final_loss: np.ndarray


def outcomes_from_arrays(arrays: dict, keep: np.ndarray) -> Outcomes:
    """From the assembled wave arrays (``margins_<set>`` float32[M, T_k], ``diverged``, ...)."""
    correct = {"test": arrays["margins_test"] > 0}
    for key in sorted(arrays):
        if key.startswith("margins_") and key not in ("margins_train", "margins_test"):
            correct[key[len("margins_"):]] = arrays[key] > 0
    train_correct = (arrays["margins_train"] > 0) & keep
    train_acc = train_correct.sum(axis=1) / keep.sum(axis=1)
    return Outcomes(correct, np.asarray(arrays["diverged"], bool), train_acc,
                    np.asarray(arrays["final_loss"], np.float32))


def test_set_names(outcomes: Outcomes) -> list[str]:
    """["test", "test_clean", "influenced", "rest", *other extra sets]."""
    extras = [k for k in outcomes.correct if k not in ("test", "test_clean")]
    clean = ["test_clean"] if "test_clean" in outcomes.correct else []
    return ["test", *clean, "influenced", "rest", *extras]


def _columns(design: Design, outcomes: Outcomes, test_set: str, group: str | None):
    """bool[M, T'] correctness of every model on ``test_set`` (T_h / rest of ``group``)."""
    if test_set in ("influenced", "rest"):
        mask = design.groups[group].influenced
        mask = mask if test_set == "influenced" else ~mask
        return outcomes.correct["test"][:, mask]
    return outcomes.correct[test_set]


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
            cols = _columns(design, outcomes, base, group)[rows]
            if cols.shape[1] == 0:
                entry[label] = {"mean": None, "ci_low": None, "ci_high": None,
                                "n_models": int(rows.size), "n_examples": 0}
                continue
            acc = cols.mean(axis=1)
            entry[label] = {**_accuracy_entry(acc, resamples,
                                              _stat_generator(seed, _SALT_ACCURACY, arm.name, label)),
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


def compare_arms(design: Design, outcomes: Outcomes, seed: int, resamples: int) -> list[dict]:
    """Every planned comparison on every test set (paired over the seeds where neither arm
    diverged), Holm-adjusted within families: the same pair of arm kinds on the same test
    set across the methods, or across the sweep points."""
    entries = []
    for group, a, b in comparison_plan(design):
        ra, rb = design.rows(a), design.rows(b)
        ok = ~outcomes.diverged[ra] & ~outcomes.diverged[rb]
        for test_set in test_set_names(outcomes):
            ca = _columns(design, outcomes, test_set, group)[ra[ok]]
            cb = _columns(design, outcomes, test_set, group)[rb[ok]]
            if ca.shape[1] == 0 or ca.shape[0] < 2:
                continue
            with warnings.catch_warnings():  # Welch on near-constant arms: scipy's precision note
                warnings.simplefilter("ignore", RuntimeWarning)
                c = paired.compare(ca.mean(axis=1), cb.mean(axis=1), correct_a=ca, correct_b=cb,
                                   resamples=resamples,
                                   rng=_stat_generator(seed, _SALT_COMPARISON, a, b, test_set))
            g = design.groups[group]
            entries.append({"name": f"{a} vs {b}", "a": a, "b": b, "test_set": test_set,
                            "group": group, "method": g.method, "tau": g.tau, "comparison": c})
    families: dict = {}
    for i, e in enumerate(entries):
        family = "sweep" if e["tau"] is not None and e["method"] is None else (
            "method" if e["method"] else e["group"])
        kinds = (e["a"].rsplit(":", 1)[-1], e["b"].rsplit(":", 1)[-1])
        families.setdefault((family, kinds, e["test_set"]), []).append(i)
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
                                       rng=_stat_generator(seed, _SALT_COMPARISON, "share", g.name))
            entry.update(estimate=r["estimate"], low=r["low"], high=r["high"],
                         delta_influenced=r["delta_sub"], delta_all=r["delta_all"])
        out[g.name] = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                       for k, v in entry.items()}
    return out


# ---------------------------------------------------------------------------------------------
# The verdict
# ---------------------------------------------------------------------------------------------

def _pp(x: float) -> str:
    """Two decimals with a real minus sign; one significant digit where two decimals would
    print a non-zero bound as 0.00 (so "[−0.32, −0.004]" does not read as touching 0)."""
    text = f"{abs(x):.2f}"
    if text == "0.00" and x != 0:
        text = f"{abs(x):.1g}"
    return f"\u2212{text}" if x < 0 and text != "0.00" else text


def _share(x: float) -> str:
    return f"{x:.2f}".replace("-", "\u2212")


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else (f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}")


ROUNDING_PP = 1e-9  # |bound| below this (pp) is 0: quantile interpolation leaves ~1e-15


def _snap(x: float) -> float:
    return 0.0 if abs(x) < ROUNDING_PP else x


def interval(c: paired.Comparison) -> tuple[float, float]:
    """The interval a verdict decides on: the seed bootstrap, the one that matches the paired
    permutation test and the minimum detectable effect (all three take the test set as
    given and ask what another draw of training seeds would do). Bounds within rounding of
    0 are 0 (differences are multiples of 100/T pp, so a bound can sit exactly on 0)."""
    return _snap(c.ci_low), _snap(c.ci_high)


def decisive_p(c: paired.Comparison) -> float:
    """The p-value a verdict decides on: Holm-adjusted within the comparison's family (the
    same comparison across methods, or across sweep points) when there is one."""
    return c.p_holm if c.p_holm is not None else c.p_perm


def direction(c: paired.Comparison) -> str:
    """"lower" / "higher" when the seed interval excludes 0 on that side AND the paired
    permutation test (Holm-adjusted, :func:`decisive_p`) rejects at ``SIGNIFICANCE``; "none"
    when the interval contains 0; "inconclusive" when the two disagree (an effect near the
    detection limit, or few seeds, where the bootstrap interval is a little narrow)."""
    low, high = interval(c)
    if low <= 0 <= high:
        return "none"
    if decisive_p(c) >= SIGNIFICANCE:
        return "inconclusive"
    return "lower" if high < 0 else "higher"


def _effect(c: paired.Comparison, two_level: bool = False) -> str:
    low, high = interval(c)
    text = f"{_pp(c.mean_diff)} pp [{_pp(low)}, {_pp(high)}]"
    if two_level and c.ci2_low is not None:
        text += (f" (resampling test examples too: [{_pp(_snap(c.ci2_low))}, "
                 f"{_pp(_snap(c.ci2_high))}])")
    return text


def _conclusion(c: paired.Comparison, set_label: str) -> str:
    d = direction(c)
    if d == "lower":
        return f"lowers {set_label} accuracy"
    if d == "higher":
        return f"does not lower {set_label} accuracy (it raises it)"
    if d == "inconclusive":
        return (f"has an inconclusive effect on {set_label} accuracy (the interval excludes 0 but "
                f"the {'Holm-adjusted ' if c.p_holm is not None and c.p_holm != c.p_perm else ''}"
                f"permutation test does not reject, {_p(decisive_p(c))}; more seeds needed)")
    return (f"does not lower {set_label} accuracy detectably (an effect of {_pp(c.mde)} pp or "
            "larger would have been detected with 80% power)")


_SET_LABELS = {"test": "test", "test_clean": "leakage-free test", "influenced": "influenced test",
               "rest": "rest-of-test"}


def _label(g: Group) -> str:
    info = g.info
    if g.method == "fixed":
        return f"fixed-{info['threshold']:g} (mem >= {info['threshold']:g})"
    if g.method == "fdr":
        return f"fdr (BH q = {info.get('q', float('nan')):g}, mem >= {info.get('min_effect', float('nan')):g})"
    if g.method:
        return g.method
    if g.tau is not None:
        return f"the sweep point mem >= {g.tau:g}"
    return f"the user set {info['path']}"


def _holm_text(c: paired.Comparison, size: int, g: Group) -> str:
    if size < 2 or c.p_holm is None:
        return ""
    over = "sweep points" if g.method is None else "methods"
    return f", Holm-adjusted over {size} {over} {_p(c.p_holm)}"


def _protocol_label(cell: protocols.Protocol, rates: tuple) -> str:
    parts = [f"rate {rates[1] if cell.rate else rates[0]:g}",
             ("definition: Fisher test with mem >= min_effect" if cell.definition else "definition: mem"),
             ("threshold: calibrated (" + ("Benjamini-Hochberg FDR" if cell.definition else "placebo null") + ")")
             if cell.threshold else ("threshold: hand-picked (" + ("p <= 0.05 per example" if cell.definition
                                                                  else "mem >= 0.25") + ")"),
             "leakage-free test set" if cell.leakage else "original test set"]
    return "; ".join(parts)


def protocols_text(design: Design, by: dict, ablation: dict, num_examples: int) -> list[str]:
    """Verdict paragraphs of the two protocols (Feldman & Zhang's and the corrected one) and
    the main effect of each correction, from the ablation's cells."""
    lines = []
    for cell, title in ((protocols.FZ, "Feldman & Zhang's protocol"), (protocols.CORRECTED, "The corrected protocol")):
        group = cell_group(cell.selection_key)
        label = _protocol_label(cell, design.ablation_rates)
        test_set = "test_clean" if cell.leakage else "test"
        c = by.get((f"{group}:selected", f"{group}:matched", test_set))
        if group not in design.groups:
            lines.append(f"{title} ({label}) selects no example: nothing to remove, no effect.")
            continue
        if c is None:
            lines.append(f"{title} ({label}): too few non-diverged seeds to compare.")
            continue
        k = int(design.groups[group].removed.sum())
        lines.append(f"{title} ({label}) removes {k} examples ({100 * k / num_examples:.1f}%): "
                     f"accuracy on the {_SET_LABELS.get(test_set, test_set)} set changed by "
                     f"{_effect(c, True)} against removing {k} class-matched random examples "
                     f"({_p(c.p_perm)}, {c.n_seeds} seeds; minimum detectable effect {_pp(c.mde)} pp). "
                     f"Verdict: removing them {_conclusion(c, _SET_LABELS[test_set])}.")
    effects = "; ".join(f"{e['factor']} {_signed(e['effect_pp'])} pp [{_signed(e['ci_low'])}, "
                        f"{_signed(e['ci_high'])}] (Holm p {_p_plain(e['p_holm'])})"
                        for e in ablation["main_effects"])
    lines.append(f"Ablation ({ablation['seeds']} seeds, all 16 cells): main effect of switching each "
                 f"correction on, on the selected-minus-matched difference: {effects}. A positive "
                 "effect means the correction makes removal look less costly.")
    return lines


def _signed(x) -> str:
    return "n/a" if x is None else f"{x:+.2f}".replace("-", "−")


def _p_plain(p) -> str:
    return "n/a" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3g}")


def verdict_text(design: Design, comparisons: list[dict], share: dict, num_examples: int,
                 excluded: int, ablation: dict | None = None) -> str:
    """The verdict paragraph: per removal set, selected vs class-matched random on the test
    and leakage-free test sets (and every other set), then the F&Z baselines and share."""
    by = {(e["a"], e["b"], e["test_set"]): e["comparison"] for e in comparisons}
    family = {(e["a"], e["b"], e["test_set"]): e.get("family_size", 1) for e in comparisons}
    lines = [f"Removal experiment, {design.seeds} seeds per arm (seed s of every arm shares its "
             "initialisation and data order). Differences are arm minus arm in percentage points "
             "(pp) with 95% bootstrap intervals over seeds; p: paired sign-flip permutation test."]
    if ablation is not None:  # the question's answer first: the two protocols, then the ablation
        lines += protocols_text(design, by, ablation, num_examples)
    for g in design.groups.values():
        if g.name.startswith(ABLATION_PREFIX):
            continue  # the ablation's cells have their own paragraph (protocols_text)
        sel, matched = f"{g.name}:selected", f"{g.name}:matched"
        k = int(g.removed.sum())
        main = by.get((sel, matched, "test"))
        if main is None:
            lines.append(f"{_label(g)}: too few non-diverged seeds to compare.")
            continue
        text = (f"Removing the {k} examples selected by {_label(g)} ({100 * k / num_examples:.1f}% "
                f"of {num_examples}) changed test accuracy by {_effect(main, True)} relative to "
                f"removing {k} class-matched random examples (paired permutation {_p(main.p_perm)}"
                + _holm_text(main, family[(sel, matched, "test")], g)
                + f", {main.n_seeds} seeds)")
        others = []
        for ts in ("test_clean", "influenced", "rest", *sorted({e["test_set"] for e in comparisons}
                                                              - {"test", "test_clean", "influenced", "rest"})):
            c = by.get((sel, matched, ts))
            if c is None:
                continue
            size = (f" ({int(g.influenced.sum())} examples)" if ts == "influenced" else "")
            others.append(f"on the {_SET_LABELS.get(ts, ts)} set{size} by {_effect(c, ts == 'test_clean')} "
                          f"({_p(c.p_perm)}{_holm_text(c, family[(sel, matched, ts)], g)}; "
                          f"minimum detectable effect {_pp(c.mde)} pp)")
        text += ("; " + "; ".join(others) if others else "") + "."
        verdicts = [f"removing them {_conclusion(main, 'test')}"]
        clean = by.get((sel, matched, "test_clean"))
        if clean is not None:
            verdicts.append(f"on the leakage-free test set it {_conclusion(clean, 'test')}")
        text += " Verdict: " + "; ".join(verdicts) + "."
        base = []
        for other, what in ((f"{g.name}:random", "removing as many uniformly random examples"),
                            ("full", "the full training set")):
            c = by.get((sel, other, "test"))
            if c is not None:
                base.append(f"{_effect(c)} against {what} ({_p(c.p_perm)})")
        if base:
            text += " Test accuracy change " + ", and ".join(base) + "."
        sh = share.get(g.name, {})
        if sh.get("estimate") is not None:
            rng_text = (f" [{_share(sh['low'])}, {_share(sh['high'])}]" if sh.get("low") is not None
                        else " (interval undefined: the total change is not distinguishable from 0)")
            text += (f" Feldman & Zhang's accounting: the {sh['influenced_size']} influenced test "
                     f"examples carry a share {_share(sh['estimate'])}{rng_text} of the change against "
                     "the full training set.")
        lines.append(text)
    for name, why in design.skipped.items():
        lines.append(f"{name}: {why}; no arm trained.")
    if excluded:
        lines.append(f"{excluded} diverged model(s) were left out of every statistic.")
    return "\n\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

def models_csv(design: Design, outcomes: Outcomes) -> str:
    """One row per retrained model: arm, seed, model id, removed count, diverged, final loss,
    training accuracy (kept examples), and the accuracy on every test set (influenced / rest:
    the arm's group's; empty for ``full`` and empty T_h)."""
    names = test_set_names(outcomes)
    header = ["row", "arm", "kind", "seed", "model_id", "removed", "diverged", "final_loss",
              "train_accuracy", *[f"{t}_accuracy" for t in names]]
    lines = [",".join(header)]
    ids = design.model_ids
    for arm in design.arms:
        for s, r in enumerate(design.rows(arm.name)):
            cells = [str(r), arm.name, arm.kind, str(s), str(int(ids[r])), str(int(arm.removed[s].sum())),
                     str(int(outcomes.diverged[r])), f"{float(outcomes.final_loss[r]):.6g}",
                     f"{float(outcomes.train_accuracy[r]):.6g}"]
            for t in names:
                if t in ("influenced", "rest") and (arm.group is None):
                    cells.append("")
                    continue
                cols = _columns(design, outcomes, t, arm.group)[r]
                cells.append(f"{float(cols.mean()):.6g}" if cols.size else "")
            lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def record(design: Design, outcomes: Outcomes, comparisons: list[dict], accuracy: dict,
           share: dict, cfg: RetrainConfig, num_examples: int, verdict: str) -> dict:
    """The content of retrain.json (schema in the README)."""
    arms = []
    for arm in design.arms:
        rows = design.rows(arm.name)
        arms.append({"name": arm.name, "kind": arm.kind, "method": arm.method, "tau": arm.tau,
                     "group": arm.group, "removed": arm.count,
                     "removed_fraction": arm.count / num_examples,
                     "rows": [int(rows[0]), int(rows[-1]) + 1],
                     "diverged": int(outcomes.diverged[rows].sum())})
    return to_jsonable({
        "seeds": design.seeds,
        "methods": list(cfg.method_list),
        "sweep": list(cfg.sweep),
        "remove": cfg.remove or None,
        "num_examples": num_examples,
        "model_id_offset": MODEL_ID_OFFSET,
        "cross_fit": design.cross_fit,
        "groups": {name: g.info for name, g in design.groups.items()},
        "skipped": design.skipped,
        "arms": arms,
        "test_sets": test_set_names(outcomes),
        "test_set_sizes": {k: int(v.shape[1]) for k, v in outcomes.correct.items()},
        "accuracy": accuracy,
        "train_accuracy": {arm.name: paired.PP * float(np.mean(
            outcomes.train_accuracy[design.rows(arm.name)][~outcomes.diverged[design.rows(arm.name)]]))
            if (~outcomes.diverged[design.rows(arm.name)]).any() else None for arm in design.arms},
        "comparisons": [{"name": e["name"], "a": e["a"], "b": e["b"], "test_set": e["test_set"],
                         "group": e["group"], "method": e["method"], "tau": e["tau"],
                         "direction": direction(e["comparison"]),
                         "holm_family_size": e.get("family_size", 1),
                         **e["comparison"].to_json()} for e in comparisons],
        "share_of_change": share,
        "excluded_diverged": int(outcomes.diverged.sum()),
        "resamples": cfg.resamples,
        "verdict": verdict.strip(),
    })


# ---------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------

def load_scored_run(run_dir) -> tuple[Config, scoring.RunArrays, scoring.ScoreOptions]:
    """The run's config, arrays and scoring options; refuses an unfinished or unscored run."""
    d = Path(run_dir)
    if not (d / artifacts.CONFIG).exists():
        raise JmemError(f"run directory {str(d)!r} holds no {artifacts.CONFIG}; give a directory "
                        "written by `jmem run` or `jmem train`")
    if not training.is_complete(d):
        raise JmemError(f"run directory {str(d)!r} is not fully trained (no {artifacts.MODEL_METRICS}); "
                        "finish `jmem train` first")
    integrity.verify_run(d)  # a damaged or changed input or output: refuse, naming it
    if not (d / artifacts.THRESHOLDS).exists():
        raise JmemError(f"run directory {str(d)!r} is not scored (no {artifacts.THRESHOLDS}); "
                        f"run `jmem score {d}` first")
    config = config_lib.from_dict(artifacts.load_json(d / artifacts.CONFIG))
    recorded = artifacts.load_json(d / artifacts.THRESHOLDS).get("options", {})
    fields = {f.name for f in dataclasses.fields(scoring.ScoreOptions)}
    opt = scoring.ScoreOptions(**{k: v for k, v in recorded.items() if k in fields})
    return config, scoring.load_run(d), opt


def resolve_config(config: Config, overrides: list[str]) -> RetrainConfig:
    """The run's retrain section with ``retrain.FIELD=VALUE`` overrides applied."""
    for item in overrides:
        if not item.strip().startswith("retrain."):
            raise JmemError(f"--set {item!r}: jmem retrain takes only retrain.* fields "
                            "(the run's other settings are fixed by its config.json)")
    return config_lib.apply_overrides(config, overrides).retrain


def retrain_dataset(config: Config, run: scoring.RunArrays, dataset: Dataset | None) -> Dataset:
    """The dataset the estimation models saw: labels from labels_train.npy (canaries
    included) and the same extra test sets (test_clean attached as ``jmem train`` does)."""
    from jmem.study.leakage import measure_leakage

    if dataset is None:
        from jmem.data.loaders import load_dataset

        dataset = load_dataset(config.data.name, data_dir=config.data.data_dir or None)
    dataset, _ = measure_leakage(config, dataset)
    if dataset.num_train != run.labels_train.size:
        raise JmemError(f"dataset {dataset.name!r} has {dataset.num_train} training examples; the "
                        f"run has {run.labels_train.size}")
    if not np.array_equal(dataset.y_test, run.test_sets["test"][1]):
        raise JmemError(f"dataset {dataset.name!r}: test labels differ from the run's labels_test.npy")
    if sorted(dataset.extra_tests) != sorted(k for k in run.test_sets if k != "test"):
        raise JmemError(f"dataset {dataset.name!r} has extra test sets {sorted(dataset.extra_tests)}; "
                        f"the run has {sorted(k for k in run.test_sets if k != 'test')}")
    return dataclasses.replace(dataset, y_train=np.asarray(run.labels_train, np.int32))


def _recorded(cfg: RetrainConfig, seed: int) -> dict:
    return {"seed": seed, "retrain": config_lib.to_dict(cfg)}


def _check_retrain_dir(out: Path, cfg: RetrainConfig, seed: int, keep: np.ndarray) -> bool:
    """Refuse a retrain/ holding another experiment; True if it holds this one."""
    if not out.exists():
        return False
    if not (out / CONFIG).exists():
        partial = {KEEP, MODEL_IDS, training.LOCK}
        if not all(p.name in partial or (p.name.startswith(".") and p.name.endswith(".tmp"))
                   for p in out.iterdir()):
            raise JmemError(f"{str(out)!r} is not empty and holds no {CONFIG}; delete it")
        return False
    difference = config_lib.first_difference(artifacts.load_json(out / CONFIG), _recorded(cfg, seed),
                                             ignore=(), ignore_sections=())
    if difference:
        raise JmemError(f"{str(out)!r} holds a different removal experiment ({difference}); "
                        "delete it or use the same retrain settings")
    stored = artifacts.load_array(out / KEEP)
    if stored.shape != keep.shape or not np.array_equal(stored, keep):
        raise JmemError(f"{str(out)!r} was started from other selections (the run was re-scored "
                        "since); delete it to retrain")
    return True


def run_retrain(run_dir, overrides: list[str] = (), dataset: Dataset | None = None,
                execution: training.Execution = training.Execution(), progress: bool = True,
                log=print, retrain_config: RetrainConfig | None = None) -> dict:
    """The removal experiment on the scored run ``run_dir``; resumable (see module docstring).

    overrides: ``retrain.FIELD=VALUE`` strings (or give ``retrain_config``). dataset: the
    run's dataset (default: loaded from its config). Returns a summary with the verdict.
    Writes ``RUN_DIR/retrain/`` (nothing before every input is validated).
    """
    from jmem.engine import parallel

    began = time.perf_counter()
    run_dir = Path(run_dir)
    config, run, opt = load_scored_run(run_dir)
    cfg = retrain_config if retrain_config is not None else resolve_config(config, list(overrides))
    if parallel.process_count() > 1:
        raise JmemError("jmem retrain runs in one process (its waves fit one host); drop the "
                        "multi-process flags")
    labels_test = run.test_sets["test"][1]
    num_classes = int(max(run.labels_train.max(), labels_test.max())) + 1
    design = build_design(run, cfg, opt, config.seed, num_classes)  # bad input fails here, cheaply
    dataset = retrain_dataset(config, run, dataset)
    keep, ids = design.keep, design.model_ids
    out = run_dir / RETRAIN_DIR
    train_config = dataclasses.replace(config, train=dataclasses.replace(config.train,
                                                                         num_models=keep.shape[0]))
    inputs = training.RunInputs(dataset, keep, np.zeros(keep.shape[0], np.float32),
                                np.asarray(run.labels_train, np.int32),
                                np.zeros(keep.shape[1], bool), model_ids=ids)
    devices = parallel.local_devices(execution.devices)
    trained, train_seconds = 0, 0.0
    with training.StopRequest() as stop_request, contextlib.ExitStack() as lock:
        resuming = _check_retrain_dir(out, cfg, config.seed, keep)
        out.mkdir(parents=True, exist_ok=True)
        lock.enter_context(training.workdir_lock(out))
        resuming = _check_retrain_dir(out, cfg, config.seed, keep)
        training.remove_stale_tmp(out)
        if resuming and (out / artifacts.RETRAIN).exists():
            training.cleanup(out)
            log(f"{out}: removal experiment already complete")
            summary = artifacts.load_json(out / artifacts.RETRAIN)
            return {"retrain_dir": str(out), "models": int(keep.shape[0]), "trained_now": 0,
                    "train_seconds": 0.0, "seconds": round(time.perf_counter() - began, 2),
                    "verdict": summary["verdict"]}
        if not resuming:
            artifacts.save_array(out / KEEP, keep)
            artifacts.save_array(out / MODEL_IDS, ids)
            training.fault_point("inputs")
            artifacts.save_json(out / CONFIG, _recorded(cfg, config.seed))
        done = training.finished_models(out, keep.shape[0])
        if done.any():
            log(f"{out}: resuming, {int(done.sum())} of {done.size} models already trained")
        wave_size = training.auto_wave_size(train_config, dataset, len(devices), 1)
        start = training._Start(inputs, devices, False, wave_size, done)
        t0 = time.perf_counter()
        trained = training._train_share(start, train_config, out, execution, stop_request,
                                        progress, log)
        train_seconds = time.perf_counter() - t0
        verdict = _assemble(out, design, inputs, cfg, config.seed)
    return {"retrain_dir": str(out), "models": int(keep.shape[0]), "trained_now": trained,
            "train_seconds": round(train_seconds, 2),
            "models_per_second": round(trained / train_seconds, 2) if train_seconds > 0 and trained else None,
            "seconds": round(time.perf_counter() - began, 2), "verdict": verdict}


def _assemble(out: Path, design: Design, inputs: training.RunInputs, cfg: RetrainConfig,
              seed: int) -> str:
    """Margins arrays, then retrain_models.csv, verdict.txt and retrain.json (last: it marks
    a complete experiment), then the waves and checkpoints go."""
    arrays = training.load_waves(out, inputs.keep.shape[0])
    for key, value in arrays.items():
        if key.startswith("margins_"):
            artifacts.save_array(out / f"{key}.npy", value.astype(np.float32))
            training.fault_point("assembly")
    outcomes = outcomes_from_arrays(arrays, inputs.keep)
    num_examples = inputs.keep.shape[1]
    comparisons = compare_arms(design, outcomes, seed, cfg.resamples)
    accuracy = arm_accuracies(design, outcomes, seed, cfg.resamples)
    share = shares(design, outcomes, seed, cfg.resamples)
    excluded = int(outcomes.diverged.sum())
    ablation = ablation_record(design, outcomes, seed, cfg.resamples) if cfg.ablation else None
    verdict = verdict_text(design, comparisons, share, num_examples, excluded, ablation)
    if ablation is not None:
        artifacts.save_json(out / artifacts.ABLATION, ablation)
    artifacts.save_text(out / MODELS_CSV, models_csv(design, outcomes))
    artifacts.save_text(out / VERDICT, verdict)
    artifacts.save_json(out / artifacts.RETRAIN,
                        record(design, outcomes, comparisons, accuracy, share, cfg, num_examples,
                               verdict))
    training.fault_point("cleanup")
    training.cleanup(out)
    return verdict
