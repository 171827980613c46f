"""The removal hypotheses, from the scored estimation run: what each method, sweep point, user
set and ablation cell removes, and which test examples the removed ones influence.

Cross-fitting (``retrain.cross_fit``, default on): selections (and sweep and lowest scores)
come from the estimation models with even ids, T_h from those with odd ids, so that noise
which put an example into the selection cannot also make "its" test points look
influenced. The split-half Spearman correlation of mem and the Jaccard index of each
method's two half selections are reported. Each half's scores and selections are computed
here: the scoring stage's files hold those of all the models.

Without cross-fitting the selections, scores and pairs are the scoring stage's own, read
from ``scores.csv``, ``thresholds.json`` and ``pairs.csv``. The ablation's eight cells are
always computed here: the scoring stage does not select per cell.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from jmem import rng
from jmem.config import RetrainConfig, ScoreConfig
from jmem.data import removal
from jmem.errors import JmemError
from jmem.scores import estimators, protocols, reliability
from jmem.study import diverged, rundir, scoring
from jmem.study.retrain.design import Candidate, cell_group

KNOWN_METHODS = ("fixed", "fdr", "null", "top_k", "canary")


@dataclasses.dataclass(frozen=True)
class Selections:
    """What :func:`select` found.

    candidates: [Candidate]: methods, sweep points, the user set, ablation cells, in order;
    mem: float64[N], mem of the selection models (the ``lowest`` arms rank by it);
    pair_train, pair_test: int64[P], high-influence pairs on the main test set, from the
      influence models; cross_fit: the JSON record of the two halves;
    ablation_rates: (off, on) rates of the ablation's rate factor, or None without ablation.
    """

    candidates: list
    mem: np.ndarray
    pair_train: np.ndarray
    pair_test: np.ndarray
    cross_fit: dict
    ablation_rates: tuple | None


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


def half_scores(run: scoring.RunArrays, rows: np.ndarray, opt: ScoreConfig) -> estimators.ExampleScores:
    """The per-example scores of the estimation models ``rows``."""
    return estimators.compute_scores(run.keep[rows], np.asarray(run.margins_train[rows]),
                                     confidence=opt.confidence, fractional_floor=opt.fractional_floor,
                                     chunk_size=opt.chunk_size, name="margins_train.npy")


def half_selection(run: scoring.RunArrays, rows: np.ndarray, opt: ScoreConfig):
    """(ExampleScores, {method: ThresholdResult}) of the estimation models ``rows``."""
    s = half_scores(run, rows, opt)
    _, methods = scoring.select_all(s, run.keep[rows], np.asarray(run.margins_train[rows]),
                                    run.canaries, opt)
    return s, methods


def influence_pairs(run: scoring.RunArrays, rows: np.ndarray, mem: np.ndarray,
                    opt: ScoreConfig) -> tuple[np.ndarray, np.ndarray]:
    """F&Z high-influence pairs (train int64[P], test int64[P]) on the main test set, from
    the estimation models ``rows`` and their ``mem``."""
    margins_test, labels_test = run.test_sets["test"]
    summary = estimators.influence_summary(
        run.keep[rows], np.asarray(margins_test[rows]), mem, run.labels_train, labels_test, k=0,
        mem_threshold=opt.pair_mem_threshold, infl_threshold=opt.influence_threshold,
        same_class=opt.pair_same_class, chunk_size=opt.influence_chunk_size,
        max_pairs=opt.max_pairs, name="margins_test.npy")
    return summary.pair_train, summary.pair_test


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


def ablation_selections(run: scoring.RunArrays, sel_rows: np.ndarray, opt: ScoreConfig) -> dict:
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


def read_scored(run_dir, methods: tuple[str, ...], num_examples: int):
    """The scoring stage's own results: (mem float64[N], {method: (selected bool[N], info
    dict)}, pair_train int64[P], pair_test int64[P]) from scores.csv, thresholds.json and
    pairs.csv. mem is recomputed from the integer counts scores.csv records (its ``mem``
    column is rounded to 6 digits, which could move an example across a sweep point)."""
    d = Path(run_dir)
    cols = rundir.read_csv_columns(d / rundir.SCORES)
    if cols["index"].size != num_examples:
        raise JmemError(f"{d / rundir.SCORES} has {cols['index'].size} rows; the run has "
                        f"{num_examples} training examples")
    counts = {f: cols[f].astype(np.int64) for f in ("n_in", "n_out", "correct_in", "correct_out")}
    nan = np.full(num_examples, np.nan)
    mem = estimators.scores_from_counts(estimators.Counts(
        **counts, margin_in=nan, margin_out=nan, std_in=nan, std_out=nan)).mem
    recorded = rundir.load_json(d / rundir.THRESHOLDS, expect=dict).get("methods", {})
    chosen = {}
    for m in methods:
        if m not in recorded or f"selected_{m}" not in cols:
            raise JmemError(f"retrain.methods names {m!r} but {rundir.THRESHOLDS} has no such "
                            f"method; re-run `jmem score {d}`")
        info = {k: v for k, v in recorded[m].items() if k != "canary_metrics"}
        chosen[m] = (cols[f"selected_{m}"] == 1, info)
    pairs = rundir.read_csv_columns(d / rundir.PAIRS)
    on_test = pairs["test_set"] == "test" if pairs["train_index"].size else np.zeros(0, bool)
    return (mem, chosen, pairs["train_index"][on_test].astype(np.int64),
            pairs["test_index"][on_test].astype(np.int64))


def select(run_dir, run: scoring.RunArrays, cfg: RetrainConfig, opt: ScoreConfig) -> Selections:
    """Every removal hypothesis of ``cfg`` on the scored run (no training, no files).

    Raises JmemError for an unknown method or a bad user set.
    """
    methods = check_methods(cfg, run.canaries is not None and bool(run.canaries.any()))
    n = run.labels_train.size
    user = removal.load_removal(cfg.remove, n) if cfg.remove else None
    scored = diverged.without(scoring.primary_rows(run, opt.rate), run.diverged, run.keep.shape[0])
    sel_rows, infl_rows = split_rows(run.model_rates, run.keep.shape[0], scored, cfg.cross_fit)
    cross = {"enabled": cfg.cross_fit, "selection_models": int(sel_rows.size),
             "influence_models": int(infl_rows.size), "spearman_mem": None, "jaccard": {}}
    if cfg.cross_fit:
        s_sel, results = half_selection(run, sel_rows, opt)
        chosen = {m: (np.asarray(results[m].selected, bool), results[m].to_dict()) for m in methods}
        s_infl, other = half_selection(run, infl_rows, opt)
        mem = s_sel.mem
        pair_train, pair_test = influence_pairs(run, infl_rows, s_infl.mem, opt)
        cross["spearman_mem"] = reliability.spearman(s_sel.mem, s_infl.mem)[0]
        cross["jaccard"] = {m: reliability.jaccard(chosen[m][0], other[m].selected) for m in methods}
    else:
        mem, chosen, pair_train, pair_test = read_scored(run_dir, methods, n)

    candidates = [Candidate(m, m, None, chosen[m][0], chosen[m][1], f"retrain.methods: {m}")
                  for m in methods]
    candidates += [Candidate(f"sweep:{tau:g}", None, tau, removal.at_least(mem, tau),
                             {"threshold": tau, "score": "mem"}, f"retrain.sweep: mem >= {tau:g}")
                   for tau in cfg.sweep]
    if user is not None:
        candidates.append(Candidate("user", None, None, user, {"path": cfg.remove},
                                    f"retrain.remove={cfg.remove!r}"))
    rates = None
    if cfg.ablation:
        rates = ablation_rates(run)
        for key, res in ablation_selections(run, sel_rows, opt).items():
            name = cell_group(key)
            candidates.append(Candidate(name, None, None, np.asarray(res.selected, bool),
                                        {**res.to_dict(), "cell": protocols.Protocol(*key, False).levels},
                                        f"retrain.ablation: cell {name}"))
    return Selections(candidates, mem, pair_train, pair_test, cross, rates)
