"""`jmem report`: the report renders from a trained run, every linked plot is a real PNG,
sections follow the files present, and the F&Z-layout export round-trips."""

import csv
import json
import re
import shutil

import numpy as np
import pytest

from jmem.cli import main
from jmem.study.export import export_fz
from jmem.config import ScoreConfig
from jmem.data.loaders import CLASS_NAMES, label_text
from jmem.study import figures, rundir
from jmem.study.report.sections import (multiple_text, point_text, removal_panels, removal_ticks,
                                        training_curves_section)
from jmem.study.report.view import read_run
from jmem.study.report.stage import build_report
from jmem.study.scoring import score_run

from test_scoring import build_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny real run: 16 digits MLPs, 3 epochs, canaries, leakage check, scores."""
    workdir = tmp_path_factory.mktemp("report") / "run"
    assert main(["train", "experiments/digits.py:small", "--workdir", str(workdir), "--no-progress",
                 "--set", "subsets.canary_fraction=0.03"]) == 0
    assert main(["score", str(workdir)]) == 0
    return workdir


def copy_run(src, dst):
    shutil.copytree(src, dst)
    return dst


def linked_pngs(report_dir):
    text = (report_dir / rundir.REPORT).read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    return text, links


def check_pngs(run_dir, links):
    assert links
    for rel in links:
        path = run_dir / rel
        assert path.exists(), rel
        data = path.read_bytes()
        assert data[:8] == PNG_SIGNATURE, rel
        assert len(data) > 5_000, (rel, len(data))  # a real plot, not an empty canvas
        # IHDR: width and height of a legible figure.
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert width >= 400 and height >= 200, (rel, width, height)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _interval(estimate, low, high, **extra):
    return {"status": "estimable", "estimate_pp": estimate, "ci_low": low, "ci_high": high, "p": 0.04,
            "p_holm": 0.0123, "mde_pp": 0.8, "level": 0.99, "seed_only": {"ci_low": low / 3, "ci_high": high / 3},
            **extra}


def retrain_fixture():
    """A retrain.json in the current schema: two pools, the protocols' size-matched curves."""
    arms, accuracy, groups = [], {}, {}
    for p in (0, 1):
        arms.append({"name": f"full:p{p}", "kind": "full", "group": None, "pool": p, "removed": 0})
        accuracy[f"full:p{p}"] = {t: {"mean": 97.0, "ci_low": 96.6, "ci_high": 97.4, "n_models": 8}
                                  for t in ("test", "test_clean")}
    for protocol, drop in (("fz", 0.6), ("corrected", 0.2)):
        for name, k in ((f"curve:{protocol}:0.5", 15), (f"matched:{protocol}", 30), (f"curve:{protocol}:2", 60)):
            groups[name] = {"removed": [k, k], "kind": "curve", "jaccard_pools": 0.8}
            for p in (0, 1):
                for kind, mean in (("selected", 97.0 - drop * k / 30), ("matched", 97.0 - 0.1 * k / 30)):
                    arm = f"{name}:{kind}:p{p}"
                    arms.append({"name": arm, "kind": kind, "group": name, "pool": p, "removed": k})
                    accuracy[arm] = {t: {"mean": mean, "ci_low": mean - 0.4, "ci_high": mean + 0.4, "n_models": 8}
                                     for t in ("test", "test_clean")}
    head = {"alpha": 0.05, "m": 6, "level": 1 - 0.05 / 6, "adjustment": "Holm over the 6 headline comparisons",
            "protocols": [_interval(-0.4, -0.9, 0.1, protocol="Feldman & Zhang", test_set="test", group="cell:fz"),
                          _interval(-0.5, -1.0, 0.0, protocol="Feldman & Zhang", test_set="test_clean", group="cell:fz"),
                          {"protocol": "corrected", "test_set": "test", "status": "not estimable: selects no example in pool 0"},
                          {"protocol": "corrected", "test_set": "test_clean", "status": "not estimable: selects no example in pool 0"}],
            "effects": [_interval(e, e - 0.3, e + 0.3, factor=f, estimand=est)
                        for f, e, est in (("rate", 0.5, "as defined"), ("definition", 0.2, "as defined"),
                                          ("rate", 0.3, "size-matched"))]
            + [{"factor": "leakage", "estimand": "size-matched",
                "status": "not estimable: no train-test duplicates were found, so both levels measure on the same test set"}]}
    gates = {"Feldman & Zhang": [{"gate": "convergence", "what": "fitted share at rate 0.7", "value": 0.99, "bar": 0.95,
                                  "passed": True},
                                 {"gate": "reliability", "what": "Jaccard of the two pools' removal sets", "value": 0.62,
                                  "bar": 0.7, "passed": False}]}
    comparisons = [{"name": "cell:fz: selected vs matched", "group": "cell:fz", "a": "selected", "b": "matched",
                    "test_set": "test", "estimate_pp": -0.4, "ci_low": -0.8, "ci_high": 0.0, "mde_pp": 0.7}]
    return {"seeds": 8, "pools": 2, "methods": [], "arms": arms, "groups": groups,
            "test_sets": ["test", "test_clean"], "accuracy": accuracy, "headline": head, "gates": gates,
            "comparisons": comparisons, "skipped": {"cell:rate+definition+threshold": "selects no example in pool 0"},
            "share_of_change": {}, "excluded_diverged": 1,
            "verdict": "VERDICT-SENTINEL: Feldman & Zhang: inconclusive: reliability."}


def test_report_renders_on_a_trained_run(trained_run, tmp_path, capsys):
    run = copy_run(trained_run, tmp_path / "run")
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and rundir.REPORT in out
    text, links = linked_pngs(run)
    check_pngs(run, links)
    # Every generated plot is linked, and the report holds the sections a reader needs.
    assert sorted(p.name for p in (run / rundir.REPORT_FIGURES).glob("*.png")) == \
        sorted(l.split("/")[-1] for l in links)
    for heading in ("## Verdict", "## The run", "## Training curves", "## Which examples count as memorized",
                    "## Score distributions", "## Recovering the canaries", "### Split halves",
                    "### Stability versus the number of models", "### Models needed",
                    "## The most memorized examples"):
        assert heading in text, heading
    assert f"jmem retrain {run}" in text  # no retrain.json: says how to run it
    assert "## Ablation" not in text
    assert "single inclusion rate" in text
    rel = json.loads((run / rundir.RELIABILITY).read_text())
    assert rel["num_models"] == 16 and rel["split_half"]["num_models"] == [8, 8]
    assert [r["k"] for r in rel["stability"]] == [8, 16]
    assert {r["rate"] for r in rel["models_needed"]} >= {0.5, 0.7, 0.9, 0.95}
    assert (run / rundir.FZ_EXPORT).exists()


def test_sections_follow_retrain_and_ablation_files(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    (run / "retrain").mkdir()
    rundir.save_json(run / "retrain" / rundir.RETRAIN, retrain_fixture())
    out = build_report(run, export_fz=False)
    assert out["verdict"].startswith("VERDICT-SENTINEL")
    text, links = linked_pngs(run)
    check_pngs(run, links)
    # The short answer comes first, then the headline table and the gates, before the run summary.
    assert text.index("VERDICT-SENTINEL") < text.index("| comparison |") < text.index("## The run")
    assert "-0.40 [-0.90, 0.10]" in text and "0.0123" in text and "FAIL" in text
    assert "not estimable: selects no example in pool 0" in text
    assert "1 diverged retrained model" in text
    assert "figures/removal_curve.png" in links and "figures/ablation_main_effects.png" in links
    assert "## Ablation of the four corrections" in text and "cell:fz" in text
    assert "Not estimated: leakage (size-matched): not estimable: no train-test duplicates" in text
    assert out["fz_layout"] is None
    # Removed again: the sections go and their stale plots are deleted.
    shutil.rmtree(run / "retrain")
    build_report(run, export_fz=False)
    text, links = linked_pngs(run)
    assert "VERDICT-SENTINEL" not in text and "## Ablation" not in text
    assert not (run / rundir.REPORT_FIGURES / "removal_curve.png").exists()
    check_pngs(run, links)


def test_removal_panels_are_the_protocols_size_matched_curves():
    panels = removal_panels(retrain_fixture())
    assert list(panels) == ["test", "test_clean"]
    x, mean, low, high = panels["test"]["Feldman & Zhang: its selection removed"]
    np.testing.assert_allclose(x, [0, 15, 30, 60])  # nothing removed, then k/2, k, 2k
    np.testing.assert_allclose(mean, [97.0, 96.7, 96.4, 95.8])
    assert np.all(low < mean) and np.all(mean < high)
    assert "corrected: matched random removed" in panels["test"]
    none = retrain_fixture()
    none["groups"] = {}
    assert removal_panels(none) == {}


def test_fz_export_round_trips(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    path = export_fz(run)
    assert path == run / rundir.FZ_EXPORT
    f = np.load(path)
    rows = read_csv(run / rundir.SCORES)
    mem_csv = np.array([float(r["mem"]) for r in rows])
    np.testing.assert_allclose(f["tr_mem"], mem_csv, rtol=1e-5, atol=1e-6)
    labels, labels_test = np.load(run / rundir.LABELS_TRAIN), np.load(run / rundir.LABELS_TEST)
    np.testing.assert_array_equal(f["tr_labels"], labels)
    np.testing.assert_array_equal(f["tt_labels"], labels_test)
    keep = np.load(run / rundir.KEEP)
    correct = np.load(run / rundir.MARGINS_TEST) > 0
    # The memorization score recomputed from the exported per-class matrices' ingredients:
    # F&Z's own recipe from keep/correct (README) equals tr_mem.
    correct_train = np.load(run / rundir.MARGINS_TRAIN) > 0
    with np.errstate(invalid="ignore"):  # 16 models: a few examples are in every subset
        mem = (correct_train & keep).sum(0) / keep.sum(0) - (correct_train & ~keep).sum(0) / (~keep).sum(0)
    np.testing.assert_allclose(f["tr_mem"], mem, atol=1e-6)
    seen_tr, seen_tt = [], []
    for k in range(10):
        tr, tt, infl = f[f"tr_classidx_{k}"], f[f"tt_classidx_{k}"], f[f"infl_matrix_class{k}"]
        assert np.all(labels[tr] == k) and np.all(labels_test[tt] == k)
        assert infl.shape == (tr.size, tt.size) and infl.dtype == np.float32
        seen_tr += tr.tolist()
        seen_tt += tt.tolist()
        # Direct computation of a few entries: accuracy on test j of models with i in, minus out.
        for a, b in ((0, 0), (tr.size - 1, tt.size - 1), (tr.size // 2, tt.size // 3)):
            i, j = tr[a], tt[b]
            direct = correct[keep[:, i], j].mean() - correct[~keep[:, i], j].mean()
            assert infl[a, b] == pytest.approx(direct, abs=1e-6)
    assert sorted(seen_tr) == list(range(labels.size)) and sorted(seen_tt) == list(range(labels_test.size))


def test_export_follows_the_scored_rate_and_report_on_a_multi_rate_run(tmp_path):
    """A synthetic two-rate run without config.json or models.csv still reports."""
    build_run(tmp_path, rates=np.repeat([0.5, 0.9], 60), extra=False)
    score_run(tmp_path)
    out = build_report(tmp_path)
    text, links = linked_pngs(tmp_path)
    check_pngs(tmp_path, links)
    assert "figures/scores_vs_rate.png" in links
    assert "Images not shown: config.json names no dataset" in text
    rel = json.loads((tmp_path / rundir.RELIABILITY).read_text())
    assert rel["num_models"] == 60  # the main rate's models
    assert out["fz_layout"].exists()
    # The main columns are one rate's: the export uses the same 60 models as scores.csv.
    assert json.loads((tmp_path / rundir.THRESHOLDS).read_text())["main_rate"] == 0.5
    score_run(tmp_path, ScoreConfig(rate=0.9))
    f = np.load(export_fz(tmp_path))
    mem_csv = np.array([float(r["mem"]) for r in read_csv(tmp_path / rundir.SCORES)])
    np.testing.assert_allclose(f["tr_mem"], mem_csv, rtol=1e-5, atol=1e-6)


def test_report_refuses_incomplete_run_directories(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    build_run(tmp_path, extra=False)
    assert main(["report", str(tmp_path)]) == 2
    assert "run `jmem score" in capsys.readouterr().err
    assert not (tmp_path / rundir.REPORT).exists()
    assert main(["report", str(tmp_path), "--half-width", "0"]) == 2


def test_report_with_too_few_models_for_split_halves(tmp_path):
    build_run(tmp_path, extra=False)
    for name in (rundir.KEEP, rundir.MARGINS_TRAIN, rundir.MARGINS_TEST, rundir.MODEL_RATES):
        rundir.save_array(tmp_path / name, np.load(tmp_path / name)[:3])
    score_run(tmp_path)
    out = build_report(tmp_path, export_fz=False)
    text, links = linked_pngs(tmp_path)
    check_pngs(tmp_path, links)
    assert "split halves need at least 4 models" in text and out["reliability"] is None


def test_removal_curve_points_say_which_threshold_they_are():
    rt = retrain_fixture()
    assert removal_ticks(rt) == {15.0: "k/2", 30.0: "k", 60.0: "2k"}
    assert [multiple_text(m) for m in (1, 0.5, 0.25, 2, 1.5)] == ["k", "k/2", "k/4", "2k", "1.5k"]
    assert point_text("sweep:0.25") == "mem≥0.25" and point_text("curve:corrected:0.5") == "k/2"
    # Without the size-matched curves, Feldman & Zhang's points are the sweep thresholds.
    sweep = {"groups": {"sweep:0.25": {"removed": [40, 44]}, "sweep:0.5": {"removed": [10, 12]}}}
    assert removal_ticks(sweep) == {42.0: "mem≥0.25", 11.0: "mem≥0.5"}


def test_a_panel_that_would_repeat_another_is_dropped():
    rt = retrain_fixture()
    rt["test_set_sizes"] = {"test": 445, "test_clean": 437}
    assert list(removal_panels(rt)) == ["test", "test_clean"]
    rt["test_set_sizes"] = {"test": 445, "test_clean": 445}  # nothing leaked: the same panel
    assert list(removal_panels(rt)) == ["test"]


def test_roc_shows_the_full_range_only_when_the_zoom_misses_something():
    good = {"mem": ([0, 0.01, 1], [0, 1, 1], 0.99, 0.01), "lira": ([0, 1], [0, 1], 0.98, 0.05)}
    assert figures.roc_ranges(good) == (0.1,)
    poor = {**good, "fractional": ([0, 1], [0, 1], 0.5, 0.9)}
    assert figures.roc_ranges(poor) == (1.0, 0.1)
    assert figures.roc_ranges({"mem": ([], [], None, None)}) == (1.0, 0.1)  # undefined: show all


def test_crowded_log_ticks_keep_the_last_and_the_spaced_ones():
    assert figures.spaced_ticks([8, 16, 32, 64, 128, 160]) == [8, 16, 32, 64, 160]
    assert figures.spaced_ticks([8, 16]) == [8, 16]


def test_class_names_where_the_dataset_has_them():
    assert label_text("fashion_mnist", 6) == "6 Shirt"
    assert label_text("cifar10", 0) == "0 airplane"
    assert len(CLASS_NAMES["cifar100"]) == 100 and label_text("cifar100", 99) == "99 worm"
    assert label_text("digits", 3) == "3"


def test_training_curves_section_needs_two_epochs(trained_run, tmp_path):
    view = read_run(trained_run)
    assert view.loss_history.shape == (16, 3)
    lines = training_curves_section(view, tmp_path)
    assert lines[0] == "## Training curves" and (tmp_path / "training_curves.png").exists()
    view.loss_history = view.loss_history[:, :1]
    assert training_curves_section(view, tmp_path) == []
    view.loss_history = None  # a run of an older jmem
    assert training_curves_section(view, tmp_path) == []


def test_run_table_names_an_mlps_hidden_widths():
    """model.widths replaces width and depth for an MLP: the report's run table says so."""
    from jmem.study.report.sections import model_text

    assert model_text({"kind": "mlp", "width": 256, "depth": 1, "widths": [512, 256]}) == "mlp, hidden widths 512-256"
    assert model_text({"kind": "mlp", "width": 256, "depth": 1, "widths": []}) == "mlp width 256 depth 1"
    assert model_text({"kind": "cnn", "width": 32, "depth": 2, "widths": []}) == "cnn width 32 depth 2"
    assert model_text({}) == "n/a"
