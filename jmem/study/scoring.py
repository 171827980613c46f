"""Score a run directory: per-example scores, selections, canary metrics, influence pairs.

:func:`score_run` reads the trainer's arrays (file names in :mod:`jmem.study.rundir`):
``keep.npy`` bool[R, N], ``margins_train.npy`` float[R, N], ``labels_train.npy`` int[N],
``margins_test.npy`` float[R, T], ``labels_test.npy`` int[T], and if present
``model_rates.npy`` float[R], ``canaries.npy`` bool[N] and extra test sets
``margins_<name>.npy`` / ``labels_<name>.npy``. It writes three files:

``scores.csv``: one row per training example, columns

============================ ==================================================================
``index``                    position of the example in the training set (0-based)
``label``                    the label the models were trained on (canaries: the new label)
``is_canary``                1 if the label was re-drawn (``canaries.npy``), else 0
``n_in`` / ``n_out``         number of models that did / did not train on the example
``correct_in`` / ``_out``    how many of those classify it correctly (margin > 0)
``acc_in`` / ``acc_out``     ``correct_in / n_in``, ``correct_out / n_out``
``mem``                      Feldman & Zhang memorization ``acc_in - acc_out``, in [-1, 1]
``mem_ci_low`` / ``_high``   Newcombe hybrid score interval for ``mem`` (``score.confidence``)
``cscore``                   C-score (Jiang et al. 2021): held-out accuracy ``acc_out``; when
                             the run holds several rates and ``score.rate`` is unset, its mean
                             over the rates
``fractional``               ``(acc_in - acc_out) / (acc_in + acc_out)``; 0 when
                             ``acc_in < score.fractional_floor``
``margin_in`` / ``_out``     mean margin of the in / out models
``lira``                     ``(margin_in - margin_out) / std(out margins)``: LiRA's offline
                             Gaussian statistic on margins, averaged over the in models
``p_value``                  one-sided Fisher exact p-value, H1: ``acc_in > acc_out``
``q_value``                  Benjamini-Hochberg adjusted p-value over all testable examples
``selected_<method>``        1 if the method selects the example: ``fixed``, ``top_k``, ``fdr``,
                             ``null`` and, with canaries, ``canary`` (see thresholds.json)
``mem_rate_<r>``             (runs with several rates) ``mem`` from the models of rate ``r``
``acc_out_rate_<r>``         (runs with several rates) held-out accuracy at rate ``r``
============================ ==================================================================

Scores are ``nan`` for examples with no model in or no model out (``lira`` also with fewer
than two out models); such examples are never selected and are counted in thresholds.json.

``thresholds.json``: for each method its result (threshold, number selected, the numbers
behind it, and with canaries its TPR/FPR/precision on them), canary ROC metrics per score,
the curve over the inclusion rate, undefined-example counts, the options used.

``pairs.csv``: high-influence pairs (Feldman & Zhang 2020): ``test_set`` (``test`` or the
extra set's name), ``train_index``, ``test_index``, ``mem``, ``infl``, ``label`` (the shared
class; with ``score.pair_same_class=False`` the training label), one row per pair with
``mem >= score.pair_mem_threshold`` and ``infl >= score.influence_threshold``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from jmem import rng
from jmem.config import ScoreConfig
from jmem.errors import JmemError
from jmem.scores import estimators, thresholds
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


def _without_diverged(run: RunArrays) -> RunArrays:
    """``run`` restricted to the models that did not diverge."""
    rows = _healthy_rows(run)
    if rows is None:
        return run
    tests = {k: (m[rows], labels) for k, (m, labels) in run.test_sets.items()}
    rates = run.model_rates[rows] if run.model_rates is not None else None
    return dataclasses.replace(run, keep=run.keep[rows], margins_train=run.margins_train[rows],
                               test_sets=tests, model_rates=rates,
                               diverged=np.zeros(rows.size, bool))


def primary_rows(run: RunArrays, rate: float | None) -> np.ndarray | None:
    """Rows of the models scored in the main columns; None = all models (no copy)."""
    if rate is None:
        return None
    if run.model_rates is None:
        raise JmemError(f"score.rate={rate} needs {rundir.MODEL_RATES}, which the run lacks")
    rows = np.flatnonzero(np.round(run.model_rates, estimators.RATE_DECIMALS)
                          == round(rate, estimators.RATE_DECIMALS))
    if rows.size == 0:
        raise JmemError(f"score.rate={rate} matches no model; run rates: "
                        f"{sorted(set(np.round(run.model_rates, 6).tolist()))}")
    return rows


def _take(arr: np.ndarray, rows):
    return arr if rows is None else arr[rows]


def canary_score_arrays(s: estimators.ExampleScores, cscore: np.ndarray) -> dict:
    """Scores oriented so that higher = more memorized, for ROC against canaries.

    p-values enter as ``-log10 p`` (``1 - p`` would tie the tiny p-values of strong canaries)
    and the C-score as ``1 - cscore`` (hard, held-out-misclassified examples score high).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"mem": s.mem, "fractional": s.fractional, "lira": s.lira,
                "neg_log10_p": -np.log10(s.p_value), "one_minus_cscore": 1 - cscore}


def select_all(s: estimators.ExampleScores, keep, margins, canary: np.ndarray | None,
               opt: ScoreConfig) -> tuple[thresholds.PlaceboNull, dict]:
    """Every threshold method on the scores ``s`` of the models ``keep`` / ``margins``
    (bool[R', N] / float[R', N], the rows behind ``s``): (their placebo null, name ->
    ThresholdResult). The one composition of the selection rule: the scoring stage, the
    retrain stage's cross-fitted halves and the report's split halves all call it."""
    placebo = thresholds.placebo_scores(keep, margins, seed=rng.stream_words(opt.placebo_seed, "placebo"),
                                        match_variance=opt.placebo_match_variance,
                                        name="margins_train.npy")
    methods = {
        "fixed": thresholds.fixed_threshold(s.mem, opt.fixed_threshold),
        "top_k": thresholds.top_k_threshold(s.mem, opt.top_k),
        "fdr": thresholds.fdr_threshold(s.p_value, s.mem, opt.fdr_q, opt.min_effect),
        "null": thresholds.null_threshold(s.mem, placebo.scores, opt.null_fpr),
    }
    if canary is not None and canary.any():
        methods["canary"] = thresholds.canary_threshold(s.mem, canary, opt.canary_tpr)
    return placebo, methods


def recorded_options(run_dir) -> ScoreConfig:
    """The options the scoring stage used (``thresholds.json``'s ``options``; defaults for
    fields it does not record, and without the file)."""
    path = Path(run_dir) / rundir.THRESHOLDS
    saved = (rundir.load_json(path, expect=dict).get("options") or {}) if path.exists() else {}
    known = {f.name for f in dataclasses.fields(ScoreConfig)}
    return ScoreConfig(**{k: v for k, v in saved.items() if k in known})


def _rate_tag(rate: float) -> str:
    return f"{rate:g}"


# ---------------------------------------------------------------------------------------------
# The entry point
# ---------------------------------------------------------------------------------------------

def score_run(run_dir, options: ScoreConfig | None = None) -> dict:
    """Score the run in ``run_dir``; write scores.csv, thresholds.json, pairs.csv.

    Returns the summary dict: what thresholds.json holds, plus ``files`` (the written paths)
    and ``top_influencers`` (test set -> {"index": int64[T, k], "value": float32[T, k]}, the
    k most influential training examples of each test example; not written to disk).
    :func:`format_summary` turns it into terminal text. See the module docstring for files.
    """
    opt = options if options is not None else ScoreConfig()
    if not isinstance(opt, ScoreConfig):
        raise JmemError(f"score options must be a ScoreConfig, got {type(opt).__name__}")
    d = Path(run_dir)
    integrity.verify_run(d)  # a missing or damaged file: one line naming it
    loaded = load_run(d)
    run = _without_diverged(loaded)
    diverged_ids = (np.flatnonzero(loaded.diverged).tolist() if loaded.diverged is not None
                    else [])
    rows = primary_rows(run, opt.rate)
    keep, margins = _take(run.keep, rows), _take(run.margins_train, rows)
    kw = dict(confidence=opt.confidence, fractional_floor=opt.fractional_floor,
              chunk_size=opt.chunk_size, name="margins_train.npy")
    s = estimators.compute_scores(keep, margins, **kw)

    by_rate, rates = None, None
    if run.model_rates is not None:
        rates = estimators.group_rates(run.model_rates, run.keep.shape[0])[0]
        if rates.size > 1:
            by_rate = estimators.scores_by_rate(run.keep, run.margins_train, run.model_rates, **kw)
    pooled = opt.rate is None and by_rate is not None
    cscore = estimators.cscore_over_rates(by_rate) if pooled else s.cscore

    q_values = thresholds.bh_adjust(s.p_value)
    canary = run.canaries
    placebo, methods = select_all(s, keep, margins, canary, opt)

    method_dicts = {}
    for name, res in methods.items():
        entry = res.to_dict()
        if canary is not None and canary.any():
            entry["canary_metrics"] = thresholds.selection_metrics(res.selected, canary)
        method_dicts[name] = entry

    canary_block = None
    if canary is not None:
        evals = {name: thresholds.evaluate_canaries(arr, canary, opt.canary_tpr, name).to_dict()
                 for name, arr in canary_score_arrays(s, cscore).items()} if canary.any() else {}
        canary_block = {"n_canaries": int(canary.sum()), "scores": evals}

    curve = None
    if by_rate is not None:
        curve = estimators.rate_curve(by_rate, opt.fixed_threshold)
        if canary is not None and canary.any():
            for point, rs in zip(curve, by_rate.values()):
                ev = thresholds.evaluate_canaries(rs.mem, canary, opt.canary_tpr)
                point["canary_auroc_mem"] = ev.auroc if not np.isnan(ev.auroc) else None
                point["canary_fpr_at_tpr_mem"] = (ev.fpr_at_tpr if not np.isnan(ev.fpr_at_tpr)
                                                  else None)

    # Influence and pairs for every test set, from the same models as the main scores.
    pair_cols = {k: [] for k in ("test_set", "train_index", "test_index", "mem", "infl", "label")}
    influence = {}
    for name, (m_test, l_test) in run.test_sets.items():
        inf = estimators.influence_summary(
            keep, _take(m_test, rows), s.mem, run.labels_train, l_test, k=opt.influencers_k,
            mem_threshold=opt.pair_mem_threshold, infl_threshold=opt.influence_threshold,
            same_class=opt.pair_same_class, chunk_size=opt.influence_chunk_size,
            max_pairs=opt.max_pairs, name=f"margins_{name}.npy")
        n = inf.pair_train.size
        pair_cols["test_set"].append(np.full(n, name, dtype=object))
        pair_cols["train_index"].append(inf.pair_train)
        pair_cols["test_index"].append(inf.pair_test)
        pair_cols["mem"].append(s.mem[inf.pair_train])
        pair_cols["infl"].append(inf.pair_infl.astype(np.float64))
        pair_cols["label"].append(run.labels_train[inf.pair_train].astype(np.int64))
        top1 = inf.top_value[:, 0] if inf.top_value.shape[1] else np.empty(0)
        influence[name] = {
            "num_test": int(l_test.shape[0]), "n_pairs": int(n),
            "n_train_in_pairs": int(np.unique(inf.pair_train).size),
            "n_test_in_pairs": int(np.unique(inf.pair_test).size),
            "median_top1_influence": (float(np.nanmedian(top1))
                                      if top1.size and not np.isnan(top1).all() else None),
            "top_influencers": {"index": inf.top_index, "value": inf.top_value},
        }

    # scores.csv
    n = s.mem.shape[0]
    columns = {"index": np.arange(n), "label": run.labels_train.astype(np.int64),
               "is_canary": canary if canary is not None else np.zeros(n, bool)}
    for f in ("n_in", "n_out", "correct_in", "correct_out", "acc_in", "acc_out", "mem",
              "mem_ci_low", "mem_ci_high"):
        columns[f] = getattr(s, f)
    columns["cscore"] = cscore
    for f in ("fractional", "margin_in", "margin_out", "lira", "p_value"):
        columns[f] = getattr(s, f)
    columns["q_value"] = q_values
    for name, res in methods.items():
        columns[f"selected_{name}"] = res.selected
    if by_rate is not None:
        for rate, rs in by_rate.items():
            columns[f"mem_rate_{_rate_tag(rate)}"] = rs.mem
        for rate, rs in by_rate.items():
            columns[f"acc_out_rate_{_rate_tag(rate)}"] = rs.acc_out

    record = {
        "num_models": int(keep.shape[0]), "num_examples": int(n),
        "excluded_diverged": {"count": len(diverged_ids), "ids": diverged_ids},
        "rate": opt.rate, "rates": rates.tolist() if rates is not None else None,
        "pooled_over_rates": pooled,
        "nan_counts": {**s.nan_counts(),
                       "lira_nan": int(np.isnan(s.lira).sum()),
                       "placebo_nan": int(np.isnan(placebo.scores).sum())},
        "methods": method_dicts,
        "canaries": canary_block,
        "rate_curve": curve,
        "pairs": {k: v["n_pairs"] for k, v in influence.items()},
        "influence": {k: {kk: vv for kk, vv in v.items() if kk != "top_influencers"}
                      for k, v in influence.items()},
        "placebo": {"n_defined": int((~np.isnan(placebo.scores)).sum()),
                    "std": _nan_none(np.nanstd(placebo.scores))
                    if (~np.isnan(placebo.scores)).any() else None,
                    "variance_matched": placebo.variance_matched},
        "options": dataclasses.asdict(opt),
    }
    record = thresholds.to_jsonable(record)
    integrity.forget_scores(d)  # until the record below, the files are not a finished scoring
    rundir.save_text(d / rundir.SCORES, rundir.csv_text(columns))
    rundir.save_json(d / rundir.THRESHOLDS, record)
    pairs = {k: np.concatenate(v) if v else np.empty(0) for k, v in pair_cols.items()}
    rundir.save_text(d / rundir.PAIRS, rundir.csv_text(pairs))
    integrity.record_scores(d, opt, diverged_ids)
    return {**record, "files": {"scores": str(d / rundir.SCORES),
                                "thresholds": str(d / rundir.THRESHOLDS),
                                "pairs": str(d / rundir.PAIRS)},
            "top_influencers": {k: v["top_influencers"] for k, v in influence.items()}}


def _nan_none(x):
    x = float(x)
    return None if np.isnan(x) else x


def _fmt(x, spec=".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def format_summary(summary: dict) -> str:
    """Terminal text for a :func:`score_run` summary: selections, canary recovery, NaN counts."""
    lines = []
    rate = summary.get("rate")
    rate_txt = (f"rate {rate:g}" if rate is not None else
                "rates pooled: " + ", ".join(f"{r:g}" for r in summary["rates"])
                if summary.get("pooled_over_rates") else
                f"rate {summary['rates'][0]:g}" if summary.get("rates") else "rate not recorded")
    nan = summary["nan_counts"]
    lines.append(f"scored {summary['num_examples']} examples with {summary['num_models']} "
                 f"models ({rate_txt})")
    excluded = summary.get("excluded_diverged") or {"count": 0}
    if excluded["count"]:
        ids = excluded["ids"]
        lines.append(f"excluded {excluded['count']} diverged model(s): ids "
                     + ", ".join(map(str, ids[:20])) + (", ..." if len(ids) > 20 else ""))
    lines.append(f"undefined (NaN) scores: {nan['undefined']} examples "
                 f"({nan['zero_in']} with no model in, {nan['zero_out']} with no model out); "
                 f"lira NaN: {nan['lira_nan']}")
    lines.append("selected by method:")
    for name, m in summary["methods"].items():
        extra = {
            "fixed": lambda m: f"mem >= {m['threshold']:g}",
            "top_k": lambda m: f"k = {m['k']}, mem >= {_fmt(m['threshold'], '.3g')}",
            "fdr": lambda m: (f"BH q = {m['q']:g} and mem >= {m['min_effect']:g}; "
                              f"<= {m['expected_false_discoveries_bound']:.1f} expected false "
                              f"among {m['n_bh_rejected']} BH rejections"),
            "null": lambda m: (f"placebo null at FPR {m['fpr']:g}: mem > "
                               f"{_fmt(m['threshold'], '.3g')}, "
                               f"est. FDR {_fmt(m['estimated_fdr'], '.2f')}"),
            "canary": lambda m: (f"{m['tpr_target']:.0%} of canaries: mem >= "
                                 f"{_fmt(m['threshold'], '.3g')}"),
        }.get(name, lambda m: "")(m)
        canary_txt = ""
        if "canary_metrics" in m:
            cm = m["canary_metrics"]
            canary_txt = (f"  [canaries: TPR {_fmt(cm['tpr'], '.2f')}, "
                          f"FPR {_fmt(cm['fpr'], '.4f')}, precision {_fmt(cm['precision'], '.2f')}]")
        lines.append(f"  {name:<7} {m['n_selected']:>8}  ({extra}){canary_txt}")
    c = summary.get("canaries")
    if c and c["scores"]:
        lines.append(f"canary recovery ({c['n_canaries']} canaries): AUROC, FPR@TPR")
        for name, ev in c["scores"].items():
            fpr_key = next(k for k in ev if k.startswith("fpr_at_"))
            lines.append(f"  {name:<17} AUROC {_fmt(ev['auroc'])}  {fpr_key} "
                         f"{_fmt(ev[fpr_key], '.4f')}  (NaN: {ev['n_nan']})")
    elif c is not None:
        lines.append("canaries.npy present but it marks no example")
    if summary.get("rate_curve"):
        lines.append("over the inclusion rate: rate, models, mean mem, mean C-score, "
                     "share mem >= threshold, canary AUROC")
        for p in summary["rate_curve"]:
            lines.append(f"  {p['rate']:g}  {p['num_models']:>6}  {_fmt(p['mean_mem'])}  "
                         f"{_fmt(p['mean_cscore'])}  {_fmt(p['frac_mem_above_threshold'])}  "
                         f"{_fmt(p.get('canary_auroc_mem'))}")
    lines.append("high-influence pairs: " + ", ".join(
        f"{k} {v}" for k, v in summary["pairs"].items()))
    return "\n".join(lines)
