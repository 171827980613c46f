"""The leakage stage: train/test near-duplicates of a run's dataset, and ``duplicates.csv``.

Pixel-space detection is :mod:`jmem.data.leakage`. The detector (``jmem.data.leakage``) can compare test and training examples in the
feature space of a trained network as well as in pixel space; pixel space misses
"very similar" pairs that differ by more than noise, shifts and brightness (Barz & Denzler's
judgment 2). This module trains that feature extractor with the run's own model and training
settings, so ``jmem.data.leakage`` itself stays free of flax and optax.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from jmem.config import Config
from jmem.data import leakage
from jmem.data.dataset import Dataset
from jmem.data.leakage import PAIRS_DTYPE, LeakageResult
from jmem.engine.hparams import ModelConfig, TrainConfig
from jmem.errors import JmemError
from jmem.study import rundir

DUPLICATES_COLUMNS = ("test_index", "train_index", "distance", "detector")

# A model id outside any run's range, so the extractor's keys never coincide with model 0's.
FEATURE_MODEL_ID = 2**31 - 1


def trained_features(dataset: Dataset, model_cfg: ModelConfig, train_cfg: TrainConfig,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train one model on every training example; return its features.

    Returns (features_train float32[N, D], features_test float32[T, D]).
    """
    from jmem.engine.predict import predict_features  # lazy: flax/optax only when features are asked for
    from jmem.engine.trainer import train_models

    keep = np.ones((1, dataset.num_train), bool)
    result = train_models(keep, dataset, model_cfg, train_cfg, seed,
                          model_ids=np.array([FEATURE_MODEL_ID]))
    extract = lambda x: predict_features(model_cfg, result.params, result.model_state, x)[0]  # noqa: E731
    return extract(dataset.x_train), extract(dataset.x_test)


def detect_leakage(config: Config, dataset: Dataset):
    """Train/test near-duplicates of ``dataset`` as ``config.leakage`` asks: a LeakageResult."""
    features = None
    if config.leakage.features:
        features = trained_features(dataset, config.model, config.train, config.seed)
    return leakage.find_leakage(dataset, metric=config.leakage.metric,
                                threshold=config.leakage.threshold or None, features=features)


def measure_leakage(config: Config, dataset: Dataset):
    """Near-duplicates of ``dataset`` and, if ``config.leakage.clean_test``, the dataset with a
    leakage-free extra test set attached. Returns (dataset, LeakageResult)."""
    result = detect_leakage(config, dataset)
    return attach_clean_test(config, dataset, lambda: result.leaked), result


def attach_clean_test(config: Config, dataset: Dataset, leaked) -> Dataset:
    """``dataset`` with the leakage-free test set ``test_clean`` if ``config.leakage.clean_test``.

    leaked: a function returning bool[T], the test examples with a training near-duplicate;
    called only where detection decides (the CIFAR sets use the published lists instead).
    """
    if not config.leakage.clean_test:
        return dataset
    # Published lists (CIFAR) beat detection where they exist; detection elsewhere.
    known = None if dataset.name in leakage.KNOWN_LIST_ROWS else leaked()
    return leakage.leakage_free_test(dataset, known)


def leaked_in_run(run_dir, num_test: int) -> np.ndarray:
    """bool[T]: the test examples ``duplicates.csv`` of a run directory lists."""
    table = read_duplicates_csv(Path(run_dir) / rundir.DUPLICATES)
    index = table["test_index"].astype(np.int64)
    if index.size and (index.min() < 0 or index.max() >= num_test):
        raise JmemError(f"{Path(run_dir) / rundir.DUPLICATES} lists test_index="
                        f"{int(index[(index < 0) | (index >= num_test)][0])}, outside [0, {num_test})")
    leaked = np.zeros(num_test, bool)
    leaked[index] = True
    return leaked


def duplicates_csv_text(result: LeakageResult) -> str:
    """The text of ``duplicates.csv`` (:data:`rundir.DUPLICATES`): columns
    ``test_index,train_index,distance,detector``, one row per leaked test example and
    detector, indices are positions in the dataset's test/train arrays."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(DUPLICATES_COLUMNS)
    for row in result.pairs:
        writer.writerow([int(row["test_index"]), int(row["train_index"]), f"{float(row['distance']):.6g}", str(row["detector"])])
    return out.getvalue()


def write_duplicates_csv(path, result: LeakageResult) -> None:
    """Atomically write ``duplicates.csv`` (:func:`duplicates_csv_text`)."""
    rundir.save_text(Path(path), duplicates_csv_text(result))


def check_run_duplicates(run_dir, result: LeakageResult) -> None:
    """JmemError if ``result`` would change the ``duplicates.csv`` a run's manifest records:
    its training chose the leakage-free test set by that file, so it is never rewritten with
    other pairs."""
    from jmem.study import integrity

    manifest = integrity.load_manifest(run_dir)
    recorded = (manifest or {}).get("inputs", {}).get(rundir.DUPLICATES)
    if recorded is not None and integrity.text_sha256(duplicates_csv_text(result)) != recorded:
        raise JmemError(f"the detection gives other pairs than the {rundir.DUPLICATES} run "
                        f"directory {str(run_dir)!r} was trained with (recorded in "
                        f"{rundir.MANIFEST}); give --out to write them elsewhere")


def read_duplicates_csv(path) -> np.ndarray:
    """Read a ``duplicates.csv`` written by :func:`write_duplicates_csv` (:data:`PAIRS_DTYPE`)."""
    path = Path(path)
    if not path.exists():
        raise JmemError(f"run directory {str(path.parent)!r} has no {path.name}")
    rows = list(csv.reader(io.StringIO(path.read_text())))
    if not rows or tuple(rows[0]) != DUPLICATES_COLUMNS:
        raise JmemError(f"{path.name} header={rows[0] if rows else []!r}; expected {list(DUPLICATES_COLUMNS)}")
    table = np.empty(len(rows) - 1, PAIRS_DTYPE)
    for i, r in enumerate(rows[1:]):
        table[i] = (int(r[0]), int(r[1]), float(r[2]), r[3])
    return table
