"""Tests of jmem.study.scoring on synthetic run directories built in tmp_path."""

import csv
import json

import numpy as np
import pytest

from jmem.config import ScoreConfig
from jmem.data.canaries import make_canaries
from jmem.errors import JmemError
from jmem.study import rundir
from jmem.study.scoring import format_summary, score_run

R, N, T, C = 120, 400, 60, 5
FIELDS = ["n_in", "n_out", "correct_in", "correct_out", "acc_in", "acc_out", "mem", "mem_ci_low",
          "mem_ci_high", "fractional", "margin_in", "margin_out", "lira", "p_value"]
RULES = ["fixed", "fractional", "calibrated", "calibrated_fractional", "fdr"]
DOC_COLUMNS = (["index", "label", "is_canary"] + FIELDS + ["cscore", "q_value"]
               + [f"selected_{r}" for r in RULES])


def build_run(d, seed=0, rates=None, canary_fraction=0.05, extra=True):
    """A run where canaries are memorized: right when trained on, wrong otherwise.

    Training example 3 is planted to influence test example 7 (same class): test 7 is right
    exactly when example 3 was in the model's subset.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, N).astype(np.int32)
    labels, canary = make_canaries(seed, labels, C, canary_fraction)
    model_rates = np.full(R, 0.7) if rates is None else np.asarray(rates)
    keep = rng.random((R, N)) < model_rates[:, None]
    easy = rng.normal(1.5, 1.0, (R, N))
    memorized = np.where(keep, rng.normal(2, 0.5, (R, N)), rng.normal(-2, 0.5, (R, N)))
    margins = np.where(canary, memorized, easy).astype(np.float32)
    margins[:, 3] = np.where(keep[:, 3], 2.0, -2.0)
    canary[3] = False
    labels_test = rng.integers(0, C, T).astype(np.int32)
    labels_test[7] = labels[3]
    margins_test = rng.normal(1, 1, (R, T)).astype(np.float32)
    margins_test[:, 7] = np.where(keep[:, 3], 1.0, -1.0)
    files = {rundir.KEEP: keep, rundir.MARGINS_TRAIN: margins, rundir.LABELS_TRAIN: labels,
             rundir.MARGINS_TEST: margins_test, rundir.LABELS_TEST: labels_test, rundir.CANARIES: canary,
             rundir.MODEL_RATES: model_rates.astype(np.float32)}
    if extra:
        files[rundir.margins_extra_name("clean")] = margins_test[:, 5:10]
        files[rundir.labels_extra_name("clean")] = labels_test[5:10]
    for name, arr in files.items():
        rundir.save_array(d / name, arr)
    return keep, margins, canary


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_end_to_end_canaries_recovered_and_never_selected(tmp_path):
    _, _, canary = build_run(tmp_path)
    summary = score_run(tmp_path)
    rows = read_csv(tmp_path / rundir.SCORES)
    assert len(rows) == N
    columns = list(rows[0])
    assert columns[:len(DOC_COLUMNS) + 1] == DOC_COLUMNS + ["selected_canary"]
    assert "mem_rate_0.7" in columns and "selected_canary_rate_0.7" in columns
    assert [int(r["is_canary"]) for r in rows] == canary.astype(int).tolist()
    for name in ("mem", "fractional", "lira", "neg_log10_p"):
        assert summary["canaries"]["scores"][name]["auroc"] > 0.99, name
        assert summary["canaries"]["scores"][name]["fpr_at_95tpr"] < 0.02, name
    saved = json.loads((tmp_path / rundir.THRESHOLDS).read_text())
    json.dumps(saved, allow_nan=False)  # strict JSON: no NaN/Infinity
    assert set(saved["methods"]) == set(RULES) | {"canary"}
    for m in saved["methods"]:
        selected = np.array([int(r[f"selected_{m}"]) for r in rows], bool)
        assert not (selected & canary).any(), m  # an instrument, never a selection
        assert selected.sum() == saved["methods"][m]["n_selected"], m
    # ... but the cuts would catch them: the canaries validate every rule.
    assert saved["methods"]["fdr"]["canaries_caught"] >= 0.95
    assert saved["methods"]["calibrated"]["canaries_caught"] >= 0.95
    conv = saved["by_rate"]["rate_0.7"]["convergence"]
    assert conv["fitted_share"] > 0.9 and conv["canary_auroc_mem"] > 0.99
    # The planted pair (train 3 -> test 7) is found, for the extra set not (7 is not in 5..9).
    pairs = read_csv(tmp_path / rundir.PAIRS)
    test_pairs = {(int(p["train_index"]), int(p["test_index"])) for p in pairs if p["test_set"] == "test"}
    assert (3, 7) in test_pairs
    planted = next(p for p in pairs if p["train_index"] == "3" and p["test_index"] == "7")
    assert float(planted["infl"]) == pytest.approx(1.0) and float(planted["mem"]) == 1.0
    assert float(planted["rate"]) == pytest.approx(0.7)
    assert summary["pairs"]["test"] == len(test_pairs) and "clean" in summary["pairs"]
    text = format_summary(summary)
    for word in ("fixed", "calibrated", "canary AUROC", "never selected", "pairs"):
        assert word in text


def test_undefined_examples_are_nan_and_counted(tmp_path):
    build_run(tmp_path)
    keep = np.load(tmp_path / rundir.KEEP)
    keep[:, 0] = False
    keep[:, 1] = True
    rundir.save_array(tmp_path / rundir.KEEP, keep)
    summary = score_run(tmp_path)
    assert summary["nan_counts"]["zero_in"] == 1 and summary["nan_counts"]["zero_out"] == 1
    rows = read_csv(tmp_path / rundir.SCORES)
    for r in rows[:2]:
        assert r["mem"] == "nan" and r["p_value"] == "nan" and r["q_value"] == "nan"
        assert all(r[f"selected_{m}"] == "0" for m in RULES)
    assert rows[0]["n_in"] == "0" and rows[1]["n_out"] == "0"


def test_several_rates_are_scored_one_at_a_time(tmp_path):
    rates = np.repeat([0.5, 0.9], R // 2)
    keep, margins, _ = build_run(tmp_path, rates=rates, extra=False)
    summary = score_run(tmp_path)
    assert summary["pooled_over_rates"] is False and summary["main_rate"] == 0.5
    assert [p["rate"] for p in summary["rate_curve"]] == [0.5, 0.9]
    assert all(p["canary_auroc_mem"] > 0.95 for p in summary["rate_curve"])
    row = read_csv(tmp_path / rundir.SCORES)
    for rate in ("0.5", "0.9"):
        assert {f"{f}_rate_{rate}" for f in FIELDS} | {f"selected_{r}_rate_{rate}" for r in RULES} <= set(row[0])
    # The main columns are the lowest rate's, computed from its models alone.
    low = rates == 0.5
    k, m = keep[low][:, 10], margins[low][:, 10] > 0
    expected = m[k].mean() - m[~k].mean()
    assert float(row[10]["mem"]) == pytest.approx(expected, abs=1e-6)
    assert row[10]["mem"] == row[10]["mem_rate_0.5"]
    one = score_run(tmp_path, ScoreConfig(rate=0.9))
    assert one["main_rate"] == 0.9
    assert read_csv(tmp_path / rundir.SCORES)[10]["mem"] == read_csv(tmp_path / rundir.SCORES)[10]["mem_rate_0.9"]
    with pytest.raises(JmemError, match="score.rate"):
        score_run(tmp_path, ScoreConfig(rate=0.3))


def test_two_rates_without_memorization_give_unbiased_scores(tmp_path):
    """No memorization, but the 0.95 models are more accurate than the 0.7 ones. One rate at a
    time, mem is ~0 and the rules select at most their nominal share; pooled over the rates
    (what jmem no longer does), mem and influence would be biased upward."""
    gen = np.random.default_rng(3)
    n, t = 2000, 200
    rates = np.repeat([0.7, 0.95], [160, 960])
    keep = gen.random((rates.size, n)) < rates[:, None]
    acc = np.where(rates == 0.95, 0.8, 0.6)[:, None]  # accuracy depends on the rate only
    correct = gen.random((rates.size, n)) < acc
    correct_test = gen.random((rates.size, t)) < acc
    labels = gen.integers(0, 10, n).astype(np.int32)
    labels_test = gen.integers(0, 10, t).astype(np.int32)
    for name, arr in {rundir.KEEP: keep, rundir.MARGINS_TRAIN: np.where(correct, 1.0, -1.0).astype(np.float32),
                      rundir.LABELS_TRAIN: labels, rundir.LABELS_TEST: labels_test,
                      rundir.MARGINS_TEST: np.where(correct_test, 1.0, -1.0).astype(np.float32),
                      rundir.MODEL_RATES: rates.astype(np.float32)}.items():
        rundir.save_array(tmp_path / name, arr)
    summary = score_run(tmp_path)
    for tag, rec in summary["by_rate"].items():
        assert abs(rec["mean_mem"]) < 0.01, tag
        for rule in ("calibrated", "calibrated_fractional", "fdr"):
            assert rec["rules"][rule]["n_selected"] <= 0.05 * n, (tag, rule)
    pooled = correct[keep].mean() - correct[~keep].mean()
    assert pooled > 0.03  # the bias one rate at a time avoids
    pairs = read_csv(tmp_path / rundir.PAIRS)
    for rate in (0.7, 0.95):  # chance pairs only: about what a single-rate null gives
        share = sum(float(p["rate"]) == rate for p in pairs) / (n * t / 10)
        assert share < 0.05, rate


@pytest.mark.parametrize("field,value", [
    ("fixed_threshold", 2.0), ("fractional_threshold", 2.0), ("fdr_q", 0.0), ("fdr_q", 1.0),
    ("calibrated_q", 0.0), ("min_effect", float("nan")), ("min_heldout", -1),
    ("influence_threshold", "0.1"), ("canary_tpr", 0.0), ("confidence", 1.0), ("fractional_floor", 0.0),
    ("rate", 1.0), ("chunk_size", 0), ("influence_chunk_size", 0), ("max_pairs", 0),
    ("pair_same_class", 1), ("pair_mem_threshold", True),
])
def test_options_validated(field, value):
    with pytest.raises(JmemError, match=f"score.{field}="):
        ScoreConfig(**{field: value})


def test_bad_run_directories(tmp_path):
    with pytest.raises(JmemError, match="does not exist"):
        score_run(tmp_path / "nope")
    build_run(tmp_path, extra=False)
    (tmp_path / rundir.LABELS_TEST).unlink()
    with pytest.raises(JmemError, match="labels_test.npy"):
        score_run(tmp_path)
    build_run(tmp_path, extra=False)
    m = np.load(tmp_path / rundir.MARGINS_TRAIN)
    m[4, 9] = np.nan  # a NaN margin marks model 4 as diverged (jmem.study.diverged): left out
    rundir.save_array(tmp_path / rundir.MARGINS_TRAIN, m)
    assert score_run(tmp_path)["excluded_diverged"] == {"count": 1, "ids": [4]}
    build_run(tmp_path, extra=False)
    rundir.save_array(tmp_path / rundir.LABELS_TRAIN, np.zeros(N + 1, np.int32))
    with pytest.raises(JmemError, match="labels_train.npy"):
        score_run(tmp_path)
    build_run(tmp_path, extra=False)
    rundir.save_array(tmp_path / rundir.margins_extra_name("v2"), np.zeros((R, 3), np.float32))
    with pytest.raises(JmemError, match="labels_v2.npy"):
        score_run(tmp_path)


def test_runs_without_optional_files(tmp_path):
    build_run(tmp_path, extra=False)
    (tmp_path / rundir.CANARIES).unlink()
    (tmp_path / rundir.MODEL_RATES).unlink()
    summary = score_run(tmp_path)
    assert summary["canaries"] is None and summary["rate_curve"] is None and summary["rates"] is None
    assert "canary" not in summary["methods"]
    assert "selected_canary" not in read_csv(tmp_path / rundir.SCORES)[0]
    assert "canar" not in format_summary(summary)
