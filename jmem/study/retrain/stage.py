"""``jmem retrain``: the stage that runs the removal experiment on a scored run directory.

1. reads the scored run and selects the removal sets (:mod:`.selection`);
2. builds the arms (:mod:`.design`);
3. trains every arm x seed as one row of a keep matrix with the wave runner
   (:mod:`jmem.study.waves`: waves, checkpoints, SIGTERM, resume, the lock) into
   ``RUN_DIR/retrain/``;
4. measures every model on every test set (:mod:`.measurement`) and compares the arms
   (:mod:`.statistics`);
5. writes ``retrain_models.csv``, ``verdict.txt`` (:mod:`.verdict`), ``ablation.json`` and
   ``retrain.json`` (last: it marks a complete experiment; README, "Removal experiment").
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path

import numpy as np

from jmem import config as config_lib
from jmem.config import Config, RetrainConfig, ScoreConfig
from jmem.data.dataset import Dataset
from jmem.errors import JmemError
from jmem.jsonable import to_jsonable
from jmem.scores import paired
from jmem.study import faults, inputs, integrity, rundir, scoring, training, waves
from jmem.study.retrain import measurement, selection, statistics, verdict
from jmem.study.retrain.design import MODEL_ID_OFFSET, Design, build_design
from jmem.study.retrain.measurement import Outcomes

RETRAIN_DIR = "retrain"
CONFIG = "config.json"            # the resolved retrain section (written last of the inputs)
KEEP = "keep.npy"                 # bool[M, N], row = arm x seed
MODEL_IDS = "model_ids.npy"       # int64[M]
MODELS_CSV = "retrain_models.csv"
VERDICT = "verdict.txt"


def load_scored_run(run_dir) -> tuple[Config, scoring.RunArrays, ScoreConfig]:
    """The run's config, arrays and scoring options; refuses an unfinished or unscored run."""
    d = Path(run_dir)
    if not (d / rundir.CONFIG).exists():
        raise JmemError(f"run directory {str(d)!r} holds no {rundir.CONFIG}; give a directory "
                        "written by `jmem run` or `jmem train`")
    if not training.is_complete(d):
        raise JmemError(f"run directory {str(d)!r} is not fully trained (no {rundir.MODEL_METRICS}); "
                        "finish `jmem train` first")
    integrity.verify_run(d)  # a damaged or changed input or output: refuse, naming it
    if not (d / rundir.THRESHOLDS).exists():
        raise JmemError(f"run directory {str(d)!r} is not scored (no {rundir.THRESHOLDS}); "
                        f"run `jmem score {d}` first")
    inputs.verify_scores(d)  # damaged, interrupted or stale scores: refuse, naming them
    config = config_lib.from_dict(rundir.load_json(d / rundir.CONFIG))
    run = scoring.load_run(d)
    inputs.check_diverged(d, run.diverged)
    return config, run, scoring.recorded_options(d)


def retrain_dataset(run_dir, config: Config, run: scoring.RunArrays, dataset: Dataset | None) -> Dataset:
    """The dataset the estimation models saw: labels from labels_train.npy (canaries
    included) and the same extra test sets (test_clean attached as ``jmem train`` does)."""
    from jmem.study.leakage import attach_clean_test, leaked_in_run

    if dataset is None:
        dataset = inputs.load_dataset(config)
    inputs.verify_dataset(run_dir, config, dataset)  # the data the run was trained on, or refuse
    # The leakage-free test set drops the test examples the training stage found leaked
    # (duplicates.csv): detecting them again would repeat its work (with leakage.features,
    # training a model).
    dataset = attach_clean_test(config, dataset, lambda: leaked_in_run(run_dir, dataset.num_test))
    if dataset.num_train != run.labels_train.size:
        raise JmemError(f"dataset {dataset.name!r} has {dataset.num_train} training examples; the "
                        f"run has {run.labels_train.size}")
    if not np.array_equal(dataset.y_test, run.test_sets["test"][1]):
        raise JmemError(f"dataset {dataset.name!r}: test labels differ from the run's labels_test.npy")
    if sorted(dataset.extra_tests) != sorted(k for k in run.test_sets if k != "test"):
        raise JmemError(f"dataset {dataset.name!r} has extra test sets {sorted(dataset.extra_tests)}; "
                        f"the run has {sorted(k for k in run.test_sets if k != 'test')}")
    for name, (_, labels) in dataset.extra_tests.items():
        if not np.array_equal(labels, run.test_sets[name][1]):
            raise JmemError(f"dataset {dataset.name!r}: test set {name!r} differs from the run's "
                            f"{rundir.labels_extra_name(name)}")
    return dataclasses.replace(dataset, y_train=np.asarray(run.labels_train, np.int32))


def _recorded(cfg: RetrainConfig, seed: int) -> dict:
    return {"seed": seed, "retrain": config_lib.to_dict(cfg)}


def _check_retrain_dir(out: Path, cfg: RetrainConfig, seed: int, keep: np.ndarray) -> bool:
    """Refuse a retrain/ holding another experiment; True if it holds this one."""
    if not out.exists():
        return False
    if not (out / CONFIG).exists():
        partial = {KEEP, MODEL_IDS, waves.LOCK, rundir.MANIFEST}
        if not all(p.name in partial or waves.is_tmp(p.name) for p in out.iterdir()):
            raise JmemError(f"{str(out)!r} is not empty and holds no {CONFIG}; delete it")
        return False
    difference = config_lib.first_difference(rundir.load_json(out / CONFIG), _recorded(cfg, seed),
                                             ignore=(), ignore_sections=())
    if difference:
        raise JmemError(f"{str(out)!r} holds a different removal experiment ({difference}); "
                        "delete it or use the same retrain settings")
    inputs.check_retrain_dir(out, cfg.remove)  # other scores, removal file or damaged files
    stored = rundir.load_array(out / KEEP)
    if stored.shape != keep.shape or not np.array_equal(stored, keep):
        raise JmemError(f"{str(out)!r} was started from other selections (the run was re-scored "
                        "since); delete it to retrain")
    return True


def run_retrain(run_dir, overrides: list[str] = (), dataset: Dataset | None = None,
                execution: waves.Execution = waves.Execution(), progress: bool = True,
                log=print, retrain_config: RetrainConfig | None = None) -> dict:
    """The removal experiment on the scored run ``run_dir``; resumable (see module docstring).

    overrides: ``retrain.FIELD=VALUE`` strings (or give ``retrain_config``). dataset: the
    run's dataset (default: loaded from its config). Returns a summary with the verdict.
    Writes ``RUN_DIR/retrain/`` (nothing before every input is validated).
    """
    from jmem.engine import parallel

    began = time.perf_counter()
    run_dir = Path(run_dir)
    config, run, opt = load_scored_run(run_dir)
    cfg = retrain_config if retrain_config is not None else config_lib.apply_overrides(
        config, list(overrides), sections=("retrain",), command="jmem retrain").retrain
    if parallel.process_count() > 1:
        raise JmemError("jmem retrain runs in one process (its waves fit one host); drop the "
                        "multi-process flags")
    labels_test = run.test_sets["test"][1]
    num_classes = int(max(run.labels_train.max(), labels_test.max())) + 1
    # Bad input fails here, cheaply, before any file is written.
    chosen = selection.select(run_dir, run, cfg, opt)
    design = build_design(
        chosen.candidates, run.labels_train, num_classes, mem=chosen.mem,
        pair_train=chosen.pair_train, pair_test=chosen.pair_test, num_test=labels_test.shape[0],
        seeds=cfg.seeds, seed=config.seed, lowest=cfg.lowest, ablation_rates=chosen.ablation_rates)
    dataset = retrain_dataset(run_dir, config, run, dataset)
    job = waves.Job(dataset, design.keep, config.model, config.train, config.seed, design.model_ids)
    out = run_dir / RETRAIN_DIR
    devices = parallel.local_devices(execution.devices)
    with waves.StopRequest() as stop_request, contextlib.ExitStack() as lock:
        resuming = _check_retrain_dir(out, cfg, config.seed, job.keep)
        out.mkdir(parents=True, exist_ok=True)
        lock.enter_context(waves.workdir_lock(out))
        resuming = _check_retrain_dir(out, cfg, config.seed, job.keep)
        waves.remove_stale_tmp(out)
        if resuming and (out / rundir.RETRAIN).exists():
            waves.cleanup(out)
            log(f"{out}: removal experiment already complete")
            summary = rundir.load_json(out / rundir.RETRAIN)
            return {"retrain_dir": str(out), "models": job.num_models, "trained_now": 0,
                    "train_seconds": 0.0, "seconds": round(time.perf_counter() - began, 2),
                    "verdict": summary["verdict"]}
        if not resuming:
            rundir.save_array(out / KEEP, job.keep)
            rundir.save_array(out / MODEL_IDS, job.model_ids)
            faults.point("inputs")
            config_text = rundir.json_text(_recorded(cfg, config.seed))
            inputs.record_retrain_inputs(out, cfg.remove, [KEEP, MODEL_IDS], config_text)
            rundir.save_text(out / CONFIG, config_text)
        done = waves.resume_state(out, job)  # damaged or unlisted wave files are trained again
        if done.any():
            log(f"{out}: resuming, {int(done.sum())} of {done.size} models already trained")
        wave_size = waves.auto_wave_size(job, len(devices), 1)
        t0 = time.perf_counter()
        trained = waves.train_pending(job, out, wave_size, done, execution=execution,
                                      stop_request=stop_request, progress=progress, log=log)
        train_seconds = time.perf_counter() - t0
        text = finish(out, design, chosen.cross_fit, job.keep, cfg, config.seed)
    return {"retrain_dir": str(out), "models": job.num_models, "trained_now": trained,
            "train_seconds": round(train_seconds, 2),
            "models_per_second": round(trained / train_seconds, 2) if train_seconds > 0 and trained else None,
            "seconds": round(time.perf_counter() - began, 2), "verdict": text}


def finish(out: Path, design: Design, cross_fit: dict, keep: np.ndarray, cfg: RetrainConfig,
           seed: int) -> str:
    """Margins arrays, then retrain_models.csv, verdict.txt and retrain.json (last: it marks
    a complete experiment), then the waves and checkpoints go. Returns the verdict."""
    assembled = waves.assemble(out, keep.shape[0])
    margins_train = rundir.load_array(out / rundir.MARGINS_TRAIN, mmap=True)
    outcomes = measurement.outcomes_from_arrays(assembled.arrays, margins_train, keep)
    num_examples = keep.shape[1]
    comparisons = statistics.compare_arms(design, outcomes, seed, cfg.resamples)
    accuracy = statistics.arm_accuracies(design, outcomes, seed, cfg.resamples)
    share = statistics.shares(design, outcomes, seed, cfg.resamples)
    excluded = int(outcomes.diverged.sum())
    ablation = statistics.ablation_record(design, outcomes, seed, cfg.resamples) if cfg.ablation else None
    text = verdict.verdict_text(design, comparisons, share, num_examples, excluded, ablation)
    if ablation is not None:
        rundir.save_json(out / rundir.ABLATION, ablation)
    rundir.save_text(out / MODELS_CSV, models_csv(design, outcomes))
    rundir.save_text(out / VERDICT, text)
    summary = rundir.json_text(record(design, outcomes, comparisons, accuracy, share, cross_fit,
                                      cfg, num_examples, text))
    written = [*assembled.files, MODELS_CSV, VERDICT] + [rundir.ABLATION] * (ablation is not None)
    inputs.record_retrain_outputs(out, written, {rundir.RETRAIN: summary})
    rundir.save_text(out / rundir.RETRAIN, summary)
    faults.point("cleanup")
    waves.cleanup(out)
    return text


def models_csv(design: Design, outcomes: Outcomes) -> str:
    """One row per retrained model: arm, seed, model id, removed count, diverged, final loss,
    training accuracy (kept examples), and the accuracy on every test set (influenced / rest:
    the arm's group's; empty for ``full`` and empty T_h)."""
    names = measurement.test_set_names(outcomes)
    header = ["row", "arm", "kind", "seed", "model_id", "removed", "diverged", "final_loss",
              "train_accuracy", *[f"{t}_accuracy" for t in names]]
    lines = [",".join(header)]
    ids = design.model_ids
    for arm in design.arms:
        for s, r in enumerate(design.rows(arm.name)):
            cells = [str(r), arm.name, arm.kind, str(s), str(int(ids[r])), str(int(arm.removed[s].sum())),
                     str(int(outcomes.diverged[r])), f"{float(outcomes.final_loss[r]):.6g}",
                     f"{float(outcomes.train_accuracy[r]):.6g}"]
            for t in names:
                if t in ("influenced", "rest") and (arm.group is None):
                    cells.append("")
                    continue
                cols = measurement.columns(design, outcomes, t, arm.group)[r]
                cells.append(f"{float(cols.mean()):.6g}" if cols.size else "")
            lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def record(design: Design, outcomes: Outcomes, comparisons: list[dict], accuracy: dict,
           share: dict, cross_fit: dict, cfg: RetrainConfig, num_examples: int, text: str) -> dict:
    """The content of retrain.json (schema in the README)."""
    arms = []
    for arm in design.arms:
        rows = design.rows(arm.name)
        arms.append({"name": arm.name, "kind": arm.kind, "method": arm.method, "tau": arm.tau,
                     "group": arm.group, "removed": arm.count,
                     "removed_fraction": arm.count / num_examples,
                     "rows": [int(rows[0]), int(rows[-1]) + 1],
                     "diverged": int(outcomes.diverged[rows].sum())})
    train_accuracy = {}
    for arm in design.arms:
        rows = design.rows(arm.name)
        healthy = ~outcomes.diverged[rows]
        train_accuracy[arm.name] = (paired.PP * float(np.mean(outcomes.train_accuracy[rows][healthy]))
                                    if healthy.any() else None)
    return to_jsonable({
        "seeds": design.seeds,
        "methods": list(cfg.method_list),
        "sweep": list(cfg.sweep),
        "remove": cfg.remove or None,
        "num_examples": num_examples,
        "model_id_offset": MODEL_ID_OFFSET,
        "cross_fit": cross_fit,
        "groups": {name: g.info for name, g in design.groups.items()},
        "skipped": design.skipped,
        "arms": arms,
        "test_sets": measurement.test_set_names(outcomes),
        "test_set_sizes": {k: int(v.shape[1]) for k, v in outcomes.correct.items()},
        "accuracy": accuracy,
        "train_accuracy": train_accuracy,
        "comparisons": [{"name": e["name"], "a": e["a"], "b": e["b"], "test_set": e["test_set"],
                         "group": e["group"], "method": e["method"], "tau": e["tau"],
                         "direction": verdict.direction(e["comparison"]),
                         "holm_family_size": e.get("family_size", 1),
                         **e["comparison"].to_json()} for e in comparisons],
        "share_of_change": share,
        "excluded_diverged": int(outcomes.diverged.sum()),
        "resamples": cfg.resamples,
        "verdict": text.strip(),
    })
