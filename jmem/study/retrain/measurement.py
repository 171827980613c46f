"""What the retrained models did, and the paired differences every statistic reads (pure numpy).

Test sets: ``test``, the leakage-free ``test_clean`` (the test examples with no training
near-duplicate: a subset of ``test``, given as ``clean: bool[T]``), every other extra test set,
and per group and pool the influenced test examples T_h (``influenced``) and the rest of the
test set (``rest``).

Paired differences (:func:`paired_differences`) are per pool, seed and test example:
``d[p, s, j] = correct[selected arm, p, s, j] - correct[baseline arm, p, s, j]``, over the
main test set's T examples. A subset (clean, influenced, rest) is expressed as weights over
those T examples (1 / its share inside, 0 outside; per pool for T_h), so that the mean of
``d`` over j is the accuracy difference on the subset and every comparison, and every
contrast of comparisons, keeps the pools x seeds x test-examples design that
:func:`jmem.scores.generalising.crossed_interval` needs.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jmem.study.retrain.design import Design, arm_name

SUBSETS = ("test", "test_clean", "influenced", "rest")


@dataclasses.dataclass(frozen=True)
class Outcomes:
    """What the retrained models did. correct: test set name -> bool[M, T_k]; diverged:
    bool[M]; train_accuracy: float64[M] (on each model's kept examples); final_loss:
    float32[M]; clean: bool[T] (the leakage-free examples of the main test set; all True
    when the run found no duplicate)."""

    correct: dict
    diverged: np.ndarray
    train_accuracy: np.ndarray
    final_loss: np.ndarray
    clean: np.ndarray


def outcomes_from_arrays(arrays: dict, margins_train: np.ndarray, keep: np.ndarray, clean: np.ndarray) -> Outcomes:
    """From the assembled arrays: ``margins_<set>`` float32[M, T_k] of every test set,
    ``diverged`` bool[M], ``final_loss`` float32[M]; ``margins_train`` float32[M, N] (may be a
    memory map) and ``keep`` bool[M, N] give the training accuracy."""
    correct = {"test": arrays["margins_test"] > 0}
    for key in sorted(arrays):
        if key.startswith("margins_") and key not in ("margins_train", "margins_test"):
            correct[key[len("margins_"):]] = arrays[key] > 0
    train_correct = (margins_train > 0) & keep
    train_acc = train_correct.sum(axis=1) / keep.sum(axis=1)
    return Outcomes(correct, np.asarray(arrays["diverged"], bool), train_acc,
                    np.asarray(arrays["final_loss"], np.float32), np.asarray(clean, bool))


def test_set_names(outcomes: Outcomes) -> list[str]:
    """["test", "test_clean", "influenced", "rest", *other extra sets]."""
    extras = [k for k in outcomes.correct if k not in ("test", "test_clean")]
    clean = ["test_clean"] if "test_clean" in outcomes.correct else []
    return ["test", *clean, "influenced", "rest", *extras]


def subset_mask(design: Design, outcomes: Outcomes, test_set: str, group: str | None, pool: int) -> np.ndarray:
    """bool[T] over the main test set: the examples of ``test_set`` (T_h / rest: of
    ``group``'s pool ``pool``)."""
    if test_set == "test":
        return np.ones(outcomes.clean.shape, bool)
    if test_set == "test_clean":
        return outcomes.clean
    influenced = design.groups[group].influenced[pool]
    return influenced if test_set == "influenced" else ~influenced


def healthy_seeds(design: Design, outcomes: Outcomes, arm_names: list[str]) -> np.ndarray:
    """int64[S']: the seeds at which no arm of ``arm_names`` (of any pool) diverged, the same
    S' in every pool (seeds nested in pools must stay balanced for the crossed design)."""
    ok = np.ones((design.pools, design.seeds), bool)
    for name in arm_names:
        arm = next(a for a in design.arms if a.name == name)
        ok[arm.pool] &= ~outcomes.diverged[design.rows(name)]
    per_pool = ok.all(axis=0)
    return np.flatnonzero(per_pool)


def arms_of(design: Design, group: str, a_kind: str, b_kind: str) -> list[tuple[str, str]]:
    """[(arm a, arm b)] of each pool (``b_kind`` "full": the pool's full arm)."""
    return [(arm_name(group, a_kind, p), arm_name(None if b_kind == "full" else group, b_kind, p))
            for p in range(design.pools)]


def paired_differences(design: Design, outcomes: Outcomes, group: str, a_kind: str, b_kind: str,
                       test_set: str, seeds: np.ndarray | None = None):
    """(d float64[P, S', T_k], acc_a float64[P, S'], acc_b float64[P, S']) for arm kind
    ``a_kind`` minus ``b_kind`` of ``group`` on ``test_set``; None when the subset is empty
    in some pool or fewer than 2 seeds are healthy. ``d`` is weighted so its mean over the
    last axis is the accuracy difference on the subset (module docstring)."""
    pairs = arms_of(design, group, a_kind, b_kind)
    if seeds is None:
        seeds = healthy_seeds(design, outcomes, [n for pair in pairs for n in pair])
    if seeds.size < 2:
        return None
    own = test_set not in SUBSETS  # an extra test set of its own (e.g. CIFAR-10.1)
    correct = outcomes.correct[test_set if own else "test"]
    d, acc_a, acc_b = [], [], []
    for p, (a, b) in enumerate(pairs):
        ca = correct[design.rows(a)[seeds]].astype(np.float64)
        cb = correct[design.rows(b)[seeds]].astype(np.float64)
        mask = np.ones(correct.shape[1], bool) if own else subset_mask(design, outcomes, test_set, group, p)
        if not mask.any():
            return None
        weight = mask / mask.mean()
        d.append((ca - cb) * weight)
        acc_a.append(ca[:, mask].mean(axis=1))
        acc_b.append(cb[:, mask].mean(axis=1))
    return np.stack(d), np.stack(acc_a), np.stack(acc_b)
