"""The removal hypotheses, from the scored estimation run: what each protocol cell, size-matched
cell, curve point, rule, sweep point and user set removes in each estimation pool, and which
test examples the removed ones influence.

**Pools** (``retrain.pools``): with 2, the estimation models are split into two halves that
alternate within each inclusion rate; pool p selects from half p and finds the test examples
its selection influences from the other half (cross-fitting: the noise that put an example
into a selection cannot also make "its" test examples look influenced). The two pools'
removal sets are two independent draws of the same protocol, so the difference between their
effects measures selection noise (:mod:`jmem.scores.generalising`), and their Jaccard index is
the selection-reliability gate. With 1 pool every model selects and finds influence.

**One rate at a time**: every selection reads the scores of the models of the rate its
protocol names (``rate`` factor: the run's lowest rate off, highest on; rules, sweep points:
``score.rate``); influence comes from the same rate. Diverged estimation models are left out
(:func:`jmem.study.scoring.without_diverged`), as in the scoring stage.

**Canaries never enter a removal set**: every selection has the canaries masked out
(``eligible``), and so do the random arms that match them (:mod:`.design`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jmem.config import RetrainConfig, ScoreConfig
from jmem.data import removal
from jmem.errors import JmemError
from jmem.scores import estimators, protocols, reliability
from jmem.study import scoring

KNOWN_METHODS = protocols.ALL_RULES + ("canary",)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A removal hypothesis before it has arms.

    name: the group name (``cell:<protocol>``, ``matched:<protocol>``, ``curve:<protocol>:<m>``,
      ``method:<rule>``, ``sweep:<tau>``, ``user``, ``jmem``);
    kind: "cell", "matched", "curve", "method", "sweep", "user" or "jmem";
    removed: bool[P, N], the set pool p removes; rate: the inclusion rate it was selected at
      (None for the user's set); influenced: bool[P, T] over the main test set, the test
      examples its pool's removed examples influence (from the other half's models);
    info: JSON facts about the selection, one dict per pool (threshold, counts, ...);
    what: where it comes from, for error messages; key: the factor levels of a cell
      ((rate, definition, threshold) as defined, (rate, definition) size-matched), or None.
    """

    name: str
    kind: str
    removed: np.ndarray
    rate: float | None
    influenced: np.ndarray
    info: list
    what: str
    key: tuple | None = None
    method: str | None = None
    tau: float | None = None


@dataclasses.dataclass(frozen=True)
class Selections:
    """What :func:`select` found: candidates (in order), the pools' row sets, the k of the
    size-matched sets (None without), the ablation's (off, on) rates (None without), and the
    JSON record of the pools (sizes, split-half Spearman of mem at each rate)."""

    candidates: list
    pools: list
    matched_k: int | None
    ablation_rates: tuple | None
    record: dict
    mem: np.ndarray  # float64[P, N]: mem of each pool at the main rate (``lowest`` arms)


def check_methods(cfg: RetrainConfig, has_canaries: bool) -> tuple[str, ...]:
    """The rule names of ``retrain.methods``, validated."""
    methods = cfg.method_list
    for m in methods:
        if m not in KNOWN_METHODS:
            raise JmemError(f"retrain.methods contains unknown rule {m!r}; known: {', '.join(KNOWN_METHODS)}")
        if m == "canary" and not has_canaries:
            raise JmemError("retrain.methods contains 'canary' but the run has no canaries "
                            "(subsets.canary_fraction=0)")
    if len(set(methods)) != len(methods):
        raise JmemError(f"retrain.methods={cfg.methods!r} repeats a rule")
    if not methods and not cfg.sweep and not cfg.remove and not cfg.ablation:
        raise JmemError("retrain.methods='' with no retrain.sweep, no retrain.remove and no "
                        "retrain.ablation: nothing to remove")
    return methods


def pool_rows(run: scoring.RunArrays, pools: int) -> tuple[list, list]:
    """(selection rows, influence rows) of each pool: the alternating halves within each rate
    (pools=2, each pool's influence from the other half) or every model twice (pools=1)."""
    rows = np.arange(run.keep.shape[0])
    if pools == 1:
        return [rows], [rows]
    a, b = reliability.alternating_halves(rows.size, run.model_rates)
    if a.size < 2 or b.size < 2:
        raise JmemError(f"retrain.pools=2 needs at least 4 estimation models (2 per half); the run "
                        f"has {rows.size}")
    return [a, b], [b, a]


def _at_rate(run: scoring.RunArrays, rows: np.ndarray, rate: float) -> np.ndarray:
    if run.model_rates is None or np.isnan(rate):
        return rows
    return rows[protocols.rate_rows(run.model_rates[rows], rate)]


def influenced_test_examples(run: scoring.RunArrays, rows: np.ndarray, removed: np.ndarray,
                             opt: ScoreConfig) -> np.ndarray:
    """bool[T] over the main test set: test examples j with a removed training example i whose
    influence ``infl(i, j) >= score.influence_threshold`` (and the same label with
    ``score.pair_same_class``), estimated from the models ``rows``. Only the removed
    examples' columns are computed (O(R |removed| T))."""
    margins_test, labels_test = run.test_sets["test"]
    out = np.zeros(labels_test.shape[0], bool)
    idx = np.flatnonzero(removed)
    if idx.size == 0:
        return out
    correct = estimators.correct_matrix(np.asarray(margins_test[rows]), rows.size)
    for sl, infl in estimators.iter_influence(run.keep[rows][:, idx], correct, chunk_size=opt.influence_chunk_size):
        with np.errstate(invalid="ignore"):
            hit = infl >= opt.influence_threshold  # [T, chunk]
        if opt.pair_same_class:
            hit &= labels_test[:, None] == run.labels_train[idx[sl]][None, :]
        out |= hit.any(axis=1)
    return out


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


def _candidate(name, kind, sets, rate, info, what, infl_rows, run, opt, **extra) -> Candidate:
    removed = np.stack(sets)
    influenced = np.stack([
        influenced_test_examples(run, _at_rate(run, rows, rate if rate is not None else float("nan")), r, opt)
        for rows, r in zip(infl_rows, removed)])
    return Candidate(name, kind, removed, rate, influenced, info, what, **extra)


def select(run: scoring.RunArrays, cfg: RetrainConfig, opt: ScoreConfig, user=None) -> Selections:
    """Every removal hypothesis of ``cfg`` on the scored run (no training, no files).

    run: the run's arrays with the diverged models already left out; user: bool[N] of
    ``retrain.remove`` (loaded by the stage) or None. Raises JmemError for an unknown rule.
    """
    has_canaries = run.canaries is not None and bool(run.canaries.any())
    methods = check_methods(cfg, has_canaries)
    sel_rows, infl_rows = pool_rows(run, cfg.pools)
    groups = scoring.rate_groups(run)
    main = scoring.main_rate(groups, opt)
    eligible = scoring.eligible_examples(run)
    options = scoring.selection_options(opt)
    # Scores of every pool at every rate: each selection below reads one of them.
    pool_scores = [{rate: scoring.rate_scores(run, _at_rate(run, rows, rate), opt) for rate in groups}
                   for rows in sel_rows]
    record = {"pools": cfg.pools, "models_per_pool": [int(r.size) for r in sel_rows],
              "spearman_mem": {}}
    if cfg.pools == 2:
        for rate in groups:
            record["spearman_mem"][f"{rate:g}"] = reliability.spearman(pool_scores[0][rate].mem,
                                                                       pool_scores[1][rate].mem)[0]
    candidates = []
    for m in methods:
        results = [scoring.select_all(ps[main], run.canaries if has_canaries else None, opt)[m] for ps in pool_scores]
        candidates.append(_candidate(f"method:{m}", "method", [r.selected for r in results], main,
                                     [r.to_dict() for r in results], f"retrain.methods: {m}", infl_rows, run, opt,
                                     method=m))
    for tau in cfg.sweep:
        sets = [removal.at_least(ps[main].mem, tau) & eligible for ps in pool_scores]
        candidates.append(_candidate(f"sweep:{tau:g}", "sweep", sets, main,
                                     [{"threshold": tau, "score": "mem"}] * cfg.pools,
                                     f"retrain.sweep: mem >= {tau:g}", infl_rows, run, opt, tau=tau))
    if user is not None:
        candidates.append(_candidate("user", "user", [user & eligible] * cfg.pools, main,
                                     [{"path": cfg.remove, "canaries_dropped": int((user & ~eligible).sum())}] * cfg.pools,
                                     f"retrain.remove={cfg.remove!r}", infl_rows, run, opt))
    rates, k = None, None
    if cfg.ablation:
        rates = ablation_rates(run)
        low, high = rates
        cells = [protocols.cell_selections(ps, low, high, options, eligible) for ps in pool_scores]
        for key in cells[0]:
            cell = protocols.Protocol(*key, False)
            results = [c[key] for c in cells]
            candidates.append(_candidate(
                f"cell:{cell.name}", "cell", [r.selected for r in results], high if key[0] else low,
                [{**r.to_dict(), "rule": options.describe(cell.rule)} for r in results],
                f"retrain.ablation: cell {cell.name}", infl_rows, run, opt, key=key))
        jmem = [protocols.apply_rule("fdr", ps[high], options, eligible) for ps in pool_scores]
        candidates.append(_candidate("jmem", "jmem", [r.selected for r in jmem], high,
                                     [r.to_dict() for r in jmem], "jmem's rule (Fisher + BH) at the high rate",
                                     infl_rows, run, opt))
        if cfg.size_matched:
            fz_sizes = [int(c[protocols.FZ.selection_key].selected.sum()) for c in cells]
            k = cfg.matched_k or int(round(float(np.mean(fz_sizes))))
            candidates += _size_matched(run, pool_scores, rates, k, cfg, eligible, infl_rows, opt)
    return Selections(candidates, sel_rows, k, rates, record,
                      np.stack([ps[main].mem for ps in pool_scores]))


def _size_matched(run, pool_scores, rates, k, cfg, eligible, infl_rows, opt) -> list[Candidate]:
    """The size-matched cells (each (rate, definition)'s own top k) and the two protocols'
    removal curves (top m*k for m in ``retrain.curve``)."""
    out = []
    if k == 0:
        return out
    low, high = rates
    sets = [protocols.size_matched_selections(ps, low, high, k, eligible) for ps in pool_scores]
    for key in sets[0]:
        name = {(False, False): "fz", (True, True): "corrected"}.get(key, "+".join(
            f for f, on in zip(("rate", "definition"), key) if on))
        score = "fractional" if key[1] else "mem"
        out.append(_candidate(f"matched:{name}", "matched", [s[key] for s in sets], high if key[0] else low,
                              [{"k": k, "score": score, "rate": high if key[0] else low}] * len(sets),
                              f"retrain.size_matched: top {k} by {score} at rate {high if key[0] else low:g}",
                              infl_rows, run, opt, key=key))
    for key, protocol in (((False, False), "fz"), ((True, True), "corrected")):
        rate = high if key[0] else low
        score = "fractional" if key[1] else "mem"
        for m in cfg.curve:
            size = max(1, int(round(m * k)))
            chosen = [protocols.top_k(getattr(ps[rate], score), size, eligible) for ps in pool_scores]
            out.append(_candidate(f"curve:{protocol}:{m:g}", "curve", chosen, rate,
                                  [{"k": size, "multiple": m, "score": score, "rate": rate}] * len(chosen),
                                  f"retrain.curve: top {size} by {score} at rate {rate:g}",
                                  infl_rows, run, opt, key=key))
    return out
