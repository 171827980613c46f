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
    """The short answer first (retrain/verdict.txt), then the headline table and the gates."""
    lines = ["## Verdict", ""]
    rt = view.retrain
    if rt is None:
        return lines + [
            "The removal experiment has not been run on this run directory, so this report "
            "does not yet say whether removing the memorized examples costs test accuracy. "
            "Run it with", "", f"    jmem retrain {view.path}", "",
            "and then `jmem report` again.", ""]
    lines += ["```", str(rt.get("verdict", "(retrain.json has no verdict)")), "```", ""]
    head = rt.get("headline")
    if head:
        lines += [f"Headline family ({head['adjustment']}). Differences are accuracy after removing the "
                  "selected examples minus after removing as many class-matched random ones, in "
                  "percentage points. The decision interval covers new retraining seeds, new test "
                  "data" + (" and a new estimation run's selection" if rt.get("pools") == 2 else "")
                  + "; the seed-only interval holds the test set and the selection fixed. MDE: the "
                  "smallest true difference the decision interval detects with 80% power.", ""]
        rows = []
        for e in head["protocols"] + head["effects"]:
            name = e.get("protocol") or f"main effect: {e['factor']} ({e['estimand']})"
            if e["status"] != "estimable":
                rows.append([name, e.get("test_set", ""), e["status"], "", "", ""])
                continue
            so = e.get("seed_only") or {}
            rows.append([name, e.get("test_set", ""), ci(e["estimate_pp"], e["ci_low"], e["ci_high"]),
                         f"[{fmt(so.get('ci_low'), '.2f')}, {fmt(so.get('ci_high'), '.2f')}]",
                         fmt(e.get("p_holm"), ".3g"), fmt(e.get("mde_pp"), ".2f")])
        lines += table(["comparison", "test set", f"difference (pp) [{100 * head['level']:.1f}% interval]",
                        "seed-only 95%", "p (Holm)", "MDE (pp)"], rows)
    gates = rt.get("gates") or {}
    if gates:
        rows = [[label, g["gate"], g["what"], fmt(g["value"], ".3f"), f"{g['bar']:g}",
                 "pass" if g["passed"] else "FAIL" + (" (no change only)" if g["gate"] == "power" else "")]
                for label, results in gates.items() for g in results]
        lines += ["Gates (a failed convergence or reliability gate makes the answer \"inconclusive\"; "
                  "a failed power gate only blocks a \"no change\" answer):", ""]
        lines += table(["protocol", "gate", "figure", "value", "bar", ""], rows)
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
            ["model", model_text(model)],
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


def training_curves_section(view: RunView, fig_dir: Path) -> list:
    """Each estimation model's training loss per epoch (``loss_history.npy``): did the models
    converge, and do the rates differ? No section for runs written before jmem recorded it,
    nor for one-epoch runs."""
    history = view.loss_history
    if history is None or history.ndim != 2 or history.shape[1] < 2:
        return []  # no curve in one epoch: the panel would show nothing
    rates = view.model_rates if view.model_rates is not None else np.zeros(history.shape[0])
    figures.loss_curves(history, rates, fig_dir / "training_curves.png")
    final = history[:, -1][np.isfinite(history[:, -1])]
    median = f" (median final loss {np.median(final):.3g})" if final.size else ""
    return ["## Training curves", "",
            f"The mean training loss of each of the {history.shape[0]} estimation models on its own "
            f"subset, epoch by epoch{median}: the median and 10-90% band per inclusion rate, three "
            "models drawn individually. A curve still falling steeply at the last epoch means the "
            "models had not converged: memorization is measured on models trained to fit their "
            "subsets (the convergence gate checks the share they fit).", "",
            img(f"{rundir.REPORT_FIGURES}/training_curves.png", "training curves"), ""]


RULE_TEXT = {"fixed": "mem ≥ the hand-picked cut (Feldman & Zhang)",
             "fractional": "fractional ≥ the hand-picked cut (the critique's definition)",
             "calibrated": "mem ≥ the null-calibrated cut (exact per-example null, estimated FDR ≤ q)",
             "calibrated_fractional": "fractional ≥ the null-calibrated cut",
             "fdr": "jmem: Fisher p, Benjamini-Hochberg, and mem ≥ min effect",
             "canary": "mem ≥ the cut recovering a target share of the canaries"}


def selections_section(view: RunView) -> list:
    """Every rule at every rate: threshold and count; with canaries, how many of them its cut
    would catch (canaries are never selected)."""
    by_rate = view.thresholds.get("by_rate") or {"all": {"rules": view.thresholds.get("methods", {})}}
    has_c = view.canary is not None
    rows = []
    for tag, rec in by_rate.items():
        for name, m in rec.get("rules", {}).items():
            thr = m.get("threshold")
            thr_txt = (f"p ≤ {fmt(thr, '.3g')}, mem ≥ {m.get('min_effect')}" if name == "fdr" else fmt(thr, ".3g"))
            row = [tag.replace("rate_", ""), name, RULE_TEXT.get(name, ""), thr_txt, m.get("n_selected")]
            if has_c:
                row.append(fmt(m.get("canaries_caught"), ".2f"))
            rows.append(row)
    header = ["rate", "rule", "what it selects", "threshold", "selected"] + (["canaries its cut catches"] if has_c else [])
    return ["## Which examples count as memorized", "",
            "Each rule applied to the scores of one rate's models (`thresholds.json`); canaries are "
            "never selected, the last column says how many of them the cut would catch:", ""] + \
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
    by_rate = view.thresholds.get("by_rate") or {}
    under = [p for p in curve if (by_rate.get(f"rate_{p['rate']:g}", {}).get("heldout") or {}).get("under_powered")]
    rows = [[f"{p['rate']:g}", p.get("num_models"), fmt(p.get("heldout_per_half"), ".1f"),
             fmt(p.get("fitted_share")), fmt(p.get("mean_mem")),
             fmt(p.get("frac_mem_above_threshold")), fmt(p.get("mean_cscore")),
             fmt(p.get("canary_auroc_mem"))] for p in curve]
    lines += ["Memorization is estimated separately from the models of each rate (never "
              "pooled: pooled over rates, the high-rate models would sit mostly in the \"in\" group "
              "and inflate mem). F&Z's estimator at low rates mixes memorization with plain "
              "learnability; the critique's first correction is to measure it at a high rate. "
              "Each example's held-out models per cross-fitting half set the precision of its score "
              "at that rate.", "", img(f"{rundir.REPORT_FIGURES}/scores_vs_rate.png", "scores vs rate"), ""]
    lines += table(["rate", "models", "held-out models / example / half", "fitted share (non-canary)",
                    "mean mem", "share mem ≥ threshold", "mean C-score", "canary AUROC (mem)"], rows)
    if under:
        listed = ", ".join(format(p["rate"], "g") for p in under)
        lines += [f"**Under-powered:** rate(s) {listed} "
                  f"have fewer than {view.thresholds.get('options', {}).get('min_heldout', 20)} held-out models per "
                  "example per half; their scores are noisier, which pulls a selection toward the random "
                  "control. Use subsets.equal_heldout=true and more models.", ""]
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


def _pooled_accuracy(acc: dict, group: str, kind: str, pools: int, test_set: str):
    """(mean, low, high) of an arm kind's accuracy averaged over the pools' arms."""
    entries = [acc.get(f"{group}:{kind}:p{p}", {}).get(test_set) for p in range(pools)]
    entries = [e for e in entries if e and e.get("mean") is not None]
    if not entries:
        return None
    return tuple(float(np.mean([e[k] for e in entries])) for k in ("mean", "ci_low", "ci_high"))


PROTOCOLS = (("fz", "Feldman & Zhang"), ("corrected", "corrected"))


def curve_groups(groups: dict, protocol: str) -> list[str]:
    """The removal sets on a protocol's curve: its size-matched top k and the curve's other
    multiples of k; for Feldman & Zhang without them, the sweep points (mem >= tau)."""
    names = [n for n in groups if n == f"matched:{protocol}" or n.startswith(f"curve:{protocol}:")]
    return names or ([n for n in groups if n.startswith("sweep:")] if protocol == "fz" else [])


def multiple_text(m: float) -> str:
    """A multiple of k as a reader writes it: 1 -> "k", 0.5 -> "k/2", 2 -> "2k", 1.5 -> "1.5k"."""
    if m == 1:
        return "k"
    if m < 1 and float(1 / m).is_integer():
        return f"k/{int(1 / m)}"
    return f"{m:g}k"


def point_text(name: str) -> str:
    """Which threshold a removal set is: ``matched:fz`` -> "k", ``curve:fz:0.5`` -> "k/2",
    ``sweep:0.25`` -> "mem≥0.25"."""
    parts = name.split(":")
    if parts[0] == "curve":
        return multiple_text(float(parts[-1]))
    if parts[0] == "sweep":
        return f"mem≥{float(parts[-1]):g}"
    return "k"


def removal_ticks(rt: dict) -> dict:
    """x (examples removed, averaged over the pools) -> what the point is, for every removal
    set on a curve (:func:`curve_groups`); two sets at one x with different labels share it."""
    groups, ticks = rt.get("groups", {}), {}
    for protocol, _ in PROTOCOLS:
        for name in curve_groups(groups, protocol):
            x = float(np.mean(groups[name]["removed"]))
            label = point_text(name)
            ticks[x] = label if ticks.get(x, label) == label else f"{ticks[x]} / {label}"
    return ticks


def removal_panels(rt: dict) -> dict:
    """test set -> {series -> (x, mean, low, high)}: each protocol's size-matched removal curve
    (its top k/2, k, 2k... examples removed, against as many class-matched random ones), and
    the sweep points (mem >= tau) when the run has them; x = the number removed. The
    leakage-free test set gets no panel of its own when it is the whole test set (nothing
    leaked: the panel would repeat the first)."""
    acc, pools = rt.get("accuracy", {}), rt.get("pools", 1)
    groups = rt.get("groups", {})
    full = [acc.get(f"full:p{p}", {}) for p in range(pools)]
    sizes = rt.get("test_set_sizes") or {}
    same = sizes.get("test_clean") is not None and sizes.get("test_clean") == sizes.get("test")
    panels = {}
    for test_set in ("test",) + (() if same else ("test_clean",)):
        series = {}
        for protocol, label in PROTOCOLS:
            names = curve_groups(groups, protocol)
            for kind, what in (("selected", "its selection"), ("matched", "matched random")):
                pts = []
                for n in names:
                    value = _pooled_accuracy(acc, n, kind, pools, test_set)
                    if value is not None:
                        pts.append((float(np.mean(groups[n]["removed"])), *value))
                if not pts:
                    continue
                base = [f.get(test_set) for f in full if f.get(test_set)]
                if base:
                    pts.append((0.0, *(float(np.mean([b[k] for b in base])) for k in ("mean", "ci_low", "ci_high"))))
                pts.sort()
                series[f"{label}: {what} removed"] = tuple(np.array(v, float) for v in zip(*pts))
        if series:
            panels[test_set] = series
    return panels


def removal_section(view: RunView, fig_dir: Path) -> list:
    rt = view.retrain
    lines = ["## Removal curve", ""]
    if rt is None:
        return lines + [f"Not available: the removal experiment has not been run (`jmem retrain {view.path}`).", ""]
    panels = removal_panels(rt)
    if not panels:
        return lines + ["retrain.json has no size-matched or sweep removal sets, so there is no curve; "
                        "the comparisons above are the removal result.", ""]
    ticks = removal_ticks(rt)
    sized = any("k" in t.replace("mem", "") for t in ticks.values())  # a multiple of k is plotted
    figures.removal_curve(panels, fig_dir / "removal_curve.png", ticks,
                          rt.get("matched_k") if sized else None)
    return lines + [
        "Models retrained without each protocol's most memorized examples (its own top k by its "
        "own score, at several k; each point's multiple of k is written under its count) and "
        "without as many examples drawn at random with the same class "
        "balance, against the number removed; bars are 95% intervals over retraining seeds. A gap "
        "between a protocol's two curves is the cost of removing *those* examples beyond the cost "
        "of having less data (Feldman & Zhang's Figure 2, size-matched and with statistics).", "",
        img(f"{rundir.REPORT_FIGURES}/removal_curve.png", "removal curve"), ""]


def ablation_section(view: RunView, fig_dir: Path) -> list:
    rt = view.retrain or {}
    head = rt.get("headline")
    if not head:
        return []
    lines = ["## Ablation of the four corrections", "",
             "Each cell switches each correction on or off (rate 0.7 -> 0.95; definition mem -> the "
             "fractional difference; threshold hand-picked -> null-calibrated; test set original -> "
             "leakage-free). A cell's number is its removal effect: accuracy after removing its "
             "selection minus after removing as many matched random examples (pp; negative = the "
             "removed examples were needed). *As defined*, each cell removes as many examples as its "
             "rule selects; *size-matched*, each removes its own top k, so a main effect says what "
             "changing *which* examples does.", ""]
    cells = [c for c in rt.get("comparisons", []) if c["b"] == "matched" and c["group"].startswith(("cell:", "matched:"))
             and c["test_set"] in ("test", "test_clean")]
    if cells:
        groups = rt.get("groups", {})
        rows = [[c["group"], c["test_set"], " / ".join(str(x) for x in groups.get(c["group"], {}).get("removed", [])),
                 ci(c["estimate_pp"], c["ci_low"], c["ci_high"]), fmt(c.get("mde_pp"), ".2f")] for c in cells]
        skipped = [[name, "", "", why, ""] for name, why in rt.get("skipped", {}).items()
                   if name.startswith(("cell:", "matched:"))]
        lines += table(["cell", "test set", "removed (per pool)", "selected − matched (pp) [95%, exploratory]",
                        "MDE (pp)"], rows + skipped)
    effects = [e for e in head["effects"] if e["status"] == "estimable"]
    if effects:
        figures.effects_plot([(f"{e['factor']} ({e['estimand']})", e["estimate_pp"], e["ci_low"], e["ci_high"])
                              for e in effects], fig_dir / "ablation_main_effects.png",
                             f"Main effect of each correction ({100 * head['level']:.1f}% intervals, Holm family)")
        lines += ["Main effects: the average change of a cell's removal effect when the correction is "
                  "switched on (positive = the correction makes removal look less costly); the intervals "
                  "are the headline family's (table above).", "",
                  img(f"{rundir.REPORT_FIGURES}/ablation_main_effects.png", "ablation main effects"), ""]
    dropped = [e for e in head["effects"] if e["status"] != "estimable"]
    if dropped:
        lines += ["Not estimated: " + "; ".join(f"{e['factor']} ({e['estimand']}): {e['status']}" for e in dropped)
                  + ".", ""]
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
                    "`thresholds.json` and `pairs.csv` (every file, column and key: jmem's docs/run-directory.md).", ""]


def model_text(model: dict) -> str:
    """The run table's model cell: an MLP's hidden widths when ``model.widths`` sets them (they
    replace width and depth), else width and depth."""
    if not model:
        return "n/a"
    if model.get("kind") == "mlp" and model.get("widths"):
        return "mlp, hidden widths " + "-".join(str(w) for w in model["widths"])
    return f"{model.get('kind', '?')} width {model.get('width', '?')} depth {model.get('depth', '?')}"
