"""Removal sets of the removal experiment (``jmem retrain``): which training examples an arm
leaves out. Pure numpy; every random draw takes an explicit ``np.random.Generator`` so the
caller decides the stream (one per arm and seed, see ``jmem.study.retrain``).

Every function returns ``bool[N]`` (True = removed). Shapes: ``labels: int[N]`` in
``[0, num_classes)``, ``scores: float[N]`` (NaN = undefined, never chosen as "lowest").

- :func:`class_counts`: removed examples per class, ``int64[C]``.
- :func:`matched_random`: exactly the given number per class, uniformly without replacement
  within each class (the baseline that answers "you removed a sub-population").
- :func:`uniform_random`: the same total, uniformly over all examples (Feldman & Zhang's
  baseline).
- :func:`lowest`: the ``size`` lowest-scoring examples (ties: lower index first).
- :func:`at_least`: examples with ``score >= tau`` (a point of the removal curve).
- :func:`load_removal`: a user's ``.npy`` of indices or a bool mask.
- :func:`check_removal`: refuse a set that would leave a class (or the whole set) empty.

Random arms draw from all examples of a class, the selected ones included: the null
hypothesis is "the selected set acts like any other set of the same class sizes", and a
random set of that kind may overlap it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jmem.errors import JmemError


def _labels(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer) \
            or labels.min() < 0:
        raise JmemError(f"labels has dtype {labels.dtype} and shape {labels.shape}; need "
                        "non-negative int[N], N >= 1")
    return labels


def class_counts(removed: np.ndarray, labels, num_classes: int) -> np.ndarray:
    """int64[C]: how many removed examples each class has."""
    labels = _labels(labels)
    return np.bincount(labels[np.asarray(removed, bool)], minlength=num_classes).astype(np.int64)


def _eligible_mask(eligible, n: int) -> np.ndarray:
    if eligible is None:
        return np.ones(n, bool)
    eligible = np.asarray(eligible, bool)
    if eligible.shape != (n,):
        raise JmemError(f"eligible has shape {eligible.shape}; expected bool[{n}]")
    return eligible


def matched_random(labels, counts, generator: np.random.Generator, eligible=None) -> np.ndarray:
    """bool[N] with exactly ``counts[c]`` examples of class c, uniform within each class.

    Args:
      labels: int[N]; counts: int[C] with ``counts[c] <= #{labels == c}`` (eligible ones).
      generator: the arm-and-seed's stream; classes are drawn in increasing order.
      eligible: bool[N] or None: draw only among these (never a canary).
    """
    labels = _labels(labels)
    ok = _eligible_mask(eligible, labels.size)
    counts = np.asarray(counts, np.int64)
    removed = np.zeros(labels.size, bool)
    for c in np.flatnonzero(counts):
        members = np.flatnonzero((labels == c) & ok)
        if counts[c] > members.size:
            raise JmemError(f"class {int(c)} has {members.size} examples; cannot remove {int(counts[c])}")
        removed[generator.choice(members, size=int(counts[c]), replace=False)] = True
    return removed


def uniform_random(num_examples: int, size: int, generator: np.random.Generator, eligible=None) -> np.ndarray:
    """bool[num_examples] with ``size`` examples drawn uniformly without replacement (among
    the ``eligible`` ones: bool[N] or None for all)."""
    pool = np.flatnonzero(_eligible_mask(eligible, num_examples))
    if not 0 <= size <= pool.size:
        raise JmemError(f"cannot remove {size} of {pool.size} examples")
    removed = np.zeros(num_examples, bool)
    removed[generator.choice(pool, size=int(size), replace=False)] = True
    return removed


def lowest(scores, size: int) -> np.ndarray:
    """bool[N]: the ``size`` lowest finite scores (ties to the lower index; NaN never)."""
    scores = np.asarray(scores, np.float64)
    finite = np.flatnonzero(np.isfinite(scores))
    if size > finite.size:
        raise JmemError(f"cannot remove the {size} lowest-scoring examples: only {finite.size} "
                        "have a defined score")
    order = finite[np.argsort(scores[finite], kind="stable")]
    removed = np.zeros(scores.size, bool)
    removed[order[:size]] = True
    return removed


def at_least(scores, tau: float) -> np.ndarray:
    """bool[N]: examples with ``score >= tau`` (NaN never)."""
    with np.errstate(invalid="ignore"):
        return np.asarray(scores, np.float64) >= tau


def load_removal(path: str, num_examples: int, field: str = "retrain.remove") -> np.ndarray:
    """bool[N] from a ``.npy`` file of int indices in ``[0, N)`` or a bool[N] mask."""
    file = Path(path).expanduser()
    if file.suffix != ".npy":
        raise JmemError(f"{field}={path!r} must be a .npy file (int indices or bool[{num_examples}])")
    if not file.is_file():
        raise JmemError(f"{field}={path!r}: no such file")
    try:
        arr = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise JmemError(f"{field}={path!r} is not a readable .npy file ({err})") from None
    if arr.dtype == np.bool_:
        if arr.shape != (num_examples,):
            raise JmemError(f"{field}={path!r} is a mask of shape {arr.shape}; need bool[{num_examples}]")
        return arr.copy()
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise JmemError(f"{field}={path!r} has dtype {arr.dtype} and shape {arr.shape}; need "
                        f"int indices or bool[{num_examples}]")
    bad = arr[(arr < 0) | (arr >= num_examples)]
    if bad.size:
        raise JmemError(f"{field}={path!r}: index {int(bad[0])} is outside [0, {num_examples})")
    removed = np.zeros(num_examples, bool)
    removed[arr] = True
    return removed


def check_removal(removed: np.ndarray, labels, num_classes: int, what: str) -> None:
    """Refuse a removal set that removes every example, or every example of a class.

    what: names the set in the message, e.g. ``"retrain.remove='x.npy'"``.
    """
    labels = _labels(labels)
    removed = np.asarray(removed, bool)
    if removed.all():
        raise JmemError(f"{what} removes all {removed.size} training examples; nothing would be left")
    total = np.bincount(labels, minlength=num_classes)
    gone = np.flatnonzero((class_counts(removed, labels, num_classes) == total) & (total > 0))
    if gone.size:
        c = int(gone[0])
        raise JmemError(f"{what} removes all {int(total[c])} training examples of class {c}; "
                        "the models could never predict it")
