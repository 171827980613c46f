"""The removal experiment's measurement and statistics (``jmem.study.retrain.measurement`` and
``.statistics``) and its verdict (``.verdict``) on small hand-made outcomes, without training."""

import numpy as np
import pytest

from jmem.errors import JmemError
from jmem.scores import protocols
from jmem.scores.paired import Comparison
from jmem.study.retrain import design, measurement, statistics, verdict

SEEDS, N, T = 8, 12, 8  # 8 seeds: an exact sign-flip p of 2/256, below 0.05 after Holm over 2
LABELS = np.repeat([0, 1, 2], 4)


def small_design(groups=("fixed",), lowest=False, seeds=SEEDS):
    """Groups removing examples {0, 4}; each method group influences test examples 0 and 1."""
    removed = np.isin(np.arange(N), [0, 4])
    candidates = [design.Candidate(g, g if not g.startswith(("sweep", "cell")) else None,
                                   0.5 if g.startswith("sweep") else None, removed,
                                   {"threshold": 0.25} if g == "fixed" else {}, g) for g in groups]
    return design.build_design(candidates, LABELS, 3, mem=np.linspace(0, 1, N),
                               pair_train=np.array([0, 4]), pair_test=np.array([0, 1]), num_test=T,
                               seeds=seeds, seed=0, lowest=lowest)


def outcomes(d, accuracy_of, diverged=(), extra=None):
    """Outcomes where every model of arm ``a`` gets the first round(acc * T) test examples
    right, ``acc = accuracy_of(arm kind, seed)``."""
    m = d.keep.shape[0]
    correct = np.zeros((m, T), bool)
    for arm in d.arms:
        for s, r in enumerate(d.rows(arm.name)):
            correct[r, :round(accuracy_of(arm.kind, s) * T)] = True
    arrays = {"margins_test": np.where(correct, 1.0, -1.0).astype(np.float32),
              "diverged": np.isin(np.arange(m), diverged), "final_loss": np.zeros(m, np.float32)}
    if extra is not None:
        arrays["margins_test_clean"] = arrays["margins_test"][:, :extra]
    margins_train = np.ones((m, N), np.float32)
    return measurement.outcomes_from_arrays(arrays, margins_train, d.keep)


def test_outcomes_and_test_sets():
    d = small_design()
    o = outcomes(d, lambda kind, s: 0.5, extra=4)
    assert measurement.test_set_names(o) == ["test", "test_clean", "influenced", "rest"]
    assert o.correct["test"].shape == (d.keep.shape[0], T) and o.train_accuracy.tolist() == [1.0] * d.keep.shape[0]
    influenced = measurement.columns(d, o, "influenced", "fixed")
    rest = measurement.columns(d, o, "rest", "fixed")
    assert influenced.shape[1] == 2 and rest.shape[1] == T - 2


def test_plan_compares_selected_with_matched_random_and_full():
    d = small_design(("fixed", "sweep:0.5"), lowest=True)
    assert statistics.comparison_plan(d) == [
        ("fixed", "fixed:selected", "fixed:matched"), ("fixed", "fixed:selected", "fixed:random"),
        ("fixed", "fixed:selected", "full"), ("fixed", "fixed:matched", "full"),
        ("fixed", "fixed:random", "full"), ("fixed", "fixed:lowest", "fixed:matched"),
        ("sweep:0.5", "sweep:0.5:selected", "sweep:0.5:matched"),
        ("sweep:0.5", "sweep:0.5:selected", "full"), ("sweep:0.5", "sweep:0.5:matched", "full")]


def test_a_constant_gap_is_measured_exactly_and_holm_families_group_methods():
    d = small_design(("fixed", "fdr"))
    acc = {"full": 0.75, "selected": 0.5, "matched": 0.75, "random": 0.75}
    entries = statistics.compare_arms(d, outcomes(d, lambda kind, s: acc[kind]), seed=0, resamples=200)
    main = next(e for e in entries if (e["a"], e["b"], e["test_set"]) == ("fixed:selected", "fixed:matched", "test"))
    c = main["comparison"]
    assert c.n_seeds == SEEDS and c.mean_diff == pytest.approx(-25.0) and c.ci_high == pytest.approx(-25.0)
    assert main["family_size"] == 2  # selected vs matched on "test", across the two methods
    assert verdict.direction(c) == "lower"
    assert statistics.holm_family(main) == ("method", ("selected", "matched"), "test")


def test_diverged_models_are_left_out_pairwise():
    d = small_design()
    broken = d.rows("fixed:selected")[0]
    o = outcomes(d, lambda kind, s: 0.5, diverged=[broken])
    entries = statistics.compare_arms(d, o, seed=0, resamples=200)
    assert {e["comparison"].n_seeds for e in entries if e["a"] == "fixed:selected"} == {SEEDS - 1}
    acc = statistics.arm_accuracies(d, o, seed=0, resamples=200)
    assert acc["fixed:selected"]["test"]["n_models"] == SEEDS - 1
    assert acc["full"]["test"]["mean"] == pytest.approx(50.0)
    assert set(acc["full"]) == {"test", "influenced:fixed", "rest:fixed"}


def test_share_of_change_and_its_undefined_case():
    d = small_design()
    varying = lambda kind, s: 0.5 + (0.125 if kind == "full" and s % 2 else 0.0)  # noqa: E731
    shares = statistics.shares(d, outcomes(d, varying), seed=0, resamples=200)
    assert shares["fixed"]["influenced_size"] == 2
    assert set(shares["fixed"]) == {"estimate", "low", "high", "influenced_size", "delta_influenced", "delta_all"}
    flat = statistics.shares(d, outcomes(d, lambda kind, s: 0.5), seed=0, resamples=200)
    assert flat["fixed"]["estimate"] is None  # no change: no share (never NaN in JSON)


def test_ablation_record_gives_every_cell_and_empty_cells_zero():
    groups = [design.cell_group(cell.selection_key) for cell in protocols.all_protocols()]
    groups = list(dict.fromkeys(groups))[:3]  # three of the eight removal sets; the rest selected nothing
    d = small_design(tuple(groups))
    d = design.Design(d.seeds, d.groups, d.arms, d.skipped, (0.7, 0.95))
    o = outcomes(d, lambda kind, s: 0.5 if kind == "selected" else 0.75, extra=T)
    record = statistics.ablation_record(d, o, seed=0, resamples=200)
    assert len(record["cells"]) == 16 and record["rates"] == [0.7, 0.95] and record["excluded_seeds"] == 0
    removed = {c["name"]: c["removed"] for c in record["cells"]}
    assert sorted(set(removed.values())) == [0, 2]
    diff = {c["name"]: c["diff_pp"] for c in record["cells"]}
    assert all(diff[name] == pytest.approx(-25.0 if removed[name] else 0.0) for name in diff)
    every = np.concatenate([d.rows(a.name) for a in d.arms if a.group])
    with pytest.raises(JmemError, match="fewer than 2 seeds"):
        statistics.ablation_record(d, outcomes(d, lambda kind, s: 0.5, diverged=every[:SEEDS * 2]),
                                   seed=0, resamples=200)


def comparison(low, high, p, p_holm=None):
    return Comparison(n_seeds=50, level=0.95, mean_a=90.0, mean_b=90.0, mean_diff=(low + high) / 2,
                      ci_low=low, ci_high=high, ci2_low=None, ci2_high=None, p_perm=p,
                      p_welch=p, effect_size=0.0, sd_diff=1.0, mde=0.4, p_holm=p_holm)


def test_direction_needs_interval_and_holm_adjusted_test_to_agree():
    assert verdict.direction(comparison(-0.6, -0.2, 0.001)) == "lower"
    assert verdict.direction(comparison(0.2, 0.6, 0.001)) == "higher"
    assert verdict.direction(comparison(-0.2, 0.3, 0.6)) == "none"
    assert verdict.direction(comparison(-0.6, -0.2, 0.2)) == "inconclusive"
    assert verdict.direction(comparison(-0.6, -0.2, 0.01, p_holm=0.09)) == "inconclusive"
    assert verdict.direction(comparison(-0.3, -2e-15, 0.01)) == "none"  # a bound on 0 is 0
    assert "does not lower test accuracy detectably (an effect of 0.40 pp" in \
        verdict.conclusion(comparison(-0.2, 0.3, 0.6), "test")


def test_numbers_in_words():
    assert verdict.pp(-0.004) == "\u22120.004" and verdict.pp(0.0) == "0.00" and verdict.pp(-1.234) == "\u22121.23"
    assert [verdict.p_text(p) for p in (0.0004, 0.004, 0.04)] == ["p < 0.001", "p = 0.004", "p = 0.04"]


def test_verdict_text_names_the_set_the_effect_and_the_skipped():
    d = small_design(("fixed",))
    d = design.Design(d.seeds, d.groups, d.arms, {"fdr": "selects no example"})
    acc = {"full": 0.75, "selected": 0.5, "matched": 0.75, "random": 0.75}
    entries = statistics.compare_arms(d, outcomes(d, lambda kind, s: acc[kind]), seed=0, resamples=200)
    text = verdict.verdict_text(d, entries, {}, num_examples=N, excluded=1)
    assert text.startswith(f"Removal experiment, {SEEDS} seeds per arm")
    assert "Removing the 2 examples selected by fixed-0.25 (mem >= 0.25) (16.7% of 12)" in text
    assert "changed test accuracy by \u221225.00 pp" in text and "removing them lowers test accuracy" in text
    assert "fdr: selects no example; no arm trained." in text
    assert text.endswith("1 diverged model(s) were left out of every statistic.\n")
