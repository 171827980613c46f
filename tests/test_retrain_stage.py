"""The removal experiment's stage (``jmem.study.retrain.stage``, ``jmem retrain``): known answers
on synthetic data, pairing, reading the scoring stage's files, bad input, resume.

One synthetic dataset carries both known answers: three Gaussian classes with 8% of the
training labels flipped (removing them must not hurt), and a rare far-away sub-population
of class 0 (10 training examples, 40 test examples in an extra test set ``rare``) whose
removal must cost accuracy on ``rare``. One estimation run (64 tiny MLPs) is trained once
per module; each test copies its scored run directory.
"""

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jmem.cli import main
from jmem.config import Config, DataConfig, LeakageConfig, SubsetConfig
from jmem.data import removal
from jmem.data.loaders import load_dataset
from jmem.engine.hparams import ModelConfig, TrainConfig
from jmem.study import training
from jmem.study.faults import KILL_ENV
from jmem.study.retrain import design, selection, stage
from jmem.study.scoring import score_run
from child_env import child_env

REPO = Path(__file__).resolve().parents[1]
SCHEMA_KEYS = {"seeds", "pools", "methods", "arms", "test_sets", "accuracy", "comparisons",
               "share_of_change", "excluded_diverged", "verdict", "selection", "labels", "data_order"}


def _blobs(generator, n_per, centers, scale=1.0):
    x = np.concatenate([mu + scale * generator.standard_normal((n_per, mu.size)) for mu in centers])
    y = np.repeat(np.arange(len(centers)), n_per)
    return x.astype(np.float32), y


def synthetic(directory: Path, clean_test: bool = False, canary_fraction: float = 0.0):
    """(Config, Dataset with extra test set "rare", flipped bool[N], rare bool[N])."""
    g = np.random.default_rng(0)
    centers = 2.0 * g.standard_normal((3, 8))
    x_train, y_train = _blobs(g, 50, centers)
    x_test, y_test = _blobs(g, 40, centers)
    far = centers[1] + 4.0 * (centers[1] - centers[0]) / np.linalg.norm(centers[1] - centers[0])
    x_rare_train, _ = _blobs(g, 10, [far], 0.3)
    x_rare_test, _ = _blobs(g, 40, [far], 0.3)
    flipped = np.r_[g.random(y_train.size) < 0.08, np.zeros(10, bool)]
    labels = np.r_[y_train, np.zeros(10, int)]
    labels[flipped] = (labels[flipped] + 1 + g.integers(0, 2, flipped.sum())) % 3
    path = directory / "blobs.npz"
    np.savez(path, x_train=np.r_[x_train, x_rare_train], y_train=labels, x_test=x_test, y_test=y_test)
    config = Config(data=DataConfig(name=str(path)),
                    subsets=SubsetConfig(rates=(0.5,), canary_fraction=canary_fraction),
                    model=ModelConfig(kind="mlp", width=32),
                    leakage=LeakageConfig(clean_test=clean_test),
                    train=TrainConfig(num_models=64, epochs=20, batch_size=32, learning_rate=3e-2))
    dataset = load_dataset(str(path))
    rare_x = (x_rare_test - dataset.channel_mean) / dataset.channel_std
    dataset = dataset.with_extra_test("rare", rare_x, np.zeros(40, np.int32))
    rare = np.r_[np.zeros(y_train.size, bool), np.ones(10, bool)]
    return config, dataset, flipped, rare


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    directory = tmp_path_factory.mktemp("retrain")
    config, dataset, flipped, rare = synthetic(directory)
    run = directory / "run"
    training.run_training(config, run, dataset, progress=False, log=lambda *a: None)
    score_run(run)
    np.save(directory / "rare.npy", np.flatnonzero(rare))
    np.save(directory / "flipped.npy", flipped)
    return run, dataset, flipped, rare


def copy_run(scored, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(scored[0], target)
    return target


def comparison(record, group, a, b, test_set):
    return next(c for c in record["comparisons"]
                if (c["group"], c["a"], c["b"], c["test_set"]) == (group, a, b, test_set))


def _run_stage(scored, tmp_path, *overrides, seeds=20):
    run = copy_run(scored, tmp_path)
    summary = stage.run_retrain(run, [f"retrain.seeds={seeds}", "retrain.resamples=1000", *overrides],
                                dataset=scored[1], progress=False, log=lambda *a: None)
    out = run / "retrain"
    record = json.loads((out / "retrain.json").read_text())
    assert SCHEMA_KEYS <= set(record) and record["seeds"] == seeds and record["pools"] == 2
    assert (out / "verdict.txt").read_text().strip() == record["verdict"] == summary["verdict"].strip()
    assert not (out / "waves").exists() and not (out / "checkpoints").exists()
    return run, record


def _removed(run, record, arm):
    rows = next(a["rows"] for a in record["arms"] if a["name"] == arm)
    return ~np.load(run / "retrain" / "keep.npy")[rows[0]]


def test_the_pipeline_selects_the_flipped_labels_and_removing_them_does_not_hurt(scored, tmp_path):
    """F&Z's rule, from each pool's half of the estimation models, selects most of the flipped
    labels (they are memorized); removing its selection does not lower test accuracy against
    removing as many class-matched random examples."""
    run, record = _run_stage(scored, tmp_path, "retrain.methods=fixed")
    flipped = scored[2]
    for p in (0, 1):
        removed = _removed(run, record, f"method:fixed:selected:p{p}")
        assert removed[flipped].mean() > 0.7, p
    c = comparison(record, "method:fixed", "selected", "matched", "test")
    assert c["ci_high"] > 0 and c["estimate_pp"] > -1.0  # no cost
    assert record["selection"]["models_per_pool"] == [32, 32]
    assert 0 < record["selection"]["spearman_mem"]["0.5"] <= 1
    names = [a["name"] for a in record["arms"]]
    assert names[:2] == ["full:p0", "full:p1"] and "method:fixed:random:p1" in names
    rows = (run / "retrain" / "retrain_models.csv").read_text().splitlines()
    assert len(rows) == 1 + len(names) * 20 and rows[0].startswith("row,arm,kind,pool,seed,model_id,removed")


def test_user_sets_flipped_labels_and_a_rare_subpopulation(scored, tmp_path):
    """Removing the flipped labels does not hurt; removing the rare cluster's 10 training
    examples lowers accuracy on its 40 test points (the extra test set "rare")."""
    for name, hurts in (("flipped", False), ("rare", True)):
        path = str(Path(scored[0]).parent / f"{name}.npy")
        _, record = _run_stage(scored, tmp_path / name, "retrain.methods=", f"retrain.remove={path}")
        if hurts:
            c = comparison(record, "user", "selected", "matched", "rare")
            assert c["ci_high"] < 0 and c["p"] < 0.01
            assert record["accuracy"]["user:selected:p0"]["rare"]["mean"] < \
                record["accuracy"]["full:p0"]["rare"]["mean"] - 20
        else:
            assert comparison(record, "user", "selected", "matched", "test")["ci_high"] > 0


def test_pairing(scored, tmp_path):
    """Arms with the same removal set train bitwise-identical models; the matched arm has the
    selected arm's class counts; pool p seed s has one model id in every arm; with the coupled
    order the arms at one seed are strongly correlated."""
    run, record = _run_stage(scored, tmp_path, "retrain.methods=fixed", "retrain.sweep=0.25", seeds=4)
    out = run / "retrain"
    rows = {a["name"]: slice(*a["rows"]) for a in record["arms"]}
    keep, ids = np.load(out / "keep.npy"), np.load(out / "model_ids.npy")
    margins = np.load(out / "margins_test.npy")
    for p in (0, 1):
        sel, sweep = rows[f"method:fixed:selected:p{p}"], rows[f"sweep:0.25:selected:p{p}"]
        assert np.array_equal(keep[sel], keep[sweep]) and np.array_equal(margins[sel], margins[sweep])
        assert not np.array_equal(margins[sel], margins[rows[f"full:p{p}"]])
        for name in rows:
            if name.endswith(f":p{p}") or name == f"full:p{p}":
                assert np.array_equal(ids[rows[name]], design.MODEL_ID_OFFSET + p * 4 + np.arange(4))
    labels = np.load(out / "labels_train.npy")
    target = removal.class_counts(~keep[rows["method:fixed:selected:p0"]][0], labels, 3)
    matched = ~keep[rows["method:fixed:matched:p0"]]
    for s in range(4):
        assert np.array_equal(removal.class_counts(matched[s], labels, 3), target)
    assert len({m.tobytes() for m in matched}) == 4  # a fresh draw per seed
    assert record["data_order"] == "coupled"


@pytest.fixture(scope="module")
def with_canaries(tmp_path_factory):
    directory = tmp_path_factory.mktemp("canaries")
    config, dataset, _, _ = synthetic(directory, canary_fraction=0.05)
    dataset = dataset.__class__(**{**dataset.__dict__, "extra_tests": {}})
    run = directory / "run"
    training.run_training(config, run, dataset, progress=False, log=lambda *a: None)
    score_run(run)
    return run, dataset


def test_canaries_are_an_instrument_never_a_removal(with_canaries, tmp_path):
    """The removal sets are the rules' selections with the canaries' indices dropped; random
    arms never draw a canary; the retrained models see the dataset's true labels."""
    from jmem.config import RetrainConfig
    from jmem.study import scoring

    run_dir, dataset = with_canaries
    canary = np.load(run_dir / "canaries.npy")
    assert canary.sum() >= 5
    _, run, opt = stage.load_scored_run(run_dir)
    chosen = selection.select(scoring.without_diverged(run), RetrainConfig(methods="fixed,calibrated"), opt)
    sel_rows = chosen.pools
    for c in chosen.candidates:
        assert not c.removed[:, canary].any()
        for p, rows in enumerate(sel_rows):
            s = scoring.rate_scores(run, rows, opt)
            rule = c.method
            expected = (s.mem >= 0.25) if rule == "fixed" else None
            if expected is not None:
                np.testing.assert_array_equal(c.removed[p], expected & ~canary)
    rerun, record = _run_stage((run_dir, dataset), tmp_path, "retrain.methods=fixed,calibrated", seeds=3)
    keep = np.load(rerun / "retrain" / "keep.npy")
    assert keep[:, canary].all()  # no arm, selected or random, ever removes a canary
    seen = np.load(rerun / "retrain" / "labels_train.npy")
    np.testing.assert_array_equal(seen, dataset.y_train)
    assert (seen[canary] != np.load(run_dir / "labels_train.npy")[canary]).all()
    assert record["labels"].startswith("the dataset's own")


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jmem: error: ")
    return err[0]


def test_bad_input_exits_2_with_one_line_and_writes_nothing(scored, tmp_path, capsys):
    run = copy_run(scored, tmp_path)
    for name in ("margins_rare.npy", "labels_rare.npy"):  # the CLI's dataset has no "rare"
        (run / name).unlink()
    (run / "manifest.json").unlink(missing_ok=True)  # accept the run without them, unverified
    labels = np.load(run / "labels_train.npy")
    np.save(tmp_path / "class1.npy", np.flatnonzero(labels == 1))
    np.save(tmp_path / "all.npy", np.ones(labels.size, bool))
    np.save(tmp_path / "out.npy", np.array([0, labels.size]))
    cases = {
        "retrain.methods=fixed,magic": "unknown rule 'magic'",
        f"retrain.remove={tmp_path / 'class1.npy'}": "training examples of class 1",
        f"retrain.remove={tmp_path / 'all.npy'}": f"removes all {labels.size} training examples",
        f"retrain.remove={tmp_path / 'out.npy'}": f"index {labels.size} is outside",
        "train.epochs=3": "takes only retrain.* fields",
        "retrain.seeds=1": "retrain.seeds=1",
    }
    for override, message in cases.items():
        line = _error(capsys, ["retrain", str(run), "--set", override])
        assert message in line
    assert not (run / "retrain").exists()
    (run / "thresholds.json").unlink()
    assert "is not scored" in _error(capsys, ["retrain", str(run)])
    assert not (run / "retrain").exists()


SMALL = ["--set", "retrain.methods=fixed", "--set", "retrain.seeds=3", "--set", "retrain.resamples=200"]


def _retrain(run, *flags, kill_at=None):
    env = child_env(JMEM_CPU_DEVICES="2", **({KILL_ENV: kill_at} if kill_at else {}))
    return subprocess.run([sys.executable, "-m", "jmem", "retrain", str(run), *SMALL, "--no-progress",
                           *flags], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _files(directory: Path) -> dict:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and not any(x.startswith(".") for x in p.relative_to(directory).parts)}


def test_killed_retrain_resumes_bitwise_identical(tmp_path, capsys):
    """A tiny scored run (8 models, waves of 4); its 12-model retrain is killed mid-wave
    (after a checkpoint) and mid-assembly, then finished: every file of retrain/ equals an
    uninterrupted retrain's, byte for byte. (The other kill points are shared with
    ``jmem train`` and tested in test_resume.py.) A different retrain config is refused."""
    import dataclasses

    config, dataset, _, _ = synthetic(tmp_path)
    config = dataclasses.replace(config, train=dataclasses.replace(
        config.train, num_models=8, epochs=4, wave_size=4))
    base = tmp_path / "base"
    # The CLI loads the dataset from the config, without the in-memory "rare" set.
    dataset = dataclasses.replace(dataset, extra_tests={})
    training.run_training(config, base, dataset, progress=False, log=lambda *a: None)
    score_run(base)
    reference, work = tmp_path / "reference", tmp_path / "work"
    shutil.copytree(base, reference)
    shutil.copytree(base, work)
    ref = subprocess.Popen([sys.executable, "-m", "jmem", "retrain", str(reference), *SMALL,
                            "--no-progress", "--checkpoint-every-seconds", "0"], cwd=REPO,
                           env=child_env(JMEM_CPU_DEVICES="2"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        flags = ("--checkpoint-every-epochs", "1")
        for point, left in (("segment:2", "checkpoints"), ("assembly:1", "waves")):
            proc = _retrain(work, *flags, kill_at=point)
            assert proc.returncode == -signal.SIGKILL, (point, proc.stderr)
            assert any((work / "retrain" / left).iterdir())  # killed where we meant to
        line = _error(capsys, ["retrain", str(work), *SMALL, "--set", "retrain.seeds=4"])
        assert "retrain.seeds: 3 vs 4" in line
        done = _retrain(work, *flags)
        assert done.returncode == 0, done.stderr
        assert "Removal comparisons" in done.stdout
    finally:
        assert ref.wait(timeout=300) == 0, ref.stderr.read()
    a, b = _files(reference / "retrain"), _files(work / "retrain")
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []
    assert main(["retrain", str(work), *SMALL, "--no-progress"]) == 0
    assert "already complete" in capsys.readouterr().out
    # Re-scored with another setting: the finished experiment is not silently reused.
    assert main(["score", str(work), "--set", "score.fixed_threshold=0.3"]) == 0
    capsys.readouterr()
    assert "computed from other inputs (score.fixed_threshold: 0.25 vs 0.3)" in _error(
        capsys, ["retrain", str(work), *SMALL, "--no-progress"])


def test_deleting_retrain_json_re_analyses_without_training(scored, tmp_path):
    """retrain.json deleted: the stored margins are analysed again (new statistics need no new
    models), giving the same file; nothing is trained."""
    run, record = _run_stage(scored, tmp_path, "retrain.methods=fixed", seeds=3)
    path = run / "retrain" / "retrain.json"
    before = path.read_bytes()
    path.unlink()
    summary = stage.run_retrain(run, ["retrain.seeds=3", "retrain.resamples=1000", "retrain.methods=fixed"],
                                dataset=scored[1], progress=False, log=lambda *a: None)
    assert summary["trained_now"] == 0
    assert path.read_bytes() == before
