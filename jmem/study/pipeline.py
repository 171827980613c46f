"""``jmem run``: the whole study, data -> masks -> train -> score -> retrain -> report.

Every stage writes into the run directory and is skipped when its outputs are complete, so
an interrupted study (SIGTERM, SIGKILL, a crash) continues where it stopped when the same
command runs again:

========== =================================================== ==============================
stage      does                                                complete when
========== =================================================== ==============================
train      leakage check, canaries, keep-masks, the estimation ``models.csv`` (training's own
           models (:mod:`jmem.study.training`)                  waves and checkpoints resume)
score      scores, thresholds, pairs (:mod:`jmem.study.scoring`) ``pairs.csv`` (written last),
                                                               with the config's ``score``
retrain    the removal experiment and the ablation              ``retrain/retrain.json``
           (:mod:`jmem.study.retrain`)                          (resumes its own waves)
loo        with ``loo.enabled``: leave-one-out ground truth     ``loo/loo.json``
           (:mod:`jmem.study.loo`)                              (resumes its own waves)
report     ``report.md`` and its plots (:mod:`jmem.study.report`) re-rendered every time (seconds)
========== =================================================== ==============================
"""

from __future__ import annotations

import time
from pathlib import Path

from jmem.config import Config
from jmem.data.dataset import Dataset
from jmem.study import faults, rundir, training, waves

STAGES = ("train", "score", "retrain", "loo", "report")


def is_scored(workdir: Path) -> bool:
    """The scoring stage wrote all three files (pairs.csv is its last)."""
    return all((Path(workdir) / name).exists() for name in (rundir.SCORES, rundir.THRESHOLDS, rundir.PAIRS))


def scoring_changed(workdir: Path, config: Config) -> str | None:
    """The first ``score`` field whose value differs from the options thresholds.json records
    (``score.fdr_q: 0.1 vs 0.05``), or None."""
    from jmem import config as config_lib
    from jmem.study import scoring

    recorded = config_lib.to_dict(scoring.recorded_options(workdir))
    return config_lib.first_difference({"score": recorded}, {"score": config_lib.to_dict(config.score)},
                                       ignore=(), ignore_sections=())


def training_line(summary: dict) -> str:
    """One line about the estimation models: count, speed, test accuracy, divergences."""
    acc, sd = summary.get("test_accuracy_mean"), summary.get("test_accuracy_std")
    speed = (f", {summary['trained_now']} trained now at {summary['models_per_second']:.1f} models/s"
             if summary.get("trained_now") and summary.get("models_per_second") else "")
    accuracy = f"; test accuracy {100 * acc:.1f}% (sd {100 * sd:.1f})" if acc is not None else ""
    return (f"estimation: {summary.get('models')} models{speed}{accuracy}; "
            f"{summary.get('diverged', 0)} diverged")


def run_study(config: Config, workdir: Path, dataset: Dataset, *, execution: waves.Execution = waves.Execution(),
              progress: bool = True, log=print) -> dict:
    """Run every stage of the study of ``config`` into ``workdir`` (resuming what is done).

    Returns {"train": summary, "retrain": summary, "report": paths, "verdict": str,
    "seconds": {stage: float}}. Only process 0 of a multi-process job goes past training.
    """
    from jmem.engine import parallel
    from jmem.study import scoring
    from jmem.study.report.stage import build_report
    from jmem.study.retrain.stage import run_retrain

    workdir = Path(workdir)
    seconds, out = {}, {}
    t0 = time.perf_counter()
    out["train"] = training.run_training(config, workdir, dataset, progress=progress, log=log,
                                         execution=execution)
    seconds["train"] = time.perf_counter() - t0
    if parallel.process_index() != 0:
        return {**out, "seconds": seconds}
    log(training_line(out["train"]))
    t0 = time.perf_counter()
    changed = scoring_changed(workdir, config) if is_scored(workdir) else None
    if is_scored(workdir) and changed is None:
        log(f"{workdir}: already scored")
    else:
        if is_scored(workdir):
            log(f"{workdir}: scored with other options ({changed}); scoring again")
        log(scoring.format_summary(scoring.score_run(workdir, config.score)))
    faults.point("stage")
    seconds["score"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out["retrain"] = run_retrain(workdir, dataset=dataset, execution=execution, progress=progress,
                                 log=log, retrain_config=config.retrain)
    faults.point("stage")
    seconds["retrain"] = time.perf_counter() - t0
    if config.loo.enabled:
        from jmem.study.loo import run_loo

        t0 = time.perf_counter()
        out["loo"] = run_loo(workdir, dataset=dataset, execution=execution, progress=progress,
                             log=log, loo_config=config.loo)
        log(out["loo"]["text"])
        faults.point("stage")
        seconds["loo"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out["report"] = build_report(workdir)
    seconds["report"] = time.perf_counter() - t0
    out["verdict"] = out["retrain"]["verdict"]
    out["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    return out
