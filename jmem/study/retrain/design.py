"""The design of the removal experiment: which arms, which removal sets (pure numpy).

A *group* is one removal hypothesis (a protocol cell, a size-matched cell, a curve point, a
rule's selection, a sweep point, the user's set) with, in each estimation pool, the set it
removes and the test examples that set influences. Each group gets, **in every pool**, the
arms (see :mod:`jmem.data.removal`) ``selected`` (the pool's set) and ``matched`` (as many
examples of each class, drawn afresh for every seed), and for a rule's selection also
``random`` (the same total, uniform) and, with ``retrain.lowest``, ``lowest``; every pool also
has one ``full`` arm (nothing removed). Random arms never draw a canary.

Seeds are nested in pools: pool p's seed s trains with model id
``MODEL_ID_OFFSET + p * S + s`` in every arm of the pool (the same initialisation, data order
and augmentation: paired), and ids no estimation model has. Every arm x seed is one row of the
keep matrix the wave runner trains.

Everything here takes explicit arrays (labels, removal sets, scores) and draws from explicit
numpy streams, so it is tested on small arrays without training.
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np

from jmem import rng
from jmem.data import removal
from jmem.errors import JmemError

MODEL_ID_OFFSET = 2**30  # retrain pool p, seed s trains with model id 2**30 + p * S + s
# Salts of the experiment's numpy streams (rng.numpy_stream(seed, "retrain", salt, ...)):
# one per use, so that no two uses share draws.
SALT_ARM, SALT_COMPARISON, SALT_ACCURACY = 1, 2, 3
COMPARED = ("selected", "matched")                  # the arms of every group
WITH_BASELINES = ("selected", "matched", "random")  # ... and of a rule's group


@dataclasses.dataclass(frozen=True)
class Group:
    """One removal hypothesis with arms: removed bool[P, N] (pool p's set), influenced
    bool[P, T] over the main test set; info: JSON facts (the candidate's, plus sizes)."""

    name: str
    kind: str
    removed: np.ndarray
    influenced: np.ndarray
    info: dict
    key: tuple | None = None
    method: str | None = None
    tau: float | None = None

    @property
    def pools(self) -> int:
        return self.removed.shape[0]


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm of one pool: ``removed: bool[S, N]`` (row s = seed s's removal set)."""

    name: str
    kind: str
    group: str | None
    pool: int
    removed: np.ndarray

    @property
    def count(self) -> int:
        return int(self.removed[0].sum())


def arm_name(group: str | None, kind: str, pool: int) -> str:
    """``<group>:<kind>:p<pool>`` (``full:p<pool>`` for the full arm)."""
    return f"full:p{pool}" if group is None else f"{group}:{kind}:p{pool}"


@dataclasses.dataclass(frozen=True)
class Design:
    """Every arm of an experiment and the keep matrix that trains them.

    groups: name -> Group; arms: [Arm], each pool's ``full`` first; skipped: group name ->
    why it has no arm; pools, seeds: P and S (seeds per arm and pool).
    keep: bool[M, N] with M = len(arms) * S, row ``a * S + s`` = arm a, seed s; model_ids:
    int64[M].
    """

    pools: int
    seeds: int
    groups: dict
    arms: list
    skipped: dict

    @property
    def keep(self) -> np.ndarray:
        return ~np.concatenate([arm.removed for arm in self.arms])

    @property
    def model_ids(self) -> np.ndarray:
        return np.concatenate([MODEL_ID_OFFSET + arm.pool * self.seeds + np.arange(self.seeds, dtype=np.int64)
                               for arm in self.arms])

    def rows(self, name: str) -> np.ndarray:
        """int64[S]: the keep-matrix rows of arm ``name``, seed by seed."""
        index = self._index[name]
        return np.arange(index * self.seeds, (index + 1) * self.seeds)

    @property
    def _index(self) -> dict:
        return {a.name: i for i, a in enumerate(self.arms)}

    def has(self, name: str) -> bool:
        return name in self._index


def arm_generator(seed: int, name: str, s: int) -> np.random.Generator:
    """The numpy stream of arm ``name``'s seed ``s`` (keyed by the arm's name, so adding
    arms never changes another arm's draws)."""
    return rng.numpy_stream(seed, "retrain", SALT_ARM, zlib.crc32(name.encode()), s)


def arm_masks(kind: str, name: str, removed: np.ndarray, labels: np.ndarray, eligible: np.ndarray,
              counts: np.ndarray, score: np.ndarray, seeds: int, seed: int) -> np.ndarray:
    """bool[S, N]: the removal set of every seed of one arm.

    ``selected`` and ``lowest`` remove one set at every seed; ``matched`` (``counts``:
    int64[C] per class) and ``random`` draw a new set per seed from the arm's own stream,
    among the ``eligible`` examples only (never a canary).
    """
    n = labels.size
    if kind == "selected":
        return np.broadcast_to(removed, (seeds, n)).copy()
    if kind == "matched":
        return np.stack([removal.matched_random(labels, counts, arm_generator(seed, name, s), exclude=~eligible)
                         for s in range(seeds)])
    if kind == "random":
        return np.stack([removal.uniform_random(n, int(removed.sum()), arm_generator(seed, name, s),
                                                labels=labels, exclude=~eligible)  # never empties a class
                         for s in range(seeds)])
    if kind == "lowest":
        return np.broadcast_to(removal.lowest(np.where(eligible, score, np.nan), int(removed.sum())),
                               (seeds, n)).copy()
    raise JmemError(f"arm kind={kind!r} is not one of 'selected', 'matched', 'random', 'lowest'")


def build_design(candidates: list, labels: np.ndarray, num_classes: int, *, eligible: np.ndarray,
                 score: np.ndarray, seeds: int, seed: int, lowest: bool = False) -> Design:
    """Every group's arms in every pool (no training, no files).

    candidates: :class:`jmem.study.retrain.selection.Candidate` (``removed`` bool[P, N]);
    labels: int[N], the true labels the retrained models see; eligible: bool[N], the examples
    a random arm may draw (every non-canary); score: float64[P, N], the score the ``lowest``
    arms rank by. A candidate that removes nothing in some pool is skipped (nothing to
    compare there). Raises JmemError for a removal set that removes every example, or every
    example of a class, and when every candidate is empty.
    """
    labels = np.asarray(labels)
    eligible = np.asarray(eligible, bool)
    n = labels.size
    pools = candidates[0].removed.shape[0] if candidates else 1
    groups, skipped = {}, {}
    arms = [Arm(arm_name(None, "full", p), "full", None, p, np.zeros((seeds, n), bool)) for p in range(pools)]
    for c in candidates:
        empty = [p for p in range(pools) if not c.removed[p].any()]
        if empty:
            skipped[c.name] = f"selects no example in pool {empty[0]}"
            continue
        if (c.removed & ~eligible).any():
            raise JmemError(f"{c.what} removes a canary; canaries never enter a removal set")
        sizes, class_counts = [], []
        for p in range(pools):
            removal.check_removal(c.removed[p], labels, num_classes, f"{c.what} (pool {p})")
            class_counts.append(removal.class_counts(c.removed[p], labels, num_classes))
            sizes.append(int(c.removed[p].sum()))
        info = {"pools": c.info, "removed": sizes, "class_counts": [x.tolist() for x in class_counts],
                "influenced_size": [int(x.sum()) for x in c.influenced], "rate": c.rate, "what": c.what,
                "jaccard_pools": (float((c.removed[0] & c.removed[1]).sum() / (c.removed[0] | c.removed[1]).sum())
                                  if pools == 2 else None)}
        groups[c.name] = Group(c.name, c.kind, c.removed, c.influenced, info, c.key, c.method, c.tau)
        kinds = WITH_BASELINES + (("lowest",) if lowest else ()) if c.kind == "method" else COMPARED
        for p in range(pools):
            for kind in kinds:
                name = arm_name(c.name, kind, p)
                try:
                    masks = arm_masks(kind, name, c.removed[p], labels, eligible, class_counts[p], score[p],
                                      seeds, seed)
                except removal.Undrawable as err:  # a uniform baseline that would empty a class
                    if kind != "random":  # the matched arm is every group's comparison: no group without it
                        raise
                    skipped[name] = str(err)
                    continue
                for s in (range(seeds) if kind in ("matched", "random") else range(1)):
                    removal.check_removal(masks[s], labels, num_classes, f"arm {name} (seed {s})")
                arms.append(Arm(name, kind, c.name, p, masks))
    if len(arms) == pools:
        raise removal.NothingToRemove("nothing to retrain: every removal set is empty ("
                        + ", ".join(f"{k} {v}" for k, v in skipped.items()) + ")")
    return Design(pools, seeds, groups, arms, skipped)
