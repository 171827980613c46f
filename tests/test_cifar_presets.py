"""The CIFAR presets' ``small`` variants run end to end (`jmem run`: train, score, retrain,
report) on TFDS mock data with real-format record ids, and the leakage-free test set drops the
mock test images that Barz & Denzler list as duplicates."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jmem.cli import main
from jmem.config import load_experiment
from jmem.data.leakage import load_known_duplicates
from jmem.study import rundir

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SIZES = {"cifar10": (48, 24), "cifar100": (120, 40)}  # (train, test) mock examples
LISTED = 5  # mock test images whose source id is on the duplicate list


def source_ids(name: str) -> dict:
    """Original-file ids of the mock splits: the first LISTED test ids (and their training
    twins) from the Barz & Denzler list, the rest ids the list does not hold."""
    known = load_known_duplicates(name)
    n_train, n_test = SIZES[name]
    test = list(known.test_id[:LISTED])
    test += [i for i in range(10_000) if i not in set(known.test_id)][: n_test - LISTED]
    train = list(dict.fromkeys(known.train_id[:LISTED]))
    train += [i for i in range(50_000) if i not in set(train)][: n_train - len(train)]
    return {"train": train, "test": test}


def mock_source(name: str):
    ids = source_ids(name)
    # 10 labels only, also for CIFAR-100 (its other classes stay empty, a warning): with 120
    # images over 100 classes a removal set would empty a class, which retraining refuses.
    classes = 10

    def source(builder, split, **kwargs):
        if builder.name != name:  # cifar10_1: not prepared
            raise NotImplementedError("Random access data source for file format TFRECORD is not supported")
        rng = np.random.default_rng(len(split))
        order = ids[split][::-1]  # not in file order, as TFDS serves them
        return [{"id": f"{split}_{i:05d}".encode(),
                 "image": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                 "label": np.int64(k % classes)} for k, i in enumerate(order)]
    return source


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_small_variant_runs_end_to_end_on_mock_data(name, tmp_path, capsys):
    workdir = tmp_path / "run"
    with tfds.testing.mock_data(as_data_source_fn=mock_source(name)):
        rc = main(["run", f"{REPO}/experiments/{name}.py:small", "--workdir", str(workdir),
                   "--no-progress", "--set", f"data.data_dir={tmp_path / 'tfds'}"])
    captured = capsys.readouterr()
    out = captured.out
    assert rc == 0, captured.err[-2000:]
    config = load_experiment(f"{REPO}/experiments/{name}.py:small")
    n_train, n_test = SIZES[name]
    r = config.train.num_models

    keep = np.load(workdir / rundir.KEEP)
    assert keep.shape == np.load(workdir / rundir.MARGINS_TRAIN).shape == (r, n_train)
    assert np.load(workdir / rundir.MARGINS_TEST).shape == (r, n_test)
    # The leakage-free test set is the test set minus the listed duplicates.
    clean = np.load(workdir / "margins_test_clean.npy")
    assert clean.shape == (r, n_test - LISTED)
    for f in (rundir.CONFIG, rundir.MODEL_METRICS, rundir.SCORES, rundir.THRESHOLDS, rundir.PAIRS, rundir.DUPLICATES):
        assert (workdir / f).stat().st_size > 0, f

    retrain = json.loads((workdir / "retrain" / rundir.RETRAIN).read_text())
    assert retrain  # parses, not empty
    verdict = (workdir / "retrain" / "verdict.txt").read_text()
    assert verdict.strip() and verdict.strip().splitlines()[0] in out
    if config.retrain.ablation:
        ablation = json.loads((workdir / "retrain" / rundir.ABLATION).read_text())
        assert ablation["rates"] == [0.7, 0.95] and len(ablation["headline"]["protocols"]) == 4
        assert "Gates:" in out
    else:
        assert not (workdir / "retrain" / rundir.ABLATION).exists()

    report = (workdir / rundir.REPORT).read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert links
    for rel in links:
        data = (workdir / rel).read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 1000, rel
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert width >= 400 and height >= 200, (rel, width, height)
    assert f"next: read {workdir / rundir.REPORT}" in out
