"""In-flight state of one wave, saved with orbax-checkpoint, so a killed run loses little.

A wave's checkpoints live in ``<workdir>/checkpoints/wave_<start>_<stop>/<epoch>/`` (orbax
step = epochs completed). Each holds, for the wave's W real models (never the dummies that
pad a wave to the device count, so a checkpoint restores onto any number of devices):

* ``leaves``: every leaf of the :class:`jmem.engine.trainer.TrainState` pytree (params, BatchNorm
  statistics, optimizer state, diverged flags, step counters, loss history), float32 /
  int32 / bool arrays with leading axis W, named by their position in the flattened tree;
* ``epoch`` (int64[]), ``model_ids`` (int64[W]) and ``checksum`` (int64[], CRC-32 over the
  bytes of the above), so a restore can tell a valid checkpoint from a damaged one.

The data-order and augmentation keys are not stored: they are recomputed from
(seed, model id, epoch, steps taken). Restoring is done against the abstract state of a
freshly prepared wave, so the optax state keeps its types (named tuples, not lists).

Orbax writes a step to a temporary directory and renames it when complete, so a process
killed mid-save leaves no half-written step under a final name; ``max_to_keep=2`` keeps one
older step to fall back on when the newest cannot be read or fails its checksum.

In a multi-process job (``jax.distributed``) each process checkpoints its own waves alone,
which orbax (0.12) does not support: its asynchronous saves coordinate through the
distributed runtime's key-value store under keys shared by all processes (a save can wait
5 minutes for another process's signal), and its numpy writer writes on process 0 only
(checkpoints of the other processes come out empty). There, :func:`open_checkpoints` gives
:class:`FileWaveCheckpoints`: the same record as one ``<epoch>/state.npz``, written
synchronously, atomically, with the same checksum and fallback.
"""

from __future__ import annotations

import os
import shutil
import zlib
from pathlib import Path

import jax
import numpy as np

CHECKPOINTS_DIR = "checkpoints"


def wave_dir(workdir: Path, start: int, stop: int) -> Path:
    """Where the checkpoints of models ``start..stop-1`` live."""
    return Path(workdir) / CHECKPOINTS_DIR / f"wave_{start:07d}_{stop:07d}"


def checksum(arrays) -> int:
    """CRC-32 of the bytes, shapes and dtypes of a sequence of numpy arrays."""
    crc = 0
    for array in arrays:
        array = np.ascontiguousarray(array)
        crc = zlib.crc32(f"{array.dtype.str}{array.shape}".encode(), crc)
        crc = zlib.crc32(memoryview(array).cast("B"), crc)
    return crc


def _record(epoch: int, model_ids: np.ndarray, state) -> dict:
    leaves = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(state)]
    ids = np.asarray(model_ids, np.int64)
    epoch_arr = np.asarray(epoch, np.int64)
    return {
        "epoch": epoch_arr,
        "model_ids": ids,
        "checksum": np.asarray(checksum([epoch_arr, ids, *leaves]), np.int64),
        "leaves": {f"{i:04d}": leaf for i, leaf in enumerate(leaves)},
    }


def _target(abstract_state, num_models: int) -> dict:
    """Zero-filled numpy arrays shaped like a record (numpy targets restore as numpy)."""
    leaves = jax.tree_util.tree_leaves(abstract_state)
    return {
        "epoch": np.zeros((), np.int64),
        "model_ids": np.zeros((num_models,), np.int64),
        "checksum": np.zeros((), np.int64),
        "leaves": {f"{i:04d}": np.zeros(leaf.shape, leaf.dtype) for i, leaf in enumerate(leaves)},
    }


class CheckpointError(Exception):
    """A checkpoint step that cannot be used (unreadable, damaged, or of other models)."""


def open_checkpoints(directory: Path):
    """The checkpoints of the wave in ``directory``: :class:`WaveCheckpoints` (orbax,
    asynchronous), or in a multi-process job :class:`FileWaveCheckpoints` (module docstring)."""
    return FileWaveCheckpoints(directory) if jax.process_count() > 1 else WaveCheckpoints(directory)


def _state_of(record: dict, epoch: int, abstract_state, ids: np.ndarray):
    """The state in a restored ``record`` (like :func:`_record`'s), a pytree like
    ``abstract_state``; :class:`CheckpointError` unless it holds the models ``ids`` (int64[W])
    at ``epoch`` and passes its checksum."""
    leaves = [np.asarray(record["leaves"][f"{i:04d}"])
              for i in range(len(jax.tree_util.tree_leaves(abstract_state)))]
    if not np.array_equal(record["model_ids"], ids):
        raise CheckpointError(f"holds models {record['model_ids'][:3]}..., not {ids[:3]}...")
    expected = checksum([np.asarray(record["epoch"], np.int64), np.asarray(record["model_ids"], np.int64), *leaves])
    if int(record["checksum"]) != expected or int(record["epoch"]) != epoch:
        raise CheckpointError("checksum mismatch (damaged files)")
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(abstract_state), leaves)


class _Fallback:
    """:meth:`restore_latest` over a class's ``steps``, ``restore`` and ``delete``."""

    def restore_latest(self, abstract_state, model_ids: np.ndarray, warn=print):
        """(epoch, state) of the newest usable checkpoint, or None if there is none.

        A damaged step is reported through ``warn``, deleted, and the next older one tried.
        """
        for epoch in reversed(self.steps()):
            try:
                return epoch, self.restore(epoch, abstract_state, model_ids)
            except CheckpointError as err:
                warn(f"warning: checkpoint {self.directory / str(epoch)} is {err}; "
                     "falling back to the previous one")
                self.delete(epoch)
        return None


class WaveCheckpoints(_Fallback):
    """The checkpoints of one wave (one process): asynchronous orbax saves, restore with
    fallback."""

    def __init__(self, directory: Path, max_to_keep: int = 2):
        import orbax.checkpoint as ocp

        self.directory = Path(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, cleanup_tmp_directories=True, create=True,
            enable_async_checkpointing=True)
        self._ocp = ocp
        self._manager = ocp.CheckpointManager(self.directory.absolute(), options=options)

    def delete(self, epoch: int) -> None:
        self._manager.delete(epoch)

    def steps(self) -> list[int]:
        """Epochs with a finished checkpoint, oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, epoch: int, model_ids: np.ndarray, host_state) -> None:
        """Start saving ``host_state`` (numpy arrays, W rows) as step ``epoch``; returns once
        the arrays are handed over, while the files are written in the background.

        ``host_state`` must not be modified afterwards (it is read asynchronously); pass a
        copy (``jmem.engine.trainer.state_to_host``), never device buffers that training donates.
        """
        record = _record(epoch, model_ids, host_state)
        self._manager.save(epoch, args=self._ocp.args.StandardSave(record), force=True)

    def wait(self) -> None:
        """Block until every started save is on disk."""
        self._manager.wait_until_finished()

    def restore(self, epoch: int, abstract_state, model_ids: np.ndarray):
        """The state saved at ``epoch``: a pytree like ``abstract_state`` of numpy arrays.

        Raises :class:`CheckpointError` if the step cannot be read, fails its checksum, or
        holds other models.
        """
        ids = np.asarray(model_ids, np.int64)
        target = _target(abstract_state, ids.shape[0])
        try:
            record = self._manager.restore(epoch, args=self._ocp.args.StandardRestore(target))
        except Exception as err:  # noqa: BLE001 - orbax/tensorstore raise many types on damage
            raise CheckpointError(f"unreadable ({type(err).__name__}: {_first_line(err)})") from err
        return _state_of(record, epoch, abstract_state, ids)

    def close(self) -> None:
        """Finish pending saves and release the manager's threads."""
        self._manager.close()


class FileWaveCheckpoints(_Fallback):
    """The checkpoints of one wave as ``<directory>/<epoch>/state.npz`` (the record of
    :func:`_record`, flattened: ``leaves/0000``...): for a multi-process job, where orbax's
    coordination gets in the way (module docstring). A save is synchronous: written to a
    hidden directory, fsynced, renamed, so a kill leaves no half-written step under a final
    name; the ``max_to_keep`` newest steps are kept."""

    STATE = "state.npz"

    def __init__(self, directory: Path, max_to_keep: int = 2):
        self.directory, self.max_to_keep = Path(directory), max_to_keep

    def steps(self) -> list[int]:
        """Epochs with a finished checkpoint, oldest first."""
        if not self.directory.is_dir():
            return []
        return sorted(int(p.name) for p in self.directory.iterdir()
                      if p.name.isdigit() and (p / self.STATE).is_file())

    def save(self, epoch: int, model_ids: np.ndarray, host_state) -> None:
        """Save ``host_state`` (numpy arrays, W rows) as step ``epoch``, on disk on return."""
        record = _record(epoch, model_ids, host_state)
        flat = {k: v for k, v in record.items() if k != "leaves"}
        flat.update({f"leaves/{k}": v for k, v in record["leaves"].items()})
        tmp = self.directory / f".{epoch}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        with open(tmp / self.STATE, "wb") as f:
            np.savez(f, **flat)
            f.flush()
            os.fsync(f.fileno())
        self.delete(epoch)  # a step of this epoch from before a resume: replaced
        os.replace(tmp, self.directory / str(epoch))
        for old in self.steps()[:-self.max_to_keep]:
            self.delete(old)

    def wait(self) -> None:
        """Nothing to wait for: every save is on disk when it returns."""

    def restore(self, epoch: int, abstract_state, model_ids: np.ndarray):
        """As :meth:`WaveCheckpoints.restore`."""
        try:
            with np.load(self.directory / str(epoch) / self.STATE, allow_pickle=False) as f:
                flat = {k: f[k] for k in f.files}
            record = {k: v for k, v in flat.items() if not k.startswith("leaves/")}
            record["leaves"] = {k.split("/", 1)[1]: v for k, v in flat.items() if k.startswith("leaves/")}
            return _state_of(record, epoch, abstract_state, np.asarray(model_ids, np.int64))
        except CheckpointError:
            raise
        except Exception as err:  # noqa: BLE001 - a truncated or garbled file raises many types
            raise CheckpointError(f"unreadable ({type(err).__name__}: {_first_line(err)})") from err

    def delete(self, epoch: int) -> None:
        shutil.rmtree(self.directory / str(epoch), ignore_errors=True)

    def close(self) -> None:
        """Nothing to release."""


def remove(directory: Path) -> None:
    """Delete a wave's checkpoints (after its outputs are safely written)."""
    shutil.rmtree(directory, ignore_errors=True)


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else ""
