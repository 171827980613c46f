"""The wave files of a stage directory: their names, what they hold, their assembly.

A wave file ``<workdir>/waves/models_<start>_<stop>.npz`` holds the outputs of the models at
positions ``start..stop-1`` of the wave order (:attr:`jmem.study.waves.Job.order`: the rows of
the keep matrix sorted by steps per epoch) and, in ``rows`` (int64[W]), which rows those are,
in its arrays' order. :func:`assemble` puts every row where it belongs in the stage's final
arrays; :func:`cleanup` removes the waves and checkpoints of a complete stage. (The runner that
writes them is :mod:`jmem.study.waves`, which re-exports these names.)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from jmem.errors import JmemError
from jmem.study import faults, rundir
from jmem.study.workdir import WAVES_DIR


def wave_path(workdir: Path, start: int, stop: int) -> Path:
    """The wave file of positions ``start..stop-1`` of the wave order
    (:attr:`jmem.study.waves.Job.order`)."""
    return Path(workdir) / WAVES_DIR / f"models_{start:07d}_{stop:07d}.npz"


def wave_range(path: Path) -> tuple[int, int]:
    """(start, stop) of a wave file's positions in the wave order, from its name
    ``models_<start>_<stop>.npz``."""
    start, stop = (int(p) for p in Path(path).stem.split("_")[1:3])
    return start, stop


def finished_models(workdir: Path, num_models: int) -> np.ndarray:
    """bool[M]: the positions of the wave order (:attr:`jmem.study.waves.Job.order`) whose
    outputs are already in a wave file (read-only; see :func:`jmem.study.waves.resume_state`
    for the verified answer a resume uses)."""
    done = np.zeros(num_models, bool)
    for path in sorted((Path(workdir) / WAVES_DIR).glob("models_*.npz")):
        start, stop = wave_range(path)
        done[start:stop] = True
    return done


def save_wave(workdir: Path, start: int, stop: int, arrays: dict, rows: np.ndarray) -> None:
    """Write the wave file of positions ``start..stop-1``; ``rows`` (int64[W]) records which
    rows of the keep matrix it holds, in its arrays' order: assembly puts each where it
    belongs, and a copy under another name is recognised
    (:func:`jmem.study.integrity.verify_waves`)."""
    rundir.save_arrays(wave_path(workdir, start, stop), {**arrays, "rows": np.asarray(rows, np.int64)})


@dataclasses.dataclass(frozen=True)
class Assembled:
    """What :func:`assemble` wrote and read.

    files: the ``margins_<set>.npy`` names written into the workdir, in wave-file order;
    arrays: every other wave array (test margins included), in row order:
      name -> array[M, ...] (``margins_train`` is only on disk: it is the largest).
    """

    files: list
    arrays: dict


def assemble(workdir: Path, num_models: int) -> Assembled:
    """Put the rows of every wave file of ``workdir`` in place: ``<workdir>/margins_<set>.npy``
    and the other arrays, in row order (each wave file's ``rows`` says where its rows go).

    The stage writes its completion marker next and only then calls :func:`cleanup`, so a
    kill at any point leaves either the waves to assemble again or a complete stage.
    """
    workdir = Path(workdir)
    waves = sorted((workdir / WAVES_DIR).glob("models_*.npz"))
    check_coverage([wave_range(p) for p in waves], num_models, workdir / WAVES_DIR)
    # Margins stream wave by wave into their final files (float32[R, N] at R=2,000, N=60,000
    # is 480 MB: holding every wave and their concatenation would double that). Everything
    # else, test margins included (R x T, for the stages' accuracies), is concatenated.
    parts: dict[str, list] = {}
    writers: dict[str, rundir.NpyRowWriter] = {}
    seen = np.zeros(num_models, bool)
    try:
        for path in waves:
            try:
                wave = np.load(path, allow_pickle=False)
            except Exception as err:  # noqa: BLE001 - verified at start; damaged since: say which
                raise JmemError(f"{path} is damaged ({type(err).__name__}); re-run the same "
                                "command to train its models again") from err
            with wave:
                start, stop = wave_range(path)
                rows = wave["rows"] if "rows" in wave.files else np.arange(start, stop)
                check_rows(path, rows, stop - start, seen)
                parts.setdefault("rows", []).append(rows)
                for key in wave.files:
                    value = wave[key]
                    if key not in ("margins_train", "rows"):
                        parts.setdefault(key, []).append(value)
                    if key.startswith("margins_"):
                        if key not in writers:
                            writers[key] = rundir.NpyRowWriter(workdir / f"{key}.npy",
                                                               (num_models,) + value.shape[1:], np.float32)
                        writers[key].write_rows(value, rows)
        for key in writers:  # in the wave files' order
            writers[key].commit()
            faults.point("assembly")
    finally:
        for writer in writers.values():
            writer.discard()
    rows = np.concatenate(parts.pop("rows"))
    return Assembled([f"{k}.npy" for k in writers],
                     {k: in_row_order(np.concatenate(v), rows) for k, v in parts.items()})


def check_rows(path: Path, rows: np.ndarray, size: int, seen: np.ndarray) -> None:
    """JmemError unless the wave file ``path`` holds ``size`` rows (int[W]) of the keep
    matrix that no earlier wave file held (``seen``: bool[M], updated)."""
    rows = np.asarray(rows, np.int64)
    if (rows.shape != (size,) or (rows.size and (rows.min() < 0 or rows.max() >= seen.size))
            or np.unique(rows).size != rows.size or seen[rows].any()):
        raise JmemError(f"{path} holds other models than its name says; delete it and re-run "
                        "the same command to train its models again")
    seen[rows] = True


def in_row_order(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``values`` ([M, ...], row i of model ``rows[i]``) reordered so that row r is model r;
    ``rows``: int64[M], a permutation."""
    if np.array_equal(rows, np.arange(rows.size)):
        return values
    out = np.empty_like(values)
    out[rows] = values
    return out


def check_coverage(ranges: list[tuple[int, int]], num_models: int, where: Path) -> None:
    """JmemError unless the wave ranges ``[(start, stop)]`` (sorted) tile ``0..num_models-1``
    exactly once: a gap or an overlap means the waves are not one run's."""
    expected = 0
    for start, stop in ranges:
        if start != expected or stop <= start:
            problem = "overlap" if start < expected else "leave a gap"
            raise JmemError(f"{where}: wave files {problem} at model {min(start, expected)} "
                            f"(models {start}-{stop - 1} follow model {expected - 1}); delete "
                            f"{str(where)!r} and re-run the same command to train them again")
        expected = stop
    if expected != num_models:
        raise JmemError(f"{where}: wave files hold {expected} models, not {num_models}; delete "
                        f"{str(where)!r} and re-run the same command to train them again")


def cleanup(workdir: Path) -> None:
    """Remove ``waves/`` and ``checkpoints/`` of a complete stage."""
    import shutil

    from jmem.engine.checkpoint import CHECKPOINTS_DIR

    for name in (WAVES_DIR, CHECKPOINTS_DIR):
        shutil.rmtree(Path(workdir) / name, ignore_errors=True)
