"""The design of the removal experiment: which arms, which removal sets (pure numpy).

A *group* is one removal hypothesis (a method's selection, a sweep point, the user's set, an
ablation cell) with the test examples it influences (T_h). Each group gets *arms* (see
:mod:`jmem.data.removal`): ``selected`` (the set itself), ``matched`` (the same number per
class, drawn afresh for every seed), and for the methods ``random`` (the same total,
uniform) and, with ``retrain.lowest``, ``lowest``; plus one ``full`` arm (nothing removed).
Every arm x seed is one row of the keep matrix the wave runner trains; seed s of every arm
has model id ``MODEL_ID_OFFSET + s``: the same initialisation and data-order keys in every
arm (paired), and keys no estimation model has.

Everything here takes explicit arrays (labels, removal sets, scores, influence pairs) and
draws from explicit numpy streams, so it is tested on small arrays without training.
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np

from jmem import rng
from jmem.data import removal
from jmem.errors import JmemError
from jmem.scores import protocols

MODEL_ID_OFFSET = 2**30  # retrain seed s trains with model id 2**30 + s
ABLATION_PREFIX = "cell:"
# Salts of the experiment's numpy streams (rng.numpy_stream(seed, "retrain", salt, ...)):
# one per use, so that no two uses share draws.
SALT_ARM, SALT_COMPARISON, SALT_ACCURACY, SALT_ABLATION = 1, 2, 3, 4
COMPARED = ("selected", "matched")                  # the arms of every group
WITH_BASELINES = ("selected", "matched", "random")  # ... and of a method's group


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A removal hypothesis before it has arms.

    name: the group name (a method, ``sweep:<tau>``, ``user``, ``cell:<protocol>``);
    method: the scoring method (methods only); tau: the sweep threshold (sweep points only);
    removed: bool[N]; info: JSON facts about the selection (threshold, counts, ...);
    what: where it comes from, for error messages (``retrain.sweep: mem >= 0.5``).
    """

    name: str
    method: str | None
    tau: float | None
    removed: np.ndarray
    info: dict
    what: str


@dataclasses.dataclass(frozen=True)
class Group:
    """One removal hypothesis with arms: removed bool[N]; influenced bool[T] over the main
    test set (T_h); info: JSON facts (the candidate's, plus sizes and class counts)."""

    name: str
    method: str | None
    tau: float | None
    removed: np.ndarray
    influenced: np.ndarray
    info: dict


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm: ``removed: bool[S, N]`` (row s = seed s's removal set), of group ``group``."""

    name: str
    kind: str
    group: str | None
    method: str | None
    tau: float | None
    removed: np.ndarray

    @property
    def count(self) -> int:
        return int(self.removed[0].sum())


@dataclasses.dataclass(frozen=True)
class Design:
    """Every arm of an experiment and the keep matrix that trains them.

    groups: name -> Group; arms: [Arm], ``full`` first; skipped: group name -> why it has no
    arm; ablation_rates: (off, on) inclusion rates of the ablation's rate factor, or None.
    keep: bool[M, N] with M = len(arms) * seeds, row ``a * seeds + s`` = arm a, seed s;
    model_ids: int64[M].
    """

    seeds: int
    groups: dict
    arms: list
    skipped: dict
    ablation_rates: tuple | None = None

    @property
    def keep(self) -> np.ndarray:
        return ~np.concatenate([arm.removed for arm in self.arms])

    @property
    def model_ids(self) -> np.ndarray:
        return np.tile(MODEL_ID_OFFSET + np.arange(self.seeds, dtype=np.int64), len(self.arms))

    def rows(self, arm_name: str) -> np.ndarray:
        """int64[S]: the keep-matrix rows of arm ``arm_name``, seed by seed."""
        index = [a.name for a in self.arms].index(arm_name)
        return np.arange(index * self.seeds, (index + 1) * self.seeds)


def cell_group(key: tuple[bool, bool, bool]) -> str:
    """The group name of an ablation removal set: ``cell:`` + the protocol's name with the
    leakage correction off (``cell:fz``, ``cell:rate+definition+threshold``, ...)."""
    return ABLATION_PREFIX + protocols.Protocol(*key, False).name


def arm_generator(seed: int, arm_name: str, s: int) -> np.random.Generator:
    """The numpy stream of arm ``arm_name``'s seed ``s`` (keyed by the arm's name, so adding
    arms never changes another arm's draws)."""
    return rng.numpy_stream(seed, "retrain", SALT_ARM, zlib.crc32(arm_name.encode()), s)


def influenced_by(removed: np.ndarray, pair_train: np.ndarray, pair_test: np.ndarray,
                  num_test: int) -> np.ndarray:
    """bool[T]: test examples with a high-influence partner in ``removed`` (T_h).

    removed: bool[N]; pair_train, pair_test: int64[P], Feldman & Zhang's pairs.
    """
    out = np.zeros(num_test, bool)
    out[pair_test[removed[pair_train]]] = True
    return out


def arm_masks(kind: str, arm_name: str, removed: np.ndarray, labels: np.ndarray,
              counts: np.ndarray, mem: np.ndarray, seeds: int, seed: int) -> np.ndarray:
    """bool[S, N]: the removal set of every seed of one arm.

    ``selected`` and ``lowest`` remove one set at every seed; ``matched`` (``counts``:
    int64[C] per class) and ``random`` draw a new set per seed from the arm's own stream.
    """
    n = labels.size
    if kind == "selected":
        return np.broadcast_to(removed, (seeds, n)).copy()
    if kind == "matched":
        return np.stack([removal.matched_random(labels, counts, arm_generator(seed, arm_name, s))
                         for s in range(seeds)])
    if kind == "random":
        return np.stack([removal.uniform_random(n, int(removed.sum()), arm_generator(seed, arm_name, s),
                                                labels=labels)  # never empties a class
                         for s in range(seeds)])
    if kind == "lowest":
        return np.broadcast_to(removal.lowest(mem, int(removed.sum())), (seeds, n)).copy()
    raise JmemError(f"arm kind={kind!r} is not one of 'selected', 'matched', 'random', 'lowest'")


def build_design(candidates: list[Candidate], labels: np.ndarray, num_classes: int, *,
                 mem: np.ndarray, pair_train: np.ndarray, pair_test: np.ndarray, num_test: int,
                 seeds: int, seed: int, lowest: bool = False,
                 ablation_rates: tuple | None = None) -> Design:
    """Every group's arms and removal sets (no training, no files).

    labels: int[N] (the true labels the retrained models see); mem: float64[N], the score
    the ``lowest`` arms rank by; pair_train / pair_test: int64[P] high-influence pairs over
    the main test set of ``num_test`` examples. A method's candidate gets the ``random``
    baseline (and ``lowest`` with ``lowest``); every other candidate ``selected`` and
    ``matched``. An empty candidate is skipped (nothing to remove).

    Raises JmemError for any removal set that removes every example or every example of a
    class, and when every candidate is empty.
    """
    labels = np.asarray(labels)
    n = labels.size
    groups, skipped = {}, {}
    arms = [Arm("full", "full", None, None, None, np.zeros((seeds, n), bool))]
    for c in candidates:
        if not c.removed.any():
            skipped[c.name] = "selects no example"
            continue
        removal.check_removal(c.removed, labels, num_classes, c.what)
        counts = removal.class_counts(c.removed, labels, num_classes)
        influenced = influenced_by(c.removed, pair_train, pair_test, num_test)
        info = {**c.info, "removed": int(c.removed.sum()), "class_counts": counts.tolist(),
                "influenced_size": int(influenced.sum()),
                "influenced_test_indices": np.flatnonzero(influenced).tolist()}
        groups[c.name] = Group(c.name, c.method, c.tau, c.removed, influenced, info)
        kinds = COMPARED if c.method is None else WITH_BASELINES + (("lowest",) if lowest else ())
        for kind in kinds:
            arm_name = f"{c.name}:{kind}"
            try:
                masks = arm_masks(kind, arm_name, c.removed, labels, counts, mem, seeds, seed)
            except removal.Undrawable as err:  # a uniform baseline that would empty a class
                if kind != "random":  # the matched arm is every group's comparison: no group without it
                    raise
                skipped[arm_name] = str(err)
                continue
            for s in (range(seeds) if kind in ("matched", "random") else range(1)):
                removal.check_removal(masks[s], labels, num_classes, f"arm {arm_name} (seed {s})")
            arms.append(Arm(arm_name, kind, c.name, c.method, c.tau, masks))
    if len(arms) == 1:
        raise removal.NothingToRemove("nothing to retrain: every removal set is empty ("
                        + ", ".join(f"{k} {v}" for k, v in skipped.items()) + ")")
    return Design(seeds, groups, arms, skipped, ablation_rates)
