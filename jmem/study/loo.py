"""``jmem loo``: exact leave-one-out ground truth on a sample, and every estimate checked against it.

1. reads the scored run and chooses K examples, stratified over its scores
   (:mod:`jmem.study.loo_design`: per-rate scores, every rule's selection, canaries never);
2. trains S paired seeds x (K + 1) rows with the wave runner (:mod:`jmem.study.waves`:
   waves, checkpoints, SIGTERM, resume, the lock) into ``RUN_DIR/loo/``: seed s trains the
   full training set and, for each sampled example, the full set minus it, all with model id
   ``LOO_MODEL_ID_OFFSET + s`` and the coupled data order, on the dataset's true labels
   (no canaries), with the run's model and training settings otherwise;
3. measures LOO memorization and influence with intervals and validates every estimator,
   rule and proxy against them (:mod:`jmem.study.loo_validation`);
4. writes ``examples.csv``, ``influence.csv`` and ``loo.json`` (last: it marks a complete
   stage; delete it to re-analyse the stored margins without training).

Files of ``RUN_DIR/loo/``: ``config.json`` (the settings that define the models),
``keep.npy`` bool[M, N] (M = S * (K + 1), row ``s * (K + 1) + j``: j = 0 the full set,
j = 1 + k without ``sample.npy[k]``), ``model_ids.npy`` int64[M], ``sample.npy`` int64[K],
``labels_train.npy`` int32[N] (the labels the LOO models saw), ``margins_train.npy``
float32[M, N], ``margins_test.npy`` float32[M, T], ``models.csv``, ``examples.csv``,
``influence.csv``, ``loo.json`` (fields: :func:`jmem.study.loo_validation.record`).
Nothing in ``loo.json`` depends on timing, so a killed and resumed stage writes it bitwise
identically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path

import numpy as np

from jmem import config as config_lib
from jmem.config import Config, LooConfig
from jmem.data.dataset import Dataset
from jmem.errors import JmemError
from jmem.study import faults, processes, rundir, scoring, waves
from jmem.study.loo_design import LooDesign, bootstrap_seed, build_design
from jmem.study import loo_validation as validation

LOO_DIR = "loo"
CONFIG = "config.json"        # the settings that define the models (written last of the inputs)
KEEP = "keep.npy"
MODEL_IDS = "model_ids.npy"
SAMPLE = "sample.npy"
LABELS = "labels_train.npy"
MODELS_CSV = "models.csv"
EXAMPLES_CSV = "examples.csv"
INFLUENCE_CSV = "influence.csv"
# The loo fields that decide which models train; the others only change the analysis, so a
# complete stage given other values re-analyses without training.
TRAINING_FIELDS = ("examples", "seeds", "selected_share", "easy_share")


def loo_train_config(config: Config):
    """The run's training settings with the coupled data order (a LOO model differs from its
    seed's full model in one example, every other example at the same step) and without the
    proxies (recorded by the estimation run, not needed here)."""
    return dataclasses.replace(config.train, data_order="coupled", record_proxies=False)


def loo_dataset(config: Config, run: scoring.RunArrays, dataset: Dataset | None) -> Dataset:
    """The run's dataset with its own labels (no canaries) and the main test set only."""
    if dataset is None:
        from jmem.data.loaders import load_dataset

        dataset = load_dataset(config.data.name, data_dir=config.data.data_dir or None,
                               idx_dir=config.data.idx_dir or None)
    n = run.labels_train.size
    if dataset.num_train != n:
        raise JmemError(f"dataset {dataset.name!r} has {dataset.num_train} training examples; the run has {n}")
    if not np.array_equal(dataset.y_test, run.test_sets["test"][1]):
        raise JmemError(f"dataset {dataset.name!r}: test labels differ from the run's {rundir.LABELS_TEST}")
    plain = np.ones(n, bool) if run.canaries is None else ~run.canaries
    if not np.array_equal(np.asarray(dataset.y_train)[plain], run.labels_train[plain]):
        raise JmemError(f"dataset {dataset.name!r}: training labels differ from the run's "
                        f"{rundir.LABELS_TRAIN} outside the canaries")
    return dataclasses.replace(dataset, y_train=np.asarray(dataset.y_train, np.int32), extra_tests={})


def _recorded(cfg: LooConfig, config: Config) -> dict:
    return {"seed": config.seed, "loo": {f: getattr(cfg, f) for f in TRAINING_FIELDS},
            "train": config_lib.to_dict(loo_train_config(config))}


def _loo_config(config: Config, overrides, loo_config: LooConfig | None) -> LooConfig:
    if loo_config is not None:
        return loo_config
    return config_lib.apply_overrides(config, list(overrides), sections=("loo",), command="jmem loo").loo


def run_loo(run_dir, overrides: list[str] = (), dataset: Dataset | None = None,
            execution: waves.Execution = waves.Execution(), progress: bool = True,
            log=print, loo_config: LooConfig | None = None) -> dict:
    """Leave-one-out validation of the scored run ``run_dir``; resumable (module docstring).

    overrides: ``loo.FIELD=VALUE`` strings (or give ``loo_config``). dataset: the run's
    dataset (default: loaded from its config). Returns a summary: models, trained now,
    seconds, and ``text`` (:func:`jmem.study.loo_validation.format_summary`).
    """
    from jmem.engine import parallel
    from jmem.study.retrain.stage import load_scored_run

    began = time.perf_counter()
    run_dir = Path(run_dir)
    config, run, _ = load_scored_run(run_dir)
    cfg = _loo_config(config, overrides, loo_config)
    design = build_design(run_dir, run, config, cfg)  # bad input fails here, before any file
    dataset = loo_dataset(config, run, dataset)
    job = waves.Job(dataset, design.keep, config.model, loo_train_config(config), config.seed,
                    design.model_ids)
    recorded = _recorded(cfg, config)
    out = run_dir / LOO_DIR
    trained, train_seconds = 0, 0.0
    devices = parallel.local_devices(execution.devices)
    with waves.StopRequest() as stop_request, contextlib.ExitStack() as lock:
        # complete: every model is trained (models.csv); the analysis may still be missing
        trained_all, wave_size, done = processes.decide(
            lambda: _prepare_out(out, job, design, recorded, len(devices), lock, log),
            job.num_models, f"start the leave-one-out experiment in {str(out)!r}")
        if not trained_all:
            trained, train_seconds = processes.train_everywhere(
                job, out, wave_size, done, "jmem-loo-waves-written", execution=execution,
                stop_request=stop_request, progress=progress, log=log, label="loo")
        rec = processes.on_primary(
            lambda: _write(out, design, cfg, dataset.y_train, bootstrap_seed(config.seed), trained_all, log),
            f"finish the leave-one-out experiment in {str(out)!r}")
    summary = {"loo_dir": str(out), "models": job.num_models, "trained_now": trained,
               "train_seconds": round(train_seconds, 2),
               "models_per_second": round(trained / train_seconds, 2) if trained and train_seconds > 0 else None,
               "seconds": round(time.perf_counter() - began, 2)}
    if parallel.process_index() != 0:  # the analysis is process 0's: the others only trained
        return {**summary, "process": parallel.process_index()}
    return {**summary, "text": validation.format_summary(rec)}


def _prepare_out(out: Path, job: waves.Job, design: LooDesign, recorded: dict, num_devices: int,
                 lock: contextlib.ExitStack, log) -> tuple[bool, int, np.ndarray]:
    """Process 0, before any training: check and lock ``loo/``, write its inputs or find what
    an earlier run finished. Returns (every model trained, wave_size, done bool[M])."""
    from jmem.engine import parallel

    inputs = {KEEP, MODEL_IDS, SAMPLE, LABELS}
    resuming = waves.open_stage_dir(
        out, lambda: waves.check_stage_dir(out, recorded, job.keep, inputs, "leave-one-out experiment"), lock)
    # models.csv is written once the margins are assembled: the models are done. loo.json
    # (last) marks the analysis done; deleting it re-analyses without training.
    if resuming and (out / MODELS_CSV).exists():
        return True, 0, np.ones(job.num_models, bool)
    if not resuming:
        rundir.save_array(out / KEEP, job.keep)
        rundir.save_array(out / MODEL_IDS, job.model_ids)
        rundir.save_array(out / SAMPLE, design.sample.index)
        rundir.save_array(out / LABELS, job.dataset.y_train)
        faults.point("inputs")
        rundir.save_json(out / CONFIG, recorded)
    done = waves.finished_models(out, job.num_models)
    if done.any():
        log(f"{out}: resuming, {int(done.sum())} of {done.size} models already trained")
    return False, waves.auto_wave_size(job, num_devices, parallel.process_count()), done


def _write(out: Path, design: LooDesign, cfg: LooConfig, labels: np.ndarray, seed: int,
           trained_all: bool, log) -> dict:
    """Process 0, once every model is trained: assemble the waves (unless done before), then
    analyse unless ``loo.json`` holds this analysis already; the waves go. Returns loo.json's
    content."""
    if not trained_all:
        assemble(out, design)
    rec = rundir.load_json(out / rundir.LOO) if trained_all and (out / rundir.LOO).exists() else None
    if rec is not None and rec.get("settings") == validation.settings_of(cfg):
        log(f"{out}: leave-one-out validation already complete")
    else:
        rec = analyse(out, design, cfg, labels, seed)
    faults.point("cleanup")
    waves.cleanup(out)
    return rec


def assemble(out: Path, design: LooDesign) -> None:
    """The wave files into margins_train.npy / margins_test.npy, then models.csv (last: the
    models are complete)."""
    assembled = waves.assemble(out, design.keep.shape[0])
    rows = np.arange(design.keep.shape[0])
    rundir.save_text(out / MODELS_CSV, rundir.csv_text({
        "row": rows, "seed": rows // (design.sample.index.size + 1), "model_id": design.model_ids,
        "removed": np.tile(np.r_[-1, design.sample.index], design.seeds),  # -1: the full set
        "diverged": assembled.arrays["diverged"], "final_loss": assembled.arrays["final_loss"],
        "test_accuracy": (assembled.arrays["margins_test"] > 0).mean(axis=1)}))


def analyse(out: Path, design: LooDesign, cfg: LooConfig, labels: np.ndarray, seed: int) -> dict:
    """The truth and the validation from the assembled margins: examples.csv, influence.csv,
    then loo.json (last). Returns loo.json's content."""
    models = rundir.read_csv_columns(out / MODELS_CSV)
    outcomes = validation.paired_outcomes(rundir.load_array(out / rundir.MARGINS_TRAIN, mmap=True),
                                          rundir.load_array(out / rundir.MARGINS_TEST, mmap=True),
                                          models["diverged"] == 1, design.sample.index,
                                          design.partner_index, design.seeds)
    truth = validation.loo_truth(outcomes, design.partner_index, cfg)
    rec = validation.record(design, outcomes, truth, cfg, seed)
    rundir.save_text(out / EXAMPLES_CSV, validation.examples_csv(design, truth, labels))
    rundir.save_text(out / INFLUENCE_CSV, validation.influence_csv(design, truth))
    rundir.save_json(out / rundir.LOO, rec)
    return rec
