"""The one definition of a diverged model, applied by every stage and the export.

A model has **diverged** when its final training loss is not finite, or when any of its
margins (on the training set or any test set) is not finite. Training marks such models in
each wave file and in ``models.csv``; scoring leaves them out, and so do the removal
experiment's selection, the report's reliability and examples, and the F&Z-layout export, so
that every file of a run is computed from the same models. A retrained model that diverged is
left out of every statistic of the removal experiment.

Before this definition a model with a finite loss but a NaN margin (an overflow at
prediction) was not marked, and ``jmem score`` refused the whole run on its margins.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jmem.errors import JmemError
from jmem.study import rundir

_ROWS_PER_BLOCK = 256  # rows of a (memory-mapped) margins file checked at once


def nonfinite_rows(margins: np.ndarray) -> np.ndarray:
    """bool[R]: rows of ``margins`` (float[R, T], may be a memory map) holding a NaN or inf.

    Checked a block of rows at a time, so a memory-mapped file is never read whole.
    """
    margins = np.asarray(margins) if not isinstance(margins, np.ndarray) else margins
    out = np.zeros(margins.shape[0], bool)
    for start in range(0, margins.shape[0], _ROWS_PER_BLOCK):
        block = np.asarray(margins[start:start + _ROWS_PER_BLOCK])
        out[start:start + block.shape[0]] = ~np.isfinite(block.reshape(block.shape[0], -1)).all(axis=1)
    return out


def diverged_models(final_loss, margins=()) -> np.ndarray:
    """bool[R]: the models that diverged: non-finite ``final_loss`` (float[R]) or a non-finite
    entry in any of ``margins`` (an iterable of float[R, T_k], memory maps allowed)."""
    final_loss = np.asarray(final_loss, np.float64)
    flags = ~np.isfinite(final_loss)
    for m in margins:
        if m.shape[0] != flags.size:
            raise JmemError(f"margins of {m.shape[0]} models for {flags.size} losses")
        flags |= nonfinite_rows(m)
    return flags


def run_diverged(metrics_path: Path, num_models: int, margins=()) -> np.ndarray:
    """bool[R]: the diverged models of a run directory or a removal experiment.

    metrics_path: its per-model table (``models.csv``, ``retrain_models.csv``): its
      ``diverged`` flags and ``final_loss`` column, when present (a run directory built by
      hand may have neither).
    margins: the run's margins arrays (float[R, T_k]), checked for non-finite rows.
    The union of the recorded flags and the definition, so a run written before the margins
    were part of the definition is read the same way as a new one.
    """
    flags = np.zeros(num_models, bool)
    recorded = rundir.read_diverged(Path(metrics_path), num_models)
    if recorded is not None:
        flags |= recorded
    loss = _final_loss(Path(metrics_path), num_models)
    return flags | diverged_models(loss, margins)


def _final_loss(path: Path, num_models: int) -> np.ndarray:
    """float64[R]: the ``final_loss`` column of a per-model table; zeros without one."""
    if not path.exists():
        return np.zeros(num_models)
    column = rundir.read_csv_columns(path).get("final_loss")
    if column is None or column.dtype.kind != "f" or column.size != num_models:
        return np.zeros(num_models)
    return column


def without(rows: np.ndarray | None, diverged: np.ndarray | None, num_models: int) -> np.ndarray | None:
    """The model rows ``rows`` (int[K], None = all ``num_models``) minus the diverged ones
    (``diverged``: bool[R] or None); None again when nothing is removed from "all"."""
    if diverged is None or not np.any(diverged):
        return rows
    rows = np.arange(num_models) if rows is None else np.asarray(rows)
    healthy = rows[~np.asarray(diverged, bool)[rows]]
    if healthy.size == 0:
        raise JmemError(f"every one of the {rows.size} models to use diverged (models.csv); "
                        "there is nothing to score: lower train.learning_rate")
    return healthy
