"""What the retrained models did: correctness on every test set, per model (pure numpy).

Test sets: ``test``, the leakage-free ``test_clean`` (when the run has it), every other
extra test set, and per group the influenced test examples T_h (``influenced``) and the
rest of the test set (``rest``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jmem.study.retrain.design import Design


@dataclasses.dataclass(frozen=True)
class Outcomes:
    """What the retrained models did. correct: test set name -> bool[M, T_k]; diverged:
    bool[M]; train_accuracy: float64[M] (on each model's kept examples); final_loss:
    float32[M]."""

    correct: dict
    diverged: np.ndarray
    train_accuracy: np.ndarray
    final_loss: np.ndarray


def outcomes_from_arrays(arrays: dict, margins_train: np.ndarray, keep: np.ndarray) -> Outcomes:
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
                    np.asarray(arrays["final_loss"], np.float32))


def test_set_names(outcomes: Outcomes) -> list[str]:
    """["test", "test_clean", "influenced", "rest", *other extra sets]."""
    extras = [k for k in outcomes.correct if k not in ("test", "test_clean")]
    clean = ["test_clean"] if "test_clean" in outcomes.correct else []
    return ["test", *clean, "influenced", "rest", *extras]


def columns(design: Design, outcomes: Outcomes, test_set: str, group: str | None) -> np.ndarray:
    """bool[M, T'] correctness of every model on ``test_set`` (T_h / rest of ``group``)."""
    if test_set in ("influenced", "rest"):
        mask = design.groups[group].influenced
        mask = mask if test_set == "influenced" else ~mask
        return outcomes.correct["test"][:, mask]
    return outcomes.correct[test_set]
