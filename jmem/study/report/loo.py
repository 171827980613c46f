"""The report's leave-one-out section: every estimate of the run checked against exact
leave-one-out on a sample (``jmem loo``, :mod:`jmem.study.loo`), with its two plots.

Reads ``RUN_DIR/loo/loo.json`` and ``RUN_DIR/loo/examples.csv``; returns no lines when the
run has no complete leave-one-out stage.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from jmem.study import rundir
from jmem.study.report.markdown import ci, fmt, img, table

LOO_DIR = "loo"  # = jmem.study.loo.LOO_DIR (the report does not import the stages)
EXAMPLES_CSV = "examples.csv"
SCATTER_PNG = "loo_mem_vs_estimate.png"
RULES_PNG = "loo_rules.png"
STRATUM_COLORS = {"selected": "#ff7f0e", "easy": "#7f7f7f"}  # deciles: blue
DECILE_COLOR = "#1f77b4"
ESTIMATOR_NAMES = {"mem": "mem (F&Z)", "fractional": "fractional (critique)",
                   "neg_log10_p": "−log10 Fisher p (jmem)", "one_minus_cscore": "1 − C-score",
                   "lira": "LiRA-style"}


def _save_png(fig: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    rundir.save_bytes(path, buffer.getvalue())
    return path


def mem_scatter(examples: dict, rates: list[str], records: dict, path: Path) -> Path:
    """One panel per rate: the run's mem (y) of each sampled example against its LOO mem (x,
    with the paired interval), coloured by stratum, with the identity line (an unbiased
    estimator scatters around it)."""
    fig = Figure(figsize=(5.2 * len(rates), 4.8), dpi=110, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(rates), squeeze=False)[0])
    x, low, high = (np.asarray(examples[k], np.float64) for k in ("loo_mem", "loo_mem_low", "loo_mem_high"))
    strata = np.asarray(examples["stratum"]).astype(str)
    for ax, rate in zip(axes, rates):
        y = np.asarray(examples[f"mem_rate_{rate}"], np.float64)
        groups = {"easy": strata == "easy", "mem deciles": np.char.startswith(strata, "mem decile"),
                  "selected": strata == "selected"}  # the selected last: on top
        for label, on in groups.items():
            if on.any():
                ax.errorbar(x[on], y[on], xerr=[x[on] - low[on], high[on] - x[on]], fmt="o", ms=4,
                            color=STRATUM_COLORS.get(label, DECILE_COLOR), alpha=0.6,
                            elinewidth=0.6, label=f"{label} ({int(on.sum())})")
        ax.plot([-1, 1], [-1, 1], color="black", lw=1, ls="--", label="identity")
        origin = int(np.sum((x == 0) & (y == 0)))  # they hide behind each other: count them
        ax.annotate(f"{origin} examples at (0, 0)", (0, 0), xytext=(0.25, -0.25), fontsize=8,
                    arrowprops={"arrowstyle": "->", "lw": 0.8})
        ax.set_xlim(-0.35, 1.05)
        ax.set_ylim(-0.35, 1.05)
        ax.set_xlabel("leave-one-out mem (acc with − acc without, paired seeds)")
        ax.set_ylabel(f"subsampled mem at rate {rate}")
        e = records[rate]["mem"]
        ax.set_title(f"rate {rate}: bias {fmt(e['bias'], '+.3f')}, Spearman {fmt(e['spearman'], '.2f')}")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    return _save_png(fig, path)


def rule_bars(selections: dict, path: Path) -> Path:
    """Precision and recall of every selection rule against LOO-memorized, with intervals
    (horizontal bars; a missing bar is an undefined figure)."""
    names = list(selections)
    fig = Figure(figsize=(10, 0.45 * len(names) + 1.6), dpi=110, layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    ypos = np.arange(len(names))
    for ax, what, color in zip(axes, ("precision", "recall"), ("#2ca02c", "#9467bd")):
        values = np.array([np.nan if selections[n][what] is None else selections[n][what] for n in names])
        cis = np.array([[np.nan if c is None else c for c in selections[n][f"{what}_ci"]] for n in names])
        err = np.abs(np.stack([values - cis[:, 0], cis[:, 1] - values]))
        ax.barh(ypos, np.nan_to_num(values), xerr=np.nan_to_num(err), color=color, alpha=0.8,
                capsize=3, error_kw={"elinewidth": 1})
        for y, v in zip(ypos, values):  # 0 and undefined look alike as bars: say which
            ax.text(0.01, y, "undefined" if np.isnan(v) else f"{v:.2f}", va="center", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_xlabel(f"{what} against LOO-memorized (dataset-weighted)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(ypos, [f"{n} ({selections[n]['selected_in_run']})" for n in names])
    axes[0].invert_yaxis()
    fig.suptitle("Selection rules against leave-one-out (rule @ rate, examples it selects)")
    return _save_png(fig, path)


def _estimator_rows(records: dict) -> list:
    rows = []
    for rate, per in records.items():
        for name, e in per.items():
            pk = e["precision_at_k"]
            sel = e.get("on_selected")
            rows.append([rate, ESTIMATOR_NAMES.get(name, name),
                         ci(e["bias"], *e["bias_ci"], ".3f") if e["bias"] is not None else "(other scale)",
                         ci(sel["bias"], *sel["bias_ci"], ".3f") if sel else "–",
                         ci(e["rmse"], *e["rmse_ci"], ".3f") if e["rmse"] is not None else "–",
                         ci(e["spearman"], *e["spearman_ci"]),
                         f"{pk['hits']}/{pk['k']}" if pk["k"] else "n/a"])
    return rows


def _proxy_lines(proxies: dict) -> list:
    if not proxies["available"]:
        return [f"Cheap proxies (cumulative training loss, learning epoch): not measured: "
                f"{proxies['reason']}.", ""]
    rows = [[rate, name, ci(p["vs_loo"]["spearman"], *p["vs_loo"]["spearman_ci"]),
             ci(p["vs_mem"]["spearman"], *p["vs_mem"]["spearman_ci"]),
             f"{p['precision_at_k']['hits']}/{p['precision_at_k']['k']}" if p["precision_at_k"]["k"] else "n/a"]
            for rate, per in proxies["by_rate"].items() for name, p in per.items()]
    return (["Cheap proxies, averaged over the estimation models of each rate that trained on the "
             "example: the cumulative training loss (CSL, Ravikumar et al. 2025) and the epoch from "
             "which the example stays learned. Spearman against leave-one-out (on the sample) and "
             "against the subsampled mem of the same rate (every non-canary example):", ""]
            + table(["rate", "proxy", "Spearman vs LOO mem", "Spearman vs subsampled mem",
                     "precision@k"], rows))


def loo_section(run_dir, fig_dir: Path, level: int = 2) -> list:
    """Markdown lines of the section (and its two plots in ``fig_dir``); [] without loo.json.

    level: the heading level, so that a "How good are these scores?" section can nest it.
    """
    d = Path(run_dir) / LOO_DIR
    if not (d / rundir.LOO).exists():
        return []
    rec = rundir.load_json(d / rundir.LOO, expect=dict)
    examples = rundir.read_csv_columns(d / EXAMPLES_CSV)
    rates = list(rec["estimators"])
    mem_scatter(examples, rates, rec["estimators"], fig_dir / SCATTER_PNG)
    rule_bars(rec["selections"], fig_dir / RULES_PNG)
    lm, settings = rec["loo_mem"], rec["settings"]
    hashes = "#" * level
    lines = [f"{hashes} How good are these scores? Against exact leave-one-out", "",
             f"{rec['examples']} training examples, sampled across the run's scores (strata below), "
             f"each left out of one model per seed: {rec['seeds_used']} paired seeds "
             f"({rec['models']} models: one full-set model per seed, shared by all examples, and one "
             "model per example and seed without it, same initialisation and data order). "
             "LOO mem = accuracy on the example with it minus without it, over the seeds, with "
             f"Newcombe's paired {settings['confidence']:.0%} interval; \"LOO-memorized\" = that "
             f"interval above 0 and LOO mem ≥ {settings['min_effect']:g}. The LOO models train on "
             "the dataset's own labels (no canaries). Figures over the dataset are weighted by "
             "how many examples each sampled one stands for; intervals are stratified bootstraps.", "",
             f"Mean LOO mem over the dataset {ci(lm['mean']['mean'], *lm['mean']['mean_ci'], '.3f')}; "
             f"share LOO-memorized {ci(lm['memorized_share']['mean'], *lm['memorized_share']['mean_ci'], '.3f')} "
             f"({lm['memorized_in_sample']} of the {rec['examples']} sampled examples).", ""]
    lines += table(["stratum", "examples", "sampled"],
                   [[s["name"], s["population"], s["sampled"]] for s in rec["sample"]["strata"] if s["population"]])
    lines += ["Each estimator of the run, one rate at a time, against leave-one-out: bias (mean "
              "estimate − the same definition's LOO value, over the dataset and over the examples "
              "some rule selects; scores with no LOO counterpart on their scale are compared by rank "
              "only) and RMSE; Spearman against LOO mem (on the sample); precision@k (of the k "
              "sampled examples it ranks highest, k = the LOO-memorized ones, how many are):", ""]
    lines += table(["rate", "estimator", "bias", "bias on selected", "RMSE", "Spearman", "precision@k"],
                   _estimator_rows(rec["estimators"]))
    lines += [img(f"{rundir.REPORT_FIGURES}/{SCATTER_PNG}", "subsampled mem against leave-one-out mem"), ""]
    srows = [[name, s["selected_in_run"], ci(s["precision"], *s["precision_ci"]), ci(s["recall"], *s["recall_ci"])]
             for name, s in rec["selections"].items()]
    lines += ["Each selection rule (at each rate) against LOO-memorized:", ""]
    lines += table(["rule @ rate", "selected in the run", "precision", "recall"], srows)
    lines += [img(f"{rundir.REPORT_FIGURES}/{RULES_PNG}", "precision and recall of the rules"), ""]
    inf = rec["influence"]
    if inf is not None:
        lines += [f"Influence: the run's estimate at rate {inf['rate']:g} against LOO influence on each "
                  f"sampled example's top {inf['partners']} test partners ({inf['pairs']} pairs): mean "
                  f"estimate {fmt(inf['mean_estimated'])}, mean LOO {fmt(inf['mean_loo'])}; bias "
                  f"{ci(inf['bias'], *inf['bias_ci'], '.3f')}, Spearman {ci(inf['spearman'], *inf['spearman_ci'])}; "
                  f"{fmt(inf['loo_positive_share'], '.0%')} of the pairs have a LOO interval above 0.", ""]
    return lines + _proxy_lines(rec["proxies"])
