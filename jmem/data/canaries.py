"""Random-label canaries: known positives for evaluating memorization scores.

The ICLR 2026 critique (BACKGROUND section 3, correction 2) uses randomly relabelled training
points as the ground-truth "memorized" set: a model can only fit a random label by memorizing
it. :func:`make_canaries` relabels a random fraction of the training set with a *different*
random class, deterministically from the seed's "canaries" stream (:mod:`jmem.rng`), so the
canary set never depends on model, training or subset settings.
"""

from __future__ import annotations

import numpy as np

from jmem.errors import JmemError
from jmem.rng import numpy_stream


def make_canaries(seed: int, labels, num_classes: int, fraction: float):
    """Relabel ``round(fraction * N)`` random training examples with a different random class.

    seed: int, the run seed (the "canaries" stream is derived from it).
    labels: int[N] in ``[0, num_classes)``. num_classes: >= 2. fraction: in [0, 1).
    Returns ``(new_labels int32[N], canary_mask bool[N])``; ``new_labels[i] != labels[i]``
    exactly where ``canary_mask[i]``.

    Nested by construction: one permutation of the examples and one label offset per example
    are drawn whatever the fraction, and the first ``round(fraction * N)`` of the permutation
    become canaries, so a larger fraction adds canaries without changing the existing ones.
    A uniform offset in ``1 .. num_classes - 1`` (mod ``num_classes``) makes the new class
    uniform over the other classes.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise JmemError(f"labels has shape {labels.shape}; expected int[N] (1-D)")
    if not np.issubdtype(labels.dtype, np.integer):
        raise JmemError(f"labels has dtype {labels.dtype}; expected integers")
    if int(num_classes) != num_classes or num_classes < 2:
        raise JmemError(f"canaries.num_classes={num_classes} must be an integer >= 2")
    if not (isinstance(fraction, (int, float, np.floating, np.integer))
            and 0 <= float(fraction) < 1):
        raise JmemError(f"canaries.fraction={fraction!r} must be in [0, 1)")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise JmemError(f"labels has values outside [0, {num_classes}) "
                        f"(min {labels.min()}, max {labels.max()})")
    n = labels.shape[0]
    count = int(round(float(fraction) * n))
    gen = numpy_stream(seed, "canaries")
    order = gen.permutation(n)
    offsets = gen.integers(1, num_classes, size=n)  # drawn for every example: nesting
    mask = np.zeros(n, bool)
    mask[order[:count]] = True
    new_labels = labels.astype(np.int32, copy=True)
    new_labels[mask] = (labels[mask] + offsets[mask]) % num_classes
    return new_labels, mask
