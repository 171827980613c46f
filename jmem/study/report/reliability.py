"""How reliable the run's estimates are: split halves, stability, models needed (the report's
section and ``reliability.json``'s numbers, :mod:`jmem.scores.reliability`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jmem.config import ScoreConfig
from jmem.scores import reliability
from jmem.study import export, figures, rundir
from jmem.study.report.markdown import fmt, img, table
from jmem.study.report.view import RunView
from jmem.study.scoring import load_run, recorded_options, select_all


def _selector(opt: ScoreConfig, canary):
    """The scoring stage's rules, with its options, on any subset of one rate's models."""
    def select(s, keep, margins):
        del keep, margins  # the rules read the scores (and the counts inside them) only
        return {name: res.selected for name, res in select_all(s, canary, opt).items()}
    return select


def compute_reliability(view: RunView, *, half_width: float = 0.1) -> dict:
    """Split halves, stability and models needed for the models behind scores.csv.

    The halves' and prefixes' scores are computed here: the scoring stage's files hold only
    those of all the models together. The models-needed table uses scores.csv's counts.
    """
    run = load_run(view.path)
    opt = recorded_options(view.path)
    rows = export.scored_rows(view.path, run.keep.shape[0], run.model_rates, run.diverged)
    keep = run.keep if rows is None else run.keep[rows]
    margins = run.margins_train if rows is None else run.margins_train[rows]
    kw = dict(confidence=opt.confidence, fractional_floor=opt.fractional_floor,
              chunk_size=opt.chunk_size)
    canary = view.canary
    if keep.shape[0] < 4:
        return None
    order, halves = None, None  # one rate's models: plain alternating halves
    sh = reliability.split_half(keep, margins, selector=_selector(opt, canary), halves=halves, **kw)
    stab = reliability.stability(keep, margins, order=order, **kw)
    s = view.scores
    a_in = reliability.smoothed_accuracy(s["correct_in"], s["n_in"])
    a_out = reliability.smoothed_accuracy(s["correct_out"], s["n_out"])
    main = view.thresholds.get("main_rate")
    run_rates = [main] if main is not None else (view.thresholds.get("rates") or [])
    table_rates = sorted({*reliability.DEFAULT_RATES, *[round(r, 6) for r in run_rates]})
    fixed = s.get("selected_fixed")
    need = reliability.models_needed_table(
        a_in, a_out, table_rates, half_width=half_width, confidence=opt.confidence,
        subset=(fixed == 1) if fixed is not None and np.any(fixed == 1) else None)
    check = reliability.variance_check(sh.scores[0], sh.scores[1], a_in, a_out)
    return {"split_half": sh, "stability": stab, "models_needed": need, "variance_check": check,
            "half_width": half_width, "confidence": opt.confidence,
            "run_rates": run_rates, "num_models": int(keep.shape[0]),
            "interleaved": order is not None}


def reliability_section(view: RunView, rel: dict | None, fig_dir: Path) -> list:
    if rel is None:
        return ["## How reliable are these estimates?", "",
                "Not estimated: split halves need at least 4 models.", ""]
    sh = rel["split_half"]
    figures.split_half_plot(sh.scores[0].mem, sh.scores[1].mem, sh.spearman["mem"], sh.jaccard,
                            sh.n_selected, fig_dir / "split_half.png")
    figures.stability_plot(rel["stability"], fig_dir / "stability.png",
                           "interleaved over the rates" if rel["interleaved"] else "by model id")
    R = rel["num_models"]
    rows = [[n, fmt(sh.spearman[n]), fmt(sh.projected_r[n]), fmt(sh.projected_2r[n]), sh.n_defined[n]]
            for n in sh.spearman]
    lines = ["## How reliable are these estimates?", "",
             "### Split halves", "",
             f"The scores recomputed from the {sh.num_models[0]} even-id models and from the "
             f"{sh.num_models[1]} odd-id models separately"
             + (" (even and odd within each rate, so both halves hold every rate)"
                if rel["interleaved"] else "") + ", compared example by example. "
             "Spearman-Brown projects the half-vs-half correlation to an estimate from all "
             f"{R} models and from {2 * R} (approximate for rank correlations).", ""]
    lines += table(["score", "Spearman (R/2 vs R/2)", f"projected to R = {R}",
                     f"projected to 2R = {2 * R}", "examples"], rows)
    lines += ["A projected correlation near 1 means a repeat of this run with new models would "
              "rank the examples the same way; the Jaccard overlaps below say whether it would "
              "select the same ones.", ""]
    fit = float(np.mean(view.scores["acc_in"] == 1))
    if fit > 0.5:
        lines += [f"{fit:.0%} of the examples are classified correctly by every model that "
                  "trained on them (`acc_in = 1`); for those, `mem = 1 − C-score` and the "
                  "fractional score is a decreasing function of the C-score, so the three rank "
                  "correlations nearly coincide: they measure one thing on this run.", ""]
    jrows = [[m, fmt(j, ".3f"), f"{a} / {b}"] for m, (j, (a, b)) in
             ((m, (sh.jaccard[m], sh.n_selected[m])) for m in sh.jaccard)]
    lines += ["Overlap of each method's selected set between the halves (Jaccard; Feldman & "
              "Zhang report ≥ 0.7 between two 2,000-model runs on CIFAR-100; halves of this "
              "run are smaller, so this is a pessimistic figure for a repeat of the whole run):",
              ""] + table(["method", "Jaccard", "selected (even / odd)"], jrows)
    lines += [img(f"{rundir.REPORT_FIGURES}/split_half.png", "split-half reliability"), ""]
    srows = [[r["k"], fmt(r.get("spearman_mem")), fmt(r.get("mean_abs_diff_mem"), ".4f"),
              fmt(r.get("spearman_cscore")), fmt(r.get("mean_abs_diff_cscore"), ".4f"),
              r.get("n_defined_mem")] for r in rel["stability"]]
    lines += ["### Stability versus the number of models", "",
              "Scores from the first k models"
              + (" (taken in turn from each rate)" if rel["interleaved"] else "")
              + " against the scores from all of them (the first k are among all, so this "
              "shows convergence rather than an independent repeat).", ""]
    lines += table(["k", "Spearman mem", "mean abs diff mem", "Spearman C-score",
                     "mean abs diff C-score", "examples defined"], srows)
    lines += [img(f"{rundir.REPORT_FIGURES}/stability.png", "stability"), ""]
    h, conf = rel["half_width"], rel["confidence"]
    has_sub = any("subset_median" in r for r in rel["models_needed"])
    curve = view.thresholds.get("rate_curve") or []
    per_rate = {round(p["rate"], 6): p["num_models"] for p in curve if view.thresholds.get("rate") is None}
    if not per_rate:
        per_rate = {round(x, 6): R for x in rel["run_rates"]}
    nrows = []
    for r in rel["models_needed"]:
        have = per_rate.get(round(r["rate"], 6))
        row = [f"{r['rate']:g}", have if have is not None else "–", r["q50"], r["q90"], r["q99"],
               r["max"], r["worst_case"]]
        if has_sub:
            row.append(r.get("subset_median", "n/a"))
        nrows.append(row)
    lines += ["### Models needed", "",
              f"How many models R give a {conf:.0%} interval of ±{h:g} on `mem`, from this run's "
              "per-example accuracies (binomial variance with `rate·R` models in and "
              "`(1 − rate)·R` out; accuracies smoothed by half a count and assumed not to "
              "change with the rate, so rates far from this run's are rough guidance). The "
              "worst case (accuracies of 1/2) bounds every example. R counts the models "
              "at that rate; the second column is how many this run has there"
              + (" (accuracies pooled over the run's rates)" if len(per_rate) > 1 else "")
              + ".", ""]
    lines += table(["rate", "models in this run", "median example", "90% of examples",
                     "99% of examples", "all examples", "worst case"]
                    + (["median, fixed-selected"] if has_sub else []), nrows)
    s = view.scores
    a_in = reliability.smoothed_accuracy(s["correct_in"], s["n_in"])
    a_out = reliability.smoothed_accuracy(s["correct_out"], s["n_out"])
    vc = rel["variance_check"]
    if vc["ratio"] is not None:
        r = vc["ratio"]
        reading = ("the table overstates the models needed (the half-count smoothing is "
                   "conservative for examples every model gets right)" if r < 0.9 else
                   "the table understates the models needed by about that factor" if r > 1.1
                   else "the formula describes this run's noise")
        lines += [f"Check on this run: the squared differences of `mem` between the split halves "
                  f"average {vc['observed']:.3g}, against {vc['predicted']:.3g} predicted by the "
                  f"same formula: ratio {r:.2f}, so {reading}.", ""]
    for rate, have in sorted(per_rate.items()):
        need = reliability.models_needed(a_in, a_out, rate, h, conf)
        need = need[np.isfinite(need)]
        if need.size:
            lines.append(f"At rate {rate:g} this run's {have} models give ±{h:g} or better for "
                         f"{np.mean(need <= have):.1%} of the examples.")
    lines.append("")
    return lines
