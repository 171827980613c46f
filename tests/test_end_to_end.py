"""Train a small digits run with canaries, score it, and check memorization finds them.

The notebooks that read a run directory are executed through a kernel in test_notebooks.py.
"""

import csv
import json

import numpy as np

from jmem.study import rundir
from jmem.cli import main


def test_scores_recover_canaries_on_a_trained_digits_run(tmp_path, capsys):
    workdir = tmp_path / "run"
    # The fz variant is a single-rate estimation (fixed 70% subsets); train, then score.
    argv = ["train", "experiments/digits.py:fz", "--workdir", str(workdir), "--no-progress",
            "--set", "train.num_models=24", "--set", "subsets.canary_fraction=0.03"]
    assert main(argv) == 0
    assert main(["score", str(workdir)]) == 0
    out = capsys.readouterr().out
    assert "canary AUROC" in out and "never selected, never removed" in out

    thresholds = json.loads((workdir / rundir.THRESHOLDS).read_text())
    rows = list(csv.DictReader(open(workdir / rundir.SCORES)))
    canaries = np.load(workdir / rundir.CANARIES)
    assert len(rows) == canaries.size
    mem = np.array([float(r["mem"]) for r in rows])
    is_canary = np.array([r["is_canary"] == "1" for r in rows])
    np.testing.assert_array_equal(is_canary, canaries)
    # Random-label canaries are the textbook memorized points: fit when in, wrong when out.
    assert np.nanmean(mem[canaries]) > 0.5
    assert np.nanmean(mem[~canaries]) < 0.1
    auroc = {name: ev["auroc"] for name, ev in thresholds["canaries"]["scores"].items()}
    assert auroc["mem"] > 0.9, auroc
    assert auroc["lira"] > 0.9, auroc
    # The leakage-free test set is attached and scored alongside the full test set.
    assert (workdir / rundir.margins_extra_name("test_clean")).exists()
    assert (workdir / rundir.DUPLICATES).exists()

