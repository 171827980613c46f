"""Score a run directory, one inclusion rate at a time: per-example scores, every selection
rule, canary metrics, convergence figures, influence pairs.

:func:`score_run` reads the trainer's arrays (file names in :mod:`jmem.study.rundir`):
``keep.npy`` bool[R, N], ``margins_train.npy`` float[R, N], ``labels_train.npy`` int[N],
``margins_test.npy`` float[R, T], ``labels_test.npy`` int[T], and if present
``model_rates.npy`` float[R], ``canaries.npy`` bool[N] and extra test sets
``margins_<name>.npy`` / ``labels_<name>.npy``. Every score, selection and influence pair
comes from the models of one rate: scores pooled over rates are biased (the high-rate models
are mostly "in" and more accurate), so jmem never computes them. It writes three files:

``scores.csv``: one row per training example. Per rate ``r`` (``r`` printed like ``0.7``):

============================== ================================================================
``n_in_rate_r`` / ``n_out_...`` models of rate r that did / did not train on the example
``correct_in_rate_r`` / ``out`` how many of those classify it correctly (margin > 0)
``acc_in_rate_r`` / ``acc_out`` ``correct_in / n_in``, ``correct_out / n_out``
``mem_rate_r``                  Feldman & Zhang memorization ``acc_in - acc_out``, in [-1, 1]
``mem_ci_low_rate_r`` / ``high`` Newcombe hybrid score interval for mem (``score.confidence``)
``fractional_rate_r``           the critique's ``(acc_in - acc_out) / (acc_in + acc_out)``; 0
                                when ``acc_in < score.fractional_floor``
``margin_in_rate_r`` / ``out``  mean margin of the in / out models
``lira_rate_r``                 ``(margin_in - margin_out) / std(out margins)``: LiRA's offline
                                Gaussian statistic on margins, averaged over the in models
``p_value_rate_r``              one-sided Fisher exact p-value, H1: ``acc_in > acc_out``
``selected_<rule>_rate_r``      1 if the rule selects the example at rate r
                                (``jmem.scores.protocols``: ``fixed``, ``fractional``,
                                ``calibrated``, ``calibrated_fractional``, ``fdr``; with
                                canaries also ``canary``). Canaries are never selected.
============================== ================================================================

and, for every example: ``index``, ``label`` (the label the estimation models were trained
on: a canary's is the re-drawn one), ``is_canary``, ``cscore`` (Jiang et al. 2021: held-out
accuracy averaged over the rates), and the **main columns**: the fields above without the
``_rate_r`` suffix, from the rate ``score.rate`` (default: the run's lowest, F&Z's 0.7),
plus ``q_value`` (Benjamini-Hochberg over the eligible examples at that rate). Scores are
``nan`` for examples with no model in or no model out (``lira`` also with fewer than two out
models); such examples are never selected and are counted in thresholds.json.

``thresholds.json``: per rate, every rule's result (threshold, number selected, the numbers
behind it, and with canaries the share of canaries its cut would catch), the canaries' ROC
metrics per score, the convergence figures (the share of non-canary examples the models fit
when trained on them), held-out models per example (and whether a rate is under-powered);
``methods`` and ``canaries.scores`` repeat the main rate's; the options used.

``pairs.csv``: high-influence pairs (Feldman & Zhang 2020) at every rate: ``rate``,
``test_set`` (``test`` or the extra set's name), ``train_index``, ``test_index``, ``mem``,
``infl``, ``label`` (the shared class; with ``score.pair_same_class=False`` the training
label), one row per pair with ``mem >= score.pair_mem_threshold`` and
``infl >= score.influence_threshold``, from that rate's models.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from jmem.config import ScoreConfig
from jmem.errors import JmemError
from jmem.jsonable import to_jsonable
from jmem.scores import estimators, protocols, thresholds
from jmem.study import diverged, integrity, rundir

CANARY_SCORES = ("mem", "fractional", "lira", "neg_log10_p", "one_minus_cscore")


# ---------------------------------------------------------------------------------------------
# Reading the run directory
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class RunArrays:
    """The arrays :func:`score_run` needs, shape-checked (arrays may be memory maps).

    test_sets: name -> (margins float[R, T_k], labels int[T_k]); "test" first.
    diverged: bool[R], the models that diverged (:mod:`jmem.study.diverged`: non-finite
      training loss or margins); they are left out of every statistic.
    """

    keep: np.ndarray
    margins_train: np.ndarray
    labels_train: np.ndarray
    test_sets: dict
    model_rates: np.ndarray | None
    canaries: np.ndarray | None
    diverged: np.ndarray | None = None


def _labels(arr, n: int, name: str) -> np.ndarray:
    if arr.shape != (n,):
        raise JmemError(f"{name} has shape {arr.shape}; expected ({n},)")
    if not np.issubdtype(arr.dtype, np.integer):
        raise JmemError(f"{name} has dtype {arr.dtype}; expected integers")
    return np.asarray(arr)


def load_run(run_dir) -> RunArrays:
    """Read and shape-check the arrays of a run directory; JmemError names a bad file."""
    d = Path(run_dir)
    if not d.is_dir():
        raise JmemError(f"run directory {str(d)!r} does not exist")
    keep = estimators.as_keep(rundir.load_array(d / rundir.KEEP, mmap=True), "keep.npy")
    num_models, num_examples = keep.shape
    margins = estimators.check_margins(rundir.load_array(d / rundir.MARGINS_TRAIN, mmap=True),
                                    num_models, num_examples, "margins_train.npy")
    labels = _labels(rundir.load_array(d / rundir.LABELS_TRAIN), num_examples,
                     "labels_train.npy")
    names = [("test", rundir.MARGINS_TEST, rundir.LABELS_TEST)]
    reserved = {rundir.MARGINS_TRAIN, rundir.MARGINS_TEST}
    for path in sorted(d.glob("margins_*.npy")):
        if path.name not in reserved:
            name = path.stem[len("margins_"):]
            names.append((name, path.name, rundir.labels_extra_name(name)))
    test_sets = {}
    for name, m_file, l_file in names:
        m = estimators.check_margins(rundir.load_array(d / m_file, mmap=True), num_models,
                                  None, m_file)
        test_sets[name] = (m, _labels(rundir.load_array(d / l_file), m.shape[1], l_file))
    rates = None
    if (d / rundir.MODEL_RATES).exists():
        rates = np.asarray(rundir.load_array(d / rundir.MODEL_RATES), np.float64)
        estimators.group_rates(rates, num_models)  # validates shape and range
    canary = None
    if (d / rundir.CANARIES).exists():
        c = np.asarray(rundir.load_array(d / rundir.CANARIES))
        if c.shape != (num_examples,) or c.dtype != np.bool_:
            raise JmemError(f"canaries.npy has shape {c.shape} dtype {c.dtype}; "
                            f"expected bool[{num_examples}]")
        canary = c
    return RunArrays(keep, margins, labels, test_sets, rates, canary,
                     diverged.run_diverged(d / rundir.MODEL_METRICS, num_models,
                                           [margins, *(m for m, _ in test_sets.values())]))


# ---------------------------------------------------------------------------------------------
# Pieces of score_run
# ---------------------------------------------------------------------------------------------

def _healthy_rows(run: RunArrays) -> np.ndarray | None:
    """Rows of the models that did not diverge; None = all of them (no copy)."""
    if run.diverged is None or not run.diverged.any():
        return None
    if run.diverged.all():
        raise JmemError(f"every one of the {run.diverged.size} models of the run diverged "
                        "(models.csv); there is nothing to score: lower train.learning_rate")
    return np.flatnonzero(~run.diverged)


def without_diverged(run: RunArrays) -> RunArrays:
    """``run`` restricted to the models that did not diverge."""
    rows = _healthy_rows(run)
    if rows is None:
        return run
    tests = {k: (m[rows], labels) for k, (m, labels) in run.test_sets.items()}
    rates = run.model_rates[rows] if run.model_rates is not None else None
    return dataclasses.replace(run, keep=run.keep[rows], margins_train=run.margins_train[rows],
                               test_sets=tests, model_rates=rates,
                               diverged=np.zeros(rows.size, bool))



def rate_tag(rate: float) -> str:
    """How a rate appears in column names: ``0.7`` -> ``rate_0.7``."""
    return f"rate_{rate:g}"


def rate_groups(run: RunArrays) -> dict:
    """{rate: int64 rows} of the models of each inclusion rate, increasing; a run without
    model_rates.npy is one group under the rate NaN."""
    if run.model_rates is None:
        return {float("nan"): np.arange(run.keep.shape[0])}
    rates, group = estimators.group_rates(run.model_rates, run.keep.shape[0])
    return {float(r): np.flatnonzero(group == g) for g, r in enumerate(rates)}


def main_rate(groups: dict, opt: ScoreConfig) -> float:
    """The rate of the main columns: ``score.rate``, else the run's lowest."""
    rates = list(groups)
    if opt.rate is None:
        return rates[0]
    match = [r for r in rates if round(r, estimators.RATE_DECIMALS) == round(opt.rate, estimators.RATE_DECIMALS)]
    if not match:
        raise JmemError(f"score.rate={opt.rate} matches no model; the run's rates are "
                        f"{', '.join(f'{r:g}' for r in rates)}")
    return match[0]


def selection_options(opt: ScoreConfig) -> protocols.SelectionOptions:
    """The rules' numbers from the score section."""
    return protocols.SelectionOptions(
        fixed_threshold=opt.fixed_threshold, fractional_threshold=opt.fractional_threshold,
        calibrated_q=opt.calibrated_q, fractional_floor=opt.fractional_floor,
        fdr_q=opt.fdr_q, min_effect=opt.min_effect)


def rate_scores(run: RunArrays, rows: np.ndarray, opt: ScoreConfig) -> estimators.ExampleScores:
    """The per-example scores of the models ``rows`` (of one rate)."""
    return protocols.scores_at(run.keep, run.margins_train, rows, confidence=opt.confidence,
                               fractional_floor=opt.fractional_floor, chunk_size=opt.chunk_size,
                               name="margins_train.npy")


def eligible_examples(run: RunArrays) -> np.ndarray:
    """bool[N]: the examples a selection may choose: every one but the canaries."""
    n = run.labels_train.size
    return np.ones(n, bool) if run.canaries is None else ~run.canaries


def select_all(s: estimators.ExampleScores, canary: np.ndarray | None, opt: ScoreConfig) -> dict:
    """Every rule on the scores ``s`` of one rate's models: name -> ThresholdResult. The one
    composition of the rules: the scoring stage, the retrain stage's pools and the report's
    split halves call it. Canaries are never selected; the ``canary`` rule sets its cut where
    ``score.canary_tpr`` of the canaries' mem lie and selects the other examples above it."""
    eligible = np.ones(s.mem.shape, bool) if canary is None else ~canary
    options = selection_options(opt)
    rules = {rule: protocols.apply_rule(rule, s, options, eligible) for rule in protocols.ALL_RULES}
    if canary is not None and canary.any():
        c = thresholds.canary_threshold(s.mem, canary, opt.canary_tpr)
        rules["canary"] = dataclasses.replace(c, selected=c.selected & eligible)
    return rules


def canary_score_arrays(s: estimators.ExampleScores) -> dict:
    """Scores oriented so that higher = more memorized, for ROC against canaries.

    p-values enter as ``-log10 p`` (``1 - p`` would tie the tiny p-values of strong canaries)
    and the held-out accuracy as ``1 - acc_out`` (hard, held-out-misclassified examples score
    high).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"mem": s.mem, "fractional": s.fractional, "lira": s.lira,
                "neg_log10_p": -np.log10(s.p_value), "one_minus_cscore": 1 - s.acc_out}


def recorded_options(run_dir) -> ScoreConfig:
    """The options the scoring stage used (``thresholds.json``'s ``options``; defaults for
    fields it does not record, and without the file)."""
    path = Path(run_dir) / rundir.THRESHOLDS
    saved = (rundir.load_json(path, expect=dict).get("options") or {}) if path.exists() else {}
    known = {f.name for f in dataclasses.fields(ScoreConfig)}
    return ScoreConfig(**{k: v for k, v in saved.items() if k in known})


# ---------------------------------------------------------------------------------------------
# One rate
# ---------------------------------------------------------------------------------------------

SCORE_FIELDS = ("n_in", "n_out", "correct_in", "correct_out", "acc_in", "acc_out", "mem",
                "mem_ci_low", "mem_ci_high", "fractional", "margin_in", "margin_out", "lira", "p_value")


def _rule_entry(res: thresholds.ThresholdResult, s: estimators.ExampleScores, canary) -> dict:
    """A rule's JSON, with the share of canaries its cut would catch if they were eligible
    (they never are: the figure validates the cut, it selects nothing)."""
    entry = res.to_dict()
    if canary is not None and canary.any():
        with np.errstate(invalid="ignore"):
            if not np.isfinite(res.threshold):
                caught = np.zeros(canary.shape, bool)
            elif res.method == "fdr":  # the BH p cut-off and the minimum effect
                caught = (s.p_value <= res.threshold) & (s.mem >= res.details["min_effect"])
            else:
                caught = getattr(s, res.score) >= res.threshold
        entry["canaries_caught"] = float(np.mean(caught[canary]))
    return entry


def score_one_rate(run: RunArrays, rows: np.ndarray, opt: ScoreConfig) -> dict:
    """Everything the scoring stage says about the models ``rows`` of one rate: scores,
    rules, canary ROC, convergence, held-out precision, influence pairs per test set."""
    s = rate_scores(run, rows, opt)
    canary = run.canaries if run.canaries is not None and run.canaries.any() else None
    eligible = eligible_examples(run)
    rules = select_all(s, canary, opt)
    fitted = s.acc_in[eligible & (s.n_in > 0)]
    heldout = float(np.mean(s.n_out[eligible])) if eligible.any() else 0.0
    record = {
        "num_models": int(rows.size), "nan_counts": {**s.nan_counts(), "lira_nan": int(np.isnan(s.lira).sum())},
        "rules": {name: _rule_entry(res, s, canary) for name, res in rules.items()},
        "convergence": {"fitted_share": float(fitted.mean()) if fitted.size else None,
                        "examples_always_fitted": float(np.mean(fitted == 1)) if fitted.size else None},
        "heldout": {"mean_out_models": heldout, "per_half": heldout / 2,
                    "under_powered": bool(heldout / 2 < opt.min_heldout)},
        "mean_mem": float(np.nanmean(s.mem[eligible])) if eligible.any() else None,
    }
    if canary is not None:
        evals = {name: thresholds.evaluate_canaries(arr, canary, opt.canary_tpr, name).to_dict()
                 for name, arr in canary_score_arrays(s).items()}
        record["canaries"] = evals
        record["convergence"]["canary_auroc_mem"] = evals["mem"]["auroc"]
    pairs, influence = [], {}
    for name, (m_test, l_test) in run.test_sets.items():
        inf = estimators.influence_summary(
            run.keep[rows], np.asarray(m_test[rows]), np.where(eligible, s.mem, np.nan), run.labels_train,
            l_test, k=opt.influencers_k, mem_threshold=opt.pair_mem_threshold,
            infl_threshold=opt.influence_threshold, same_class=opt.pair_same_class,
            chunk_size=opt.influence_chunk_size, max_pairs=opt.max_pairs, name=f"margins_{name}.npy")
        pairs.append((name, inf))
        top1 = inf.top_value[:, 0] if inf.top_value.shape[1] else np.empty(0)
        influence[name] = {
            "num_test": int(l_test.shape[0]), "n_pairs": int(inf.pair_train.size),
            "n_train_in_pairs": int(np.unique(inf.pair_train).size),
            "n_test_in_pairs": int(np.unique(inf.pair_test).size),
            "median_top1_influence": (float(np.nanmedian(top1))
                                      if top1.size and not np.isnan(top1).all() else None)}
    record["influence"] = influence
    return {"scores": s, "rules": rules, "record": record, "pairs": pairs}


# ---------------------------------------------------------------------------------------------
# The entry point
# ---------------------------------------------------------------------------------------------

def score_run(run_dir, options: ScoreConfig | None = None) -> dict:
    """Score the run in ``run_dir`` rate by rate; write scores.csv, thresholds.json, pairs.csv.

    Returns the summary dict: what thresholds.json holds, plus ``files`` (the written paths)
    and ``top_influencers`` ({rate: {test set: {"index": int64[T, k], "value": float32[T, k]}}},
    the k most influential training examples of each test example; not written to disk).
    :func:`format_summary` turns it into terminal text. See the module docstring for files.
    """
    opt = options if options is not None else ScoreConfig()
    if not isinstance(opt, ScoreConfig):
        raise JmemError(f"score options must be a ScoreConfig, got {type(opt).__name__}")
    d = Path(run_dir)
    integrity.verify_run(d)  # a missing or damaged file: one line naming it
    loaded = load_run(d)
    run = without_diverged(loaded)
    diverged_ids = np.flatnonzero(loaded.diverged).tolist() if loaded.diverged is not None else []
    groups = rate_groups(run)
    primary = main_rate(groups, opt)
    per_rate = {rate: score_one_rate(run, rows, opt) for rate, rows in groups.items()}
    single = len(groups) == 1 and np.isnan(primary)
    main = per_rate[primary]

    n = run.labels_train.size
    canary = run.canaries
    columns = {"index": np.arange(n), "label": run.labels_train.astype(np.int64),
               "is_canary": canary if canary is not None else np.zeros(n, bool)}
    for f in SCORE_FIELDS:
        columns[f] = getattr(main["scores"], f)
    columns["cscore"] = estimators.cscore_over_rates({rate: r["scores"] for rate, r in per_rate.items()})
    eligible = eligible_examples(run)
    columns["q_value"] = thresholds.bh_adjust(np.where(eligible, main["scores"].p_value, np.nan))
    for name, res in main["rules"].items():
        columns[f"selected_{name}"] = res.selected
    if not single:
        for rate, r in per_rate.items():
            for f in SCORE_FIELDS:
                columns[f"{f}_{rate_tag(rate)}"] = getattr(r["scores"], f)
            for name, res in r["rules"].items():
                columns[f"selected_{name}_{rate_tag(rate)}"] = res.selected

    pair_cols = {k: [] for k in ("rate", "test_set", "train_index", "test_index", "mem", "infl", "label")}
    for rate, r in per_rate.items():
        for name, inf in r["pairs"]:
            k = inf.pair_train.size
            pair_cols["rate"].append(np.full(k, rate))
            pair_cols["test_set"].append(np.full(k, name, dtype=object))
            pair_cols["train_index"].append(inf.pair_train)
            pair_cols["test_index"].append(inf.pair_test)
            pair_cols["mem"].append(r["scores"].mem[inf.pair_train])
            pair_cols["infl"].append(inf.pair_infl.astype(np.float64))
            pair_cols["label"].append(run.labels_train[inf.pair_train].astype(np.int64))

    by_rate = {rate_tag(rate) if not single else "all": r["record"] for rate, r in per_rate.items()}
    main_record = per_rate[primary]["record"]
    record = to_jsonable({
        "num_models": int(run.keep.shape[0]), "num_examples": int(n),
        "excluded_diverged": {"count": len(diverged_ids), "ids": diverged_ids},
        "rates": None if single else list(groups),
        "main_rate": None if single else primary,
        "pooled_over_rates": False,
        "nan_counts": main_record["nan_counts"],
        "methods": main_record["rules"],
        "canaries": (None if canary is None else
                     {"n_canaries": int(canary.sum()), "scores": main_record.get("canaries", {})}),
        "by_rate": by_rate,
        "rate_curve": [{"rate": rate, "num_models": r["record"]["num_models"],
                        "mean_mem": r["record"]["mean_mem"],
                        "mean_cscore": float(np.nanmean(r["scores"].acc_out[eligible])) if eligible.any() else None,
                        "frac_mem_above_threshold": float(np.nanmean(r["scores"].mem[eligible] >= opt.fixed_threshold)),
                        "mem_threshold": opt.fixed_threshold,
                        "heldout_per_half": r["record"]["heldout"]["per_half"],
                        "fitted_share": r["record"]["convergence"]["fitted_share"],
                        "canary_auroc_mem": r["record"]["convergence"].get("canary_auroc_mem"),
                        "canary_fpr_at_tpr_mem": (r["record"].get("canaries") or {}).get("mem", {}).get(
                            f"fpr_at_{int(round(opt.canary_tpr * 100))}tpr")}
                       for rate, r in per_rate.items()] if not single else None,
        "pairs": {k: v["n_pairs"] for k, v in main_record["influence"].items()},
        "influence": main_record["influence"],
        "options": dataclasses.asdict(opt),
    })
    integrity.forget_scores(d)  # until the record below, the files are not a finished scoring
    rundir.save_text(d / rundir.SCORES, rundir.csv_text(columns))
    rundir.save_json(d / rundir.THRESHOLDS, record)
    pairs = {k: np.concatenate(v) if v else np.empty(0) for k, v in pair_cols.items()}
    rundir.save_text(d / rundir.PAIRS, rundir.csv_text(pairs))
    integrity.record_scores(d, opt, diverged_ids)
    return {**record, "files": {"scores": str(d / rundir.SCORES), "thresholds": str(d / rundir.THRESHOLDS),
                                "pairs": str(d / rundir.PAIRS)}}


def _fmt(x, spec=".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def format_summary(summary: dict) -> str:
    """Terminal text for a :func:`score_run` summary: per rate, the precision and convergence
    figures and each rule's selection."""
    lines = [f"scored {summary['num_examples']} examples with {summary['num_models']} models, "
             + ("one rate at a time: " + ", ".join(f"{r:g}" for r in summary["rates"])
                + f" (main columns: {summary['main_rate']:g})" if summary.get("rates") else "rate not recorded")]
    excluded = summary.get("excluded_diverged") or {"count": 0}
    if excluded["count"]:
        ids = excluded["ids"]
        lines.append(f"excluded {excluded['count']} diverged model(s): ids "
                     + ", ".join(map(str, ids[:20])) + (", ..." if len(ids) > 20 else ""))
    rules = list(next(iter(summary["by_rate"].values()))["rules"])
    canaries = bool(summary.get("canaries"))
    lines.append("selected per rule, one rate at a time:")
    lines.append("rate   models  held-out/example/half  fitted" + ("  canary AUROC" if canaries else "")
                 + "".join(f"  {r[:12]:>12}" for r in rules))
    for tag, rec in summary["by_rate"].items():
        h = rec["heldout"]
        flag = " (under-powered)" if h["under_powered"] else ""
        auroc = f"  {_fmt(rec['convergence'].get('canary_auroc_mem')):>12}" if canaries else ""
        lines.append(f"{tag.replace('rate_', ''):<6} {rec['num_models']:>6}  {h['per_half']:>8.1f}{flag:<13}"
                     f"{_fmt(rec['convergence']['fitted_share']):>8}{auroc}"
                     + "".join(f"  {rec['rules'][r]['n_selected']:>12}" for r in rules))
    c = summary.get("canaries")
    if c:
        lines.append(f"{c['n_canaries']} canaries (instrument only: never selected, never removed)")
    lines.append("high-influence pairs at the main rate: " + ", ".join(
        f"{k} {v}" for k, v in summary["pairs"].items()))
    return "\n".join(lines)
