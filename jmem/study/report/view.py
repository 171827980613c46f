"""What the report reads from a run directory (:class:`RunView`); optional files are None."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from jmem.errors import JmemError
from jmem.study import integrity, rundir


def retrain_path(run_dir, name: str = rundir.RETRAIN) -> Path | None:
    """``RUN_DIR/retrain/<name>`` or ``RUN_DIR/<name>``, whichever exists (``retrain.json``,
    ``ablation.json``)."""
    d = Path(run_dir)
    for p in (d / "retrain" / name, d / name):
        if p.exists():
            return p
    return None


@dataclasses.dataclass
class RunView:
    """What the report reads. Optional files are None when absent."""

    path: Path
    config: dict | None
    scores: dict
    thresholds: dict
    models: dict | None
    pairs: dict | None
    duplicates: set | None          # {(test_index, train_index)}
    retrain: dict | None
    ablation: dict | None
    images: tuple | None = None     # (dataset or None, why not): jmem.study.inputs.report_dataset
    loss_history: np.ndarray | None = None  # float32[R, epochs] (loss_history.npy)
    model_rates: np.ndarray | None = None   # float32[R] (model_rates.npy)

    @property
    def canary(self):
        c = self.scores.get("is_canary")
        return None if c is None or not np.any(c == 1) else c == 1

    @property
    def num_examples(self) -> int:
        return int(self.scores["mem"].shape[0])


def read_run(run_dir) -> RunView:
    d = Path(run_dir)
    if not d.is_dir():
        raise JmemError(f"run directory {str(d)!r} does not exist")
    for name in (rundir.SCORES, rundir.THRESHOLDS):
        if not (d / name).exists():
            raise JmemError(f"run directory {str(d)!r} has no {name}; run `jmem score {d}` first")
    integrity.verify_run(d)
    opt = lambda name, fn: fn(d / name) if (d / name).exists() else None  # noqa: E731
    dups = None
    if (d / rundir.DUPLICATES).exists():
        cols = rundir.read_csv_columns(d / rundir.DUPLICATES)
        dups = {(int(t), int(r)) for t, r in zip(cols.get("test_index", []), cols.get("train_index", []))}
    rp, ap = retrain_path(d), retrain_path(d, rundir.ABLATION)
    return RunView(path=d, config=opt(rundir.CONFIG, rundir.load_json),
                   scores=rundir.read_csv_columns(d / rundir.SCORES),
                   thresholds=rundir.load_json(d / rundir.THRESHOLDS),
                   models=opt(rundir.MODEL_METRICS, rundir.read_csv_columns),
                   pairs=opt(rundir.PAIRS, rundir.read_csv_columns), duplicates=dups,
                   retrain=rundir.load_json(rp) if rp else None,
                   ablation=rundir.load_json(ap) if ap else None,
                   loss_history=opt(rundir.LOSS_HISTORY, rundir.load_array),
                   model_rates=opt(rundir.MODEL_RATES, rundir.load_array))
