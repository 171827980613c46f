"""The verdict of the removal experiment: gates first, then words (``verdict.txt``, the top of
``report.md``, the terminal).

**Gates** (:func:`gates`), each with its figure, its bar and what would fix it:

1. *convergence*: the estimation models fit the non-canary training examples they trained on
   (share ``>= retrain.gate_fitted`` at each rate the protocols read), and the canaries'
   AUROC of mem reaches ``retrain.gate_canary_auroc`` (runs with canaries). Unconverged models
   memorize nothing in particular: fix with more epochs.
2. *selection reliability*: the two estimation pools' removal sets of the protocol agree at
   Jaccard ``>= retrain.gate_jaccard`` (F&Z's two 2,000-model CIFAR-100 estimates agreed at
   about 0.7): fix with more estimation models.
3. *power* (for "no change" only): the minimum detectable effect of the decision interval is
   at most ``retrain.gate_mde_pp``: fix with more retraining seeds or a larger test set.

A protocol whose gate fails gets "inconclusive: <gate>: <figure> (<fix>)", never a direction.
Otherwise the word follows the generalising interval at the family's Bonferroni level
(:mod:`.statistics`): below 0 "costs accuracy", above 0 "raises accuracy", else "no change
detected" (with the size it rules out).
"""

from __future__ import annotations

PROTOCOL_TEST_SET = {"Feldman & Zhang": "test", "corrected": "test_clean"}
FIX = {"convergence": "train the estimation models longer (train.epochs)",
       "reliability": "more estimation models (train.num_models)",
       "power": "more retraining seeds (retrain.seeds) or a larger test set"}


def pp(x: float | None) -> str:
    """Two decimals with a real minus sign; one significant digit where two decimals would
    print a non-zero number as 0.00."""
    if x is None:
        return "n/a"
    text = f"{abs(x):.2f}"
    if text == "0.00" and x != 0:
        text = f"{abs(x):.1g}"
    return f"\u2212{text}" if x < 0 and text != "0.00" else text


def p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else (f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}")


def _convergence(run_figures: dict, rates: list, cfg) -> list[dict]:
    out = []
    for rate in rates:
        fig = run_figures.get(f"rate_{rate:g}", {}).get("convergence", {})
        fitted, auroc = fig.get("fitted_share"), fig.get("canary_auroc_mem")
        if fitted is not None:
            out.append({"gate": "convergence", "what": f"fitted share at rate {rate:g}", "value": fitted,
                        "bar": cfg.gate_fitted, "passed": fitted >= cfg.gate_fitted})
        if auroc is not None:
            out.append({"gate": "convergence", "what": f"canary AUROC of mem at rate {rate:g}", "value": auroc,
                        "bar": cfg.gate_canary_auroc, "passed": auroc >= cfg.gate_canary_auroc})
    return out


def gates(design, head: dict, run_figures: dict, rates: tuple | None, cfg) -> dict:
    """{protocol label: [gate result]} for the two protocols. run_figures: thresholds.json's
    ``by_rate``; rates: the ablation's (off, on) rates."""
    out = {}
    if rates is None:
        return out
    for entry in head["protocols"]:
        label = entry["protocol"]
        if entry["test_set"] != PROTOCOL_TEST_SET[label] or label in out:
            continue
        rate = rates[1] if label == "corrected" else rates[0]
        results = _convergence(run_figures, [rate], cfg)
        group = design.groups.get(entry["group"]) if entry.get("group") else None
        jac = None if group is None else group.info.get("jaccard_pools")
        results.append({"gate": "reliability", "what": "Jaccard of the two pools' removal sets",
                        "value": jac, "bar": cfg.gate_jaccard,
                        "passed": jac is not None and jac >= cfg.gate_jaccard,
                        **({"note": "one pool: reliability not measured (retrain.pools=1)"}
                           if design.pools == 1 else {})})
        mde = entry.get("mde_pp")
        results.append({"gate": "power", "what": "minimum detectable effect (pp)", "value": mde,
                        "bar": cfg.gate_mde_pp, "passed": mde is not None and mde <= cfg.gate_mde_pp,
                        "applies_to": "a 'no change' answer only"})
        out[label] = results
    return out


def _bar(gate: dict) -> str:
    """The bar of a gate as a condition: ``>= 0.95`` (convergence, reliability), ``<= 2`` (power)."""
    return f"{'<=' if gate['gate'] == 'power' else '>='} {gate['bar']:g}"


def decide(entry: dict, gate_results: list[dict]) -> str:
    """The word for one protocol's comparison (module docstring)."""
    if entry["status"] != "estimable":
        return entry["status"]
    blocking = [g for g in gate_results if g["gate"] != "power" and not g["passed"]]
    if blocking:
        g = blocking[0]
        value = "n/a" if g["value"] is None else f"{g['value']:.3f}"
        return f"inconclusive: {g['gate']}: {g['what']} {value}, needs {_bar(g)} (fix: {FIX[g['gate']]})"
    low, high = entry["ci_low"], entry["ci_high"]
    if high < 0:
        return "costs accuracy"
    if low > 0:
        return "raises accuracy"
    power = next((g for g in gate_results if g["gate"] == "power"), None)
    if power is not None and not power["passed"]:
        return (f"inconclusive: power: minimum detectable effect {pp(power['value'])} pp, needs "
                f"{_bar(power)} pp (fix: {FIX['power']})")
    return (f"no change detected (a cost beyond {pp(abs(low))} pp and a gain beyond {pp(high)} pp are "
            "ruled out)")


def _protocol_line(entry: dict, design, rates, word: str) -> str:
    label = entry["protocol"]
    group = design.groups.get(entry["group"]) if entry.get("group") else None
    rate = (rates[1] if label == "corrected" else rates[0]) if rates else None
    what = ("rate {r:g}, fractional score, null-calibrated cut, leakage-free test set"
            if label == "corrected" else "rate {r:g}, mem >= 0.25, original test set").format(r=rate or 0)
    if group is not None:
        what += "; " + " / ".join(str(x) for x in group.info["removed"]) + " removed"
    if entry["status"] != "estimable":
        return f"  {label} ({what}): {word}"
    so = entry.get("seed_only") or {}
    return (f"  {label} ({what}): {pp(entry['estimate_pp'])} pp "
            f"[{pp(entry['ci_low'])}, {pp(entry['ci_high'])}] (on this test set and selection, seeds "
            f"only: [{pp(so.get('ci_low'))}, {pp(so.get('ci_high'))}]): {word}")


def verdict_text(design, head: dict, gate_results: dict, rates: tuple | None, dataset: str,
                 num_examples: int, canaries: int) -> tuple[str, dict]:
    """(the short verdict, {protocol: word}). A few hundred words at most: the question, one
    line per protocol, the gates, the size-matched main effects; details are in retrain.json
    and report.md."""
    words = {}
    lines = [f"Does removing the training examples a protocol calls memorized cost test accuracy, "
             f"compared with removing as many random examples of the same classes? ({dataset}, "
             f"{num_examples} training examples)",
             f"Answer (accuracy difference, pp; interval for new seeds, new test data"
             + (" and a new estimation run" if design.pools == 2 else "")
             + f", at {100 * head['level']:.1f}% = 1 - {head['alpha']:g}/{max(head['m'], 1)}):"]
    for entry in head["protocols"]:
        label = entry["protocol"]
        if entry["test_set"] != PROTOCOL_TEST_SET[label]:
            continue
        word = decide(entry, gate_results.get(label, []))
        words[label] = word
        lines.append(_protocol_line(entry, design, rates, word))
    if gate_results:
        parts = []
        for label, results in gate_results.items():
            shown = ", ".join(f"{g['what'].split(' (')[0]} {'n/a' if g['value'] is None else format(g['value'], '.3g')}"
                              f"{'' if g['passed'] else ' (needs ' + _bar(g) + ')'}" for g in results)
            parts.append(f"{label}: {shown}")
        lines.append("Gates: " + "; ".join(parts) + ".")
    matched = [e for e in head["effects"] if e["estimand"] == "size-matched"]
    if matched:
        shown = []
        for e in matched:
            if e["status"] == "estimable":
                shown.append(f"{e['factor']} {pp(e['estimate_pp'])} [{pp(e['ci_low'])}, {pp(e['ci_high'])}]")
            else:
                shown.append(f"{e['factor']} {e['status'].split(':')[0]}")
        lines.append("Which examples, at equal size (size-matched main effects, pp): " + "; ".join(shown) + ".")
    if canaries:
        lines.append(f"{canaries} canaries validated the scores; none was removed, and the retrained "
                     "models saw true labels only.")
    lines.append("Details: retrain/retrain.json, report.md.")
    return "\n".join(lines) + "\n", words


def methods_text(comparisons: list[dict]) -> str:
    """One line per rule, sweep point or user set (selected vs matched random, test set):
    the exploratory comparisons outside the ablation."""
    lines = []
    for c in comparisons:
        if c["b"] != "matched" or c["test_set"] != "test" or c["group"].startswith(("cell:", "matched:", "curve:")):
            continue
        lines.append(f"  {c['group']}: {pp(c['estimate_pp'])} pp [{pp(c['ci_low'])}, {pp(c['ci_high'])}] "
                     f"(exploratory, 95%)")
    return "\n".join(lines)
