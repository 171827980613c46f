"""The verdict of the removal experiment in words (``verdict.txt``, retrain.json's ``verdict``).

How a comparison is decided (:func:`direction`): the seed-bootstrap interval and the paired
permutation test (Holm-adjusted within its family) must agree; numbers are printed in
percentage points with a real minus sign (:func:`pp`) and p-values to the digits that
matter (:func:`p_text`).
"""

from __future__ import annotations

from jmem.scores import paired, protocols
from jmem.study.retrain.design import ABLATION_PREFIX, Design, Group, cell_group

SIGNIFICANCE = 0.05


def pp(x: float) -> str:
    """Two decimals with a real minus sign; one significant digit where two decimals would
    print a non-zero bound as 0.00 (so "[−0.32, −0.004]" does not read as touching 0)."""
    text = f"{abs(x):.2f}"
    if text == "0.00" and x != 0:
        text = f"{abs(x):.1g}"
    return f"\u2212{text}" if x < 0 and text != "0.00" else text


def _share(x: float) -> str:
    return f"{x:.2f}".replace("-", "\u2212")


def p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else (f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}")


ROUNDING_PP = 1e-9  # |bound| below this (pp) is 0: quantile interpolation leaves ~1e-15


def _snap(x: float) -> float:
    return 0.0 if abs(x) < ROUNDING_PP else x


def interval(c: paired.Comparison) -> tuple[float, float]:
    """The interval a verdict decides on: the seed bootstrap, the one that matches the paired
    permutation test and the minimum detectable effect (all three take the test set as
    given and ask what another draw of training seeds would do). Bounds within rounding of
    0 are 0 (differences are multiples of 100/T pp, so a bound can sit exactly on 0)."""
    return _snap(c.ci_low), _snap(c.ci_high)


def decisive_p(c: paired.Comparison) -> float:
    """The p-value a verdict decides on: Holm-adjusted within the comparison's family (the
    same comparison across methods, or across sweep points) when there is one."""
    return c.p_holm if c.p_holm is not None else c.p_perm


def direction(c: paired.Comparison) -> str:
    """"lower" / "higher" when the seed interval excludes 0 on that side AND the paired
    permutation test (Holm-adjusted, :func:`decisive_p`) rejects at ``SIGNIFICANCE``; "none"
    when the interval contains 0; "inconclusive" when the two disagree (an effect near the
    detection limit, or few seeds, where the bootstrap interval is a little narrow)."""
    low, high = interval(c)
    if low <= 0 <= high:
        return "none"
    if decisive_p(c) >= SIGNIFICANCE:
        return "inconclusive"
    return "lower" if high < 0 else "higher"


def _effect(c: paired.Comparison, two_level: bool = False) -> str:
    low, high = interval(c)
    text = f"{pp(c.mean_diff)} pp [{pp(low)}, {pp(high)}]"
    if two_level and c.ci2_low is not None:
        text += (f" (resampling test examples too: [{pp(_snap(c.ci2_low))}, "
                 f"{pp(_snap(c.ci2_high))}])")
    return text


def conclusion(c: paired.Comparison, set_label: str) -> str:
    d = direction(c)
    if d == "lower":
        return f"lowers {set_label} accuracy"
    if d == "higher":
        return f"does not lower {set_label} accuracy (it raises it)"
    if d == "inconclusive":
        return (f"has an inconclusive effect on {set_label} accuracy (the interval excludes 0 but "
                f"the {'Holm-adjusted ' if c.p_holm is not None and c.p_holm != c.p_perm else ''}"
                f"permutation test does not reject, {p_text(decisive_p(c))}; more seeds needed)")
    return (f"does not lower {set_label} accuracy detectably (an effect of {pp(c.mde)} pp or "
            "larger would have been detected with 80% power)")


_SET_LABELS = {"test": "test", "test_clean": "leakage-free test", "influenced": "influenced test",
               "rest": "rest-of-test"}


def _label(g: Group) -> str:
    info = g.info
    if g.method == "fixed":
        return f"fixed-{info['threshold']:g} (mem >= {info['threshold']:g})"
    if g.method == "fdr":
        return f"fdr (BH q = {info.get('q', float('nan')):g}, mem >= {info.get('min_effect', float('nan')):g})"
    if g.method:
        return g.method
    if g.tau is not None:
        return f"the sweep point mem >= {g.tau:g}"
    return f"the user set {info['path']}"


def _holm_text(c: paired.Comparison, size: int, g: Group) -> str:
    if size < 2 or c.p_holm is None:
        return ""
    over = "sweep points" if g.method is None else "methods"
    return f", Holm-adjusted over {size} {over} {p_text(c.p_holm)}"


def _protocol_label(cell: protocols.Protocol, rates: tuple) -> str:
    parts = [f"rate {rates[1] if cell.rate else rates[0]:g}",
             ("definition: Fisher test with mem >= min_effect" if cell.definition else "definition: mem"),
             ("threshold: calibrated (" + ("Benjamini-Hochberg FDR" if cell.definition else "placebo null") + ")")
             if cell.threshold else ("threshold: hand-picked (" + ("p <= 0.05 per example" if cell.definition
                                                                  else "mem >= 0.25") + ")"),
             "leakage-free test set" if cell.leakage else "original test set"]
    return "; ".join(parts)


def protocols_text(design: Design, by: dict, ablation: dict, num_examples: int) -> list[str]:
    """Verdict paragraphs of the two protocols (Feldman & Zhang's and the corrected one) and
    the main effect of each correction, from the ablation's cells."""
    lines = []
    for cell, title in ((protocols.FZ, "Feldman & Zhang's protocol"), (protocols.CORRECTED, "The corrected protocol")):
        group = cell_group(cell.selection_key)
        label = _protocol_label(cell, design.ablation_rates)
        test_set = "test_clean" if cell.leakage else "test"
        c = by.get((f"{group}:selected", f"{group}:matched", test_set))
        if group not in design.groups:
            lines.append(f"{title} ({label}) selects no example: nothing to remove, no effect.")
            continue
        if c is None:
            lines.append(f"{title} ({label}): too few non-diverged seeds to compare.")
            continue
        k = int(design.groups[group].removed.sum())
        lines.append(f"{title} ({label}) removes {k} examples ({100 * k / num_examples:.1f}%): "
                     f"accuracy on the {_SET_LABELS.get(test_set, test_set)} set changed by "
                     f"{_effect(c, True)} against removing {k} class-matched random examples "
                     f"({p_text(c.p_perm)}, {c.n_seeds} seeds; minimum detectable effect {pp(c.mde)} pp). "
                     f"Verdict: removing them {conclusion(c, _SET_LABELS[test_set])}.")
    effects = "; ".join(f"{e['factor']} {_signed(e['effect_pp'])} pp [{_signed(e['ci_low'])}, "
                        f"{_signed(e['ci_high'])}] (Holm p {_p_plain(e['p_holm'])})"
                        for e in ablation["main_effects"])
    lines.append(f"Ablation ({ablation['seeds']} seeds, all 16 cells): main effect of switching each "
                 f"correction on, on the selected-minus-matched difference: {effects}. A positive "
                 "effect means the correction makes removal look less costly.")
    return lines


def _signed(x) -> str:
    return "n/a" if x is None else f"{x:+.2f}".replace("-", "−")


def _p_plain(p) -> str:
    return "n/a" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3g}")


def verdict_text(design: Design, comparisons: list[dict], share: dict, num_examples: int,
                 excluded: int, ablation: dict | None = None) -> str:
    """The verdict paragraph: per removal set, selected vs class-matched random on the test
    and leakage-free test sets (and every other set), then the F&Z baselines and share."""
    by = {(e["a"], e["b"], e["test_set"]): e["comparison"] for e in comparisons}
    family = {(e["a"], e["b"], e["test_set"]): e.get("family_size", 1) for e in comparisons}
    lines = [f"Removal experiment, {design.seeds} seeds per arm (seed s of every arm shares its "
             "initialisation and data order). Differences are arm minus arm in percentage points "
             "(pp) with 95% bootstrap intervals over seeds; p: paired sign-flip permutation test."]
    if ablation is not None:  # the question's answer first: the two protocols, then the ablation
        lines += protocols_text(design, by, ablation, num_examples)
    for g in design.groups.values():
        if g.name.startswith(ABLATION_PREFIX):
            continue  # the ablation's cells have their own paragraph (protocols_text)
        sel, matched = f"{g.name}:selected", f"{g.name}:matched"
        k = int(g.removed.sum())
        main = by.get((sel, matched, "test"))
        if main is None:
            lines.append(f"{_label(g)}: too few non-diverged seeds to compare.")
            continue
        text = (f"Removing the {k} examples selected by {_label(g)} ({100 * k / num_examples:.1f}% "
                f"of {num_examples}) changed test accuracy by {_effect(main, True)} relative to "
                f"removing {k} class-matched random examples (paired permutation {p_text(main.p_perm)}"
                + _holm_text(main, family[(sel, matched, "test")], g)
                + f", {main.n_seeds} seeds)")
        others = []
        for ts in ("test_clean", "influenced", "rest", *sorted({e["test_set"] for e in comparisons}
                                                              - {"test", "test_clean", "influenced", "rest"})):
            c = by.get((sel, matched, ts))
            if c is None:
                continue
            size = (f" ({int(g.influenced.sum())} examples)" if ts == "influenced" else "")
            others.append(f"on the {_SET_LABELS.get(ts, ts)} set{size} by {_effect(c, ts == 'test_clean')} "
                          f"({p_text(c.p_perm)}{_holm_text(c, family[(sel, matched, ts)], g)}; "
                          f"minimum detectable effect {pp(c.mde)} pp)")
        text += ("; " + "; ".join(others) if others else "") + "."
        verdicts = [f"removing them {conclusion(main, 'test')}"]
        clean = by.get((sel, matched, "test_clean"))
        if clean is not None:
            verdicts.append(f"on the leakage-free test set it {conclusion(clean, 'test')}")
        text += " Verdict: " + "; ".join(verdicts) + "."
        base = []
        for other, what in ((f"{g.name}:random", "removing as many uniformly random examples"),
                            ("full", "the full training set")):
            c = by.get((sel, other, "test"))
            if c is not None:
                base.append(f"{_effect(c)} against {what} ({p_text(c.p_perm)})")
        if base:
            text += " Test accuracy change " + ", and ".join(base) + "."
        sh = share.get(g.name, {})
        if sh.get("estimate") is not None:
            rng_text = (f" [{_share(sh['low'])}, {_share(sh['high'])}]" if sh.get("low") is not None
                        else " (interval undefined: the total change is not distinguishable from 0)")
            text += (f" Feldman & Zhang's accounting: the {sh['influenced_size']} influenced test "
                     f"examples carry a share {_share(sh['estimate'])}{rng_text} of the change against "
                     "the full training set.")
        lines.append(text)
    for name, why in design.skipped.items():
        lines.append(f"{name}: {why}; no arm trained.")
    if excluded:
        lines.append(f"{excluded} diverged model(s) were left out of every statistic.")
    return "\n\n".join(lines) + "\n"
