"""The trained feature extractor used by the leakage detector's `features` detector."""

import dataclasses

import numpy as np

from jmem.data.loaders import load_dataset
from jmem.study.leakage import trained_features
from jmem.engine.hparams import ModelConfig, TrainConfig
from jmem.data.leakage import find_leakage


def test_trained_features_find_a_planted_duplicate():
    digits = load_dataset("digits")
    # Plant an exact copy of training example 7 as test example 0.
    x_test = digits.x_test.copy()
    x_test[0] = digits.x_train[7]
    y_test = digits.y_test.copy()
    y_test[0] = digits.y_train[7]
    planted = dataclasses.replace(digits, x_test=x_test, y_test=y_test)

    model, train = ModelConfig(kind="mlp", width=32), TrainConfig(num_models=1, epochs=2)
    f_train, f_test = trained_features(planted, model, train, seed=0)
    assert f_train.shape == (digits.num_train, 32) and f_test.shape == (digits.num_test, 32)
    assert f_train.dtype == np.float32 and np.all(np.isfinite(f_train))

    result = find_leakage(planted, features=(f_train, f_test), within_test=False)
    nearest = result.nearest["features"]
    assert nearest.index[0] == 7
    assert nearest.distance[0] < 1e-5
