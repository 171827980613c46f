"""`jmem run`: the whole study, stage by stage, resumable; every experiment config loads."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jmem import config as config_lib
from jmem.scores import protocols
from jmem.study.faults import KILL_ENV
from child_env import child_env

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((REPO / "experiments").glob("*.py"))

# A two-rate digits study small enough for a test: 40 estimation models (20 per rate), 2
# epochs, 2 retraining seeds per arm, the 8 ablation removal sets and one sweep point.
TINY = ["--set", "train.num_models=70", "--set", "train.epochs=2", "--set", "retrain.seeds=2",
        "--set", "retrain.resamples=200", "--set", "retrain.curve="]


def variants_of(path: Path) -> list[str]:
    return ["", *sorted(config_lib.experiment_variants(str(path)))]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_every_experiment_and_variant_loads_and_validates(path):
    variants = variants_of(path)
    assert "small" in variants, f"{path.name} has no small variant for tests"
    for variant in variants:
        config = config_lib.load_experiment(f"{path}:{variant}" if variant else str(path))
        assert config_lib.from_dict(config_lib.to_dict(config)) == config


def test_default_study_holds_both_protocols():
    config = config_lib.load_experiment(str(REPO / "experiments" / "digits.py"))
    assert set(config.subsets.rates) == {0.7, 0.95} and config.subsets.design == "balanced"
    assert config.retrain.ablation and config.leakage.clean_test


def _run(workdir, kill_at=None):
    extra = {KILL_ENV: kill_at} if kill_at else {}
    return subprocess.run([sys.executable, "-m", "jmem", "run", "--workdir", str(workdir), *TINY,
                           "--no-progress", "--checkpoint-every-epochs", "1"], cwd=REPO,
                          env=child_env(JMEM_CPU_DEVICES="2", **extra), capture_output=True, text=True, timeout=600)


def _results(workdir: Path) -> dict:
    """The study's computed files (the report's text carries a date; its numbers come from these)."""
    names = ["scores.csv", "thresholds.json", "pairs.csv", "retrain/retrain.json",
             "retrain/ablation.json", "retrain/verdict.txt", "retrain/retrain_models.csv"]
    return {n: (workdir / n).read_bytes() for n in names}


def test_study_end_to_end_resumes_after_kills_between_and_inside_stages(tmp_path):
    """`jmem run` with no CONFIG (the digits study, shrunk): killed after scoring (between
    stages) and inside the retrain stage's training, then finished, it gives the same results
    as an uninterrupted run; the verdict names both protocols and the report renders."""
    reference, work = tmp_path / "reference", tmp_path / "work"
    ref = subprocess.Popen([sys.executable, "-m", "jmem", "run", "--workdir", str(reference), *TINY,
                            "--no-progress"], cwd=REPO, env=child_env(JMEM_CPU_DEVICES="2"), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        killed = _run(work, kill_at="stage:1")  # after the score stage, before retrain
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert (work / "pairs.csv").exists() and not (work / "retrain").exists()
        killed = _run(work, kill_at="segment:1")  # inside the retrain stage's first wave
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert (work / "retrain" / "keep.npy").exists() and not (work / "retrain" / "retrain.json").exists()
        done = _run(work)
        assert done.returncode == 0, done.stderr
        assert "already scored" in done.stdout
    finally:
        out, err = ref.communicate(timeout=600)
        assert ref.returncode == 0, err
    for text in (out, done.stdout):
        assert "Feldman & Zhang (rate 0.7" in text and "corrected (rate 0.95" in text
        assert "Gates:" in text and f"next: read " in text and "time per stage: " in text
    assert _results(work) == _results(reference)

    ablation = json.loads((work / "retrain" / "ablation.json").read_text())
    head = ablation["headline"]
    assert [e["protocol"] for e in head["protocols"]] == ["Feldman & Zhang"] * 2 + ["corrected"] * 2
    assert [e["factor"] for e in head["effects"]] == list(protocols.FACTORS) + ["rate", "definition", "leakage"]
    assert ablation["rates"] == [0.7, 0.95] and set(ablation["words"]) == {"Feldman & Zhang", "corrected"}
    # 2 epochs and 10 models at rate 0.7: the gates hold the words back and say which and why.
    assert ablation["words"]["Feldman & Zhang"].startswith("inconclusive: convergence")
    assert "train.epochs" in ablation["words"]["Feldman & Zhang"]
    fz_gates = {g["gate"]: g for g in ablation["gates"]["Feldman & Zhang"]}
    assert set(fz_gates) == {"convergence", "reliability", "power"}
    assert not fz_gates["convergence"]["passed"] and not fz_gates["reliability"]["passed"]
    # Whether 10 seeds reach the power bar depends on the noise; the gate must agree with its own bar.
    power = fz_gates["power"]
    assert power["passed"] == (power["value"] <= power["bar"])
    report = (work / "report.md").read_text()
    assert "## Ablation of the four corrections" in report
    for link in [line.split("](")[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]:
        png = work / link
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000, link
