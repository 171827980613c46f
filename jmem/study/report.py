"""``jmem report RUN_DIR``: a Markdown report with PNG plots, from the run directory alone.

Writes, in the run directory (names in :mod:`jmem.study.rundir`):

- ``report.md``: the verdict of the removal experiment (or how to run it), the run summary,
  selections, score distributions, trained-on vs held-out accuracy, scores against the rate,
  canary ROC, the reliability of the estimates (split halves, stability, models needed),
  the removal curve, the ablation, and the most memorized examples with their test partners;
- ``figures/*.png``: the plots ``report.md`` links (relative links: copy both together);
- ``reliability.json``: the reliability numbers (:mod:`jmem.scores.reliability`);
- ``fz_layout.npz``: the scores in Feldman & Zhang's released layout (:mod:`jmem.study.export`).

Inputs are the documented run-directory files only: ``config.json``, ``keep.npy``,
``margins_train.npy``, ``model_rates.npy``, ``canaries.npy``, ``models.csv``,
``scores.csv``, ``thresholds.json``, ``pairs.csv``, ``duplicates.csv`` and, when present,
``retrain/retrain.json`` and ``retrain/ablation.json`` (or both in the run directory). Sections whose inputs
are absent say so and how to produce them. The example images are the only thing not in the
run directory: they are re-loaded from the dataset named in ``config.json``.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
from pathlib import Path

import numpy as np

import jmem
from jmem import rng
from jmem.errors import JmemError
from jmem.scores import estimators, reliability, thresholds
from jmem.study import export, figures, integrity, rundir
from jmem.study.scoring import ScoreOptions, load_run, select_all

NUM_TOP_EXAMPLES = 12
NUM_TOP_PAIRS = 9
HIST_SCORES = ("mem", "fractional", "lira", "cscore")
MAX_COMPARISON_ROWS = 16


# ---------------------------------------------------------------------------------------------
# Reading the run directory
# ---------------------------------------------------------------------------------------------

def read_csv_columns(path) -> dict:
    """A CSV file as ``{column: array}``: float64 where every value parses, else str."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise JmemError(f"{path} is empty")
        rows = list(reader)
    cols = {}
    for i, name in enumerate(header):
        values = [r[i] for r in rows]
        try:
            cols[name] = np.array([float(v) for v in values], np.float64)
        except ValueError:
            cols[name] = np.array(values, dtype=str)
    return cols


def retrain_path(run_dir, name: str = rundir.RETRAIN) -> Path | None:
    """``RUN_DIR/retrain/<name>`` or ``RUN_DIR/<name>``, whichever exists (``retrain.json``,
    ``ablation.json``)."""
    d = Path(run_dir)
    for p in (d / "retrain" / name, d / name):
        if p.exists():
            return p
    return None


@dataclasses.dataclass
class RunView:
    """What the report reads. Optional files are None when absent."""

    path: Path
    config: dict | None
    scores: dict
    thresholds: dict
    models: dict | None
    pairs: dict | None
    duplicates: set | None          # {(test_index, train_index)}
    retrain: dict | None
    ablation: dict | None

    @property
    def canary(self):
        c = self.scores.get("is_canary")
        return None if c is None or not np.any(c == 1) else c == 1

    @property
    def num_examples(self) -> int:
        return int(self.scores["mem"].shape[0])


def read_run(run_dir) -> RunView:
    d = Path(run_dir)
    if not d.is_dir():
        raise JmemError(f"run directory {str(d)!r} does not exist")
    for name in (rundir.SCORES, rundir.THRESHOLDS):
        if not (d / name).exists():
            raise JmemError(f"run directory {str(d)!r} has no {name}; run `jmem score {d}` first")
    integrity.verify_run(d)
    opt = lambda name, fn: fn(d / name) if (d / name).exists() else None  # noqa: E731
    dups = None
    if (d / rundir.DUPLICATES).exists():
        cols = read_csv_columns(d / rundir.DUPLICATES)
        dups = {(int(t), int(r)) for t, r in zip(cols.get("test_index", []), cols.get("train_index", []))}
    rp, ap = retrain_path(d), retrain_path(d, rundir.ABLATION)
    return RunView(path=d, config=opt(rundir.CONFIG, rundir.load_json),
                   scores=read_csv_columns(d / rundir.SCORES),
                   thresholds=rundir.load_json(d / rundir.THRESHOLDS),
                   models=opt(rundir.MODEL_METRICS, read_csv_columns),
                   pairs=opt(rundir.PAIRS, read_csv_columns), duplicates=dups,
                   retrain=rundir.load_json(rp) if rp else None,
                   ablation=rundir.load_json(ap) if ap else None)


# ---------------------------------------------------------------------------------------------
# Formatting helpers
# ---------------------------------------------------------------------------------------------

def _f(x, spec=".3f") -> str:
    if x is None:
        return "n/a"
    try:
        if not np.isfinite(x):
            return "n/a"
    except TypeError:
        return str(x)
    return format(x, spec)


def _ci(mean, low, high, spec=".2f") -> str:
    return f"{_f(mean, spec)} [{_f(low, spec)}, {_f(high, spec)}]"


def _table(header: list, rows: list) -> list:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out + [""]


def _img(rel: str, alt: str) -> str:
    return f"![{alt}]({rel})"


# ---------------------------------------------------------------------------------------------
# Sections (each returns Markdown lines)
# ---------------------------------------------------------------------------------------------

def verdict_section(view: RunView) -> list:
    lines = ["## Verdict", ""]
    rt = view.retrain
    if rt is None:
        return lines + [
            "The removal experiment has not been run on this run directory, so this report "
            "does not yet say whether removing the memorized examples costs test accuracy. "
            "Run it with", "", f"    jmem retrain {view.path}", "",
            "and then `jmem report` again.", ""]
    lines += [str(rt.get("verdict", "(retrain.json has no verdict)")), ""]
    comps = [c for c in rt.get("comparisons", []) if c.get("tau") is None] or rt.get("comparisons", [])
    if comps:
        lines += [f"Comparisons ({rt.get('seeds', '?')} retraining seeds per arm; differences "
                  "in percentage points of accuracy, `a - b`, with 95% intervals; p-values "
                  "Holm-adjusted within each family: the same pair of arm kinds on the same "
                  "test set, across methods or across sweep points; MDE = smallest difference "
                  "the design could detect):", ""]
        rows = [[c.get("name", ""), c.get("test_set", ""), c.get("method") or "",
                 _ci(c.get("mean_diff"), c.get("ci_low"), c.get("ci_high")),
                 _f(c.get("p_holm"), ".3g"), _f(c.get("mde"), ".2f")]
                for c in comps[:MAX_COMPARISON_ROWS]]
        lines += _table(["comparison", "test set", "method", "difference (pp)", "p (Holm)",
                         "MDE (pp)"], rows)
        if len(comps) > MAX_COMPARISON_ROWS:
            lines += [f"({len(comps) - MAX_COMPARISON_ROWS} more comparisons in retrain.json)", ""]
    cf = rt.get("cross_fit") or {}
    if cf.get("enabled"):
        jac = ", ".join(f"{m} {_f(v, '.2f')}" for m, v in (cf.get("jaccard") or {}).items())
        lines += [f"Cross-fitting was on: removal sets were chosen with scores from models "
                  f"independent of the evaluation (Spearman of mem between the folds "
                  f"{_f(cf.get('spearman_mem'))}; Jaccard of selections: {jac or 'n/a'}).", ""]
    if rt.get("excluded_diverged"):
        lines += [f"{rt['excluded_diverged']} diverged retrained model(s) were excluded.", ""]
    return lines


def summary_section(view: RunView) -> list:
    cfg = view.config or {}
    th = view.thresholds
    data = cfg.get("data", {})
    train = cfg.get("train", {})
    model = cfg.get("model", {})
    subsets = cfg.get("subsets", {})
    rates = th.get("rates") or subsets.get("rates") or []
    rows = [["dataset", data.get("name", "n/a")],
            ["training examples N", view.num_examples],
            ["models R (scored)", th.get("num_models")],
            ["inclusion rate(s)", ", ".join(f"{r:g}" for r in rates) or "n/a"],
            ["subset design", subsets.get("design", "n/a")],
            ["model", f"{model.get('kind', '?')} width {model.get('width', '?')} depth "
                      f"{model.get('depth', '?')}" if model else "n/a"],
            ["training", f"{train.get('epochs', '?')} epochs, {train.get('optimizer', '?')}, "
                         f"lr {train.get('learning_rate', '?')}, batch {train.get('batch_size', '?')}"
             if train else "n/a"]]
    if view.models is not None:
        m = view.models
        for col in [c for c in m if c.endswith("accuracy")]:
            acc = m[col][np.asarray(m.get("diverged", np.zeros_like(m[col]))) == 0]
            rows.append([f"model {col.replace('_', ' ')} (mean ± sd over models)",
                         f"{100 * acc.mean():.2f}% ± {100 * acc.std(ddof=1) if acc.size > 1 else 0:.2f}"])
        if "diverged" in m:
            rows.append(["diverged models", int(np.sum(m["diverged"]))])
    canary = view.canary
    rows.append(["canaries (labels re-drawn)", int(canary.sum()) if canary is not None else 0])
    if view.duplicates is not None:
        rows.append(["train/test near-duplicates (duplicates.csv)",
                     f"{len({t for t, _ in view.duplicates})} test examples"])
    nan = th.get("nan_counts", {})
    rows.append(["examples with undefined scores", nan.get("undefined", "n/a")])
    lines = ["## The run", ""] + _table(["", "value"], rows)
    return lines


def selections_section(view: RunView) -> list:
    methods = view.thresholds.get("methods", {})
    has_c = view.canary is not None
    rows = []
    describe = {"fixed": "mem ≥ threshold (Feldman & Zhang's hand-picked cut)",
                "top_k": "the k highest mem",
                "fdr": "Benjamini-Hochberg on Fisher p-values, and mem ≥ min effect",
                "null": "mem above the placebo (seed-noise) null at a set FPR",
                "canary": "the cut recovering a target share of the canaries"}
    for name, m in methods.items():
        thr = m.get("threshold")
        thr_txt = (f"p ≤ {_f(thr, '.3g')}, mem ≥ {m.get('min_effect')}" if name == "fdr"
                   else _f(thr, ".3g"))
        row = [name, describe.get(name, ""), thr_txt, m.get("n_selected")]
        if has_c:
            cm = m.get("canary_metrics") or {}
            row += [_f(cm.get("tpr"), ".2f"), _f(cm.get("fpr"), ".4f"), _f(cm.get("precision"), ".2f")]
        rows.append(row)
    header = ["method", "rule", "threshold", "selected"] + (
        ["canary TPR", "FPR", "precision"] if has_c else [])
    return ["## Which examples count as memorized", "",
            "Each selection method applied to this run's scores (`thresholds.json`):", ""] + \
        _table(header, rows)


def _canary_cut(values, canary, tpr: float, higher=True):
    """The score cut at which ``tpr`` of the canaries are flagged (None without canaries)."""
    if canary is None:
        return None
    v = np.asarray(values, float)[canary]
    v = np.sort(v[np.isfinite(v)])
    if not v.size:
        return None
    v = v[::-1] if higher else v
    return float(v[int(np.ceil(tpr * v.size)) - 1])


def histogram_section(view: RunView, fig_dir: Path) -> list:
    s, th = view.scores, view.thresholds
    methods = th.get("methods", {})
    tpr = th.get("options", {}).get("canary_tpr", 0.95)
    lines_by_score = {"mem": []}
    for name, m in methods.items():
        if name == "fdr":
            sel = s.get("selected_fdr")
            if sel is not None and np.any(sel == 1):
                lines_by_score["mem"].append(("fdr lowest selected", float(np.min(s["mem"][sel == 1]))))
        elif m.get("threshold") is not None:
            lines_by_score["mem"].append((name, m["threshold"]))
    canary = view.canary
    for name in ("fractional", "lira", "cscore"):
        cut = _canary_cut(s[name], canary, tpr, higher=name != "cscore")
        if cut is not None:
            lines_by_score[name] = [(f"canary cut ({tpr:.0%} of canaries)", cut)]
    scores = {n: s[n] for n in HIST_SCORES if n in s}
    figures.score_histograms(scores, canary, lines_by_score, fig_dir / "score_histograms.png")
    return ["## Score distributions", "",
            "Histograms of the four per-example scores (log count axis; canaries stacked in "
            "red). On `mem` the dashed lines are the selection methods' thresholds; on the "
            "other scores the cut that flags "
            f"{tpr:.0%} of the canaries. A good score puts the canaries in a tail of their own.",
            "", _img(f"{rundir.REPORT_FIGURES}/score_histograms.png", "score histograms"), ""]


def scatter_section(view: RunView, fig_dir: Path) -> list:
    s = view.scores
    thr = view.thresholds.get("options", {}).get("fixed_threshold", 0.25)
    figures.acc_scatter(s["acc_in"], s["acc_out"], view.canary, thr, fig_dir / "acc_in_vs_acc_out.png")
    return ["## Trained-on vs held-out accuracy", "",
            "Each point is a training example: how often models that trained on it get it "
            "right (`acc_in`) against models that did not (`acc_out`). Typical examples sit at "
            "the top right (learned either way); memorized ones at the bottom right (right "
            f"only when trained on). Below the dashed line `mem ≥ {thr:g}`.", "",
            _img(f"{rundir.REPORT_FIGURES}/acc_in_vs_acc_out.png", "acc_in vs acc_out"), ""]


def rate_section(view: RunView, fig_dir: Path) -> list:
    s = view.scores
    tags = [c[len("mem_rate_"):] for c in s if c.startswith("mem_rate_")]
    lines = ["## Scores against the inclusion rate", ""]
    if len(tags) < 2:
        rates = view.thresholds.get("rates") or []
        return lines + [
            f"This run has a single inclusion rate ({', '.join(f'{r:g}' for r in rates) or 'n/a'}), "
            "so there is no curve. A run with several rates "
            "(`--set subsets.rates=0.1,0.3,0.5,0.7,0.9,0.95`) gives one, the C-score "
            "consistency profile of Jiang et al. (2021).", ""]
    tags = sorted(tags, key=float)
    rates = [float(t) for t in tags]
    mem = np.stack([s[f"mem_rate_{t}"] for t in tags])
    acc_out = np.stack([s[f"acc_out_rate_{t}"] for t in tags])
    figures.scores_vs_rate(rates, mem, acc_out, view.canary, fig_dir / "scores_vs_rate.png")
    curve = view.thresholds.get("rate_curve") or []
    rows = [[f"{p['rate']:g}", p.get("num_models"), _f(p.get("mean_mem")),
             _f(p.get("frac_mem_above_threshold")), _f(p.get("mean_cscore")),
             _f(p.get("canary_auroc_mem"))] for p in curve]
    lines += ["Memorization is estimated separately from the models of each rate (never "
              "pooled). F&Z's estimator at low rates mixes memorization with plain "
              "learnability; the critique's first correction is to measure it at a high rate.",
              "", _img(f"{rundir.REPORT_FIGURES}/scores_vs_rate.png", "scores vs rate"), ""]
    lines += _table(["rate", "models", "mean mem", "share mem ≥ threshold", "mean C-score",
                     "canary AUROC (mem)"], rows)
    return lines


def canary_section(view: RunView, fig_dir: Path) -> list:
    c = view.thresholds.get("canaries")
    lines = ["## Recovering the canaries", ""]
    if not c or not c.get("scores"):
        return lines + ["This run has no canaries (`subsets.canary_fraction=0`), so there is "
                        "no ground truth to evaluate the scores against.", ""]
    curves, rows = {}, []
    for name, ev in c["scores"].items():
        fkey = next((k for k in ev if k.startswith("fpr_at_")), None)
        f95 = ev.get(fkey) if fkey else None
        roc = ev.get("roc") or {}
        curves[name] = (roc.get("fpr", []), roc.get("tpr", []), ev.get("auroc"), f95)
        rows.append([name, _f(ev.get("auroc")), _f(f95, ".4f"), ev.get("n_nan", 0)])
    figures.roc_plot(curves, fig_dir / "canary_roc.png")
    tpr = view.thresholds.get("options", {}).get("canary_tpr", 0.95)
    return lines + [
        f"{c['n_canaries']} training labels were re-drawn at random before training: "
        "known memorized points (the critique's ground truth). A score that ranks them "
        f"first has a high AUROC and a low false-positive rate at {tpr:.0%} recall.", ""] + \
        _table(["score", "AUROC", f"FPR at {tpr:.0%} TPR", "undefined"], rows) + \
        [_img(f"{rundir.REPORT_FIGURES}/canary_roc.png", "canary ROC"), ""]


def _selector(opt: ScoreOptions, canary):
    """The scoring stage's selection methods, with its options, on any subset of models."""
    def select(s, keep, margins):
        placebo = thresholds.placebo_scores(
            keep, margins, seed=rng.stream_words(opt.placebo_seed, "placebo"),
            match_variance=opt.placebo_match_variance)
        return {name: res.selected for name, res in select_all(s, placebo, canary, opt).items()}
    return select


def _score_options(view: RunView) -> ScoreOptions:
    saved = view.thresholds.get("options", {}) or {}
    known = {f.name for f in dataclasses.fields(ScoreOptions)}
    return ScoreOptions(**{k: v for k, v in saved.items() if k in known})


def compute_reliability(view: RunView, *, half_width: float = 0.1) -> dict:
    """Split halves, stability and models needed for the models behind scores.csv."""
    run = load_run(view.path)
    opt = _score_options(view)
    rows = export.scored_rows(view.path, run.keep.shape[0], run.model_rates)
    keep = run.keep if rows is None else run.keep[rows]
    margins = run.margins_train if rows is None else run.margins_train[rows]
    kw = dict(confidence=opt.confidence, fractional_floor=opt.fractional_floor,
              chunk_size=opt.chunk_size)
    canary = view.canary
    if keep.shape[0] < 4:
        return None
    order, halves = None, None
    if run.model_rates is not None and rows is None:
        rates = run.model_rates
        if np.unique(np.round(rates, 6)).size > 1:
            order = reliability.interleaved_order(rates)
            halves = reliability.alternating_halves(keep.shape[0], rates)
    sh = reliability.split_half(keep, margins, selector=_selector(opt, canary), halves=halves, **kw)
    stab = reliability.stability(keep, margins, order=order, **kw)
    s = view.scores
    a_in = reliability.smoothed_accuracy(s["correct_in"], s["n_in"])
    a_out = reliability.smoothed_accuracy(s["correct_out"], s["n_out"])
    run_rates = view.thresholds.get("rates") or []
    if opt.rate is not None:
        run_rates = [opt.rate]
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
    rows = [[n, _f(sh.spearman[n]), _f(sh.projected_r[n]), _f(sh.projected_2r[n]), sh.n_defined[n]]
            for n in sh.spearman]
    lines = ["## How reliable are these estimates?", "",
             "### Split halves", "",
             f"The scores recomputed from the {sh.num_models[0]} even-id models and from the "
             f"{sh.num_models[1]} odd-id models separately"
             + (" (even and odd within each rate, so both halves hold every rate)"
                if rel["interleaved"] else "") + ", compared example by example. "
             "Spearman-Brown projects the half-vs-half correlation to an estimate from all "
             f"{R} models and from {2 * R} (approximate for rank correlations).", ""]
    lines += _table(["score", "Spearman (R/2 vs R/2)", f"projected to R = {R}",
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
    jrows = [[m, _f(j, ".3f"), f"{a} / {b}"] for m, (j, (a, b)) in
             ((m, (sh.jaccard[m], sh.n_selected[m])) for m in sh.jaccard)]
    lines += ["Overlap of each method's selected set between the halves (Jaccard; Feldman & "
              "Zhang report ≥ 0.7 between two 2,000-model runs on CIFAR-100; halves of this "
              "run are smaller, so this is a pessimistic figure for a repeat of the whole run):",
              ""] + _table(["method", "Jaccard", "selected (even / odd)"], jrows)
    lines += [_img(f"{rundir.REPORT_FIGURES}/split_half.png", "split-half reliability"), ""]
    srows = [[r["k"], _f(r.get("spearman_mem")), _f(r.get("mean_abs_diff_mem"), ".4f"),
              _f(r.get("spearman_cscore")), _f(r.get("mean_abs_diff_cscore"), ".4f"),
              r.get("n_defined_mem")] for r in rel["stability"]]
    lines += ["### Stability versus the number of models", "",
              "Scores from the first k models"
              + (" (taken in turn from each rate)" if rel["interleaved"] else "")
              + " against the scores from all of them (the first k are among all, so this "
              "shows convergence rather than an independent repeat).", ""]
    lines += _table(["k", "Spearman mem", "mean abs diff mem", "Spearman C-score",
                     "mean abs diff C-score", "examples defined"], srows)
    lines += [_img(f"{rundir.REPORT_FIGURES}/stability.png", "stability"), ""]
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
    lines += _table(["rate", "models in this run", "median example", "90% of examples",
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


def _arm_lookup(rt: dict) -> dict:
    return {a["name"]: a for a in rt.get("arms", [])}


def removal_panels(rt: dict) -> dict:
    """test set -> {series -> (x, mean, low, high)} from retrain.json's sweep arms."""
    arms = [a for a in rt.get("arms", []) if a.get("name", "").startswith("sweep:")]
    if not arms:
        return {}
    acc = rt.get("accuracy", {})
    full = acc.get("full", {})
    test_sets = [t for t in rt.get("test_sets", []) if any(t in acc.get(a["name"], {}) for a in arms)]
    panels = {}
    for t in test_sets[:3]:
        series = {}
        for kind in ("selected", "matched", "random", "lowest"):
            pts = sorted(((a["removed_fraction"], acc[a["name"]][t]) for a in arms
                          if a.get("kind") == kind and t in acc.get(a["name"], {})),
                         key=lambda p: p[0])
            if not pts:
                continue
            if t in full:
                pts = [(0.0, full[t])] + pts
            label = {"selected": "selected (highest memorization) removed",
                     "matched": "matched random removed", "random": "random removed",
                     "lowest": "lowest memorization removed"}[kind]
            series[label] = tuple(np.array(v, float) for v in zip(*[
                (x, d["mean"], d["ci_low"], d["ci_high"]) for x, d in pts]))
        if series:
            panels[t] = series
    return panels


def removal_section(view: RunView, fig_dir: Path) -> list:
    rt = view.retrain
    lines = ["## Removal curve", ""]
    if rt is None:
        return lines + [f"Not available: the removal experiment has not been run (`jmem retrain {view.path}`).", ""]
    panels = removal_panels(rt)
    if not panels:
        return lines + ["retrain.json has no sweep arms (`sweep:<tau>:...`), so there is no "
                        "curve; the comparisons above are the removal result.", ""]
    figures.removal_curve(panels, fig_dir / "removal_curve.png")
    return lines + [
        "Models retrained without the examples above a memorization threshold (red) and "
        "without as many examples drawn at random with the same class balance (blue), "
        "against the fraction of the training set removed; bands are 95% intervals over "
        "retraining seeds (Feldman & Zhang's Figure 2, with statistics). A gap between the "
        "curves is the cost of memorization beyond the cost of having less data.", "",
        _img(f"{rundir.REPORT_FIGURES}/removal_curve.png", "removal curve"), ""]


def ablation_section(view: RunView, fig_dir: Path) -> list:
    ab = view.ablation
    if ab is None:
        return []
    factors = ab.get("factors", [])
    lines = ["## Ablation of the four corrections", "",
             "Each cell switches each correction on or off; its number is the removal effect "
             "in that cell: accuracy after removing the selected examples minus after removing "
             "matched random ones (percentage points; negative = memorized examples were "
             "needed).", ""]
    rows = [[c.get("name", ""), *("on" if c.get("levels", {}).get(f) else "off" for f in factors),
             _ci(c.get("diff_pp"), c.get("ci_low"), c.get("ci_high")), _f(c.get("p_perm"), ".3g")]
            for c in ab.get("cells", [])]
    if ab.get("seeds"):
        lines += [f"{ab['seeds']} retraining seeds per cell.", ""]
    lines += _table(["cell", *factors, "selected − matched (pp) [95% CI]", "p (sign-flip)"], rows)
    main = ab.get("main_effects", [])
    effects = [(e.get("factor") or " x ".join(e.get("factors", [])), e.get("effect_pp"),
                e.get("ci_low"), e.get("ci_high")) for e in main]
    if effects:
        figures.effects_plot(effects, fig_dir / "ablation_main_effects.png",
                             "Main effect of each correction on the removal result")
        lines += ["Main effects (average change of that difference when the correction is "
                  "switched on; positive = the correction makes removal look less costly):", ""]
        lines += _table(["correction", "main effect (pp) [95% CI]", "p (Holm)"],
                        [[e[0], _ci(*e[1:]), _f(m.get("p_holm"), ".3g")]
                         for e, m in zip(effects, main)])
        lines += [_img(f"{rundir.REPORT_FIGURES}/ablation_main_effects.png", "ablation main effects"), ""]
    inter = ab.get("interactions", [])
    if inter:
        lines += ["Interactions:", ""] + _table(
            ["interaction", "effect (pp) [95% CI]", "p (Holm)"],
            [[e.get("factor") or " x ".join(e.get("factors", [])),
              _ci(e.get("effect_pp"), e.get("ci_low"), e.get("ci_high")), _f(e.get("p_holm"), ".3g")]
             for e in inter])
    return lines


def _load_images(view: RunView):
    """The dataset's training and test inputs, or (None, reason) when they cannot be loaded."""
    from jmem.data.loaders import load_dataset

    data = (view.config or {}).get("data", {})
    if not data.get("name"):
        return None, "config.json names no dataset"
    try:
        ds = load_dataset(data["name"], data_dir=data.get("data_dir") or None)
    except JmemError as err:
        return None, f"the dataset could not be loaded ({err})"
    if ds.num_train != view.num_examples:
        return None, f"the dataset has {ds.num_train} training examples, the run {view.num_examples}"
    return ds, ""


def best_partners(view: RunView, train_idx) -> list:
    """For each training index, its most influenced same-class test example and the influence.

    From ``keep.npy`` and ``margins_test.npy`` of the models behind scores.csv (one chunked
    pass over these columns only). Returns [(test_index or None, infl)] in input order.
    """
    train_idx = np.asarray(train_idx, np.int64)
    if not train_idx.size:
        return []
    run = load_run(view.path)
    rows = export.scored_rows(view.path, run.keep.shape[0], run.model_rates)
    take = (lambda a: a) if rows is None else (lambda a: a[rows])
    margins_test, labels_test = run.test_sets["test"]
    correct = estimators.correct_matrix(take(margins_test), take(run.keep).shape[0])
    keep = np.asarray(take(run.keep))[:, train_idx]
    infl = next(estimators.iter_influence(keep, correct, chunk_size=train_idx.size))[1]  # [T, n]
    same = labels_test[:, None] == run.labels_train[train_idx][None, :]
    infl = np.where(same & np.isfinite(infl), infl, -np.inf)
    best = np.argmax(infl, axis=0)
    return [(int(j), float(infl[j, c])) if np.isfinite(infl[j, c]) else (None, float("nan"))
            for c, j in enumerate(best)]


def examples_section(view: RunView, fig_dir: Path) -> list:
    lines = ["## The most memorized examples", ""]
    ds, why = _load_images(view)
    if ds is None:
        return lines + [f"Images not shown: {why}.", ""]
    s = view.scores
    canary = view.canary
    mem = np.where(np.isfinite(s["mem"]), s["mem"], -np.inf)
    lira = np.where(np.isfinite(s["lira"]), s["lira"], -np.inf)
    if canary is not None:  # canaries are memorized by construction: show the natural ones
        mem = np.where(canary, -np.inf, mem)
    top = np.lexsort((-lira, -mem))[:NUM_TOP_EXAMPLES]
    top = top[np.isfinite(mem[top])]
    infl_thr = view.thresholds.get("options", {}).get("influence_threshold", 0.15)
    dups = view.duplicates or set()
    kw = dict(channel_mean=ds.channel_mean, channel_std=ds.channel_std)

    def row(i, j, v):
        i = int(i)
        tag = ", canary" if canary is not None and canary[i] else ""
        r = {"train_x": ds.x_train[i],
             "train_title": f"train #{i}, label {int(s['label'][i])}\nmem {s['mem'][i]:.2f}{tag}"}
        if j is None:
            r["test_title"] = "no same-class\ntest example"
            return r
        dup = (j, i) in dups
        r.update(test_x=ds.x_test[j], duplicate=dup,
                 test_title=f"test #{j}, label {int(ds.y_test[j])}\ninfl {v:.2f}"
                            + (" DUPLICATE" if dup else ""))
        return r

    partners = best_partners(view, top)
    figures.example_pairs([row(i, j, v) for i, (j, v) in zip(top, partners)],
                          fig_dir / "top_memorized.png",
                          title="Most memorized training examples (left of each pair) and the "
                                "test example they influence most (right)", **kw)
    n_dup = sum(j is not None and (j, int(i)) in dups for i, (j, _) in zip(top, partners))
    lines += [f"The {len(top)} training examples with the highest `mem`"
              + (" that are not canaries" if canary is not None else "")
              + " (label as trained on), each beside the same-class test example whose "
              "accuracy it raises most (`infl`: accuracy on that test example of models "
              "trained on it minus models not; Feldman & Zhang's high-influence pairs have "
              f"infl ≥ {infl_thr:g}). A partner that is a detected near-duplicate of its training "
              "example (`duplicates.csv`) is framed in red: its benefit is leakage, not "
              f"generalization ({n_dup} here).", "",
              _img(f"{rundir.REPORT_FIGURES}/top_memorized.png", "most memorized examples"), ""]
    pairs = view.pairs
    on_test = (np.flatnonzero(pairs["test_set"] == "test") if pairs is not None
               and pairs["train_index"].size else np.empty(0, np.int64))
    if on_test.size:
        best = on_test[np.argsort(-pairs["infl"][on_test], kind="stable")][:NUM_TOP_PAIRS]
        rows = [row(pairs["train_index"][p], int(pairs["test_index"][p]), pairs["infl"][p])
                for p in best]
        n_dup = sum((int(pairs["test_index"][p]), int(pairs["train_index"][p])) in dups
                    for p in on_test)
        figures.example_pairs(rows, fig_dir / "top_pairs.png",
                              title="Strongest high-influence pairs: training example (left) "
                                    "and the test example it helps (right)", **kw)
        lines += [f"The {len(rows)} strongest high-influence pairs on the test set (`pairs.csv`: "
                  f"mem and infl above their thresholds, same class; {on_test.size} pairs in "
                  f"all, {n_dup} of them detected near-duplicates):", "",
                  _img(f"{rundir.REPORT_FIGURES}/top_pairs.png", "high-influence pairs"), ""]
    else:
        lines += [f"No high-influence pairs (infl ≥ {infl_thr:g}) were found on the test set.", ""]
    return lines


def files_section(view: RunView, exported: Path | None, has_reliability: bool) -> list:
    lines = ["## Files", ""]
    if has_reliability:
        lines.append(f"- `{rundir.RELIABILITY}`: the reliability numbers above.")
    lines.append(f"- `{rundir.REPORT_FIGURES}/`: the plots of this report.")
    if exported is not None:
        lines.append(f"- `{exported.name}`: the scores in Feldman & Zhang's released layout "
                     "(`tr_mem`, `tr_labels`, `tt_labels`, per class K `infl_matrix_class{K}` "
                     "[train_K x test_K], `tr_classidx_{K}`, `tt_classidx_{K}`); "
                     "`np.load` it like their files.")
    return lines + ["- The per-example numbers behind every plot are in `scores.csv`, "
                    "`thresholds.json` and `pairs.csv` (see the README, *The run directory*).", ""]


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------

def build_report(run_dir, *, export_fz: bool = True, half_width: float = 0.1) -> dict:
    """Write report.md, figures/, reliability.json (and fz_layout.npz); return their paths.

    Returns ``{"report": Path, "figures": [Path, ...], "reliability": Path, "fz_layout": Path
    or None, "verdict": str or None}``.
    """
    if not 0 < half_width <= 1:
        raise JmemError(f"--half-width={half_width} must be in (0, 1]")
    view = read_run(run_dir)
    d = view.path
    fig_dir = d / rundir.REPORT_FIGURES
    fig_dir.mkdir(exist_ok=True)
    for old in fig_dir.glob("*.png"):  # a re-render must not leave plots of absent sections
        old.unlink()
    rel = compute_reliability(view, half_width=half_width)
    exported = export.export_fz(d) if export_fz else None
    name = (view.config or {}).get("data", {}).get("name", "run")
    lines = [f"# Memorization report: {name}", "",
             f"Run directory `{d}`; written by `jmem report` (jmem {jmem.__version__}) on "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.", ""]
    lines += verdict_section(view)
    lines += summary_section(view)
    lines += selections_section(view)
    lines += histogram_section(view, fig_dir)
    lines += scatter_section(view, fig_dir)
    lines += rate_section(view, fig_dir)
    lines += canary_section(view, fig_dir)
    lines += reliability_section(view, rel, fig_dir)
    lines += removal_section(view, fig_dir)
    lines += ablation_section(view, fig_dir)
    lines += examples_section(view, fig_dir)
    lines += files_section(view, exported, rel is not None)
    if rel is not None:
        rel_json = {"num_models": rel["num_models"], "split_half": rel["split_half"].to_dict(),
                    "stability": rel["stability"], "models_needed": rel["models_needed"],
                    "variance_check": rel["variance_check"],
                    "half_width": rel["half_width"], "confidence": rel["confidence"]}
        rundir.save_json(d / rundir.RELIABILITY, rel_json)
    rundir.save_text(d / rundir.REPORT, "\n".join(lines))
    return {"report": d / rundir.REPORT, "figures": sorted(fig_dir.glob("*.png")),
            "reliability": d / rundir.RELIABILITY if rel is not None else None,
            "fz_layout": exported,
            "verdict": (view.retrain or {}).get("verdict")}
