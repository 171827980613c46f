"""Calibration of a distance threshold against a known duplicate list (recall, precision)."""

from __future__ import annotations

import dataclasses

import numpy as np

from jmem.errors import JmemError
from jmem.data.leakage.clean import duplicates_mask


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Recall and precision of a distance threshold against known duplicates.

    Attributes:
      thresholds: float64[M], increasing: every distinct test distance.
      recall: float64[M], share of known duplicates with distance <= threshold.
      precision: float64[M], share of flagged test examples that are known duplicates
        (NaN where nothing is flagged).
      flagged: int64[M], test examples flagged at each threshold.
      num_known: number of known duplicate test examples.
      suggested: the threshold with the best F1 (ties: the smallest), or with
        ``min_precision`` the largest threshold whose precision reaches it (NaN if none).
    """

    thresholds: np.ndarray
    recall: np.ndarray
    precision: np.ndarray
    flagged: np.ndarray
    num_known: int
    suggested: float

    def at(self, threshold: float) -> tuple[float, float]:
        """(recall, precision) when flagging distances <= ``threshold``."""
        i = np.searchsorted(self.thresholds, threshold, side="right") - 1
        if i < 0:
            return 0.0, float("nan")
        return float(self.recall[i]), float(self.precision[i])


def calibrate_threshold(distance: np.ndarray, known, *, min_precision: float | None = None) -> Calibration:
    """Recall/precision of ``distance <= threshold`` at every distinct distance, against a
    known list, and a suggested threshold.

    Args:
      distance: float[T], each test example's distance to its nearest training example (e.g.
        ``result.nearest["pixel"].distance``).
      known: the known duplicate test examples as a :class:`KnownDuplicates` with
        ``order == "dataset"`` (see :func:`map_to_dataset_order`), a bool[T] mask or int[K]
        test positions. A known test example counts as found when its distance is within the
        threshold, whichever training example is nearest (training sets hold duplicates too).
      min_precision: if given, suggest the largest threshold whose precision is at least this.
    """
    distance = np.asarray(distance, np.float64)
    positive = duplicates_mask(known, distance.shape[0])
    if positive.sum() == 0:
        raise JmemError("known duplicates: the list has no test example in this dataset; cannot calibrate")
    order = np.argsort(distance, kind="stable")
    d = distance[order]
    tp = np.cumsum(positive[order])
    n_flag = np.arange(1, d.size + 1)
    last = np.flatnonzero(np.append(d[1:] != d[:-1], True))  # last row of each distinct distance
    finite = np.isfinite(d[last])
    last = last[finite]
    thresholds, tp, n_flag = d[last], tp[last], n_flag[last]
    recall = tp / positive.sum()
    precision = tp / n_flag
    if min_precision is not None:
        ok = np.flatnonzero(precision >= min_precision)
        suggested = float(thresholds[ok[-1]]) if ok.size else float("nan")
    else:
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        suggested = float(thresholds[int(np.argmax(f1))]) if f1.size else float("nan")
    return Calibration(thresholds, recall, precision, n_flag.astype(np.int64), int(positive.sum()), suggested)
