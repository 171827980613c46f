"""Removal sets of the removal experiment (``jmem retrain``): which training examples an arm
leaves out. Pure numpy; every random draw takes an explicit ``np.random.Generator`` so the
caller decides the stream (one per arm and seed, see ``jmem.study.retrain``).

Every function returns ``bool[N]`` (True = removed). Shapes: ``labels: int[N]`` in
``[0, num_classes)``, ``scores: float[N]`` (NaN = undefined, never chosen as "lowest").

- :func:`class_counts`: removed examples per class, ``int64[C]``.
- :func:`matched_random`: exactly the given number per class, uniformly without replacement
  within each class (the baseline that answers "you removed a sub-population").
- :func:`uniform_random`: the same total, uniformly over all examples (Feldman & Zhang's
  baseline); given the labels, never every example of a class.
- :func:`lowest`: the ``size`` lowest-scoring examples (ties: lower index first).
- :func:`at_least`: examples with ``score >= tau`` (a point of the removal curve).
- :func:`load_removal`: a user's ``.npy`` of indices or a bool mask (an integer 0/1 array
  of length N, which could be either, is refused).
- :func:`check_removal`: refuse a set that would leave a class (or the whole set) empty.

Random arms draw from all examples of a class, the selected ones included: the null
hypothesis is "the selected set acts like any other set of the same class sizes", and a
random set of that kind may overlap it. ``exclude`` (bool[N]) keeps examples out of every
random draw (e.g. canaries). A random baseline never removes every example of a class: where
no draw can avoid that, :class:`Undrawable` is raised (the design skips that arm with a note).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jmem.errors import JmemError

# Draws of a uniform baseline that empty a class are redrawn (exactly uniform over the draws
# that do not); after this many in a row the draw keeps one example of every class instead.
_REDRAWS = 64


class Undrawable(JmemError):
    """No random removal set of the asked sizes leaves every class an example."""


class NothingToRemove(JmemError):
    """Every removal set of an experiment is empty: there is nothing to retrain."""


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


def _eligible(n: int, exclude) -> np.ndarray:
    """bool[n]: the examples a random draw may remove (all but ``exclude``)."""
    if exclude is None:
        return np.ones(n, bool)
    exclude = np.asarray(exclude, bool)
    if exclude.shape != (n,):
        raise JmemError(f"exclude has shape {exclude.shape}; need bool[{n}]")
    return ~exclude


def matched_random(labels, counts, generator: np.random.Generator, *, exclude=None) -> np.ndarray:
    """bool[N] with exactly ``counts[c]`` examples of class c, uniform within each class.

    Args:
      labels: int[N]; counts: int[C] with ``counts[c]`` below the class's size (and at most
        its eligible examples).
      generator: the arm-and-seed's stream; classes are drawn in increasing order.
      exclude: bool[N], examples never drawn (None = none).
    Raises :class:`Undrawable` when a class has too few eligible examples, or the draw would
    remove every example of a class.
    """
    labels = _labels(labels)
    counts = np.asarray(counts, np.int64)
    eligible = _eligible(labels.size, exclude)
    removed = np.zeros(labels.size, bool)
    for c in np.flatnonzero(counts):
        members = np.flatnonzero((labels == c) & eligible)
        size = int((labels == c).sum())
        if counts[c] > members.size or counts[c] >= size:
            eligible_note = f" ({members.size} eligible)" if exclude is not None else ""
            raise Undrawable(f"class {int(c)} has {size} examples{eligible_note}; cannot remove "
                             f"{int(counts[c])} and leave one")
        removed[generator.choice(members, size=int(counts[c]), replace=False)] = True
    return removed


def uniform_random(num_examples: int, size: int, generator: np.random.Generator, *,
                   labels=None, exclude=None) -> np.ndarray:
    """bool[num_examples] with ``size`` examples drawn uniformly without replacement.

    labels: int[N]; given, the draw never removes every example of a class: a draw that
      would is redrawn (so the set is uniform over the draws that leave every class an
      example), and after ``_REDRAWS`` such draws one example of each class is set aside
      first. Raises :class:`Undrawable` if no draw can leave every class an example.
    exclude: bool[N], examples never drawn (None = none).
    """
    eligible = _eligible(num_examples, exclude)
    pool = np.flatnonzero(eligible)
    if not 0 <= size <= pool.size:
        raise JmemError(f"cannot remove {size} of {pool.size} eligible examples ({num_examples} in all)")
    if labels is None:
        return _mask(num_examples, generator.choice(pool, size=int(size), replace=False))
    labels = _labels(labels)
    if labels.size != num_examples:
        raise JmemError(f"labels has {labels.size} entries for {num_examples} examples")
    classes = np.unique(labels)
    for _ in range(_REDRAWS):
        removed = _mask(num_examples, generator.choice(pool, size=int(size), replace=False))
        if np.isin(classes, labels[~removed]).all():
            return removed
    # Rare: size is close to the eligible count. Keep one eligible example of each class that
    # has no ineligible one, drawn at random, and draw the set from the rest.
    keepers = [generator.choice(np.flatnonzero(eligible & (labels == c))) for c in classes
               if eligible[labels == c].all()]
    rest = np.setdiff1d(pool, keepers)
    if size > rest.size:
        raise Undrawable(f"a random set of {size} of the {pool.size} eligible examples would "
                         f"remove every example of some class ({classes.size} classes)")
    return _mask(num_examples, generator.choice(rest, size=int(size), replace=False))


def _mask(n: int, index) -> np.ndarray:
    removed = np.zeros(n, bool)
    removed[np.asarray(index, np.int64)] = True
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
    if arr.size == num_examples and np.isin(arr, (0, 1)).all():
        # Read as indices it removes examples 0 and 1; it is almost surely a mask.
        raise JmemError(f"{field}={path!r} holds {num_examples} integers ({arr.dtype}), all 0 or 1: "
                        "a mask or the indices 0 and 1? Save a mask as bool "
                        "(np.save(path, mask.astype(bool))) or indices as np.flatnonzero(mask)")
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
