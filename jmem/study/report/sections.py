"""The report's sections; each returns Markdown lines (and writes its plots into ``fig_dir``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jmem.study import figures, rundir
from jmem.study.report.markdown import ci, fmt, img, table
from jmem.study.report.view import RunView

HIST_SCORES = ("mem", "fractional", "lira", "cscore")
MAX_COMPARISON_ROWS = 16


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
                 ci(c.get("mean_diff"), c.get("ci_low"), c.get("ci_high")),
                 fmt(c.get("p_holm"), ".3g"), fmt(c.get("mde"), ".2f")]
                for c in comps[:MAX_COMPARISON_ROWS]]
        lines += table(["comparison", "test set", "method", "difference (pp)", "p (Holm)",
                         "MDE (pp)"], rows)
        if len(comps) > MAX_COMPARISON_ROWS:
            lines += [f"({len(comps) - MAX_COMPARISON_ROWS} more comparisons in retrain.json)", ""]
    cf = rt.get("cross_fit") or {}
    if cf.get("enabled"):
        jac = ", ".join(f"{m} {fmt(v, '.2f')}" for m, v in (cf.get("jaccard") or {}).items())
        lines += [f"Cross-fitting was on: removal sets were chosen with scores from models "
                  f"independent of the evaluation (Spearman of mem between the folds "
                  f"{fmt(cf.get('spearman_mem'))}; Jaccard of selections: {jac or 'n/a'}).", ""]
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
    lines = ["## The run", ""] + table(["", "value"], rows)
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
        thr_txt = (f"p ≤ {fmt(thr, '.3g')}, mem ≥ {m.get('min_effect')}" if name == "fdr"
                   else fmt(thr, ".3g"))
        row = [name, describe.get(name, ""), thr_txt, m.get("n_selected")]
        if has_c:
            cm = m.get("canary_metrics") or {}
            row += [fmt(cm.get("tpr"), ".2f"), fmt(cm.get("fpr"), ".4f"), fmt(cm.get("precision"), ".2f")]
        rows.append(row)
    header = ["method", "rule", "threshold", "selected"] + (
        ["canary TPR", "FPR", "precision"] if has_c else [])
    return ["## Which examples count as memorized", "",
            "Each selection method applied to this run's scores (`thresholds.json`):", ""] + \
        table(header, rows)


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
            "", img(f"{rundir.REPORT_FIGURES}/score_histograms.png", "score histograms"), ""]


def scatter_section(view: RunView, fig_dir: Path) -> list:
    s = view.scores
    thr = view.thresholds.get("options", {}).get("fixed_threshold", 0.25)
    figures.acc_scatter(s["acc_in"], s["acc_out"], view.canary, thr, fig_dir / "acc_in_vs_acc_out.png")
    return ["## Trained-on vs held-out accuracy", "",
            "Each point is a training example: how often models that trained on it get it "
            "right (`acc_in`) against models that did not (`acc_out`). Typical examples sit at "
            "the top right (learned either way); memorized ones at the bottom right (right "
            f"only when trained on). Below the dashed line `mem ≥ {thr:g}`.", "",
            img(f"{rundir.REPORT_FIGURES}/acc_in_vs_acc_out.png", "acc_in vs acc_out"), ""]


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
    rows = [[f"{p['rate']:g}", p.get("num_models"), fmt(p.get("mean_mem")),
             fmt(p.get("frac_mem_above_threshold")), fmt(p.get("mean_cscore")),
             fmt(p.get("canary_auroc_mem"))] for p in curve]
    lines += ["Memorization is estimated separately from the models of each rate (never "
              "pooled). F&Z's estimator at low rates mixes memorization with plain "
              "learnability; the critique's first correction is to measure it at a high rate.",
              "", img(f"{rundir.REPORT_FIGURES}/scores_vs_rate.png", "scores vs rate"), ""]
    lines += table(["rate", "models", "mean mem", "share mem ≥ threshold", "mean C-score",
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
        rows.append([name, fmt(ev.get("auroc")), fmt(f95, ".4f"), ev.get("n_nan", 0)])
    figures.roc_plot(curves, fig_dir / "canary_roc.png")
    tpr = view.thresholds.get("options", {}).get("canary_tpr", 0.95)
    return lines + [
        f"{c['n_canaries']} training labels were re-drawn at random before training: "
        "known memorized points (the critique's ground truth). A score that ranks them "
        f"first has a high AUROC and a low false-positive rate at {tpr:.0%} recall.", ""] + \
        table(["score", "AUROC", f"FPR at {tpr:.0%} TPR", "undefined"], rows) + \
        [img(f"{rundir.REPORT_FIGURES}/canary_roc.png", "canary ROC"), ""]


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
        img(f"{rundir.REPORT_FIGURES}/removal_curve.png", "removal curve"), ""]


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
             ci(c.get("diff_pp"), c.get("ci_low"), c.get("ci_high")), fmt(c.get("p_perm"), ".3g")]
            for c in ab.get("cells", [])]
    if ab.get("seeds"):
        lines += [f"{ab['seeds']} retraining seeds per cell.", ""]
    lines += table(["cell", *factors, "selected − matched (pp) [95% CI]", "p (sign-flip)"], rows)
    main = ab.get("main_effects", [])
    effects = [(e.get("factor") or " x ".join(e.get("factors", [])), e.get("effect_pp"),
                e.get("ci_low"), e.get("ci_high")) for e in main]
    if effects:
        figures.effects_plot(effects, fig_dir / "ablation_main_effects.png",
                             "Main effect of each correction on the removal result")
        lines += ["Main effects (average change of that difference when the correction is "
                  "switched on; positive = the correction makes removal look less costly):", ""]
        lines += table(["correction", "main effect (pp) [95% CI]", "p (Holm)"],
                        [[e[0], ci(*e[1:]), fmt(m.get("p_holm"), ".3g")]
                         for e, m in zip(effects, main)])
        lines += [img(f"{rundir.REPORT_FIGURES}/ablation_main_effects.png", "ablation main effects"), ""]
    inter = ab.get("interactions", [])
    if inter:
        lines += ["Interactions:", ""] + table(
            ["interaction", "effect (pp) [95% CI]", "p (Holm)"],
            [[e.get("factor") or " x ".join(e.get("factors", [])),
              ci(e.get("effect_pp"), e.get("ci_low"), e.get("ci_high")), fmt(e.get("p_holm"), ".3g")]
             for e in inter])
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
