"""``jmem train``: draw keep-masks, train the estimation models, write the run directory.

The stage measures train/test leakage (``duplicates.csv``, and the leakage-free test set
``test_clean``), draws the canaries and keep-masks (:func:`prepare_inputs`), writes them
(:func:`write_inputs`, ``config.json`` last), trains every model with the wave runner
(:mod:`jmem.study.waves`: waves, checkpoints, SIGTERM, resume) and assembles the final
arrays and ``models.csv`` (written last: its presence marks a complete run).

One process at a time writes a run directory. In a multi-process job (``jax.distributed``),
process 0 holds the lock, prepares the directory and decides the waves; every process trains
its round-robin share on its own devices and writes its wave files into the shared run
directory; process 0 assembles after a barrier (:mod:`jmem.study.processes`). Integrity
(``manifest.json``) is :mod:`jmem.study.integrity`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path

import numpy as np

from jmem import config as config_lib
from jmem.config import Config
from jmem.data.dataset import Dataset
from jmem.errors import JmemError, warn
from jmem.study import faults, integrity, processes, rundir, waves

@dataclasses.dataclass(frozen=True)
class RunInputs:
    """Everything the estimation models train on, derived deterministically from the config.

    keep: bool[R, N]; model_rates: float32[R]; labels_train: int32[N] (canaries re-drawn);
    canaries: bool[N]; dataset: the dataset with ``y_train = labels_train``.
    """

    dataset: Dataset
    keep: np.ndarray
    model_rates: np.ndarray
    labels_train: np.ndarray
    canaries: np.ndarray

    def job(self, config: Config) -> waves.Job:
        """The wave runner's job: row r is model r (model id r)."""
        return waves.Job(self.dataset, self.keep, config.model, config.train, config.seed)


def canary_labels(config: Config, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(labels int[N], canaries bool[N]): the training labels the models see, with the
    canaries of ``config`` re-drawn (a function of the seed and the dataset's labels only)."""
    from jmem.data.canaries import make_canaries

    return make_canaries(config.seed, dataset.y_train, dataset.num_classes,
                         config.subsets.canary_fraction)


def prepare_inputs(config: Config, dataset: Dataset) -> RunInputs:
    """Canaries and keep-masks for ``config`` on ``dataset`` (no training, no files)."""
    from jmem.data.subsets import make_keep

    labels, canaries = canary_labels(config, dataset)
    keep, model_rates = make_keep(config.seed, config.train.num_models, dataset.num_train,
                                  config.subsets.design, config.subsets.rates,
                                  config.subsets.equal_heldout)
    check_keep(keep, model_rates, config)
    dataset = dataclasses.replace(dataset, y_train=np.asarray(labels, np.int32))
    return RunInputs(dataset, keep, np.asarray(model_rates, np.float32),
                     np.asarray(labels, np.int32), np.asarray(canaries, bool))


def check_keep(keep: np.ndarray, model_rates: np.ndarray, config: Config) -> None:
    """Refuse a design in which some model would train on no example (keep: bool[R, N],
    model_rates: float[R]), before anything is written: naming the fields that cause it."""
    sizes = np.asarray(keep).sum(axis=1)
    empty = np.flatnonzero(sizes == 0)
    if empty.size:
        r = int(empty[0])
        raise JmemError(f"subsets.rates={list(config.subsets.rates)} with subsets.design="
                        f"{config.subsets.design!r}, train.num_models={config.train.num_models} and "
                        f"N={keep.shape[1]}: {empty.size} model(s) would train on no example "
                        f"(model {r}, rate {float(model_rates[r]):g}); raise the rate or the number "
                        "of models")


def check_workdir(workdir: Path, config: Config) -> bool:
    """Refuse a workdir holding a different run; return True if it holds this run already.

    A directory holding only the first input files of a run killed before ``config.json``
    was written (the last input) counts as empty: the inputs are written again.
    """
    workdir = Path(workdir)
    if not workdir.exists():
        return False
    if not workdir.is_dir():
        raise JmemError(f"--workdir {str(workdir)!r} is a file, not a directory; choose a new "
                        "or empty directory")
    recorded_path = workdir / rundir.CONFIG
    if not recorded_path.exists():
        if not all(_is_partial_input(p.name) for p in workdir.iterdir()):
            raise JmemError(f"--workdir {str(workdir)!r} is not empty and holds no {rundir.CONFIG}; "
                            "choose a new or empty directory")
        return False
    recorded = rundir.load_json(recorded_path, expect=dict)
    try:  # fields added to the schema after the run was made take their defaults
        recorded = config_lib.to_dict(config_lib.from_dict(recorded))
    except (JmemError, TypeError):
        pass  # unreadable as a config: the raw comparison below names the difference
    difference = config_lib.first_difference(recorded, config_lib.to_dict(config))
    if difference:
        raise JmemError(f"--workdir {str(workdir)!r} holds a different run ({difference}); "
                        "use another workdir or the same config")
    return True


def _is_partial_input(name: str) -> bool:
    inputs = {rundir.KEEP, rundir.MODEL_RATES, rundir.LABELS_TRAIN, rundir.LABELS_TEST,
              rundir.CANARIES, rundir.DUPLICATES, rundir.MANIFEST, waves.LOCK}
    return name in inputs or (name.startswith("labels_") and name.endswith(".npy")) or waves.is_tmp(name)


def write_inputs(workdir: Path, config: Config, inputs: RunInputs) -> None:
    """The run's inputs: config, masks, labels, canaries (written once, before training)."""
    workdir = Path(workdir)
    data = inputs.dataset
    rundir.save_array(workdir / rundir.KEEP, inputs.keep)
    rundir.save_array(workdir / rundir.MODEL_RATES, inputs.model_rates)
    rundir.save_array(workdir / rundir.LABELS_TRAIN, inputs.labels_train)
    rundir.save_array(workdir / rundir.LABELS_TEST, data.y_test)
    if inputs.canaries.any():
        rundir.save_array(workdir / rundir.CANARIES, inputs.canaries)
    for name, (_, y) in data.extra_tests.items():
        rundir.save_array(workdir / rundir.labels_extra_name(name), y)
    names = [rundir.KEEP, rundir.MODEL_RATES, rundir.LABELS_TRAIN, rundir.LABELS_TEST]
    names += [rundir.CANARIES] * bool(inputs.canaries.any())
    # duplicates.csv (written just before) decides the leakage-free test set of every later stage
    names += [rundir.DUPLICATES] * (workdir / rundir.DUPLICATES).exists()
    names += [rundir.labels_extra_name(name) for name in data.extra_tests]
    config_text = rundir.json_text(config_lib.to_dict(config))
    integrity.record_inputs(workdir, data, names, config_text)
    # config.json last: its presence marks a run directory whose inputs are complete.
    rundir.save_text(workdir / rundir.CONFIG, config_text)


def is_complete(workdir: Path) -> bool:
    """A run directory is complete once ``models.csv`` (written last) exists."""
    return (Path(workdir) / rundir.MODEL_METRICS).exists()


# ----------------------------------------------------------------------------- the stage


def run_training(config: Config, workdir: Path, dataset: Dataset, progress: bool = True,
                 log=print, execution: waves.Execution = waves.Execution()) -> dict:
    """Train every model of ``config`` into ``workdir``; resumes finished waves and
    checkpointed waves. Raises :class:`jmem.study.waves.Preempted` after checkpointing on
    SIGTERM.

    In a multi-process JAX job every process calls this with the same arguments (and a
    ``workdir`` on a filesystem they all see); see the module docstring.
    Returns a summary: models, models/s, diverged count, mean test accuracy.
    """
    from jmem.engine import parallel

    workdir = Path(workdir)
    me = parallel.process_index()
    with waves.StopRequest() as stop_request, contextlib.ExitStack() as lock:
        start = _start(config, workdir, dataset, execution, lock, log)
        if start.complete:
            return summarize(workdir, recorded_metrics(workdir, start.inputs.keep.shape[0]),
                             seconds=0.0, trained=0) if me == 0 else {}
        trained, seconds = processes.train_everywhere(
            start.inputs.job(config), workdir, start.wave_size, start.done, "jmem-waves-written",
            execution=execution, stop_request=stop_request, progress=progress, log=log,
            on_wave_written=lambda path: integrity.record_wave(workdir, path))
        metrics = processes.on_primary(lambda: assemble(workdir, start.inputs),
                                       f"assemble the run in {str(workdir)!r}")
        if me != 0:
            return {"workdir": str(workdir), "process": me, "trained_now": trained,
                    "seconds": round(seconds, 2)}
        return summarize(workdir, metrics, seconds, trained=trained)


@dataclasses.dataclass(frozen=True)
class Start:
    """What every process knows once process 0 has prepared the run directory."""

    inputs: RunInputs
    complete: bool
    wave_size: int
    done: np.ndarray  # bool[R], models already in a wave file


def _start(config, workdir: Path, dataset, execution: waves.Execution, lock: contextlib.ExitStack,
           log) -> Start:
    """Every process derives the inputs; process 0 also checks and locks the workdir,
    writes or finds the inputs, and decides the wave size; every process gets its decision
    (a failure included, so that no process waits forever for a process that gave up:
    :func:`jmem.study.processes.on_primary`)."""
    from jmem.engine import parallel

    num_processes, me = parallel.process_count(), parallel.process_index()
    inputs, leaks, devices, error = None, None, [], None
    try:
        devices = parallel.local_devices(execution.devices)
        if me == 0:
            check_workdir(workdir, config)  # refuse before writing anything, even a lock
        from jmem.study.leakage import measure_leakage

        dataset, leaks = measure_leakage(config, dataset)
        inputs = prepare_inputs(config, dataset)  # a bad design is refused here, still unwritten
    except Exception as err:  # noqa: BLE001 - raised below, once process 0 has told the others
        error = err

    def prepare() -> tuple:
        if error is not None:
            raise error
        workdir.mkdir(parents=True, exist_ok=True)
        lock.enter_context(waves.workdir_lock(workdir))
        return _prepare_workdir(workdir, config, inputs, leaks, len(devices), num_processes, log)

    complete, wave_size, done = processes.decide(prepare, config.train.num_models,
                                                 f"start the run in {str(workdir)!r}")
    if error is not None:  # this process's own (the same as process 0's: inputs are deterministic)
        raise error
    return Start(inputs, complete, wave_size, done)


def _prepare_workdir(workdir: Path, config: Config, inputs: RunInputs, leaks, num_devices: int,
                     num_processes: int, log):
    """Under the lock: write the inputs of a new run or find what an old one finished.

    Returns (complete, wave_size, done bool[R]).
    """
    resuming = check_workdir(workdir, config)  # again: another process may have written since
    waves.remove_stale_tmp(workdir)
    job = inputs.job(config)
    if resuming:  # a changed dataset or damaged input: error; a damaged wave: trained again
        integrity.verify_resume(workdir, inputs.dataset, is_complete(workdir),
                                lambda a, b: waves.wave_shapes(job, a, b), warn,
                                wave_rows=lambda a, b: job.order[a:b])
    done = np.zeros(config.train.num_models, bool)
    if resuming and is_complete(workdir):
        waves.cleanup(workdir)  # a kill between models.csv and the cleanup leaves waves/ behind
        log(f"{workdir}: training already complete; nothing to do")
        return True, 0, done
    if not resuming:
        from jmem.data.leakage import leakage_line
        from jmem.study.leakage import write_duplicates_csv

        write_duplicates_csv(workdir / rundir.DUPLICATES, leaks)
        faults.point("inputs")
        log(f"{leakage_line(leaks, inputs.dataset)} Per class: jmem leakage {workdir} --details")
        write_inputs(workdir, config, inputs)
    done = waves.finished_models(workdir, config.train.num_models)
    if done.any():
        log(f"{workdir}: resuming, {int(done.sum())} of {done.size} models already trained")
    wave_size = waves.auto_wave_size(job, num_devices, num_processes)
    return False, wave_size, done


# ----------------------------------------------------------------------------- assembly


def assemble(workdir: Path, inputs: RunInputs) -> dict:
    """The final run-directory arrays from the wave files, then ``models.csv`` (last: it marks
    a complete run), then the waves and checkpoints go. Returns the per-model metrics."""
    workdir = Path(workdir)
    assembled = waves.assemble(workdir, inputs.keep.shape[0])
    metrics = model_metrics(inputs, assembled.arrays)
    metrics_text = rundir.csv_text(metrics)
    extra = save_proxies(workdir, assembled.arrays) + save_loss_history(workdir, assembled.arrays,
                                                                          inputs.keep.shape[0])
    integrity.record_outputs(workdir, assembled.files + extra, {rundir.MODEL_METRICS: metrics_text})
    rundir.save_text(workdir / rundir.MODEL_METRICS, metrics_text)
    faults.point("cleanup")
    waves.cleanup(workdir)
    return metrics


def save_proxies(workdir: Path, arrays: dict) -> list[str]:
    """With ``train.record_proxies``: write cum_loss.npy (float32[R, N]) and learned_epoch.npy
    (int32[R, N]) from the assembled arrays; returns the names written ([] without)."""
    if "cum_loss" not in arrays:
        return []
    rundir.save_array(Path(workdir) / rundir.CUM_LOSS, arrays["cum_loss"].astype(np.float32))
    rundir.save_array(Path(workdir) / rundir.LEARNED_EPOCH, arrays["learned_epoch"].astype(np.int32))
    return [rundir.CUM_LOSS, rundir.LEARNED_EPOCH]


def save_loss_history(workdir: Path, arrays: dict, num_models: int) -> list[str]:
    """Write loss_history.npy (float32[R, epochs]: each model's mean training loss per epoch,
    NaN from its divergence on); returns the names written ([] when a wave file of an older
    jmem, without the array, left it incomplete)."""
    history = arrays.get("loss_history")
    if history is None or history.shape[0] != num_models:
        return []
    rundir.save_array(Path(workdir) / rundir.LOSS_HISTORY, history.astype(np.float32))
    return [rundir.LOSS_HISTORY]


def model_metrics(inputs: RunInputs, arrays: dict) -> dict:
    """Per-model columns: id, rate, subset size, diverged, final loss, test accuracies."""
    metrics = {
        "model": np.arange(inputs.keep.shape[0]),
        "rate": inputs.model_rates,
        "subset_size": inputs.keep.sum(axis=1),
        "diverged": arrays["diverged"].astype(int),
        "final_loss": arrays["final_loss"],
        "test_accuracy": (arrays["margins_test"] > 0).mean(axis=1),
    }
    for name in inputs.dataset.extra_tests:
        metrics[f"{name}_accuracy"] = (arrays[f"margins_{name}"] > 0).mean(axis=1)
    return metrics


def recorded_metrics(workdir: Path, num_models: int) -> dict:
    """The columns :func:`summarize` needs of a complete run, read from its files:
    ``diverged`` (``models.csv``) and ``test_accuracy`` (``margins_test.npy``, at full precision)."""
    workdir = Path(workdir)
    diverged = rundir.read_diverged(workdir / rundir.MODEL_METRICS, num_models)
    margins_test = rundir.load_array(workdir / rundir.MARGINS_TEST, mmap=True)
    return {"diverged": np.zeros(num_models, bool) if diverged is None else diverged,
            "test_accuracy": (np.asarray(margins_test) > 0).mean(axis=1)}


def summarize(workdir: Path, metrics: dict, seconds: float, trained: int) -> dict:
    """The stage's summary from the per-model ``diverged`` and ``test_accuracy`` columns."""
    flags = np.asarray(metrics["diverged"], bool)
    accuracy = np.asarray(metrics["test_accuracy"], np.float64)
    return {
        "workdir": str(workdir),
        "models": int(flags.size),
        "trained_now": int(trained),
        "seconds": round(seconds, 2),
        "models_per_second": round(trained / seconds, 2) if seconds > 0 else None,
        "diverged": int(flags.sum()),
        "diverged_ids": np.flatnonzero(flags).tolist(),
        "test_accuracy_mean": float(accuracy.mean()),
        "test_accuracy_std": float(accuracy.std()),
    }
