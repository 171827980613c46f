"""Export a run's scores in Feldman & Zhang's released file layout (one ``.npz``).

Feldman & Zhang (2020) released their CIFAR-100 / ImageNet estimates as an ``.npz`` with
these arrays, which :func:`export_fz` writes from a run directory (``RUN_DIR/fz_layout.npz``):

=========================== =====================================================================
``tr_mem``                  float32[N]: memorization ``acc_in - acc_out`` of every training example
``tr_labels``               int32[N]: training labels (as the models saw them: canaries re-labelled)
``tt_labels``               int32[T]: test labels
``tr_classidx_{K}``         int64[n_train_K]: indices of the class-K training examples
``tt_classidx_{K}``         int64[n_test_K]: indices of the class-K test examples
``infl_matrix_class{K}``    float32[n_train_K, n_test_K]: influence of training example
                            ``tr_classidx_{K}[a]`` on test example ``tt_classidx_{K}[b]``
=========================== =====================================================================

so code written for their files runs on jmem's output unchanged. Influence is only stored
within a class, as in their files. The models are the same as ``scores.csv``'s main columns
(those of one rate: ``score.rate``, else the run's lowest, less the diverged ones:
:mod:`jmem.study.diverged`), so ``tr_mem`` equals ``scores.csv``'s ``mem``. Undefined entries (an example no model
included or excluded) are NaN. Nothing of size ``R x N x T`` is formed: each class's matrix
is one chunked pass of matrix products, written to the archive before the next is computed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jmem.errors import JmemError
from jmem.scores import estimators
from jmem.study import rundir
from jmem.study.diverged import without as without_diverged
from jmem.study.scoring import load_run, recorded_options


def scored_rows(run_dir, num_models: int, model_rates, diverged=None) -> np.ndarray | None:
    """Rows of the models behind ``scores.csv``'s main columns: those of its main rate
    (``thresholds.json``'s ``main_rate``: ``score.rate``, else the run's lowest; all models in a
    run without rates), less the ``diverged`` ones (bool[R], ``RunArrays.diverged``), as the
    scoring stage did."""
    path = Path(run_dir) / rundir.THRESHOLDS
    rate = rundir.load_json(path, expect=dict).get("main_rate") if path.exists() else None
    if rate is None:
        rate = recorded_options(run_dir).rate
    rows = None
    if rate is not None and model_rates is not None:
        rows = np.flatnonzero(np.round(model_rates, estimators.RATE_DECIMALS)
                              == round(rate, estimators.RATE_DECIMALS))
    return without_diverged(rows, diverged, num_models)


def fz_arrays(keep, margins_train, margins_test, labels_train, labels_test, *,
              chunk_size: int = estimators.DEFAULT_CHUNK):
    """Yield ``(name, array)`` in F&Z's layout (module docstring), one class at a time.

    keep: bool[R, N]; margins_train: float[R, N]; margins_test: float[R, T];
    labels_train: int[N]; labels_test: int[T]. Peak extra memory: the ``float32[R, T]``
    correctness matrix and one class's ``[n_train_K, n_test_K]`` matrix.
    """
    keep = estimators.as_keep(keep)
    labels_train, labels_test = np.asarray(labels_train), np.asarray(labels_test)
    s = estimators.compute_scores(keep, margins_train, chunk_size=chunk_size)
    yield "tr_mem", s.mem.astype(np.float32)
    yield "tr_labels", labels_train.astype(np.int32)
    yield "tt_labels", labels_test.astype(np.int32)
    correct = estimators.correct_matrix(margins_test, keep.shape[0])
    for k in np.unique(np.concatenate([labels_train, labels_test])):
        tr = np.flatnonzero(labels_train == k).astype(np.int64)
        tt = np.flatnonzero(labels_test == k).astype(np.int64)
        infl = np.empty((tr.size, tt.size), np.float32)
        if tr.size and tt.size:
            for sl, block in estimators.iter_influence(keep[:, tr], correct[:, tt],
                                                       chunk_size=chunk_size):
                infl[sl] = block.T
        yield f"tr_classidx_{int(k)}", tr
        yield f"tt_classidx_{int(k)}", tt
        yield f"infl_matrix_class{int(k)}", infl


def export_fz(run_dir, out=None, *, test_set: str = "test",
              chunk_size: int = estimators.DEFAULT_CHUNK) -> Path:
    """Write ``RUN_DIR/fz_layout.npz`` (or ``out``) from a run directory; return its path.

    test_set: ``test`` or an extra test set of the run (e.g. ``test_clean``).
    """
    d = Path(run_dir)
    run = load_run(d)
    if test_set not in run.test_sets:
        raise JmemError(f"test set {test_set!r} is not in the run; it has {', '.join(run.test_sets)}")
    rows = scored_rows(d, run.keep.shape[0], run.model_rates, run.diverged)
    take = (lambda a: a) if rows is None else (lambda a: a[rows])
    margins_test, labels_test = run.test_sets[test_set]
    out = Path(out) if out is not None else d / rundir.FZ_EXPORT
    rundir.save_arrays_streaming(out, fz_arrays(
        take(run.keep), take(run.margins_train), take(margins_test), run.labels_train,
        labels_test, chunk_size=chunk_size))
    return out
