"""``jmem run``: the whole study, data -> masks -> train -> score -> retrain -> report.

Every stage writes into the run directory and is skipped when its outputs are complete and
were computed from the inputs they would be computed from now (:mod:`jmem.study.inputs`), so
an interrupted study (SIGTERM, SIGINT, SIGKILL, a crash) continues where it stopped when the
same command runs again:

========== =================================================== ==============================
stage      does                                                complete when
========== =================================================== ==============================
train      leakage check, canaries, keep-masks, the estimation ``models.csv`` (training's own
           models (:mod:`jmem.study.training`)                  waves and checkpoints resume)
score      scores, thresholds, pairs (:mod:`jmem.study.scoring`) its record in the manifest
                                                               matches the config's ``score``,
                                                               the training and its files
retrain    the removal experiment and the ablation              ``retrain/retrain.json``
           (:mod:`jmem.study.retrain`)                          (resumes its own waves)
loo        with ``loo.enabled``: leave-one-out ground truth     ``loo/loo.json``
           (:mod:`jmem.study.loo`)                              (resumes its own waves)
report     ``report.md`` and its plots (:mod:`jmem.study.report`) re-rendered every time (seconds)
========== =================================================== ==============================

SIGTERM and SIGINT stop the study at the next safe point (between training segments and
waves, between stages) with :class:`jmem.study.waves.Preempted` (exit 143 / 130); the run
directory's lock is held from the end of training to the end of the report. A selection that
selects nothing skips the removal experiment with a note; the report is written anyway.

In a multi-process job (``jmem run --distributed ...``) every process runs every stage: the
training stages (train, retrain, loo) share their waves round-robin, process 0 alone scores,
assembles, analyses and writes the report while the others wait, and every process exits
once the report is written (:mod:`jmem.study.processes`).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from jmem.config import Config
from jmem.data.dataset import Dataset
from jmem.errors import warn
from jmem.study import faults, inputs, processes, training, waves
from jmem.study.endings import training_line

STAGES = ("train", "score", "retrain", "loo", "report")
STAGE_TEXT = {"train": "training the estimation models", "score": "scoring",
              "retrain": "the removal experiment", "loo": "leave-one-out validation",
              "report": "the report"}


def study_stages(config: Config) -> tuple[str, ...]:
    """The stages ``jmem run`` goes through for ``config`` (``loo`` only with ``loo.enabled``)."""
    return tuple(s for s in STAGES if s != "loo" or config.loo.enabled)


def stage_line(stage: str, stages: tuple[str, ...]) -> str:
    """``"stage 2/4: scoring"``: where the study is, logged as each stage starts."""
    return f"stage {stages.index(stage) + 1}/{len(stages)}: {STAGE_TEXT[stage]}"


def score_stage(workdir: Path, config: Config, log) -> None:
    """Score unless the run's scores were computed from this training with these options
    and are intact; say why when scoring again."""
    from jmem.study import scoring

    problem = inputs.scores_problem(workdir, config.score)
    if problem is None:
        log(f"{workdir}: already scored")
        return
    if not problem.startswith("not scored"):
        log(f"{workdir}: {problem}; scoring again")
    log(scoring.format_summary(scoring.score_run(workdir, config.score)))


def retrain_stage(workdir: Path, config: Config, dataset: Dataset, execution, progress: bool,
                  log) -> dict | None:
    """The removal experiment; None (with a one-line note) when every selection is empty."""
    from jmem.data.removal import NothingToRemove
    from jmem.engine import parallel
    from jmem.study.retrain.stage import run_retrain

    try:
        return run_retrain(workdir, dataset=dataset, execution=execution, progress=progress,
                           log=log, retrain_config=config.retrain)
    except NothingToRemove as err:  # on every process (the selection is deterministic): one warning
        if parallel.process_index() == 0:
            warn(f"no removal experiment: {err}")
        return None


def run_study(config: Config, workdir: Path, dataset: Dataset, *, execution: waves.Execution = waves.Execution(),
              progress: bool = True, log=print) -> dict:
    """Run every stage of the study of ``config`` into ``workdir`` (resuming what is done).

    Returns {"train": summary, "retrain": summary or None, "report": paths, "verdict": str,
    "seconds": {stage: float}}. In a multi-process job every process calls this with the same
    arguments: all of them train the estimation, removal and leave-one-out models, process 0
    alone scores, assembles and reports (:mod:`jmem.study.processes`), and the others return
    {"train": ..., "retrain": ..., "seconds": ...} (no verdict) once it has finished.
    Raises :class:`jmem.study.waves.Preempted` at the next safe point after SIGTERM / SIGINT.
    """
    from jmem.engine import parallel
    from jmem.study.report.stage import build_report

    workdir = Path(workdir)
    primary = parallel.process_index() == 0
    seconds, out = {}, {}
    stages = study_stages(config)

    @contextlib.contextmanager
    def stage(name: str):
        """Announce the stage (process 0 speaks for a multi-process job) and time it."""
        if primary:
            log(stage_line(name, stages))
        began = time.perf_counter()
        yield
        seconds[name] = time.perf_counter() - began

    with waves.StopRequest() as stop:
        with stage("train"):
            out["train"] = training.run_training(config, workdir, dataset, progress=progress, log=log,
                                                 execution=execution)
        if primary:
            log(training_line(out["train"]))
        processes.check_stop(stop, "after the training stage")
        with processes.primary_lock(workdir):  # the others write only their own waves' files
            with stage("score"):
                processes.on_primary(lambda: score_stage(workdir, config, log), f"score {str(workdir)!r}")
                faults.point("stage")
                processes.check_stop(stop, "after the score stage")
            with stage("retrain"):
                out["retrain"] = retrain_stage(workdir, config, dataset, execution, progress, log)
                faults.point("stage")
                processes.check_stop(stop, "after the removal experiment")
            if config.loo.enabled:
                from jmem.study.loo import run_loo

                with stage("loo"):
                    out["loo"] = run_loo(workdir, dataset=dataset, execution=execution, progress=progress,
                                         log=log, loo_config=config.loo)
                    if primary:
                        log(out["loo"]["text"])
                    faults.point("stage")
                    processes.check_stop(stop, "after the leave-one-out stage")
            with stage("report"):
                out["report"] = processes.on_primary(lambda: build_report(workdir),
                                                     f"write the report of {str(workdir)!r}")
    out["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    if not primary:  # the verdict and the report are process 0's
        return {k: out[k] for k in ("train", "retrain", "seconds")}
    out["verdict"] = (out["retrain"]["verdict"] if out["retrain"] is not None else
                      "No removal experiment: every selection is empty (see the warning above).")
    return out
