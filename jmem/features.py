"""Penultimate-layer features of a model trained on the whole training set.

The leakage detector (``jmem.leakage``) can compare test and training examples in the
feature space of a trained network as well as in pixel space; pixel space misses
"very similar" pairs that differ by more than noise, shifts and brightness (Barz & Denzler's
judgment 2). This module trains that feature extractor with the run's own model and training
settings, so ``jmem.leakage`` itself stays free of flax and optax.
"""

from __future__ import annotations

import numpy as np

from jmem.dataset import Dataset
from jmem.hparams import ModelConfig, TrainConfig

# A model id outside any run's range, so the extractor's keys never coincide with model 0's.
FEATURE_MODEL_ID = 2**31 - 1


def trained_features(dataset: Dataset, model_cfg: ModelConfig, train_cfg: TrainConfig,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train one model on every training example; return its features.

    Returns (features_train float32[N, D], features_test float32[T, D]).
    """
    from jmem.predict import predict_features
    from jmem.train import train_models

    keep = np.ones((1, dataset.num_train), bool)
    result = train_models(keep, dataset, model_cfg, train_cfg, seed,
                          model_ids=np.array([FEATURE_MODEL_ID]))
    extract = lambda x: predict_features(model_cfg, result.params, result.model_state, x)[0]  # noqa: E731
    return extract(dataset.x_train), extract(dataset.x_test)
