"""The report's plots: one function per figure, arrays in, a PNG file out.

Matplotlib's object API on the Agg canvas (``matplotlib.figure.Figure``): no pyplot, no
global backend state, no display needed. Every function takes plain arrays/dicts (already
read from the run directory by :mod:`jmem.study.report`), writes ``path`` atomically and
returns it. Axis labels name the quantity and its unit; titles say what to look for.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from jmem.study import rundir

DPI = 110
CANARY_COLOR = "#d62728"
BASE_COLOR = "#1f77b4"
METHOD_COLORS = {"fixed": "#2ca02c", "top_k": "#9467bd", "fdr": "#ff7f0e", "null": "#8c564b",
                 "canary": "#d62728"}
SCORE_LABELS = {"mem": "memorization  acc_in - acc_out",
                "fractional": "fractional score  (acc_in - acc_out) / (acc_in + acc_out)",
                "lira": "LiRA statistic  (margin_in - margin_out) / sd_out",
                "cscore": "C-score  (held-out accuracy)",
                "neg_log10_p": "-log10 Fisher p", "one_minus_cscore": "1 - C-score"}


def _figure(width: float = 6.4, height: float = 4.2, **subplots):
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return fig, fig.subplots(**subplots)


def _save(fig: Figure, path) -> Path:
    """Render ``fig`` as PNG and write it atomically (a temporary name of its own: two
    processes never share one)."""
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    rundir.save_bytes(path, buffer.getvalue())
    return path


def score_histograms(scores: dict, canary, thresholds: dict, path) -> Path:
    """2x2 histograms of ``scores`` (name -> float[N]); canaries stacked in red.

    thresholds: name -> list of (label, value) vertical lines (e.g. each method's cut on mem).
    Counts on a log axis: the memorized tail is a few percent of the examples.
    """
    names = list(scores)
    canary = np.zeros(len(next(iter(scores.values()))), bool) if canary is None else canary
    fig, axes = _figure(10, 7.2, nrows=2, ncols=2)
    for ax, name in zip(axes.flat, names):
        x = np.asarray(scores[name], np.float64)
        ok = np.isfinite(x)
        data = [x[ok & ~canary]] + ([x[ok & canary]] if canary.any() else [])
        labels = ["other examples"] + (["canaries"] if len(data) > 1 else [])
        colors = [BASE_COLOR, CANARY_COLOR][:len(data)]
        lo, hi = (np.min(x[ok]), np.max(x[ok])) if ok.any() else (0.0, 1.0)
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 41)
        ax.hist(data, bins=bins, stacked=True, color=colors, label=labels)
        ax.set_yscale("log")
        # Distinct dash patterns: several methods can share a cut (e.g. top_k and null at 0).
        dashes = [(None, None), (5, 2), (2, 2), (6, 2, 1, 2), (1, 1)]
        for n, (label, value) in enumerate(thresholds.get(name, [])):
            if value is not None and np.isfinite(value):
                ax.axvline(value, color=METHOD_COLORS.get(label.split()[0], "k"), lw=1.4,
                           dashes=dashes[n % len(dashes)] if n else (4, 2),
                           label=f"{label} = {value:.3g}")
        ax.set_xlabel(SCORE_LABELS.get(name, name))
        ax.set_ylabel("examples (log scale)")
        ax.legend(fontsize=7, loc="best", framealpha=0.9)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.suptitle("Per-example scores (dashed lines: selection thresholds on mem, canary cuts on the others)")
    return _save(fig, path)


def acc_scatter(acc_in, acc_out, canary, mem_threshold: float, path) -> Path:
    """acc_out against acc_in per example, canaries in red, the ``mem >= threshold`` region."""
    fig, ax = _figure(5.6, 5.2)
    rng = np.random.default_rng(0)
    # Accuracies are fractions of a few hundred models: a tiny jitter separates stacked points.
    j = lambda n: rng.uniform(-0.006, 0.006, n)  # noqa: E731
    acc_in, acc_out = np.asarray(acc_in, float), np.asarray(acc_out, float)
    base = ~canary if canary is not None else np.ones(acc_in.shape, bool)
    ax.scatter(acc_in[base] + j(base.sum()), acc_out[base] + j(base.sum()), s=6, alpha=0.35,
               color=BASE_COLOR, label="other examples", linewidths=0)
    if canary is not None and canary.any():
        ax.scatter(acc_in[canary], acc_out[canary], s=22, color=CANARY_COLOR, marker="x",
                   label=f"canaries ({int(canary.sum())})")
    ax.plot([0, 1], [0, 1], color="0.4", lw=1, label="acc_in = acc_out (mem = 0)")
    ax.plot([mem_threshold, 1], [0, 1 - mem_threshold], color=METHOD_COLORS["fixed"], ls="--",
            lw=1.2, label=f"mem = {mem_threshold:g} (below: selected by fixed)")
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("acc_in: accuracy of models trained on the example")
    ax.set_ylabel("acc_out: accuracy of models not trained on it")
    ax.set_title("Trained-on vs held-out accuracy per training example", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def scores_vs_rate(rates, mem_by_rate, acc_out_by_rate, canary, path) -> Path:
    """Memorization and held-out accuracy (C-score profile) against the inclusion rate.

    mem_by_rate, acc_out_by_rate: float[G, N] (rows follow ``rates``). Lines: the mean over
    canaries and over the other examples; bands: the other examples' 10-90% range.
    """
    rates = np.asarray(rates, float)
    fig, axes = _figure(10, 4.2, ncols=2)
    groups = [("other examples", ~canary if canary is not None else None, BASE_COLOR)]
    if canary is not None and canary.any():
        groups.append(("canaries", canary, CANARY_COLOR))
    for ax, values, ylabel in ((axes[0], mem_by_rate, "memorization  acc_in - acc_out"),
                               (axes[1], acc_out_by_rate, "held-out accuracy acc_out (C-score)")):
        values = np.asarray(values, float)
        for label, mask, color in groups:
            v = values if mask is None else values[:, mask]
            with np.errstate(all="ignore"):
                ax.plot(rates, np.nanmean(v, axis=1), "o-", color=color, label=f"{label}: mean")
                if label == "other examples":
                    ax.fill_between(rates, np.nanquantile(v, 0.1, axis=1),
                                    np.nanquantile(v, 0.9, axis=1), color=color, alpha=0.2,
                                    label=f"{label}: 10-90% range")
        ax.set_xlabel("inclusion rate (share of the training set each model sees)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle("Scores against the inclusion rate (consistency profile)")
    return _save(fig, path)


ROC_ZOOM = 0.1  # the false-positive rates where a usable threshold lives


def roc_ranges(curves: dict, zoom: float = ROC_ZOOM) -> tuple[float, ...]:
    """The FPR ranges the ROC plot shows: the zoom alone when every curve reaches 95% TPR
    inside it (the full range would show only lines hugging the top-left corner), else the
    full range too. curves: name -> (fpr, tpr, auroc, fpr@95%TPR)."""
    reach = [f95 for _, _, _, f95 in curves.values()]
    if reach and all(f is not None and np.isfinite(f) and f <= zoom for f in reach):
        return (zoom,)
    return (1.0, zoom)


def roc_plot(curves: dict, path) -> Path:
    """ROC of each score against the canaries: name -> (fpr list, tpr list, auroc, fpr@95).

    FPR up to 0.1, where a usable threshold lives, and the whole curve beside it when some
    score needs more than that to flag 95% of the canaries (:func:`roc_ranges`).
    """
    ranges = roc_ranges(curves)
    fig, axes = _figure(5 * len(ranges) + 0.4, 4.4, ncols=len(ranges), squeeze=False)
    axes = axes[0]
    for ax, xmax in zip(axes, ranges):
        for name, (fpr, tpr, auc, f95) in curves.items():
            label = f"{name}: AUROC {auc:.3f}, FPR@95%TPR {f95:.3f}" if auc is not None and \
                f95 is not None else name
            ax.step(fpr, tpr, where="post", label=label)
        ax.axhline(0.95, color="0.5", ls=":", lw=1, label="TPR = 0.95")
        ax.set_xlim(-0.005 * xmax, xmax)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("false-positive rate (non-canaries flagged)")
        ax.set_ylabel("true-positive rate (canaries flagged)")
        ax.grid(alpha=0.3)
    for ax, xmax in zip(axes, ranges):
        ax.set_title("ROC against the re-labelled canaries" + (f" (FPR <= {xmax:g})" if xmax < 1 else ""),
                     fontsize=10)
    axes[-1].legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def split_half_plot(mem_a, mem_b, rho: float, jaccard: dict, n_selected: dict, path) -> Path:
    """Left: mem of the even-id models against the odd-id models; right: Jaccard per method."""
    fig, axes = _figure(10, 4.4, ncols=2)
    a, b = np.asarray(mem_a, float), np.asarray(mem_b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    axes[0].scatter(a[ok], b[ok], s=5, alpha=0.3, color=BASE_COLOR, linewidths=0)
    axes[0].plot([-1, 1], [-1, 1], color="0.4", lw=1)
    lo = min(a[ok].min(), b[ok].min(), 0) - 0.05 if ok.any() else -1
    axes[0].set_xlim(lo, 1.05)
    axes[0].set_ylim(lo, 1.05)
    axes[0].set_xlabel("mem from the even-id models")
    axes[0].set_ylabel("mem from the odd-id models")
    axes[0].set_title(f"Split halves: Spearman {rho:.3f}", fontsize=10)
    names = list(jaccard)
    vals = [jaccard[n] if jaccard[n] is not None and np.isfinite(jaccard[n]) else 0 for n in names]
    bars = axes[1].bar(names, vals, color=[METHOD_COLORS.get(n, "0.5") for n in names])
    axes[1].tick_params(axis="x", labelrotation=25)  # rule names are long: keep them apart
    for label in axes[1].get_xticklabels():
        label.set_horizontalalignment("right")
    for bar, n in zip(bars, names):
        sa, sb = n_selected[n]
        axes[1].text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.02,
                     f"{jaccard[n]:.2f}\n({sa} / {sb})" if jaccard[n] is not None and
                     np.isfinite(jaccard[n]) else f"n/a\n({sa} / {sb})", ha="center",
                     va="bottom", fontsize=8)
    axes[1].axhline(0.7, color="0.4", ls=":", lw=1, label="0.7 (F&Z, two 2,000-model runs)")
    axes[1].set_ylim(0, 1.25)
    axes[1].set_xlabel("selection method (selected in even / odd half)")
    axes[1].set_ylabel("Jaccard overlap of the halves' selections")
    axes[1].legend(fontsize=7, loc="upper right")
    axes[1].set_title("Do the halves select the same examples?", fontsize=10)
    return _save(fig, path)


def spaced_ticks(ks: list, min_ratio: float = 1.4) -> list:
    """The values of ``ks`` (ascending) to label on a log axis: the last (all models) always,
    and each other one only if it is at least ``min_ratio`` times below the next labelled."""
    shown = []
    for k in reversed(ks):
        if not shown or shown[-1] >= min_ratio * k:
            shown.append(k)
    return shown[::-1]


def stability_plot(rows: list, path, order_text: str = "by model id") -> Path:
    """Spearman and mean |difference| of the first-k scores against all R, over k."""
    fig, axes = _figure(10, 4.2, ncols=2)
    ks = [r["k"] for r in rows]
    for name, color in (("mem", BASE_COLOR), ("cscore", "#ff7f0e")):
        if f"spearman_{name}" not in rows[0]:
            continue
        axes[0].plot(ks, [r[f"spearman_{name}"] for r in rows], "o-", color=color, label=name)
        axes[1].plot(ks, [r[f"mean_abs_diff_{name}"] for r in rows], "o-", color=color, label=name)
    for ax in axes:
        ax.set_xscale("log", base=2)
        shown = spaced_ticks(ks)
        ax.set_xticks(shown, [str(k) for k in shown])
        hidden = [k for k in ks if k not in shown]
        ax.set_xticks(hidden, [""] * len(hidden), minor=True)  # a tick, no label: they would collide
        ax.set_xlabel(f"models used (the first k, {order_text})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("Spearman with the all-model scores")
    axes[1].set_ylabel("mean |score(k) - score(all)|")
    fig.suptitle("Stability: how much the estimate still moves as models are added")
    return _save(fig, path)


def removal_curve(panels: dict, path, ticks: dict | None = None, k: int | None = None) -> Path:
    """Test accuracy against the number of examples removed: each protocol's selection vs as
    many matched random examples, with 95% intervals.

    panels: test set -> {series label "<protocol>: <what> removed" -> (x float[k], mean, low,
    high)}; nothing removed is x = 0. Solid lines: the selection; dashed: matched random.
    ticks: x -> what that point is (``"k/2"``, ``"k"``, ``"mem>=0.25"``), written under its
    count on the x axis; k: the size the multiples refer to, named in the axis label.
    """
    n = len(panels)
    fig, axes = _figure(5.4 * n, 4.4, ncols=n, squeeze=False)
    colors = {"Feldman & Zhang": CANARY_COLOR, "corrected": BASE_COLOR}
    for ax, (test_set, series) in zip(axes[0], panels.items()):
        for label, (x, mean, low, high) in series.items():
            protocol = label.split(":")[0]
            random = "random" in label
            color = colors.get(protocol, "#7f7f7f")
            ax.errorbar(x, mean, yerr=[mean - low, high - mean], fmt="o--" if random else "o-",
                        color=color, alpha=0.55 if random else 1.0, capsize=3, label=label)
        if ticks:
            xs = sorted({0.0, *ticks})
            ax.set_xticks(xs, [f"{ticks[x]}\n{x:g}" if x in ticks else f"{x:g}" for x in xs])
        ax.set_xlabel("training examples removed" + (f" (k = {k}: the size-matched count)" if k else ""))
        ax.set_ylabel(f"accuracy on {test_set.replace('_', ' ')} (%)")
        ax.set_title({"test": "test set", "test_clean": "leakage-free test set"}.get(test_set, test_set), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Removal curve: each protocol's most memorized examples vs as many matched random ones")
    return _save(fig, path)


def loss_curves(history, rates, path, examples: int = 3) -> Path:
    """Training loss per epoch of every model: per inclusion rate, the median over its models
    and their 10-90% band, with a few individual models drawn thin.

    history: float32[R, E], NaN once a model diverged (diverged models are left out);
    rates: float[R], each model's inclusion rate.
    """
    history, rates = np.asarray(history, np.float64), np.asarray(rates, np.float64)
    ok = np.all(np.isfinite(history), axis=1)
    epochs = np.arange(1, history.shape[1] + 1)
    fig, ax = _figure(6.4, 4.2)
    colors = [BASE_COLOR, "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    for n, rate in enumerate(np.unique(rates)):
        rows = history[ok & (rates == rate)]
        if not rows.shape[0]:
            continue
        color = colors[n % len(colors)]
        ax.plot(epochs, np.median(rows, axis=0), color=color, lw=2,
                label=f"rate {rate:g}: median of {rows.shape[0]} models")
        ax.fill_between(epochs, np.quantile(rows, 0.1, axis=0), np.quantile(rows, 0.9, axis=0),
                        color=color, alpha=0.2, label=f"rate {rate:g}: 10-90% of models")
        for row in rows[np.linspace(0, rows.shape[0] - 1, min(examples, rows.shape[0])).astype(int)]:
            ax.plot(epochs, row, color=color, lw=0.6, alpha=0.6)
    finite = history[ok]
    if finite.size and finite.min() > 0 and finite.max() > 10 * finite.min():
        ax.set_yscale("log")  # memorizing drives the loss towards 0: the tail is the story
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean training loss on the model's own subset")
    ax.set_title("Training curves (thin lines: individual models)"
                 + (f"; {int((~ok).sum())} diverged models left out" if (~ok).any() else ""), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def effects_plot(effects: list, path, title: str) -> Path:
    """Horizontal bars of effects (pp) with their intervals: [(label, effect, low, high)]."""
    fig, ax = _figure(6.8, 0.9 + 0.5 * max(len(effects), 1))
    labels = [e[0] for e in effects]
    y = np.arange(len(effects))[::-1]
    eff = np.array([e[1] for e in effects], float)
    lo = np.array([e[2] for e in effects], float)
    hi = np.array([e[3] for e in effects], float)
    ax.barh(y, eff, color=[CANARY_COLOR if v < 0 else BASE_COLOR for v in eff], alpha=0.8)
    ax.errorbar(eff, y, xerr=[eff - lo, hi - eff], fmt="none", ecolor="k", capsize=4)
    ax.axvline(0, color="0.3", lw=1)
    ax.set_yticks(y, labels)
    ax.set_xlabel("change in selected − matched accuracy (pp)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def _show_example(ax, x, mean, std):
    """Draw one example: an image (H, W, C) or a sequence (L, C) in its original scale."""
    x = np.asarray(x, np.float64)
    if mean is not None and std is not None:
        x = x * np.asarray(std) + np.asarray(mean)
    if x.ndim == 3:
        lo, hi = x.min(), x.max()
        img = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray_r" if img.shape[-1] == 1
                  else None, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        ax.plot(x.reshape(x.shape[0], -1))
        ax.set_xticks([])
        ax.set_yticks([])


def example_pairs(rows: list, path, *, title: str, channel_mean=None, channel_std=None) -> Path:
    """The most memorized training examples, each beside its most influenced test example.

    rows: dicts with ``train_x``, ``train_title`` and, when a partner exists, ``test_x``,
    ``test_title`` and ``duplicate`` (a detected near-duplicate: framed in red).
    Two pairs per figure row.
    """
    per_row = 3
    nrows = max(1, int(np.ceil(len(rows) / per_row)))
    # Columns: pair, pair, gap, pair, pair, gap, ...: the narrow gaps keep pairs apart.
    ratios = ([1, 1, 0.3] * per_row)[:-1]
    fig, axes = _figure(9.6, 2.1 * nrows + 0.4, nrows=nrows, ncols=len(ratios), squeeze=False,
                        gridspec_kw={"width_ratios": ratios})
    for ax in axes.flat:
        ax.set_axis_off()
    for i, row in enumerate(rows):
        col = 3 * (i % per_row)
        ax_tr, ax_tt = axes[i // per_row, col], axes[i // per_row, col + 1]
        ax_tr.set_axis_on()
        _show_example(ax_tr, row["train_x"], channel_mean, channel_std)
        ax_tr.set_title(row["train_title"], fontsize=8)
        if row.get("test_x") is not None:
            ax_tt.set_axis_on()
            _show_example(ax_tt, row["test_x"], channel_mean, channel_std)
            ax_tt.set_title(row["test_title"], fontsize=8,
                            color=CANARY_COLOR if row.get("duplicate") else "k")
            if row.get("duplicate"):
                for spine in ax_tt.spines.values():
                    spine.set_edgecolor(CANARY_COLOR)
                    spine.set_linewidth(2.5)
        else:
            ax_tt.text(0.5, 0.5, row.get("test_title", "no test partner"), ha="center",
                       va="center", fontsize=8, wrap=True, transform=ax_tt.transAxes)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
