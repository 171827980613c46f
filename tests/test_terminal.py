"""What a user sees at the terminal: each command's last lines, the stage lines of `jmem run`,
the default run directory, and a progress bar that moves within a wave."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jmem.cli import default_workdir
from jmem.config import Config, LooConfig, apply_overrides, load_experiment
from jmem.study import endings, pipeline, waves

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- endings


def test_next_line_aligns_commands_and_gives_reasons_as_shell_comments():
    text = endings.next_line(("jmem retrain runs/d", "does it cost accuracy?"),
                             ("jmem report runs/d", "the plots"), ("read runs/d/report.md", ""))
    assert text.splitlines() == ["next: jmem retrain runs/d   # does it cost accuracy?",
                                 "  or: jmem report runs/d    # the plots",
                                 "  or: read runs/d/report.md"]


def test_wrote_line_names_the_key_files_and_counts_the_rest():
    names = [f"f{i}.npy" for i in range(8)]
    line = endings.wrote_line("runs/d", names, total=12)
    assert line.startswith("wrote runs/d/: f0.npy, f1.npy") and "and 6 more" in line
    assert "docs/run-directory.md" in line
    assert "more" not in endings.wrote_line("runs/d", ["a.csv", "b.json"])


def test_train_ending_is_a_summary_then_the_files_then_scoring(tmp_path):
    for name in ("keep.npy", "margins_train.npy", "models.csv", "config.json"):
        (tmp_path / name).write_bytes(b"")
    summary = {"models": 16, "trained_now": 16, "models_per_second": 5.54, "diverged": 0,
               "test_accuracy_mean": 0.961, "test_accuracy_std": 0.006}
    lines = endings.train_ending(summary, tmp_path)
    assert lines[0] == "estimation: 16 models, 16 trained now at 5.5 models/s; test accuracy 96.1% (sd 0.6); 0 diverged"
    assert lines[1].startswith(f"wrote {tmp_path}/: margins_train.npy, keep.npy, models.csv and 1 more")
    assert lines[2].startswith(f"next: jmem score {tmp_path}")
    assert not any("{" in line for line in lines)  # a summary, not a JSON dict
    resumed = endings.training_line({**summary, "trained_now": 0})
    assert "all trained before" in resumed
    other = endings.train_ending({"process": 1, "trained_now": 4, "seconds": 3.0}, tmp_path)
    assert other == [f"process 1: trained 4 models in 3 s; process 0 assembled {tmp_path}"]


def test_retrain_loo_and_report_endings_point_at_the_report(tmp_path):
    out = tmp_path / "retrain"
    out.mkdir()
    for name in ("retrain.json", "verdict.txt", "keep.npy"):
        (out / name).write_bytes(b"")
    summary = {"retrain_dir": str(out), "models": 10, "trained_now": 10, "models_per_second": 2.0, "seconds": 5.2}
    lines = endings.retrain_ending(summary, tmp_path)
    assert lines[0] == "removal experiment: 10 models, 10 trained now at 2.0 models/s, 5 s"
    assert lines[1].startswith(f"wrote {out}/: retrain.json, verdict.txt and 1 more")
    assert lines[2].startswith(f"next: jmem report {tmp_path}")
    loo_lines = endings.loo_ending({"loo_dir": str(tmp_path / "loo"), "models": 4, "trained_now": 0}, tmp_path)
    assert loo_lines[0] == "leave-one-out: 4 models, all trained before"
    report = {"report": tmp_path / "report.md", "figures": [Path("a.png")] * 3, "reliability": None,
              "fz_layout": tmp_path / "fz_layout.npz"}

    def printed(**kw):  # the lines as the command prints them
        return "\n".join(endings.report_ending(report, tmp_path, **kw)).splitlines()

    lines = printed(has_retrain=False, has_loo=False)
    assert "report.md, figures/ (3 plots), fz_layout.npz" in lines[0]
    assert lines[1] == f"next: read {tmp_path / 'report.md'}"
    assert lines[2].startswith(f"  or: jmem retrain {tmp_path}")
    assert printed(has_retrain=True, has_loo=False)[2].startswith(f"  or: jmem loo {tmp_path}")
    assert len(printed(has_retrain=True, has_loo=True)) == 2


def test_leakage_ending_keeps_a_run_directorys_duplicates():
    lines = endings.leakage_ending(["runs/d/duplicates.csv"], "runs/d", details=False, run_dir=True)
    assert lines[0] == "wrote runs/d/duplicates.csv"
    assert "jmem leakage runs/d --details" in lines[1]
    assert "--out duplicates_T.csv" in lines[1]  # the run's own file is what it trained with
    lines = endings.leakage_ending(["duplicates.csv"], "digits", details=True, run_dir=False)
    assert "--details" not in lines[1] and "--out" not in lines[1]


def test_seconds_line():
    assert endings.seconds_line({"train": 145.2, "score": 0.35, "report": 6.3}) == \
        "time per stage: train 145 s, score 0.35 s, report 6.3 s"


# ----------------------------------------------------------------------------- jmem run


def test_stage_lines_count_the_stages_the_config_runs():
    plain = Config()
    assert pipeline.study_stages(plain) == ("train", "score", "retrain", "report")
    assert pipeline.stage_line("score", pipeline.study_stages(plain)) == "stage 2/4: scoring"
    with_loo = Config(loo=LooConfig(enabled=True))
    assert pipeline.stage_line("loo", pipeline.study_stages(with_loo)) == "stage 4/5: leave-one-out validation"
    assert pipeline.stage_line("report", pipeline.study_stages(with_loo)) == "stage 5/5: the report"


@pytest.mark.parametrize("spec, expected", [
    ("experiments/digits.py", "runs/digits"),
    ("experiments/digits.py:loo", "runs/digits_loo"),
    ("experiments/mnist1d.py:study", "runs/mnist1d_study"),
    ("/abs/path/fashion_mnist.py:cpu", "runs/fashion_mnist_cpu"),
])
def test_default_workdir_follows_the_experiment_and_variant(spec, expected):
    assert default_workdir(spec) == Path(expected)


# ----------------------------------------------------------------------------- progress


def test_model_progress_moves_within_a_wave_and_lands_on_whole_models():
    bar = waves.ModelProgress(total=10, epochs=4, enabled=False, label="train")
    step = bar.epochs_of(8)  # a wave of 8 models
    step(1)
    assert bar.count == pytest.approx(2.0)  # 8 models x 1/4 of their epochs
    step(2)
    assert bar.count == pytest.approx(6.0)
    bar.wave_done(8)
    assert bar.count == 8
    bar.epochs_of(2)(3)
    assert bar.count == pytest.approx(9.5)
    bar.wave_done(2)
    assert bar.count == 10
    bar.close()


def test_a_wave_reports_its_epochs_segment_by_segment_and_returns_its_loss_history():
    config = apply_overrides(load_experiment(str(REPO / "experiments" / "digits.py:small")),
                             ["train.epochs=3"])
    from jmem.data.loaders import load_dataset

    data = load_dataset("digits")
    keep = np.ones((2, data.num_train), bool)
    job = waves.Job(data, keep, config.model, config.train, config.seed)
    calls = []
    # Checkpoint-due every epoch: each segment is one epoch, so the bar hears of each.
    out = waves.train_wave(job, 0, 2, execution=waves.Execution(checkpoint_every_epochs=1),
                           on_epochs=calls.append)
    assert calls == [1, 1, 1]
    assert out["loss_history"].shape == (2, 3) and out["loss_history"].dtype == np.float32
    np.testing.assert_allclose(out["loss_history"][:, -1], out["final_loss"])
    assert set(waves.wave_shapes(job, 0, 2)) >= {"loss_history"}
