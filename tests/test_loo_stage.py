"""The leave-one-out stage (``jmem.study.loo``, ``jmem loo``): known answers on a tiny dataset,
the design (stratified sample, shared full-set models, one-example differences), the proxies
of the training stage, resume after kills, the report section and the pipeline hook.

One synthetic dataset carries both known answers: three Gaussian classes; a point inside
class 1 labelled 2 and present five times (leaving one copy out changes nothing: LOO mem
~ 0), and a point inside class 0 labelled 1 and present once (the model fits it only when it
trains on it: LOO mem ~ 1). One estimation run (two rates, proxies recorded, a few
canaries) is trained and scored once per module; each test copies it.
"""

import dataclasses
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jmem.cli import main
from jmem.config import Config, DataConfig, LeakageConfig, LooConfig, RetrainConfig, SubsetConfig
from jmem.data.loaders import load_dataset
from jmem.engine.hparams import ModelConfig, TrainConfig
from jmem.study import loo, loo_design, rundir, training
from jmem.study.faults import KILL_ENV
from jmem.study.scoring import score_run
from child_env import child_env

REPO = Path(__file__).resolve().parents[1]
DUP_COPIES = 5
LOO_FIELDS = {"examples", "seeds", "models", "seeds_used", "excluded_seeds", "model_id_offset",
              "rates", "settings", "sample", "loo_mem", "estimators", "selections", "influence",
              "proxies"}


def synthetic(directory: Path):
    """(Config, dataset, dup: int64[5] indices of the copies, flip: int index of the unique
    mislabelled point). Canaries are drawn by the run; the test checks they miss both."""
    g = np.random.default_rng(1)
    centers = 3.0 * g.standard_normal((3, 8))
    x = np.concatenate([c + g.standard_normal((20, 8)) for c in centers])
    y = np.repeat(np.arange(3), 20)
    x_test = np.concatenate([c + g.standard_normal((10, 8)) for c in centers])
    y_test = np.repeat(np.arange(3), 10)
    dup_x = centers[1] + 0.3 * g.standard_normal(8)
    flip_x = centers[0] + 0.3 * g.standard_normal(8)
    x = np.concatenate([x, np.repeat(dup_x[None], DUP_COPIES, axis=0), flip_x[None]])
    y = np.r_[y, np.full(DUP_COPIES, 2), 1]
    path = directory / "known.npz"
    np.savez(path, x_train=x.astype(np.float32), y_train=y, x_test=x_test.astype(np.float32), y_test=y_test)
    config = Config(seed=1, data=DataConfig(name=str(path)),  # seed 1: the canaries miss both
                    subsets=SubsetConfig(rates=(0.5, 0.8), canary_fraction=0.05),
                    model=ModelConfig(kind="mlp", width=64), leakage=LeakageConfig(clean_test=False),
                    # long enough that a model fits the unique mislabelled point when it sees it
                    train=TrainConfig(num_models=32, epochs=60, batch_size=8, learning_rate=3e-2,
                                      record_proxies=True, wave_size=48))
    return config, load_dataset(str(path)), np.arange(60, 60 + DUP_COPIES), 60 + DUP_COPIES


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    directory = tmp_path_factory.mktemp("loo")
    config, dataset, dup, flip = synthetic(directory)
    run = directory / "run"
    training.run_training(config, run, dataset, progress=False, log=lambda *a: None)
    score_run(run)
    return run, config, dataset, dup, flip


def copy_run(scored, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(scored[0], target)
    return target


def quiet(*args):
    pass


def test_training_stage_saves_the_proxies(scored):
    run, config = scored[0], scored[1]
    keep = np.load(run / rundir.KEEP)
    csl, learned = np.load(run / rundir.CUM_LOSS), np.load(run / rundir.LEARNED_EPOCH)
    assert csl.shape == learned.shape == keep.shape
    assert csl.dtype == np.float32 and learned.dtype == np.int32
    assert (csl[~keep] == 0).all() and (csl[keep] > 0).all()  # summed loss of the seen examples only
    assert learned.min() >= 0 and learned.max() <= config.train.epochs
    outputs = json.loads((run / rundir.MANIFEST).read_text())["outputs"]
    assert {rundir.CUM_LOSS, rundir.LEARNED_EPOCH} <= set(outputs)


def test_known_answers_duplicate_and_unique_mislabelled(scored, tmp_path):
    """Every eligible example sampled (K = all), 8 paired seeds: a copy of the five-times
    duplicated point has LOO mem ~ 0 and the unique mislabelled point LOO mem ~ 1, each
    true value inside its interval; the design shares the full-set models."""
    run = copy_run(scored, tmp_path)
    _, config, dataset, dup, flip = scored
    canaries = np.load(run / rundir.CANARIES)
    assert not canaries[dup].any() and not canaries[flip] and canaries.any()
    eligible = int((~canaries).sum())
    seeds = 8
    summary = loo.run_loo(run, [f"loo.examples={eligible}", f"loo.seeds={seeds}", "loo.resamples=200"],
                          dataset=dataset, progress=False, log=quiet)
    out = run / loo.LOO_DIR
    rec = json.loads((out / rundir.LOO).read_text())
    assert LOO_FIELDS <= set(rec)
    # Full-set models are shared: S * (K + 1) models, not 2 * S * K.
    assert rec["models"] == summary["models"] == seeds * (eligible + 1)
    keep, ids = np.load(out / loo.KEEP), np.load(out / loo.MODEL_IDS)
    sample = np.load(out / loo.SAMPLE)
    assert keep.shape == (seeds * (eligible + 1), dataset.num_train)
    assert set(sample) == set(np.flatnonzero(~canaries))  # canaries never sampled
    for s in range(seeds):
        block = keep[s * (eligible + 1):(s + 1) * (eligible + 1)]
        assert block[0].all() and len(set(ids[s * (eligible + 1):(s + 1) * (eligible + 1)])) == 1
        for k, i in enumerate(sample):  # each LOO row: the full row minus its example
            assert list(np.flatnonzero(block[0] != block[1 + k])) == [i]
    assert len(set(ids)) == seeds
    # The LOO models saw the dataset's own labels, not the run's canaries.
    np.testing.assert_array_equal(np.load(out / loo.LABELS), dataset.y_train)
    table = rundir.read_csv_columns(out / loo.EXAMPLES_CSV)
    row = {int(i): r for r, i in enumerate(table["index"])}
    for i in dup:
        r = row[int(i)]
        assert abs(table["loo_mem"][r]) <= 0.15
        assert table["loo_mem_low"][r] <= 0 <= table["loo_mem_high"][r]
        assert table["loo_memorized"][r] == 0
    r = row[flip]
    assert table["loo_mem"][r] >= 0.85 and table["loo_mem_low"][r] <= 1 <= table["loo_mem_high"][r]
    assert table["loo_memorized"][r] == 1
    assert rec["proxies"]["available"] and set(rec["estimators"]) == {"0.5", "0.8"}
    assert all(r["selected_in_run"] >= 0 for r in rec["selections"].values())
    assert "leave-one-out" in summary["text"]
    models = rundir.read_csv_columns(out / loo.MODELS_CSV)
    assert models["removed"][0] == -1 and int(models["removed"][1]) == sample[0]
    assert not (out / "waves").exists() and not (out / "checkpoints").exists()


def _estimates(n=400, seed=0) -> loo_design.RunEstimates:
    """A run's estimates without a run: two rates, 40 examples selected by one rule, 150
    never misclassified, 10 canaries (ineligible)."""
    from jmem.scores import estimators

    gen = np.random.default_rng(seed)

    def scores():
        n_in, n_out = np.full(n, 30), np.full(n, 10)
        c_in = gen.integers(20, 31, n)
        c_out = gen.integers(0, 11, n)
        c_in[100:250], c_out[100:250] = 30, 10  # never wrong
        counts = estimators.Counts(n_in, n_out, c_in, c_out, *(np.zeros(n),) * 4)
        return estimators.scores_from_counts(counts)

    eligible = np.ones(n, bool)
    eligible[-10:] = False
    rule = np.zeros(n, bool)
    rule[:40] = True
    rule[-5:] = True  # a canary a rule selected: still never sampled
    by_rate = {0.7: scores(), 0.95: scores()}
    return loo_design.RunEstimates(by_rate, [], eligible, loo_design.never_wrong(by_rate),
                                   {"fixed@0.7": rule & eligible}, None, "not recorded")


def test_the_sample_is_stratified_as_documented():
    est = _estimates()
    cfg = LooConfig(examples=50)
    sample = loo_design.choose_sample(est, cfg, seed=0)
    by = {s["name"]: s for s in sample.strata}
    assert by["selected"] == {"name": "selected", "population": 40, "sampled": 20}
    assert by["easy"] == {"name": "easy", "population": 150, "sampled": 5}
    assert sum(by[f"mem decile {d}"]["population"] for d in range(1, 11)) == 400 - 40 - 150 - 10
    assert sum(by[f"mem decile {d}"]["sampled"] for d in range(1, 11)) == 25
    assert est.eligible[sample.index].all()  # canaries never
    assert (sample.index[sample.stratum == 0] < 40).all()
    assert ((sample.index[sample.stratum == 1] >= 100) & (sample.index[sample.stratum == 1] < 250)).all()
    assert sample.weight.sum() == pytest.approx(390)  # each stands for N_h / n_h eligible examples
    again = loo_design.choose_sample(est, cfg, seed=0)
    np.testing.assert_array_equal(sample.index, again.index)
    keep, ids = loo_design.design_rows(400, sample.index, seeds=3)
    assert keep.shape == (3 * 51, 400) and (ids == loo_design.LOO_MODEL_ID_OFFSET + np.repeat(np.arange(3), 51)).all()


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("jmem: error:")
    return err


def test_bad_input_exits_2_with_one_line_and_writes_nothing(scored, tmp_path, capsys):
    run = copy_run(scored, tmp_path)
    assert "loo.seeds=1 must be an integer >= 2" in _error(capsys, ["loo", str(run), "--set", "loo.seeds=1"])
    assert "takes only loo.* fields" in _error(capsys, ["loo", str(run), "--set", "train.epochs=3"])
    assert "loo.examples=1000" in _error(capsys, ["loo", str(run), "--set", "loo.examples=1000"])
    assert "loo.influence_rate=0.6 matches no rate" in _error(
        capsys, ["loo", str(run), "--set", "loo.examples=5", "--set", "loo.influence_rate=0.6"])
    (run / rundir.THRESHOLDS).unlink()
    assert "is not scored" in _error(capsys, ["loo", str(run)])
    assert not (run / loo.LOO_DIR).exists()


SMALL = ["--set", "loo.examples=6", "--set", "loo.seeds=4", "--set", "loo.resamples=200"]


def _loo(run, *flags, kill_at=None):
    env = child_env(JMEM_CPU_DEVICES="2", **({KILL_ENV: kill_at} if kill_at else {}))
    return subprocess.run([sys.executable, "-m", "jmem", "loo", str(run), *SMALL, "--no-progress", *flags],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _files(directory: Path) -> dict:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and not any(x.startswith(".") for x in p.relative_to(directory).parts)}


def test_killed_loo_resumes_bitwise_identical(tmp_path, capsys):
    """A tiny scored run (8 models, waves of 8): its 28-model LOO stage is killed mid-wave
    (after a checkpoint), mid-assembly and before the cleanup, then finished: every file of
    loo/ equals an uninterrupted stage's, loo.json included. Other settings are refused; a
    finished stage re-analyses without training when only analysis settings change or
    loo.json is gone."""
    config, dataset, _, _ = synthetic(tmp_path)
    config = dataclasses.replace(config, train=dataclasses.replace(
        config.train, num_models=8, epochs=4, wave_size=8, record_proxies=False))
    base = tmp_path / "base"
    training.run_training(config, base, dataset, progress=False, log=quiet)
    score_run(base)
    reference, work = tmp_path / "reference", tmp_path / "work"
    shutil.copytree(base, reference)
    shutil.copytree(base, work)
    ref = subprocess.Popen([sys.executable, "-m", "jmem", "loo", str(reference), *SMALL, "--no-progress",
                            "--checkpoint-every-seconds", "0"], cwd=REPO, env=child_env(JMEM_CPU_DEVICES="2"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        flags = ("--checkpoint-every-epochs", "1")
        for point, left in (("segment:2", "checkpoints"), ("assembly:1", "waves"), ("cleanup:1", "waves")):
            proc = _loo(work, *flags, kill_at=point)
            assert proc.returncode == -signal.SIGKILL, (point, proc.stderr)
            assert any((work / loo.LOO_DIR / left).iterdir())  # killed where we meant to
        line = _error(capsys, ["loo", str(work), *SMALL, "--set", "loo.seeds=5"])
        assert "loo.seeds: 4 vs 5" in line
        done = _loo(work, *flags)
        assert done.returncode == 0, done.stderr
        assert "leave-one-out: 6 examples x 4 seeds (28 models)" in done.stdout
    finally:
        assert ref.wait(timeout=300) == 0, ref.stderr.read()
    a, b = _files(reference / loo.LOO_DIR), _files(work / loo.LOO_DIR)
    assert sorted(a) == sorted(b) and rundir.LOO in a
    assert [k for k in a if a[k] != b[k]] == []
    assert main(["loo", str(work), *SMALL, "--no-progress"]) == 0
    assert "already complete" in capsys.readouterr().out
    # Only the analysis changes: loo.json is rewritten from the stored margins, no training.
    assert main(["loo", str(work), *SMALL, "--set", "loo.min_effect=0.5", "--no-progress"]) == 0
    assert "leave-one-out: 28 models, all trained before" in capsys.readouterr().out
    assert json.loads((work / loo.LOO_DIR / rundir.LOO).read_text())["settings"]["min_effect"] == 0.5
    (work / loo.LOO_DIR / rundir.LOO).unlink()  # re-analysed from the margins, as at first
    assert main(["loo", str(work), *SMALL, "--no-progress"]) == 0
    assert "leave-one-out: 28 models, all trained before" in capsys.readouterr().out
    assert (work / loo.LOO_DIR / rundir.LOO).read_bytes() == a[rundir.LOO]


def test_report_leads_with_loo_and_run_runs_the_stage(scored, tmp_path):
    """``jmem run`` with loo.enabled on a finished, scored run: the removal experiment, then
    the LOO stage, then the report, whose score-quality part starts with the LOO section
    and its two plots."""
    from jmem.study.pipeline import run_study

    run = copy_run(scored, tmp_path)
    _, config, dataset, _, _ = scored
    config = dataclasses.replace(
        config, retrain=RetrainConfig(methods="fixed", seeds=2, resamples=100),
        loo=LooConfig(enabled=True, examples=5, seeds=2, resamples=100))
    out = run_study(config, run, dataset, progress=False, log=quiet)
    assert out["loo"]["models"] == 2 * 6 and "loo" in out["seconds"]
    text = (run / rundir.REPORT).read_text()
    start = text.index("Against exact leave-one-out")
    assert start < text.index("## How reliable are these estimates?")
    for name in ("loo_mem_vs_estimate.png", "loo_rules.png"):
        assert (run / rundir.REPORT_FIGURES / name).exists() and name in text
