"""``jmem train``: draw keep-masks, train R models wave by wave, write the run directory.

The run directory (see ``jmem.study.rundir`` and the README) is written so that nothing already
computed is lost, whatever kills the process:

* every finished wave's outputs land atomically under ``waves/`` before the next wave starts;
* within a wave, training runs in short segments (a few seconds each); the in-flight state
  is checkpointed with orbax every ``checkpoint_every_epochs`` epochs and/or every
  ``checkpoint_every_seconds`` (``jmem.engine.checkpoint``), and when SIGTERM arrives;
* a re-run of the same command skips finished waves and resumes the others from their
  latest usable checkpoint; the final arrays are assembled once every model is done.

Segments, checkpoints, kills and resumes never change a result: every segment runs the same
compiled program (epoch bounds are traced), and the saved state is the complete state.

One process at a time writes a run directory (``fcntl.flock`` on ``<workdir>/.lock``). In a
multi-process job (``jax.distributed``), process 0 holds the lock, prepares the directory and
decides the waves; every process trains its round-robin share on its own devices and writes
its wave files into the shared run directory; process 0 assembles after a barrier.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import signal
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from jmem.study import integrity
from jmem.study import rundir as artifacts
from jmem import config as config_lib
from jmem.config import Config
from jmem.data.dataset import Dataset
from jmem.errors import JmemError, warn

WAVES_DIR = "waves"
LOCK = ".lock"
KILL_ENV = "JMEM_TEST_KILL_AT"
EXIT_PREEMPTED = 143  # 128 + SIGTERM: "stopped, not finished" for schedulers that requeue
_STATUS_RUN, _STATUS_COMPLETE, _STATUS_FAILED = 0, 1, 2  # process 0's start-up decision


@dataclasses.dataclass(frozen=True)
class Execution:
    """How a run executes, never what it computes: any values give identical results.

    devices: local devices to shard each wave over (0 = all of this process's devices).
    checkpoint_every_seconds: checkpoint a wave in training at least this often (0 = never).
    checkpoint_every_epochs: ... and after every this many epochs (0 = never).
    segment_seconds: target wall time of one uninterrupted training call; bounds how late a
      SIGTERM or a time-based checkpoint can be (one epoch at the least).
    """

    devices: int = 0
    checkpoint_every_seconds: float = 300.0
    checkpoint_every_epochs: int = 0
    segment_seconds: float = 2.0

    def __post_init__(self):
        for name in ("devices", "checkpoint_every_seconds", "checkpoint_every_epochs"):
            if getattr(self, name) < 0:
                raise JmemError(f"--{name.replace('_', '-')}={getattr(self, name)} must be >= 0")
        if not self.segment_seconds > 0:
            raise JmemError(f"segment_seconds={self.segment_seconds} must be > 0")


class Preempted(Exception):
    """Training stopped on SIGTERM after checkpointing; re-running the command resumes."""


@dataclasses.dataclass(frozen=True)
class RunInputs:
    """Everything a run trains on, derived deterministically from the config.

    keep: bool[R, N]; model_rates: float32[R]; labels_train: int32[N] (canaries re-drawn);
    canaries: bool[N]; dataset: the dataset with ``y_train = labels_train``.
    model_ids: int64[R], the id whose keys (``fold_in(stream, id)``) row r trains with;
      None = ``arange(R)`` (``jmem train``). The removal experiment gives seed s of every arm
      the same id, so its arms share initialisation and data order.
    """

    dataset: Dataset
    keep: np.ndarray
    model_rates: np.ndarray
    labels_train: np.ndarray
    canaries: np.ndarray
    model_ids: np.ndarray | None = None

    def ids(self, start: int, stop: int) -> np.ndarray:
        """int64[stop - start]: the model ids of rows ``start..stop-1``."""
        if self.model_ids is None:
            return np.arange(start, stop)
        return np.asarray(self.model_ids[start:stop], np.int64)


def prepare_inputs(config: Config, dataset: Dataset) -> RunInputs:
    """Canaries and keep-masks for ``config`` on ``dataset`` (no training, no files)."""
    from jmem.data.canaries import make_canaries
    from jmem.data.subsets import make_keep

    labels, canaries = make_canaries(config.seed, dataset.y_train, dataset.num_classes,
                                     config.subsets.canary_fraction)
    keep, model_rates = make_keep(config.seed, config.train.num_models, dataset.num_train,
                                  config.subsets.design, config.subsets.rates)
    dataset = dataclasses.replace(dataset, y_train=np.asarray(labels, np.int32))
    return RunInputs(dataset, keep, np.asarray(model_rates, np.float32),
                     np.asarray(labels, np.int32), np.asarray(canaries, bool))


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
    recorded_path = workdir / artifacts.CONFIG
    if not recorded_path.exists():
        if not all(_is_partial_input(p.name) for p in workdir.iterdir()):
            raise JmemError(f"--workdir {str(workdir)!r} is not empty and holds no {artifacts.CONFIG}; "
                            "choose a new or empty directory")
        return False
    recorded = artifacts.load_json(recorded_path, expect=dict)
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
    inputs = {artifacts.KEEP, artifacts.MODEL_RATES, artifacts.LABELS_TRAIN, artifacts.LABELS_TEST,
              artifacts.CANARIES, artifacts.DUPLICATES, artifacts.MANIFEST, LOCK}
    return name in inputs or (name.startswith("labels_") and name.endswith(".npy")) or _is_tmp(name)


def _is_tmp(name: str) -> bool:
    """Temporary files of atomic writes (``.<name>.<random>.tmp``), left by a killed process."""
    return name.startswith(".") and name.endswith(".tmp")


def remove_stale_tmp(workdir: Path) -> None:
    """Delete temporary files a killed process left behind (call while holding the lock)."""
    for directory in (Path(workdir), Path(workdir) / WAVES_DIR):
        if directory.is_dir():
            for path in directory.iterdir():
                if _is_tmp(path.name) and path.is_file():
                    path.unlink()


# ----------------------------------------------------------------------------- lock


@contextlib.contextmanager
def workdir_lock(workdir: Path):
    """Hold an exclusive ``flock`` on ``<workdir>/.lock`` for the duration of the block.

    The lock dies with its process (SIGKILL included), so a stale lock cannot block a resume.
    The file stays (deleting it would let two processes lock two different files); it
    records the holder as ``pid@host`` for the error message. Network filesystems that do
    not implement ``flock`` (e.g. gcsfuse) give no protection: keep to one launch per workdir.
    """
    path = Path(workdir) / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise JmemError(f"--workdir {str(workdir)!r} is in use by another jmem process "
                        f"(pid {holder}); wait for it to finish or stop it") from None
    except OSError as err:  # a filesystem without locks: run, but say so
        warn(f"cannot lock {path} ({err.strerror}); make sure no other jmem process "
             "writes this workdir")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}@{socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


# ----------------------------------------------------------------------------- signals, hooks


class StopRequest:
    """Set by SIGTERM (a preemption notice); training checks it between segments.

    Installed only in the main thread (Python's rule for signal handlers); the previous
    handler is restored on exit.
    """

    def __init__(self):
        self.signum = None
        self._previous = None

    def _handle(self, signum, frame):
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False


_fault_counts: Counter = Counter()


def fault_point(point: str) -> None:
    """Fault injection for tests: ``JMEM_TEST_KILL_AT=<point>[:<n>[:TERM]]`` sends this
    process SIGKILL (or SIGTERM) the n-th time (default 1st) it reaches ``point``.

    Points: ``inputs`` (some inputs written, not config.json), ``segment`` (after a training
    segment), ``checkpoint_started`` (a save in flight), ``checkpoint_saved`` (a save on
    disk), ``wave_written`` (a wave file written, its checkpoints not yet deleted),
    ``assembly`` (final arrays half written), ``cleanup`` (models.csv written, waves/ not
    yet removed), ``stage`` (``jmem run``: after the score and after the retrain stage).
    """
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    name, _, rest = spec.partition(":")
    if name != point:
        return
    count, _, sig = rest.partition(":")
    _fault_counts[point] += 1
    if _fault_counts[point] == int(count or 1):
        os.kill(os.getpid(), signal.SIGTERM if sig == "TERM" else signal.SIGKILL)


# ----------------------------------------------------------------------------- waves


def wave_path(workdir: Path, start: int, stop: int) -> Path:
    return Path(workdir) / WAVES_DIR / f"models_{start:07d}_{stop:07d}.npz"


def finished_models(workdir: Path, num_models: int) -> np.ndarray:
    """bool[R]: models whose outputs are already in a wave file."""
    done = np.zeros(num_models, bool)
    for path in sorted((Path(workdir) / WAVES_DIR).glob("models_*.npz")):
        start, stop = (int(p) for p in path.stem.split("_")[1:3])
        done[start:stop] = True
    return done


def pending_waves(done: np.ndarray, wave_size: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) ranges of unfinished models, each at most ``wave_size`` long."""
    waves, r = [], 0
    while r < done.size:
        if done[r]:
            r += 1
            continue
        stop = r
        while stop < done.size and not done[stop] and stop - r < wave_size:
            stop += 1
        waves.append((r, stop))
        r = stop
    return waves


def auto_wave_size(config: Config, dataset: Dataset, num_devices: int, num_processes: int) -> int:
    """``train.wave_size``, or what fits in one device's memory times the device count,
    capped so that every process gets at least one wave."""
    from jmem.engine.memory import choose_wave_size

    num_models = config.train.num_models
    if config.train.wave_size:
        return max(1, min(config.train.wave_size, num_models))
    size = choose_wave_size(config.model, config.train, dataset) * num_devices
    return max(1, min(size, -(-num_models // num_processes)))


def next_segment(epoch: int, epochs: int, length: int, every_epochs: int) -> int:
    """End of the next training segment: ``length`` epochs on, but never past the end or
    past the next epoch-based checkpoint."""
    stop = min(epochs, epoch + max(1, length))
    if every_epochs:
        stop = min(stop, (epoch // every_epochs + 1) * every_epochs)
    return stop


def segment_length(seconds: float, epochs_run: int, target_seconds: float) -> int:
    """Epochs per segment so that one takes about ``target_seconds`` (>= 1), from the last
    segment's duration (an overestimate after compilation, which only shortens it)."""
    per_epoch = seconds / max(epochs_run, 1)
    return max(1, int(target_seconds / per_epoch)) if per_epoch > 0 else 1


def train_wave(inputs: RunInputs, config: Config, start: int, stop: int, workdir: Path | None = None,
               execution: Execution = Execution(), stop_request: StopRequest | None = None,
               log=print) -> dict:
    """Train models ``start..stop-1`` and predict their margins everywhere.

    With a ``workdir``, the wave resumes from its latest usable checkpoint under
    ``checkpoints/`` and is checkpointed as ``execution`` says, and on ``stop_request``
    (then :class:`Preempted` is raised once the checkpoint is on disk).

    Returns arrays keyed by name: margins_train float32[W, N], margins_test float32[W, T],
    margins_<extra> float32[W, T_k], diverged bool[W], final_loss float32[W].
    """
    from jmem.engine import checkpoint
    from jmem.engine import parallel
    from jmem.engine import trainer as train
    from jmem.engine.predict import predict_margins

    ids = inputs.ids(start, stop)
    wave = train.prepare_wave(inputs.keep[start:stop], inputs.dataset, config.model, config.train,
                              config.seed, model_ids=ids,
                              devices=parallel.local_devices(execution.devices))
    saver = _LazyCheckpoints(checkpoint.wave_dir(workdir, start, stop) if workdir else None)
    try:
        epoch, state = 0, None
        restored = saver.restore_latest(train.abstract_state(wave), ids,
                                        warn=warn)
        if restored is not None:
            epoch, host_state = restored
            state = train.state_from_host(wave, host_state)
            log(f"models {start}-{stop - 1}: resumed at epoch {epoch} of {wave.epochs}")
        if state is None:
            state = train.init_state(wave)
        state = _train_segments(wave, state, epoch, saver, execution,
                                stop_request or StopRequest(), f"models {start}-{stop - 1}")
        result = train.finish(wave, state)
    finally:
        saver.close()
    params, model_state = (_host_copy(result.params), _host_copy(result.model_state))
    data = inputs.dataset
    sets = {"train": (data.x_train, data.y_train), "test": (data.x_test, data.y_test), **data.extra_tests}
    # Each set's model chunks are spread over the wave's devices.
    out = {f"margins_{name}": predict_margins(config.model, params, model_state, x, y, devices=wave.devices)
           for name, (x, y) in sets.items()}
    out["diverged"] = np.asarray(result.diverged, bool)
    out["final_loss"] = np.asarray(result.final_loss, np.float32)
    return out


def _host_copy(tree):
    """Numpy copies of a pytree's leaves (free of the wave's sharding: predictions split
    the models into their own chunks)."""
    import jax

    return jax.tree_util.tree_map(np.asarray, tree)


def _train_segments(wave, state, epoch: int, saver: "_LazyCheckpoints", execution: Execution,
                    stop_request: StopRequest, label: str):
    """Run ``wave`` from ``epoch`` to the end in segments; checkpoint between segments."""
    import jax

    from jmem.engine import trainer as train

    length, last_save = 1, time.monotonic()
    while epoch < wave.epochs:
        stop = next_segment(epoch, wave.epochs, length, execution.checkpoint_every_epochs)
        began = time.monotonic()
        state = jax.block_until_ready(train.train_epochs(wave, state, epoch, stop))
        length = segment_length(time.monotonic() - began, stop - epoch, execution.segment_seconds)
        epoch = stop
        fault_point("segment")
        if epoch == wave.epochs:
            break  # the outputs are written next: a checkpoint now would be wasted
        every_epochs, every_seconds = execution.checkpoint_every_epochs, execution.checkpoint_every_seconds
        due = ((every_epochs and epoch % every_epochs == 0)
               or (every_seconds and time.monotonic() - last_save >= every_seconds))
        if due or stop_request.requested:
            saver.save(epoch, wave.model_ids, train.state_to_host(wave, state))
            last_save = time.monotonic()
        if stop_request.requested:
            saver.wait()
            raise Preempted(f"{label}: checkpointed at epoch {epoch} of {wave.epochs}")
    return state


class _LazyCheckpoints:
    """A wave's :class:`jmem.engine.checkpoint.WaveCheckpoints`, opened on first use (short waves
    that never checkpoint leave no directory), or nothing when ``directory`` is None."""

    def __init__(self, directory: Path | None):
        self.directory = directory
        self._open = None

    def _get(self):
        if self._open is None:
            from jmem.engine.checkpoint import WaveCheckpoints

            self._open = WaveCheckpoints(self.directory)
        return self._open

    def restore_latest(self, abstract_state, model_ids, warn):
        if self.directory is None or not self.directory.exists():
            return None
        return self._get().restore_latest(abstract_state, model_ids, warn=warn)

    def save(self, epoch, model_ids, host_state):
        if self.directory is None:
            return
        self._get().save(epoch, model_ids, host_state)
        fault_point("checkpoint_started")
        if os.environ.get(KILL_ENV):
            self._get().wait()  # tests only: make "checkpoint_saved" mean "on disk"
        fault_point("checkpoint_saved")

    def wait(self):
        if self._open is not None:
            self._open.wait()

    def close(self):
        if self._open is not None:
            self._open.close()


def save_wave(workdir: Path, start: int, stop: int, arrays: dict) -> None:
    artifacts.save_arrays(wave_path(workdir, start, stop), arrays)


# ----------------------------------------------------------------------------- assembly


def assemble(workdir: Path, inputs: RunInputs) -> dict:
    """Concatenate every wave file into the final run-directory arrays and ``models.csv``.

    ``models.csv`` is written last: its presence marks a complete run. Only then are the
    wave files and checkpoints removed (:func:`cleanup`), so a kill at any point of this
    function leaves either the waves to assemble again or a complete run.
    """
    workdir = Path(workdir)
    waves = sorted((workdir / WAVES_DIR).glob("models_*.npz"))
    num_models = inputs.keep.shape[0]
    # Margins stream wave by wave into their final files (float32[R, N] at R=2,000, N=60,000
    # is 480 MB: holding every wave and their concatenation would double that). Everything
    # else, test margins included (R x T, for models.csv's accuracies), is concatenated.
    parts: dict[str, list] = {}
    writers: dict[str, artifacts.NpyRowWriter] = {}
    held = 0
    try:
        for path in waves:
            try:
                wave = np.load(path, allow_pickle=False)
            except Exception as err:  # noqa: BLE001 - verified at start; damaged since: say which
                raise JmemError(f"{path} is damaged ({type(err).__name__}); re-run the same "
                                "command to train its models again") from err
            with wave:
                n = wave["diverged"].shape[0]
                held += n
                for key in wave.files:
                    value = wave[key]
                    if key != "margins_train":
                        parts.setdefault(key, []).append(value)
                    if key.startswith("margins_") and held <= num_models:
                        if key not in writers:
                            writers[key] = artifacts.NpyRowWriter(workdir / f"{key}.npy",
                                                                  (num_models,) + value.shape[1:], np.float32)
                        writers[key].write_rows(value)
        if held != num_models:
            raise JmemError(f"{workdir / WAVES_DIR}: wave files hold {held} "
                            f"models, not train.num_models={num_models}; delete the workdir and re-run")
        for key in writers:  # in the wave files' order, as before
            writers[key].commit()
            fault_point("assembly")
    finally:
        for writer in writers.values():
            writer.discard()
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    metrics = model_metrics(inputs, arrays)
    metrics_text = metrics_csv(metrics)
    integrity.record_outputs(workdir, [f"{k}.npy" for k in writers],
                             {artifacts.MODEL_METRICS: metrics_text})
    artifacts.save_text(workdir / artifacts.MODEL_METRICS, metrics_text)
    fault_point("cleanup")
    cleanup(workdir)
    return metrics


def load_waves(workdir: Path, num_models: int) -> dict:
    """Every wave file of ``workdir`` concatenated in model order: name -> array[R, ...]."""
    workdir = Path(workdir)
    parts: dict[str, list] = {}
    for path in sorted((workdir / WAVES_DIR).glob("models_*.npz")):
        try:
            with np.load(path, allow_pickle=False) as wave:
                for key in wave.files:
                    parts.setdefault(key, []).append(wave[key])
        except Exception as err:  # noqa: BLE001 - verified at start; damaged since: say which
            raise JmemError(f"{path} is damaged ({type(err).__name__}); re-run the same command "
                            "to train its models again") from err
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    if "diverged" not in arrays or arrays["diverged"].shape[0] != num_models:
        found = arrays["diverged"].shape[0] if "diverged" in arrays else 0
        raise JmemError(f"{workdir / WAVES_DIR}: wave files hold {found} models, not "
                        f"{num_models}; delete the workdir and re-run")
    return arrays


def cleanup(workdir: Path) -> None:
    """Remove ``waves/`` and ``checkpoints/`` of a complete run."""
    import shutil

    from jmem.engine.checkpoint import CHECKPOINTS_DIR

    for name in (WAVES_DIR, CHECKPOINTS_DIR):
        shutil.rmtree(Path(workdir) / name, ignore_errors=True)


def is_complete(workdir: Path) -> bool:
    """A run directory is complete once ``models.csv`` (written last) exists."""
    return (Path(workdir) / artifacts.MODEL_METRICS).exists()


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


def metrics_csv(metrics: dict) -> str:
    names = list(metrics)
    lines = [",".join(names)]
    for row in zip(*(metrics[n] for n in names)):
        lines.append(",".join(_fmt(v) for v in row))
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    return str(int(value)) if isinstance(value, (bool, np.bool_, np.integer)) else str(value)


def write_inputs(workdir: Path, config: Config, inputs: RunInputs) -> None:
    """The run's inputs: config, masks, labels, canaries (written once, before training)."""
    workdir = Path(workdir)
    data = inputs.dataset
    artifacts.save_array(workdir / artifacts.KEEP, inputs.keep)
    artifacts.save_array(workdir / artifacts.MODEL_RATES, inputs.model_rates)
    artifacts.save_array(workdir / artifacts.LABELS_TRAIN, inputs.labels_train)
    artifacts.save_array(workdir / artifacts.LABELS_TEST, data.y_test)
    if inputs.canaries.any():
        artifacts.save_array(workdir / artifacts.CANARIES, inputs.canaries)
    for name, (_, y) in data.extra_tests.items():
        artifacts.save_array(workdir / artifacts.labels_extra_name(name), y)
    names = [artifacts.KEEP, artifacts.MODEL_RATES, artifacts.LABELS_TRAIN, artifacts.LABELS_TEST]
    names += [artifacts.CANARIES] * bool(inputs.canaries.any())
    names += [artifacts.labels_extra_name(name) for name in data.extra_tests]
    config_text = artifacts.json_text(config_lib.to_dict(config))
    integrity.record_inputs(workdir, data, names, config_text)
    # config.json last: its presence marks a run directory whose inputs are complete.
    artifacts.save_text(workdir / artifacts.CONFIG, config_text)


def run_training(config: Config, workdir: Path, dataset: Dataset, progress: bool = True,
                 log=print, execution: Execution = Execution()) -> dict:
    """Train every model of ``config`` into ``workdir``; resumes finished waves and
    checkpointed waves. Raises :class:`Preempted` after checkpointing on SIGTERM.

    In a multi-process JAX job every process calls this with the same arguments (and a
    ``workdir`` on a filesystem they all see); see the module docstring.
    Returns a summary: models, models/s, diverged count, mean test accuracy.
    """
    from jmem.engine import parallel

    workdir = Path(workdir)
    me = parallel.process_index()
    with StopRequest() as stop_request, contextlib.ExitStack() as lock:
        start = _start(config, workdir, dataset, execution, lock, log)
        if start.complete:
            return summarize(workdir, start.inputs, seconds=0.0, trained=0) if me == 0 else {}
        began = time.perf_counter()
        trained = _train_share(start, config, workdir, execution, stop_request, progress, log)
        seconds = time.perf_counter() - began
        parallel.barrier("jmem-waves-written")
        if me == 0:
            assemble(workdir, start.inputs)
        parallel.barrier("jmem-assembled")
        if me != 0:
            return {"workdir": str(workdir), "process": me, "trained_now": trained,
                    "seconds": round(seconds, 2)}
        return summarize(workdir, start.inputs, seconds, trained=trained)


@dataclasses.dataclass(frozen=True)
class _Start:
    """What every process knows once process 0 has prepared the run directory."""

    inputs: RunInputs
    devices: list
    complete: bool
    wave_size: int
    done: np.ndarray  # bool[R], models already in a wave file


def _start(config, workdir: Path, dataset, execution: Execution, lock: contextlib.ExitStack,
           log) -> _Start:
    """Every process derives the inputs; process 0 also checks and locks the workdir,
    writes or finds the inputs, and decides the wave size; then it broadcasts its decision
    (a failure included, so that no process waits forever for a process that gave up)."""
    from jmem.engine import parallel

    num_processes, me = parallel.process_count(), parallel.process_index()
    status, wave_size, done = _STATUS_RUN, 0, np.zeros(config.train.num_models, bool)
    inputs, devices, error = None, None, None
    try:
        devices = parallel.local_devices(execution.devices)
        if me == 0:
            check_workdir(workdir, config)  # refuse before writing anything, even a lock
            workdir.mkdir(parents=True, exist_ok=True)
            lock.enter_context(workdir_lock(workdir))
        from jmem.study.leakage import measure_leakage

        dataset, leaks = measure_leakage(config, dataset)
        inputs = prepare_inputs(config, dataset)
        if me == 0:
            status, wave_size, done = _prepare_workdir(workdir, config, inputs, leaks, devices,
                                                       num_processes, log)
    except Exception as err:  # noqa: BLE001 - re-raised below, after telling the others
        status, error = _STATUS_FAILED, err
    decision = parallel.broadcast_from_primary(
        {"status": np.int32(status), "wave_size": np.int32(wave_size), "done": done})
    if error is not None:
        raise error
    if int(decision["status"]) == _STATUS_FAILED:
        raise JmemError(f"process 0 could not start the run in {str(workdir)!r}; see its error")
    return _Start(inputs, devices, int(decision["status"]) == _STATUS_COMPLETE,
                  int(decision["wave_size"]), decision["done"].astype(bool))


def _train_share(start: _Start, config, workdir: Path, execution: Execution,
                 stop_request: StopRequest, progress: bool, log) -> int:
    """Train this process's round-robin share of the pending waves; returns its model count."""
    from jmem.engine import checkpoint
    from jmem.engine import parallel

    num_processes, me = parallel.process_count(), parallel.process_index()
    waves = pending_waves(start.done, start.wave_size)
    mine = parallel.my_waves(waves, me, num_processes)
    prefix = f"[process {me}/{num_processes}] " if num_processes > 1 else ""
    if me == 0:
        log(f"training {int((~start.done).sum())} models in {len(waves)} wave(s) of up to "
            f"{start.wave_size} ({config.model.kind}, strategy={config.train.strategy}) on "
            f"{len(start.devices)} {start.devices[0].platform} device(s)"
            + (f" x {num_processes} processes" if num_processes > 1 else ""))
    bar = _progress_bar(sum(b - a for a, b in mine), progress and me == 0)
    for first, stop in mine:
        if stop_request.requested:
            raise Preempted(f"{prefix}stopped before models {first}-{stop - 1}")
        arrays = train_wave(start.inputs, config, first, stop, workdir=workdir, execution=execution,
                            stop_request=stop_request, log=lambda m: log(prefix + m))
        save_wave(workdir, first, stop, arrays)
        if me == 0:  # the manifest has one writer
            integrity.record_wave(workdir, wave_path(workdir, first, stop))
        fault_point("wave_written")
        checkpoint.remove(checkpoint.wave_dir(workdir, first, stop))
        bar.update(stop - first)
    bar.close()
    return sum(b - a for a, b in mine)


def _prepare_workdir(workdir: Path, config: Config, inputs: RunInputs, leaks, devices,
                     num_processes: int, log):
    """Under the lock: write the inputs of a new run or find what an old one finished.

    Returns (status, wave_size, done bool[R]).
    """
    resuming = check_workdir(workdir, config)  # again: another process may have written since
    remove_stale_tmp(workdir)
    if resuming:  # a changed dataset or damaged input: error; a damaged wave: trained again
        integrity.verify_resume(workdir, inputs.dataset, is_complete(workdir),
                                lambda a, b: _wave_shapes(inputs, a, b), warn)
    done = np.zeros(config.train.num_models, bool)
    if resuming and is_complete(workdir):
        cleanup(workdir)  # a kill between models.csv and the cleanup leaves waves/ behind
        log(f"{workdir}: training already complete; nothing to do")
        return _STATUS_COMPLETE, 0, done
    if not resuming:
        from jmem.data.leakage import format_leakage_summary
        from jmem.study.leakage import write_duplicates_csv

        write_duplicates_csv(workdir / artifacts.DUPLICATES, leaks)
        fault_point("inputs")
        log(format_leakage_summary(leaks, inputs.dataset))
        write_inputs(workdir, config, inputs)
    done = finished_models(workdir, config.train.num_models)
    if done.any():
        log(f"{workdir}: resuming, {int(done.sum())} of {done.size} models already trained")
    wave_size = auto_wave_size(config, inputs.dataset, len(devices), num_processes)
    return _STATUS_RUN, wave_size, done


def _wave_shapes(inputs: RunInputs, start: int, stop: int) -> dict:
    """The arrays and shapes of the wave file of models ``start..stop-1``."""
    data, w = inputs.dataset, stop - start
    shapes = {"margins_train": (w, data.num_train), "margins_test": (w, data.num_test),
              "diverged": (w,), "final_loss": (w,)}
    shapes.update({f"margins_{k}": (w, y.shape[0]) for k, (_, y) in data.extra_tests.items()})
    return shapes


def summarize(workdir: Path, inputs: RunInputs, seconds: float, trained: int) -> dict:
    margins_test = artifacts.load_array(Path(workdir) / artifacts.MARGINS_TEST, mmap=True)
    with open(Path(workdir) / artifacts.MODEL_METRICS) as f:
        header = f.readline().strip().split(",")
        flags = [int(line.split(",")[header.index("diverged")]) for line in f]
    diverged = sum(flags)
    accuracy = (np.asarray(margins_test) > 0).mean(axis=1)
    return {
        "workdir": str(workdir),
        "models": int(inputs.keep.shape[0]),
        "trained_now": int(trained),
        "seconds": round(seconds, 2),
        "models_per_second": round(trained / seconds, 2) if seconds > 0 else None,
        "diverged": int(diverged),
        "diverged_ids": [i for i, flag in enumerate(flags) if flag],
        "test_accuracy_mean": float(accuracy.mean()),
        "test_accuracy_std": float(accuracy.std()),
    }


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="model", desc="train", disable=not enabled,
                dynamic_ncols=True, smoothing=0.1)
