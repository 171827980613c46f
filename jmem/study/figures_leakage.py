"""Figures of near-duplicate pairs, so a person can judge what the detector flagged.

``duplicates.png`` shows flagged train/test pairs, each training image beside its test image,
with both indices, labels and the distance in the titles: the closest pairs first (likely
exact copies), then the pairs closest to the threshold (the detector's hardest calls, where a
wrong threshold shows). ``duplicates_within_test.png`` does the same for pairs inside the
test set. matplotlib with the Agg backend (no display needed).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from jmem.data.dataset import Dataset
from jmem.data.leakage import LeakageResult
from jmem.data.loaders import label_text
from jmem.study import rundir

DUPLICATES_PNG = "duplicates.png"
WITHIN_TEST_PNG = "duplicates_within_test.png"


def pick_pairs(distances: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(closest, borderline): int64 row indices of the ``ceil(count/2)`` smallest distances and
    of up to ``count//2`` of the largest ones (nearest the threshold), disjoint, each sorted by
    distance. distances: float[P], the flagged pairs' distances."""
    order = np.argsort(distances, kind="stable")
    closest = order[: -(-count // 2)]
    rest = order[closest.size:]
    borderline = rest[rest.size - min(count // 2, rest.size):]
    return closest.astype(np.int64), borderline.astype(np.int64)


def raw_images(x: np.ndarray, dataset: Dataset) -> np.ndarray:
    """Normalised images back to display range: float32[K, H, W, C] clipped to [0, 1] when the
    data came from [0, 1] pixels, else min-max scaled per image."""
    out = x * dataset.channel_std + dataset.channel_mean if dataset.channel_mean is not None else x
    out = np.asarray(out, np.float32)
    if out.size and out.min() >= -0.05 and out.max() <= 1.05:
        return np.clip(out, 0.0, 1.0)
    lo = out.reshape(len(out), -1).min(1)[:, None, None, None]
    hi = out.reshape(len(out), -1).max(1)[:, None, None, None]
    return (out - lo) / np.maximum(hi - lo, 1e-12)


def plot_pairs(path, left: np.ndarray, right: np.ndarray, titles_left: list[str], titles_right: list[str],
               sections: list[tuple[str, int]], heading: str, pairs_per_row: int = 4) -> Path | None:
    """Write a PNG grid of image pairs; returns its path, or None when there are no pairs.

    left, right: float32[P, H, W, C] in [0, 1]; titles_*: P strings; sections: (caption,
    number of pairs) in order, each starting a new row block.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    if len(left) == 0:
        return None
    rows = sum(-(-n // pairs_per_row) for _, n in sections if n)
    # A narrow spacer column after each pair keeps a pair's two images visibly together.
    ratios = ([1, 1, 0.35] * pairs_per_row)[:-1]
    fig, axes = plt.subplots(rows, len(ratios), figsize=(1.8 * sum(ratios), 2.2 * rows + 0.75), squeeze=False,
                             gridspec_kw={"width_ratios": ratios, "wspace": 0.08})
    for ax in axes.flat:
        ax.axis("off")
    row, start = 0, 0
    for caption, n in sections:
        if not n:
            continue
        for k in range(n):
            r, c = row + k // pairs_per_row, 3 * (k % pairs_per_row)
            for ax, img, title in ((axes[r, c], left[start + k], titles_left[start + k]),
                                   (axes[r, c + 1], right[start + k], titles_right[start + k])):
                gray = img.shape[-1] == 1
                ax.imshow(img[..., 0] if gray else img, cmap="gray" if gray else None, vmin=0, vmax=1,
                          interpolation="nearest")
                ax.set_title(title, fontsize=8)
        axes[row, 0].text(0.0, 1.3, caption, transform=axes[row, 0].transAxes, fontsize=10,
                          fontweight="bold", va="bottom")
        row += -(-n // pairs_per_row)
        start += n
    fig.suptitle(heading, fontsize=11)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.75 / (2.2 * rows + 0.75), hspace=0.6)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=90, format="png")
    plt.close(fig)
    rundir.save_bytes(Path(path), buffer.getvalue())
    return Path(path)


def plot_train_test_pairs(path, result: LeakageResult, dataset: Dataset, count: int = 16,
                          detector: str = "pixel") -> Path | None:
    """``duplicates.png``: flagged (training, test) pairs of one detector. None if no pair or
    the examples are not images ([H, W, C])."""
    if len(dataset.example_shape) != 3 or detector not in result.nearest:
        return None
    nb = result.nearest[detector]
    leaked = np.flatnonzero(result.leaked_by(detector))
    if not leaked.size:  # nothing flagged (a strict threshold): no figure
        return None
    closest, border = pick_pairs(nb.distance[leaked], count)
    t = leaked[np.concatenate([closest, border])]
    i = nb.index[t]
    tl = [f"train {a}: {label_text(dataset.name, int(dataset.y_train[a]))}" for a in i]
    tr = [f"test {b}: {label_text(dataset.name, int(dataset.y_test[b]))}\nd={nb.distance[b]:.4f}" for b in t]
    heading = (f"{dataset.name}: {leaked.size:,} of {dataset.num_test:,} test images have a training near-duplicate "
               f"({detector}, {result.metric} distance <= {result.thresholds[detector]:g}); "
               "left: training image, right: test image")
    return plot_pairs(path, raw_images(dataset.x_train[i], dataset), raw_images(dataset.x_test[t], dataset),
                      tl, tr, [("closest pairs", closest.size), ("pairs nearest the threshold", border.size)],
                      heading)


def plot_within_test_pairs(path, result: LeakageResult, dataset: Dataset, count: int = 16) -> Path | None:
    """``duplicates_within_test.png``: near-duplicate pairs inside the test set."""
    wp = result.within_test_pairs
    if len(dataset.example_shape) != 3 or len(wp) == 0:
        return None
    closest, border = pick_pairs(wp["distance"], count)
    rows = wp[np.concatenate([closest, border])]
    a, b = rows["test_index"], rows["other_index"]
    tl = [f"test {x}: {label_text(dataset.name, int(dataset.y_test[x]))}" for x in a]
    tr = [f"test {y}: {label_text(dataset.name, int(dataset.y_test[y]))}\nd={d:.4f}" for y, d in zip(b, rows["distance"])]
    heading = f"{dataset.name}: {len(wp):,} near-duplicate pairs within the test set (pixel, {result.metric})"
    return plot_pairs(path, raw_images(dataset.x_test[a], dataset), raw_images(dataset.x_test[b], dataset),
                      tl, tr, [("closest pairs", closest.size), ("pairs nearest the threshold", border.size)],
                      heading)


def save_leakage_figures(directory, result: LeakageResult, dataset: Dataset, count: int = 16) -> list[Path]:
    """Both figures into ``directory`` (next to ``duplicates.csv``); the paths written."""
    directory = Path(directory)
    written = [plot_train_test_pairs(directory / DUPLICATES_PNG, result, dataset, count),
               plot_within_test_pairs(directory / WITHIN_TEST_PNG, result, dataset, count)]
    return [p for p in written if p is not None]
