"""The removal experiment's measurement, statistics and verdict on hand-made outcomes, without
training: the paired differences keep the pools x seeds x test design, empty cells are never
zeros, identical factors are dropped, gates come before words."""

import itertools

import numpy as np
import pytest

from jmem.config import RetrainConfig
from jmem.study.retrain import design, measurement, selection, statistics, verdict

SEEDS, N, T = 6, 12, 40
LABELS = np.repeat([0, 1, 2], 4)


def cand(name, kind, members, key=None, pools=2, influenced=(0, 1)):
    removed = np.zeros((pools, N), bool)
    for p in range(pools):
        removed[p, list(members[p] if isinstance(members[0], (list, tuple)) else members)] = True
    infl = np.zeros((pools, T), bool)
    infl[:, list(influenced)] = True
    return selection.Candidate(name, kind, removed, 0.7, infl, [{}] * pools, name, key=key)


def ablation_design(empty=(), identical_threshold=False, pools=2):
    """All 8 as-defined cells (removing 1-2 examples) and the 4 size-matched ones."""
    cands = []
    for key in itertools.product((False, True), repeat=3):
        if key in empty:
            members = []
        elif identical_threshold:
            members = [0, 4 + int(key[0]) + 2 * int(key[1])]
        else:
            members = [0, 4 + int(key[0]) + 2 * int(key[1]), 9] if key[2] else [0, 4 + int(key[0]) + 2 * int(key[1])]
        name = "cell:" + ("+".join(f for f, on in zip(("rate", "definition", "threshold"), key) if on) or "fz")
        cands.append(cand(name, "cell", members, key, pools) if members else
                     selection.Candidate(name, "cell", np.zeros((pools, N), bool), 0.7, np.zeros((pools, T), bool),
                                         [{}] * pools, name, key=key))
    for key in itertools.product((False, True), repeat=2):
        cands.append(cand(f"matched:{key}", "matched", [1, 5 + int(key[0])], key, pools))
    return design.build_design(cands, LABELS, 3, eligible=np.ones(N, bool), score=np.zeros((pools, N)),
                               seeds=SEEDS, seed=0)


def outcomes(d, correct_of, clean=None, diverged=()):
    """correct[r, j] from ``correct_of(arm, seed) -> bool[T]``."""
    m = d.keep.shape[0]
    correct = np.zeros((m, T), bool)
    for arm in d.arms:
        for s, r in enumerate(d.rows(arm.name)):
            correct[r] = correct_of(arm, s)
    arrays = {"margins_test": np.where(correct, 1.0, -1.0).astype(np.float32),
              "diverged": np.isin(np.arange(m), diverged), "final_loss": np.zeros(m, np.float32)}
    clean = np.ones(T, bool) if clean is None else clean
    if not clean.all():
        arrays["margins_test_clean"] = arrays["margins_test"][:, clean]
    return measurement.outcomes_from_arrays(arrays, np.ones((m, N), np.float32), d.keep, clean)


def gap(selected_wrong=4, noise=0.0, seed=0):
    """Selected arms get ``selected_wrong`` more test examples wrong than the others."""
    gen = np.random.default_rng(seed)

    def correct_of(arm, s):
        c = np.ones(T, bool)
        c[30:] = False  # 75% baseline accuracy
        if arm.kind == "selected":
            c[:selected_wrong] = False
        if noise:
            c ^= gen.random(T) < noise
        return c
    return correct_of


def test_paired_differences_keep_the_design_and_weight_subsets():
    d = ablation_design()
    clean = np.ones(T, bool)
    clean[:2] = False
    o = outcomes(d, gap(selected_wrong=4), clean=clean)
    out = measurement.paired_differences(d, o, "cell:fz", "selected", "matched", "test")
    dd, acc_a, acc_b = out
    assert dd.shape == (2, SEEDS, T) and acc_a.shape == (2, SEEDS)
    assert dd.mean(axis=2) == pytest.approx(np.full((2, SEEDS), -4 / T))
    clean_d = measurement.paired_differences(d, o, "cell:fz", "selected", "matched", "test_clean")[0]
    assert clean_d.mean(axis=2) == pytest.approx(np.full((2, SEEDS), -2 / 38))  # 2 of the 4 are leaked
    infl = measurement.paired_differences(d, o, "cell:fz", "selected", "matched", "influenced")[0]
    assert infl.mean(axis=2) == pytest.approx(np.full((2, SEEDS), -1.0))  # T_h = {0, 1}: both lost


def test_diverged_seeds_are_dropped_in_every_pool():
    d = ablation_design()
    bad = d.rows("cell:fz:matched:p1")[2]
    o = outcomes(d, gap(), diverged=[bad])
    dd = measurement.paired_differences(d, o, "cell:fz", "selected", "matched", "test")[0]
    assert dd.shape == (2, SEEDS - 1, T)


def test_a_constant_gap_is_measured_exactly():
    d = ablation_design()
    o = outcomes(d, gap(selected_wrong=4, noise=0.0))
    entries = statistics.compare_all(d, o, seed=0, resamples=200, alpha=0.05)
    fz = next(e for e in entries if e["group"] == "cell:fz" and e["b"] == "matched" and e["test_set"] == "test")
    assert fz["estimate_pp"] == pytest.approx(-10.0)
    assert fz["ci_high"] < 0 and fz["seed_only"]["ci_low"] == pytest.approx(-10.0)
    assert fz["variance_shares"]["test_examples"] > 0.9  # four fixed test images carry it all


def test_empty_cells_are_not_estimable_never_zero():
    d = ablation_design(empty=[(True, True, True)])
    o = outcomes(d, gap(noise=0.05))
    effects = statistics.factor_effects(d, o, "cell")
    by = {e["factor"]: e for e in effects}
    # every factor still has estimable pairs; the one touching the empty cell leaves it out
    # 8 pairs per selection factor (4 cells x 2 test sets), minus the 2 with the empty cell
    assert [by[f]["pairs"] for f in ("rate", "definition", "threshold")] == [6, 6, 6]
    head = statistics.headline(d, o, 0.05, seed=0, resamples=200)
    corrected = [e for e in head["protocols"] if e["protocol"] == "corrected"]
    assert all(e["status"].startswith("not estimable") for e in corrected)


def test_identical_levels_and_no_duplicates_drop_a_factor():
    d = ablation_design(identical_threshold=True)
    o = outcomes(d, gap(noise=0.05))  # clean all True: no duplicates
    by = {e["factor"]: e for e in statistics.factor_effects(d, o, "cell")}
    assert by["threshold"]["status"] == "not estimable: both levels select identical removal sets"
    assert by["leakage"]["status"].startswith("not estimable: no train-test duplicates")
    assert by["rate"]["status"] == "estimable"
    matched = {e["factor"]: e for e in statistics.factor_effects(d, o, "matched")}
    assert set(matched) == {"rate", "definition", "leakage"}


def test_headline_is_one_holm_family_with_bonferroni_intervals_and_mdes():
    d = ablation_design()
    clean = np.ones(T, bool)
    clean[:3] = False
    o = outcomes(d, gap(noise=0.05), clean=clean)
    head = statistics.headline(d, o, 0.05, seed=0, resamples=200)
    members = [e for e in head["protocols"] + head["effects"] if e["status"] == "estimable"]
    assert head["m"] == len(members) and head["level"] == pytest.approx(1 - 0.05 / len(members))
    for e in members:
        assert e["level"] == pytest.approx(head["level"]) and e["mde_alpha"] == pytest.approx(0.05 / len(members))
        assert e["p_holm"] >= e["p"] and e["mde_pp"] > 0


def _gates(fitted=1.0, auroc=0.99):
    return {"rate_0.7": {"convergence": {"fitted_share": fitted, "canary_auroc_mem": auroc}},
            "rate_0.95": {"convergence": {"fitted_share": fitted, "canary_auroc_mem": auroc}}}


def test_gates_before_words():
    d = ablation_design()
    cfg = RetrainConfig(ablation=True, gate_mde_pp=100.0)
    head = statistics.headline(d, outcomes(d, gap(selected_wrong=16)), 0.05, seed=0, resamples=200)
    fz = next(e for e in head["protocols"] if e["protocol"] == "Feldman & Zhang" and e["test_set"] == "test")
    ok = verdict.gates(d, head, _gates(), (0.7, 0.95), cfg)
    assert verdict.decide(fz, ok["Feldman & Zhang"]) == "costs accuracy"
    unconverged = verdict.gates(d, head, _gates(fitted=0.6), (0.7, 0.95), cfg)
    word = verdict.decide(fz, unconverged["Feldman & Zhang"])
    assert word.startswith("inconclusive: convergence: fitted share at rate 0.7 0.600, needs >= 0.95")
    assert "train.epochs" in word
    # No difference and too little power: inconclusive on power, not "no change".
    flat = statistics.headline(d, outcomes(d, gap(selected_wrong=0, noise=0.2)), 0.05, seed=0, resamples=200)
    fz0 = next(e for e in flat["protocols"] if e["protocol"] == "Feldman & Zhang" and e["test_set"] == "test")
    weak = verdict.gates(d, flat, _gates(), (0.7, 0.95), RetrainConfig(ablation=True, gate_mde_pp=0.01))
    assert verdict.decide(fz0, weak["Feldman & Zhang"]).startswith("inconclusive: power")
    strong = verdict.gates(d, flat, _gates(), (0.7, 0.95), RetrainConfig(ablation=True, gate_mde_pp=1000))
    assert verdict.decide(fz0, strong["Feldman & Zhang"]).startswith("no change detected")


def test_short_verdict_text():
    d = ablation_design()
    head = statistics.headline(d, outcomes(d, gap(selected_wrong=4)), 0.05, seed=0, resamples=200)
    gates = verdict.gates(d, head, _gates(), (0.7, 0.95), RetrainConfig(ablation=True))
    text, words = verdict.verdict_text(d, head, gates, (0.7, 0.95), "toy", N, canaries=3)
    assert set(words) == {"Feldman & Zhang", "corrected"}
    assert text.startswith("Does removing") and "Gates:" in text and "3 canaries" in text
    assert len(text.split()) < 400
    assert verdict.pp(-0.004) == "\u22120.004" and verdict.pp(0.0) == "0.00" and verdict.p_text(0.0004) == "p < 0.001"
