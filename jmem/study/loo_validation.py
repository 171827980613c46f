"""From the leave-one-out models' margins to the ground truth and ``loo.json``.

1. :func:`paired_outcomes`: each sampled example i_k, seed by seed, right or wrong under the
   full-set model and under the model without it (and the same on its test partners);
2. :func:`loo_truth`: LOO memorization and influence with Newcombe's paired intervals
   (:mod:`jmem.scores.loo`), and "LOO-memorized";
3. the validation of the run's estimates against it: every estimator at every rate
   (:func:`validate_estimators`), every selection rule (:func:`validate_selections`), the
   influence estimates (:func:`validate_influence`) and the cheap proxies
   (:func:`validate_proxies`);
4. :func:`record` (``loo.json``), :func:`examples_csv` and :func:`influence_csv`.

Pure numpy on arrays already on disk; the fields of ``loo.json`` are documented on
:func:`record`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jmem.config import LooConfig
from jmem.errors import JmemError
from jmem.jsonable import to_jsonable
from jmem.scores import estimators
from jmem.scores import loo as loo_stats
from jmem.study import rundir
from jmem.study.loo_design import LOO_MODEL_ID_OFFSET, LooDesign, estimator_arrays

PROXIES = ("csl", "learned_epoch")


@dataclasses.dataclass(frozen=True)
class Outcomes:
    """The LOO models' correctness, seeds first, over the seeds whose K + 1 models all stayed
    finite. with_ / without: bool[S', K], the full model / the model without i_k, right on i_k;
    test_with / test_without: bool[S', K, P] on i_k's test partners; seeds_used: int64[S'];
    excluded_seeds: int64[S - S'] (a model of theirs diverged)."""

    with_: np.ndarray
    without: np.ndarray
    test_with: np.ndarray
    test_without: np.ndarray
    seeds_used: np.ndarray
    excluded_seeds: np.ndarray


def paired_outcomes(margins_train, margins_test, diverged, sample_index, partner_index,
                    seeds: int) -> Outcomes:
    """From the assembled margins (float32[S * (K + 1), N] and [.., T], rows as
    :func:`jmem.study.loo_design.design_rows` lays them out; memory maps are fine) and
    ``diverged: bool[S * (K + 1)]``."""
    k = sample_index.size
    rows = seeds * (k + 1)
    if margins_train.shape[0] != rows or margins_test.shape[0] != rows or diverged.shape != (rows,):
        raise JmemError(f"the LOO margins hold {margins_train.shape[0]} models; the design has "
                        f"{seeds} seeds x {k + 1} rows = {rows}")
    bad = np.asarray(diverged, bool).reshape(seeds, k + 1).any(axis=1)
    used = np.flatnonzero(~bad)
    if used.size < 2:
        raise JmemError(f"only {used.size} of the {seeds} LOO seeds trained without diverging; "
                        "lower train.learning_rate or set train.grad_clip")
    # Views of the (memory-mapped) margins by seed and row; the gathers read only the
    # sampled columns and the partners, never the whole [S * (K + 1), N] array.
    train = margins_train.reshape(seeds, k + 1, -1)
    test = margins_test.reshape(seeds, k + 1, -1)
    loo_rows = 1 + np.arange(k)
    parts = np.maximum(partner_index, 0)  # -1 (no partner) reads column 0; masked in loo_truth
    return Outcomes(with_=np.asarray(train[:, 0, sample_index])[used] > 0,
                    without=np.asarray(train[:, loo_rows, sample_index])[used] > 0,
                    test_with=np.asarray(test[:, 0, :])[used][:, parts] > 0,
                    test_without=np.asarray(test[:, loo_rows[:, None], parts])[used] > 0,
                    seeds_used=used, excluded_seeds=np.flatnonzero(bad))


@dataclasses.dataclass(frozen=True)
class Truth:
    """Leave-one-out ground truth on the sample. mem, mem_low, mem_high: float64[K]
    (with minus without, and its interval); memorized: bool[K] (:func:`jmem.scores.loo.loo_memorized`);
    acc_with, acc_without: float64[K]; infl, infl_low, infl_high: float64[K, P] on the
    partners (NaN where there is none)."""

    mem: np.ndarray
    mem_low: np.ndarray
    mem_high: np.ndarray
    memorized: np.ndarray
    acc_with: np.ndarray
    acc_without: np.ndarray
    infl: np.ndarray
    infl_low: np.ndarray
    infl_high: np.ndarray


def loo_truth(outcomes: Outcomes, partner_index: np.ndarray, cfg: LooConfig) -> Truth:
    """LOO memorization and influence of the sampled examples with their intervals."""
    mem, low, high = loo_stats.paired_difference_interval(outcomes.with_, outcomes.without, cfg.confidence)
    if partner_index.size:
        infl, ilow, ihigh = loo_stats.paired_difference_interval(outcomes.test_with, outcomes.test_without,
                                                                cfg.confidence)
        missing = partner_index < 0
        infl, ilow, ihigh = (np.where(missing, np.nan, a) for a in (infl, ilow, ihigh))
    else:
        infl = ilow = ihigh = np.zeros(partner_index.shape)
    return Truth(mem, low, high, loo_stats.loo_memorized(mem, low, cfg.min_effect),
                 outcomes.with_.mean(axis=0), outcomes.without.mean(axis=0), infl, ilow, ihigh)


# ----------------------------------------------------------------------------- validation


def _rate_key(rate: float) -> str:
    return f"{rate:g}"


def _rank_of(result: dict) -> dict:
    """The rank figures of a :func:`jmem.scores.loo.compare_estimator` result (for scores on
    another scale than the truth, where bias and RMSE mean nothing)."""
    return {k: result[k] for k in ("spearman", "spearman_ci", "n", "n_nan")}


def loo_values(truth: Truth, fractional_floor: float) -> dict:
    """Each definition's own leave-one-out value, float64[K], for the estimators that have one
    (the others, a -log10 p and a z-statistic, are compared by rank only): mem, the
    fractional difference (same floor as the run's) and 1 - held-out accuracy, each from the
    accuracies with and without the example."""
    return {"mem": truth.mem,
            "fractional": estimators.fractional_score(truth.acc_with, truth.acc_without, fractional_floor),
            "one_minus_cscore": 1 - truth.acc_without}


def validate_estimators(design: LooDesign, truth: Truth, cfg: LooConfig, seed: int) -> dict:
    """{rate: {estimator: figures}} of every estimator of
    :func:`jmem.study.loo_design.estimator_arrays` at every rate of the run, on the sample:
    ``bias`` and ``rmse`` against the same definition's leave-one-out value
    (:func:`loo_values`; None for rank-only scores), also ``on_selected`` (the examples some
    rule selects); ``spearman`` against LOO mem (the common target of every ranking); and
    ``precision_at_k`` against LOO-memorized."""
    out = {}
    sample, idx = design.sample, design.sample.index
    selected = sample.stratum == 0  # the examples some rule selects: where a bias would bite
    own = loo_values(truth, design.estimates.options.fractional_floor)
    kw = dict(level=cfg.confidence, resamples=cfg.resamples, seed=seed)
    for rate, scores in design.estimates.by_rate.items():
        per = {}
        for name, values in estimator_arrays(scores).items():
            est = values[idx]
            ranked = _rank_of(loo_stats.compare_estimator(est, truth.mem, sample, **kw))
            scaled = {"bias": None, "bias_ci": [None, None], "rmse": None, "rmse_ci": [None, None]}
            on_selected = None
            if name in own:
                scaled = loo_stats.compare_estimator(est, own[name], sample, **kw)
                if selected.any():
                    on_selected = loo_stats.compare_estimator(est[selected], own[name][selected],
                                                              sample.subset(selected), **kw)
            per[name] = {"compared_with": f"loo_{name}" if name in own else None,
                         "bias": scaled["bias"], "bias_ci": scaled["bias_ci"],
                         "rmse": scaled["rmse"], "rmse_ci": scaled["rmse_ci"], **ranked,
                         "on_selected": on_selected,
                         "precision_at_k": loo_stats.precision_at_k(est, truth.memorized,
                                                                    confidence=cfg.confidence)}
        out[_rate_key(rate)] = per
    return out


def validate_selections(design: LooDesign, truth: Truth, cfg: LooConfig, seed: int) -> dict:
    """{rule: precision and recall against LOO-memorized (inverse-probability weighted, with
    intervals) + how many examples the rule selects in the run}."""
    out = {}
    for name, selected in design.estimates.selections.items():
        res = loo_stats.selection_recovery(selected[design.sample.index], truth.memorized, design.sample,
                                           level=cfg.confidence, resamples=cfg.resamples, seed=seed)
        out[name] = {"selected_in_run": int(selected.sum()), **res}
    return out


def validate_influence(design: LooDesign, truth: Truth, cfg: LooConfig, seed: int) -> dict | None:
    """The run's influence estimates (at ``design.influence_rate``) against LOO influence on
    the sampled pairs: bias, RMSE, Spearman (cluster bootstrap over examples), and the share
    of pairs whose LOO interval excludes 0. None without partners."""
    if design.partner_index.shape[1] == 0:
        return None
    estimate = np.where(design.partner_index < 0, np.nan, design.partner_value.astype(np.float64))
    res = loo_stats.compare_estimator(estimate, truth.infl, design.sample, level=cfg.confidence,
                                      resamples=cfg.resamples, seed=seed)
    defined = np.isfinite(truth.infl)
    return {"rate": design.influence_rate, "partners": int(design.partner_index.shape[1]),
            "pairs": int(defined.sum()),
            "mean_estimated": float(np.nanmean(estimate)) if defined.any() else None,
            "mean_loo": float(np.nanmean(truth.infl)) if defined.any() else None,
            "loo_positive_share": float(np.mean(truth.infl_low[defined] > 0)) if defined.any() else None,
            **res}


def validate_proxies(design: LooDesign, truth: Truth, cfg: LooConfig, seed: int) -> dict:
    """{"available", "reason", "by_rate": {rate: {proxy: {"vs_loo": Spearman with a bootstrap
    interval on the sample, "vs_mem": Spearman with the subsampled mem of the same rate over
    every eligible example (Fisher-z interval), "precision_at_k"}}}}."""
    est = design.estimates
    if est.proxies is None:
        return {"available": False, "reason": est.proxies_missing, "by_rate": None}
    idx, by_rate = design.sample.index, {}
    for rate, arrays in est.proxies.items():
        mem = est.by_rate[rate].mem
        per = {}
        for name in PROXIES:
            values = arrays[name]
            vs_loo = _rank_of(loo_stats.compare_estimator(values[idx], truth.mem, design.sample,
                                                          level=cfg.confidence, resamples=cfg.resamples,
                                                          seed=seed))
            per[name] = {"vs_loo": vs_loo,
                         "vs_mem": loo_stats.spearman_interval(values[est.eligible], mem[est.eligible],
                                                               cfg.confidence),
                         "precision_at_k": loo_stats.precision_at_k(values[idx], truth.memorized,
                                                                    confidence=cfg.confidence)}
        by_rate[_rate_key(rate)] = per
    return {"available": True, "reason": None, "by_rate": by_rate}


# ----------------------------------------------------------------------------- outputs


def settings_of(cfg: LooConfig) -> dict:
    """The loo section as loo.json records it (``enabled`` says only whether ``jmem run``
    runs the stage), JSON-ready: equal to what a re-read loo.json holds."""
    return to_jsonable({k: v for k, v in dataclasses.asdict(cfg).items() if k != "enabled"})


def record(design: LooDesign, outcomes: Outcomes, truth: Truth, cfg: LooConfig, seed: int) -> dict:
    """The content of ``loo.json``:

    * ``examples`` K, ``seeds`` S, ``models`` S * (K + 1), ``seeds_used``, ``excluded_seeds``
      (a model of theirs diverged), ``model_id_offset``; ``rates`` of the run;
    * ``settings``: the loo section used (min_effect, confidence, resamples, ...);
    * ``sample``: its size and strata (name, population, sampled; weights N_h / n_h);
    * ``loo_mem``: the dataset's mean LOO mem and share LOO-memorized (weighted, intervals),
      and how many sampled examples are LOO-memorized;
    * ``estimators``: per rate, per estimator (see :func:`validate_estimators`): ``bias``,
      ``rmse`` against ``compared_with`` (the same definition's LOO value; None for rank-only
      scores), ``spearman`` against LOO mem, each with ``_ci``; ``n``, ``n_nan``;
      ``on_selected`` (bias and RMSE over the examples some rule selects, or None);
      ``precision_at_k``;
    * ``selections``: per rule: ``precision``, ``recall`` (with ``_ci``; None where
      undefined), ``selected_in_sample``, ``memorized_in_sample``, ``selected_in_run``;
    * ``influence``: the run's influence at ``rate`` against LOO influence on each sampled
      example's top ``partners`` (bias, RMSE, Spearman with intervals), or None;
    * ``proxies``: ``available``, ``reason``, ``by_rate`` (see :func:`validate_proxies`).
    """
    sample = design.sample
    kw = dict(level=cfg.confidence, resamples=cfg.resamples, seed=seed)
    return to_jsonable({
        "examples": int(sample.index.size), "seeds": design.seeds,
        "models": int(design.keep.shape[0]), "seeds_used": int(outcomes.seeds_used.size),
        "excluded_seeds": outcomes.excluded_seeds.tolist(), "model_id_offset": LOO_MODEL_ID_OFFSET,
        "rates": [float(r) for r in design.estimates.by_rate],
        "settings": settings_of(cfg),
        "sample": sample.to_json(),
        "loo_mem": {"mean": loo_stats.weighted_mean(truth.mem, sample, **kw),
                    "memorized_share": loo_stats.weighted_mean(truth.memorized.astype(float), sample, **kw),
                    "memorized_in_sample": int(truth.memorized.sum())},
        "estimators": validate_estimators(design, truth, cfg, seed),
        "selections": validate_selections(design, truth, cfg, seed),
        "influence": validate_influence(design, truth, cfg, seed),
        "proxies": validate_proxies(design, truth, cfg, seed),
    })


def examples_csv(design: LooDesign, truth: Truth, labels: np.ndarray) -> str:
    """One row per sampled example: index, label (true), stratum, weight, the LOO truth, and
    per rate the run's estimates (``<estimator>_rate_<r>``), proxies (``<proxy>_rate_<r>``)
    and every rule's choice (``selected_<rule>``)."""
    sample, est = design.sample, design.estimates
    idx = sample.index
    names = np.array([s["name"] for s in sample.strata], dtype=object)
    columns = {"index": idx, "label": np.asarray(labels)[idx].astype(np.int64),
               "stratum": names[sample.stratum], "weight": sample.weight,
               "loo_mem": truth.mem, "loo_mem_low": truth.mem_low, "loo_mem_high": truth.mem_high,
               "loo_memorized": truth.memorized, "acc_with": truth.acc_with, "acc_without": truth.acc_without,
               "loo_fractional": loo_values(truth, est.options.fractional_floor)["fractional"]}
    for rate, scores in est.by_rate.items():
        for name, values in estimator_arrays(scores).items():
            columns[f"{name}_rate_{_rate_key(rate)}"] = values[idx]
    for rate, arrays in (est.proxies or {}).items():
        for name in PROXIES:
            columns[f"{name}_rate_{_rate_key(rate)}"] = arrays[name][idx]
    for name, selected in est.selections.items():
        columns[f"selected_{name}"] = selected[idx]
    return rundir.csv_text(columns)


def influence_csv(design: LooDesign, truth: Truth) -> str:
    """One row per (sampled example, test partner): train_index, rank (0 = highest estimate),
    test_index, estimated_infl (the run's, at the influence rate), loo_infl and its interval."""
    k, p = design.partner_index.shape
    defined = design.partner_index >= 0
    train = np.repeat(design.sample.index[:, None], p, axis=1)
    rank = np.broadcast_to(np.arange(p), (k, p))
    return rundir.csv_text({"train_index": train[defined], "rank": rank[defined],
                            "test_index": design.partner_index[defined],
                            "estimated_infl": design.partner_value[defined],
                            "loo_infl": truth.infl[defined], "loo_infl_low": truth.infl_low[defined],
                            "loo_infl_high": truth.infl_high[defined]})


def _fmt(x, spec=".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def _ci(entry: dict, name: str) -> str:
    low, high = entry.get(f"{name}_ci") or (None, None)
    return f"{_fmt(entry.get(name))} [{_fmt(low)}, {_fmt(high)}]"


def format_summary(rec: dict) -> str:
    """Terminal text: the truth, mem's bias and Spearman per rate, each rule's precision and
    recall, the proxies."""
    lm = rec["loo_mem"]
    lines = [f"leave-one-out: {rec['examples']} examples x {rec['seeds_used']} seeds "
             f"({rec['models']} models); {lm['memorized_in_sample']} sampled examples LOO-memorized; "
             f"dataset share LOO-memorized {_ci(lm['memorized_share'], 'mean')}"]
    for rate, per in rec["estimators"].items():
        for name in ("mem", "fractional"):
            e = per[name]
            sel = e["on_selected"] or {}
            lines.append(f"  rate {rate} {name:<10} bias {_ci(e, 'bias')} (selected: {_ci(sel, 'bias')})  "
                         f"Spearman {_ci(e, 'spearman')}")
    lines.append("selection rules vs LOO-memorized: precision, recall")
    for name, s in rec["selections"].items():
        lines.append(f"  {name:<28} {_ci(s, 'precision')}  {_ci(s, 'recall')}  "
                     f"({s['selected_in_run']} selected in the run)")
    inf = rec["influence"]
    if inf is not None:
        lines.append(f"influence at rate {inf['rate']:g} vs LOO on {inf['pairs']} pairs: bias "
                     f"{_ci(inf, 'bias')}, Spearman {_ci(inf, 'spearman')}")
    px = rec["proxies"]
    if not px["available"]:
        lines.append(f"proxies: unavailable ({px['reason']})")
    else:
        for rate, per in px["by_rate"].items():
            for name, p in per.items():
                lines.append(f"  proxy {name:<13} rate {rate}: Spearman vs LOO {_ci(p['vs_loo'], 'spearman')}, "
                             f"vs mem {_ci(p['vs_mem'], 'spearman')}, precision@k "
                             f"{_fmt(p['precision_at_k']['precision'])}")
    return "\n".join(lines)
