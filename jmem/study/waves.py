"""The wave runner: train the pending rows of a keep matrix in waves, losing nothing to a kill.

Estimation (``jmem train``, :mod:`jmem.study.training`) and the removal experiment
(:mod:`jmem.study.retrain`) both describe their models as a :class:`Job` (a keep matrix
``bool[M, N]`` over a dataset, the model ids whose keys each row trains with, the model and
training settings) and hand it to this module, which owns how the rows are trained:

* waves are cut from the rows sorted by steps per epoch (:func:`wave_order`), so that no
  wave runs a small-subset model for a large subset's steps;
* every finished wave's outputs land atomically under ``<workdir>/waves/`` before the next
  wave starts (:func:`train_pending`);
* within a wave, training runs in short segments (a few seconds each); the in-flight state
  is checkpointed with orbax every ``checkpoint_every_epochs`` epochs and/or every
  ``checkpoint_every_seconds`` (``jmem.engine.checkpoint``), and when SIGTERM or SIGINT
  arrives (:class:`StopRequest`, then :class:`Preempted`);
* every wave file holds its rows (``rows``: int64[W]) and is listed in the workdir's
  ``manifest.json`` as it is written; a re-run reads only listed (or fully verified) wave
  files (:func:`resume_state`), skips their models and resumes the others from their latest
  usable checkpoint; :func:`assemble` writes the final arrays once every row is done, and
  :func:`cleanup` removes the waves and checkpoints after the stage's completion marker
  (both in :mod:`jmem.study.wavefiles`).

Segments, checkpoints, kills and resumes never change a result: every segment runs the same
compiled program (epoch bounds are traced), and the saved state is the complete state.

One process at a time writes a run directory (:func:`workdir_lock`, ``fcntl.flock`` on
``<workdir>/.lock``; this and :class:`StopRequest` live in :mod:`jmem.study.workdir`). In a
multi-process job every process trains its round-robin share of the waves on its own devices
(:func:`train_pending`); process 0 decides and assembles (:mod:`jmem.study.processes`).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Callable

import numpy as np

from jmem import config as config_lib
from jmem.data.dataset import Dataset
from jmem.engine.hparams import ModelConfig, TrainConfig
from jmem.errors import JmemError, warn
from jmem.study import diverged, faults, integrity, rundir
from jmem.study.wavefiles import (Assembled, assemble, check_coverage, check_rows,  # noqa: F401
                                  cleanup, finished_models, in_row_order, save_wave, wave_path,
                                  wave_range)
from jmem.study.workdir import (EXIT_INTERRUPTED, EXIT_PREEMPTED, LOCK, WAVES_DIR,  # noqa: F401
                                Preempted, StopRequest, is_tmp, remove_stale_tmp, workdir_lock)


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
        for name in ("devices", "checkpoint_every_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise JmemError(f"--{name.replace('_', '-')}={value} must be >= 0 (an integer)")
        # nan passes "< 0" and would silently mean "never": refuse every non-finite value
        seconds = self.checkpoint_every_seconds
        if not (isinstance(seconds, (int, float)) and np.isfinite(seconds) and seconds >= 0):
            raise JmemError(f"--checkpoint-every-seconds={seconds} must be a finite number >= 0 "
                            "(0 = off)")
        if not (np.isfinite(self.segment_seconds) and self.segment_seconds > 0):
            raise JmemError(f"segment_seconds={self.segment_seconds} must be > 0")


@dataclasses.dataclass(frozen=True)
class Job:
    """The rows to train: row r of ``keep`` is one model.

    dataset: what the models train on (``y_train`` are the labels they see) and are
      evaluated on (train, test and every extra test set).
    keep: bool[M, N]; model, train, seed: the settings every row trains with
      (``train.num_models`` is ignored: M is the row count).
    model_ids: int64[M], the id whose keys (``fold_in(stream, id)``) row r trains with;
      None = ``arange(M)``. Giving two rows one id gives them one initialisation and data
      order (the removal experiment's paired seeds).
    """

    dataset: Dataset
    keep: np.ndarray
    model: ModelConfig
    train: TrainConfig
    seed: int
    model_ids: np.ndarray | None = None

    @property
    def num_models(self) -> int:
        return int(self.keep.shape[0])

    @property
    def train_config(self) -> TrainConfig:
        """``train`` with ``num_models`` = M (the trainer's wave-size cap reads it)."""
        return dataclasses.replace(self.train, num_models=self.num_models)

    @functools.cached_property
    def order(self) -> np.ndarray:
        """int64[M]: the rows in the order waves are cut from (:func:`wave_order`); the wave
        of positions ``start..stop-1`` trains rows ``order[start:stop]``."""
        return wave_order(self.keep, self.train)

    def ids(self, rows: np.ndarray) -> np.ndarray:
        """int64[W]: the model ids of ``rows`` (int64[W])."""
        rows = np.asarray(rows, np.int64)
        return rows if self.model_ids is None else np.asarray(self.model_ids, np.int64)[rows]


def wave_order(keep: np.ndarray, train: TrainConfig) -> np.ndarray:
    """int64[M]: the rows of ``keep`` (bool[M, N]) sorted by their steps per epoch
    (:func:`jmem.engine.batches.steps_per_epoch`), ties in row order.

    A batched wave runs every model for its longest model's steps (the others idle), so
    cutting waves from this order keeps models of very different subset sizes (a two-rate
    study whose rates alternate by model) out of one wave. A model is a function of its id,
    not of its wave, so the order changes no result beyond float rounding; it is a function
    of ``keep`` and ``train`` alone (a stable sort), so every run, resume and process cuts
    the same waves. Rows of one step count (the coupled data order, or ``fixed`` subsets of
    one rate) keep their order.
    """
    from jmem.engine.batches import steps_per_epoch

    return np.argsort(steps_per_epoch(keep, train), kind="stable").astype(np.int64)


# ----------------------------------------------------------------------------- the workdir


def check_stage_dir(out: Path, recorded: dict, keep: np.ndarray, inputs: set, what: str,
                    config_name: str = rundir.CONFIG,
                    check_inputs: Callable[[], None] | None = None) -> bool:
    """Refuse a stage directory (``retrain/``, ``loo/``) holding another experiment; True if
    it holds this one. ``recorded``: what ``config_name`` must hold; ``keep``: bool[M, N], the
    rows ``keep.npy`` must hold; ``inputs``: the file names a kill before ``config_name``
    (written last of the inputs) may leave; ``what``: the experiment's name for errors;
    ``check_inputs``: a further check of the stage's recorded inputs, run before ``keep`` is
    compared (its error names what changed, where a different ``keep`` could only say that
    something did)."""
    if not out.exists():
        return False
    if not (out / config_name).exists():
        if not all(p.name in inputs | {LOCK} or is_tmp(p.name) for p in out.iterdir()):
            raise JmemError(f"{str(out)!r} is not empty and holds no {config_name}; delete it")
        return False
    difference = config_lib.first_difference(rundir.load_json(out / config_name), recorded,
                                             ignore=(), ignore_sections=())
    if difference:
        raise JmemError(f"{str(out)!r} holds a different {what} ({difference}); delete it or "
                        "use the same settings")
    if check_inputs is not None:
        check_inputs()
    stored = rundir.load_array(out / rundir.KEEP)
    if stored.shape != keep.shape or not np.array_equal(stored, keep):
        raise JmemError(f"{str(out)!r} was started from other inputs (the run was re-scored "
                        "since); delete it to run again")
    return True


def open_stage_dir(out: Path, check: Callable[[], bool], lock) -> bool:
    """Take a stage directory for writing: ``check()`` it (:func:`check_stage_dir`: refuses
    another experiment; True if it holds this one), create it, take its lock into ``lock`` (a
    :class:`contextlib.ExitStack`), check again (another process may have written it between
    the two) and clear the temporary files a killed process left. Returns whether it resumes."""
    check()
    out.mkdir(parents=True, exist_ok=True)
    lock.enter_context(workdir_lock(out))
    resuming = check()
    remove_stale_tmp(out)
    return resuming


# ----------------------------------------------------------------------------- waves


def resume_state(workdir: Path, job: Job, warn=warn) -> np.ndarray:
    """bool[M]: the positions of the wave order a resume may skip, after
    :func:`jmem.study.integrity.verify_waves` removed every wave file that is damaged, not
    listed in the manifest and not verifiable, or holding other rows than ``job.order``
    gives its positions (one-line warning each; their models are trained again).
    Call while holding the workdir lock."""
    integrity.verify_waves(workdir, lambda a, b: wave_shapes(job, a, b), warn,
                           wave_rows=lambda a, b: job.order[a:b])
    return finished_models(workdir, job.num_models)


def pending_waves(done: np.ndarray, wave_size: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) ranges of unfinished positions (``done``: bool[M] over the
    wave order), each at most ``wave_size`` long."""
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


def auto_wave_size(job: Job, num_devices: int, num_processes: int) -> int:
    """``train.wave_size``, or what fits in one device's memory times the device count,
    capped so that every process gets at least one wave."""
    from jmem.engine.memory import choose_wave_size

    num_models = job.num_models
    if job.train.wave_size:
        return max(1, min(job.train.wave_size, num_models))
    size = choose_wave_size(job.model, job.train_config, job.dataset) * num_devices
    return max(1, min(size, -(-num_models // num_processes)))


def wave_shapes(job: Job, start: int, stop: int) -> dict:
    """The arrays and shapes of the wave file of rows ``start..stop-1``."""
    data, w = job.dataset, stop - start
    shapes = {"margins_train": (w, data.num_train), "margins_test": (w, data.num_test),
              "diverged": (w,), "final_loss": (w,), "loss_history": (w, job.train.epochs),
              "rows": (w,)}
    shapes.update({f"margins_{k}": (w, y.shape[0]) for k, (_, y) in data.extra_tests.items()})
    if job.train.record_proxies:
        shapes.update(cum_loss=(w, data.num_train), learned_epoch=(w, data.num_train))
    return shapes


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


def train_wave(job: Job, start: int, stop: int, workdir: Path | None = None,
               execution: Execution = Execution(), stop_request: StopRequest | None = None,
               log=print, on_epochs: Callable[[int], None] | None = None) -> dict:
    """Train the wave of positions ``start..stop-1`` (rows ``job.order[start:stop]``) and
    predict their margins everywhere.

    With a ``workdir``, the wave resumes from its latest usable checkpoint under
    ``checkpoints/`` and is checkpointed as ``execution`` says, and on ``stop_request``
    (then :class:`Preempted` is raised once the checkpoint is on disk).
    on_epochs: called with the number of epochs each segment (or the restored checkpoint)
    added, for a progress bar that moves within the wave.

    Returns arrays keyed by name, one row per model in wave order: margins_train
    float32[W, N], margins_test float32[W, T], margins_<extra> float32[W, T_k], diverged
    bool[W], final_loss float32[W], loss_history float32[W, epochs] (mean training loss per
    epoch, NaN from divergence on), and with ``train.record_proxies`` cum_loss float32[W, N]
    and learned_epoch int32[W, N].
    """
    from jmem.engine import checkpoint
    from jmem.engine import parallel
    from jmem.engine import trainer
    from jmem.engine.predict import predict_margins

    rows = job.order[start:stop]
    ids = job.ids(rows)
    wave = trainer.prepare_wave(job.keep[rows], job.dataset, job.model, job.train_config,
                                job.seed, model_ids=ids,
                                devices=parallel.local_devices(execution.devices))
    saver = LazyCheckpoints(checkpoint.wave_dir(workdir, start, stop) if workdir else None)
    try:
        epoch, state = 0, None
        restored = saver.restore_latest(trainer.abstract_state(wave), ids, warn=warn)
        if restored is not None:
            epoch, host_state = restored
            state = trainer.state_from_host(wave, host_state)
            log(f"models {start}-{stop - 1}: resumed at epoch {epoch} of {wave.epochs}")
            if on_epochs is not None:
                on_epochs(epoch)
        if state is None:
            state = trainer.init_state(wave)
        state = train_segments(wave, state, epoch, saver, execution,
                               stop_request or StopRequest(), f"models {start}-{stop - 1}",
                               on_epochs=on_epochs)
        result = trainer.finish(wave, state)
    finally:
        saver.close()
    # One device (a GPU): the parameters stay where they are. Several: host copies, free of the
    # wave's sharding, since predictions split the models into chunks of their own.
    params, model_state = ((result.params, result.model_state) if len(wave.devices) == 1 else
                           (_host_copy(result.params), _host_copy(result.model_state)))
    data = job.dataset
    sets = {"train": (data.x_train, data.y_train), "test": (data.x_test, data.y_test), **data.extra_tests}
    # Each set's model chunks are spread over the wave's devices; the layers compute in the
    # training's dtype (bf16 margins for a bf16 run), the margins come back as float32.
    out = {f"margins_{name}": predict_margins(job.model, params, model_state, x, y, devices=wave.devices,
                                              compute_dtype=job.train.compute_dtype)
           for name, (x, y) in sets.items()}
    out["final_loss"] = np.asarray(result.final_loss, np.float32)
    out["loss_history"] = np.asarray(result.loss_history, np.float32)
    # The one definition (jmem.study.diverged): a NaN margin marks the model as well
    out["diverged"] = np.asarray(result.diverged, bool) | diverged.diverged_models(
        out["final_loss"], [v for k, v in out.items() if k.startswith("margins_")])
    if result.cum_loss is not None:  # train.record_proxies: the cheap proxies, [W, N] each
        out["cum_loss"] = np.asarray(result.cum_loss, np.float32)
        out["learned_epoch"] = np.asarray(result.learned_epoch, np.int32)
    return out


def _host_copy(tree):
    """Numpy copies of a pytree's leaves (free of the wave's sharding: predictions split
    the models into their own chunks)."""
    import jax

    return jax.tree_util.tree_map(np.asarray, tree)


def train_segments(wave, state, epoch: int, saver: "LazyCheckpoints", execution: Execution,
                   stop_request: StopRequest, label: str,
                   on_epochs: Callable[[int], None] | None = None):
    """Run ``wave`` from ``epoch`` to the end in segments; checkpoint between segments.
    ``on_epochs(k)`` after each segment of k epochs (progress)."""
    import jax

    from jmem.engine import trainer

    length, last_save = 1, time.monotonic()
    while epoch < wave.epochs:
        stop = next_segment(epoch, wave.epochs, length, execution.checkpoint_every_epochs)
        began = time.monotonic()
        state = jax.block_until_ready(trainer.train_epochs(wave, state, epoch, stop))
        length = segment_length(time.monotonic() - began, stop - epoch, execution.segment_seconds)
        if on_epochs is not None:
            on_epochs(stop - epoch)
        epoch = stop
        faults.point("segment")
        if epoch == wave.epochs:
            break  # the outputs are written next: a checkpoint now would be wasted
        every_epochs, every_seconds = execution.checkpoint_every_epochs, execution.checkpoint_every_seconds
        due = ((every_epochs and epoch % every_epochs == 0)
               or (every_seconds and time.monotonic() - last_save >= every_seconds))
        if due or stop_request.requested:
            saver.save(epoch, wave.model_ids, trainer.state_to_host(wave, state))
            last_save = time.monotonic()
        if stop_request.requested:
            saver.wait()
            stop_request.check(f"{label}: checkpointed at epoch {epoch} of {wave.epochs}")
    return state


class LazyCheckpoints:
    """A wave's checkpoints (:func:`jmem.engine.checkpoint.open_checkpoints`), opened on
    first use (short waves that never checkpoint leave no directory), or nothing when
    ``directory`` is None."""

    def __init__(self, directory: Path | None):
        self.directory = directory
        self._open = None

    def _get(self):
        if self._open is None:
            from jmem.engine.checkpoint import open_checkpoints

            self._open = open_checkpoints(self.directory)
        return self._open

    def restore_latest(self, abstract_state, model_ids, warn):
        if self.directory is None or not self.directory.exists():
            return None
        return self._get().restore_latest(abstract_state, model_ids, warn=warn)

    def save(self, epoch, model_ids, host_state):
        if self.directory is None:
            return
        self._get().save(epoch, model_ids, host_state)
        faults.point("checkpoint_started")
        faults.point("checkpoint_saved", settle=self._get().wait)  # "saved" means on disk

    def wait(self):
        if self._open is not None:
            self._open.wait()

    def close(self):
        if self._open is not None:
            self._open.close()


def train_pending(job: Job, workdir: Path, wave_size: int, done: np.ndarray, *,
                  execution: Execution = Execution(), stop_request: StopRequest | None = None,
                  progress: bool = True, log=print,
                  on_wave_written: Callable[[Path], None] | None = None,
                  label: str = "train") -> int:
    """Train this process's round-robin share of the waves of the positions not ``done``
    (bool[M] over the wave order :attr:`Job.order`: waves group models of similar subset
    size) into ``workdir/waves/``; returns how many rows it trained. ``label`` names the
    progress bar, which advances within a wave, segment by segment.

    on_wave_written: called by process 0 with each wave file it wrote; default: list it in
    the workdir's manifest (:func:`jmem.study.integrity.record_wave`).
    Raises :class:`Preempted` on ``stop_request`` (SIGTERM, SIGINT) once the state is
    checkpointed.
    """
    from jmem.engine import checkpoint
    from jmem.engine import parallel

    stop_request = stop_request or StopRequest()
    if on_wave_written is None:
        on_wave_written = lambda path: integrity.record_wave(workdir, path)  # noqa: E731
    num_processes, me = parallel.process_count(), parallel.process_index()
    devices = parallel.local_devices(execution.devices)
    waves = pending_waves(done, wave_size)
    mine = parallel.my_waves(waves, me, num_processes)
    prefix = f"[process {me}/{num_processes}] " if num_processes > 1 else ""
    if not waves:  # everything was trained before: no line, no empty bar
        return 0
    if me == 0:
        log(f"training {int((~done).sum())} models in {len(waves)} wave(s) of up to "
            f"{wave_size} ({job.model.kind}, strategy={job.train.strategy}) on "
            f"{len(devices)} {devices[0].platform} device(s)"
            + (f" x {num_processes} processes" if num_processes > 1 else ""))
    bar = ModelProgress(sum(b - a for a, b in mine), job.train.epochs, progress and me == 0, label)
    for first, stop in mine:
        stop_request.check(f"{prefix}stopped before models {first}-{stop - 1}")
        arrays = train_wave(job, first, stop, workdir=workdir, execution=execution,
                            stop_request=stop_request, log=lambda m: log(prefix + m),
                            on_epochs=bar.epochs_of(stop - first))
        save_wave(workdir, first, stop, arrays, job.order[first:stop])
        if me == 0 and on_wave_written is not None:  # the manifest has one writer
            on_wave_written(wave_path(workdir, first, stop))
        faults.point("wave_written")
        checkpoint.remove(checkpoint.wave_dir(workdir, first, stop))
        bar.wave_done(stop - first)
    bar.close()
    return sum(b - a for a, b in mine)


class ModelProgress:
    """A tqdm bar counting models, advanced in fractions of a wave as its epochs finish (a
    wave of W models trained for k of E epochs counts W * k / E), then set to the exact
    count once the wave is written. ``count`` is where it stands (also when disabled)."""

    def __init__(self, total: int, epochs: int, enabled: bool, label: str):
        from tqdm.auto import tqdm

        self.epochs, self.finished, self.count = max(int(epochs), 1), 0, 0.0
        # {n:.0f}: the count moves in fractions of a model; show it whole.
        self.bar = tqdm(total=total, unit="model", desc=label, disable=not enabled,
                        dynamic_ncols=True, smoothing=0.1,
                        bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]")

    def epochs_of(self, wave_models: int) -> Callable[[int], None]:
        """The ``on_epochs`` callback of a wave of ``wave_models`` models."""
        return lambda epochs: self._advance(wave_models * epochs / self.epochs)

    def _advance(self, models: float) -> None:
        self.count += models
        self.bar.update(models)

    def wave_done(self, wave_models: int) -> None:
        self.finished += wave_models
        self.count = self.bar.n = self.finished  # no drift from the fractional steps
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()
