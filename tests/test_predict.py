"""Margins: the definition, chunking invariance, strategy agreement, input checks."""

import jax
import numpy as np
import pytest

from jmem.errors import JmemError
from jmem.engine.hparams import ModelConfig
from jmem.engine.models import apply_one, build_model, init_models
from jmem.engine import predict
from jmem.engine.predict import accuracy, margins_from_logits, predict_features, predict_margins

NUM_CLASSES = 4


def _models(model_cfg, example_shape, num_models=5, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), num_models)
    params, state = init_models(model_cfg, NUM_CLASSES, example_shape, keys)
    # Random init gives small logits; scale the head so margins are well away from zero.
    params["head"]["kernel"] = params["head"]["kernel"] * 5
    return params, state


def _data(num, example_shape, seed=1):
    rs = np.random.RandomState(seed)
    return rs.randn(num, *example_shape).astype(np.float32), rs.randint(0, NUM_CLASSES, num).astype(np.int32)


def _naive_margins(model_cfg, params, state, x, y):
    """Per model, per example, per class loops: the definition, written out."""
    module = build_model(model_cfg, NUM_CLASSES)
    forward = jax.jit(lambda p, s: apply_one(module, p, s, x)[0])
    num_models = jax.tree_util.tree_leaves(params)[0].shape[0]
    out = np.zeros((num_models, len(y)), np.float32)
    for r in range(num_models):
        p, s = jax.tree_util.tree_map(lambda leaf: leaf[r], (params, state))
        logits = np.asarray(forward(p, s))
        for i, label in enumerate(y):
            best_other = max(logits[i, c] for c in range(NUM_CLASSES) if c != label)
            out[r, i] = logits[i, label] - best_other
    return out


CONFIGS = [
    (ModelConfig(kind="mlp", width=8), (8, 8, 1)),
    (ModelConfig(kind="cnn", width=4, depth=2, norm="batchnorm"), (8, 8, 1)),
    (ModelConfig(kind="cnn", width=4, depth=2, kernel_size=5), (40, 1)),
]


@pytest.mark.parametrize("model_cfg,example_shape", CONFIGS)
def test_margins_match_naive_definition_and_chunking(model_cfg, example_shape):
    params, state = _models(model_cfg, example_shape)
    x, y = _data(23, example_shape)
    naive = _naive_margins(model_cfg, params, state, x, y)
    full = predict_margins(model_cfg, params, state, x, y)
    assert full.shape == (5, 23) and full.dtype == np.float32
    np.testing.assert_allclose(full, naive, rtol=1e-4, atol=1e-4)
    # chunk sizes that do not divide T or R: padding must not leak into the results
    chunked = predict_margins(model_cfg, params, state, x, y, chunk_size=7, model_chunk_size=2)
    np.testing.assert_allclose(chunked, full, rtol=1e-6, atol=1e-6)
    for strategy in ("vmap", "patches", "sequential"):
        other = predict_margins(model_cfg, params, state, x, y, chunk_size=10, strategy=strategy)
        np.testing.assert_allclose(other, full, rtol=1e-4, atol=1e-4)
    # correctness is margin > 0, i.e. argmax == label (no ties with random floats)
    module = build_model(model_cfg, NUM_CLASSES)
    logits = jax.jit(jax.vmap(lambda p, s: apply_one(module, p, s, x)[0]))(params, state)
    correct = np.asarray(logits).argmax(-1) == y
    np.testing.assert_array_equal(full > 0, correct)
    np.testing.assert_allclose(accuracy(full), correct.mean(axis=1))
    assert 0 < correct.mean() < 1  # the comparison above is not vacuous


def test_margins_spread_over_devices_equal_one_device():
    """Model chunks sent round-robin to several devices come back in model order, and the
    example blocks are balanced (23 in calls of <= 10: three of 8, the last padded by one)."""
    model_cfg, example_shape = CONFIGS[0]
    params, state = _models(model_cfg, example_shape)
    x, y = _data(23, example_shape)
    one = predict_margins(model_cfg, params, state, x, y, chunk_size=10, model_chunk_size=2)
    devices = jax.local_devices() * 3  # one CPU device named three times: three queues
    spread = predict_margins(model_cfg, params, state, x, y, chunk_size=10, model_chunk_size=2,
                             devices=devices)
    np.testing.assert_array_equal(spread, one)
    assert predict._balanced_chunk(23, 10) == 8 and predict._balanced_chunk(1352, 1024) == 676
    assert predict._balanced_chunk(20, 10) == 10 and predict._balanced_chunk(5, 10) == 5


def test_margins_from_logits_ties_and_signs():
    logits = np.array([[3.0, 1.0, 2.0], [1.0, 1.0, 0.0], [0.0, 5.0, -1.0]], np.float32)
    y = np.array([0, 0, 2])
    np.testing.assert_allclose(margins_from_logits(logits, y), [1.0, 0.0, -6.0])


def test_predict_features_chunked():
    cfg, shape = CONFIGS[2]
    params, state = _models(cfg, shape)
    x, _ = _data(9, shape)
    feats = predict_features(cfg, params, state, x, chunk_size=4, model_chunk_size=3)
    assert feats.shape == (5, 9, 4 * 10)  # 40 -> 20 -> 10 positions x 4 channels
    np.testing.assert_allclose(feats, predict_features(cfg, params, state, x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("change,match", [
    (dict(y=np.zeros(3, np.int32)), r"y has shape \(3,\)"),
    (dict(y=np.full(23, NUM_CLASSES, np.int32)), "the models have 4 classes"),
    (dict(x=np.zeros((23, 64), np.float32)), "model.kind='cnn'"),
    (dict(chunk_size=0), "chunk_size=0"),
    (dict(strategy="pmap"), "strategy='pmap'"),
])
def test_bad_input_raises(change, match):
    cfg, shape = CONFIGS[1]
    params, state = _models(cfg, shape, num_models=1)
    x, y = _data(23, shape)
    args = dict(x=x, y=y)
    args.update(change)
    with pytest.raises(JmemError, match=match):
        predict_margins(cfg, params, state, **args)


@pytest.mark.parametrize("model_cfg,example_shape", CONFIGS[:2])
def test_margins_in_the_compute_dtype(model_cfg, example_shape):
    """compute_dtype="bfloat16" computes the layers in bf16 (margins differ from fp32 by
    rounding only) and still returns float32."""
    params, state = _models(model_cfg, example_shape)
    x, y = _data(64, example_shape)
    full = predict_margins(model_cfg, params, state, x, y)
    half = predict_margins(model_cfg, params, state, x, y, compute_dtype="bfloat16")
    assert half.dtype == np.float32 and half.shape == full.shape
    assert not np.array_equal(half, full)
    scale = np.abs(full).max()
    assert np.abs(half - full).max() < 0.05 * scale
    assert np.mean((half > 0) == (full > 0)) > 0.95
