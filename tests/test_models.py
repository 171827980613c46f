"""The networks: both convolution paths agree, shapes, features, per-model BatchNorm."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmem.errors import JmemError
from jmem.engine.hparams import ModelConfig
from jmem.engine.models import (Conv, activation_elems, apply_one, build_model, check_input, features,
                         init_models, num_classes_of, param_count)


@pytest.mark.parametrize("shape,kernel,stride", [
    ((2, 8, 8, 3), 3, 1),
    ((2, 8, 8, 3), 3, 2),
    ((2, 7, 7, 2), 1, 2),
    ((2, 40, 1), 5, 2),
    ((2, 9, 4), 3, 1),
])
def test_patches_conv_equals_lax_conv(shape, kernel, stride):
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    lax_conv = Conv(6, kernel, stride, impl="lax")
    params = lax_conv.init(jax.random.PRNGKey(1), x)
    patch_conv = Conv(6, kernel, stride, impl="patches")
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
        patch_conv.init(jax.random.PRNGKey(1), x))
    params = jax.tree_util.tree_map(lambda p: p + 0.1, params)  # a non-zero bias too
    np.testing.assert_allclose(lax_conv.apply(params, x), patch_conv.apply(params, x),
                               rtol=1e-5, atol=1e-5)


def test_patches_conv_under_vmap_is_not_a_grouped_conv():
    """The point of the patches path: no feature_group_count in the vmapped program."""
    x = jnp.zeros((3, 2, 8, 8, 4))
    for impl, grouped in (("lax", True), ("patches", False)):
        conv = Conv(8, 3, impl=impl)
        params = jax.vmap(lambda k: conv.init(k, x[0]))(jax.random.split(jax.random.PRNGKey(0), 3))
        hlo = jax.jit(jax.vmap(conv.apply)).lower(params, x).as_text()
        assert ("feature_group_count = 3" in hlo) == grouped, impl


MODELS = [
    (ModelConfig(kind="mlp", width=16, depth=2), (8, 8, 1), 16),
    (ModelConfig(kind="mlp", width=16, norm="batchnorm"), (40, 1), 16),
    (ModelConfig(kind="cnn", width=4, depth=2), (8, 8, 1), 4 * 2 * 2),
    (ModelConfig(kind="cnn", width=4, depth=3, kernel_size=5), (40, 1), 4 * 5),
    (ModelConfig(kind="cnn", width=4, depth=2, norm="batchnorm"), (28, 28, 1), 4 * 7 * 7),
    (ModelConfig(kind="resnet", width=4, depth=2, norm="batchnorm"), (32, 32, 3), 8),
    (ModelConfig(kind="resnet", width=4, depth=2), (32, 32, 3), 8),
]


@pytest.mark.parametrize("model_cfg,example_shape,feature_dim", MODELS)
def test_models_shapes_features_and_impls(model_cfg, example_shape, feature_dim):
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    params, state = init_models(model_cfg, 5, example_shape, keys)
    assert num_classes_of(params) == 5
    assert all(leaf.shape[0] == 3 for leaf in jax.tree_util.tree_leaves((params, state)))
    assert (state != {}) == (model_cfg.norm == "batchnorm")
    x = jax.random.normal(jax.random.PRNGKey(1), (6,) + example_shape)
    feats = features(model_cfg, params, state, x)
    assert feats.shape == (3, 6, feature_dim) and feats.dtype == jnp.float32
    outs = {}
    for impl in ("lax", "patches"):
        module = build_model(model_cfg, 5, impl)
        outs[impl] = jax.jit(jax.vmap(lambda p, s: apply_one(module, p, s, x)[:2]))(params, state)
    np.testing.assert_allclose(outs["lax"][0], outs["patches"][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outs["lax"][1], feats, rtol=1e-4, atol=1e-5)
    # the head reads exactly the features
    head = params["head"]
    logits = jnp.einsum("rtd,rdk->rtk", feats, head["kernel"]) + head["bias"][:, None]
    np.testing.assert_allclose(outs["lax"][0], logits, rtol=1e-4, atol=1e-4)
    assert param_count(model_cfg, 5, example_shape) == sum(
        leaf[0].size for leaf in jax.tree_util.tree_leaves(params))


def test_init_depends_on_key_only():
    cfg = ModelConfig(kind="cnn", width=4)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    a, _ = init_models(cfg, 3, (8, 8, 1), keys)
    b, _ = init_models(cfg, 3, (8, 8, 1), keys[::-1])
    for la, lb in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(la[0], lb[1])
        assert not np.array_equal(la[0], la[1]) or np.all(la == 0)


def test_batchnorm_statistics_are_per_model_and_masked():
    cfg = ModelConfig(kind="mlp", width=4, norm="batchnorm")
    module = build_model(cfg, 2)
    params, state = init_models(cfg, 2, (3,), jax.random.split(jax.random.PRNGKey(0), 2))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 6, 3)) * jnp.array([1.0, 10.0])[:, None, None]
    mask = jnp.array([True] * 4 + [False] * 2)
    train = jax.jit(jax.vmap(lambda p, s, xb: apply_one(module, p, s, xb, train=True, mask=mask)))
    _, _, new_state = train(params, state, x)
    mean = new_state["batch_stats"]["norm0"]["BatchNorm_0"]["mean"]
    assert not np.allclose(mean[0], mean[1])  # each model its own statistics
    # masked examples do not move the statistics, nor the unmasked outputs
    x2 = x.at[:, 4:].set(1e3)
    logits2, _, state2 = train(params, state, x2)
    logits1, _, _ = train(params, state, x)
    np.testing.assert_array_equal(mean, state2["batch_stats"]["norm0"]["BatchNorm_0"]["mean"])
    np.testing.assert_allclose(logits1[:, :4], logits2[:, :4], rtol=1e-6)


def test_activation_elems_counts_patches():
    cfg = ModelConfig(kind="cnn", width=16, depth=2)
    lax_elems = activation_elems(cfg, 10, (8, 8, 1), "lax")
    # conv0 4x4x16 (+ its norm/identity output), conv1 2x2x16 (+ norm), logits, features.
    assert lax_elems == 2 * 256 + 2 * 64 + 10 + (10 + 64)
    # patch matrices: conv0 16 positions x 9 x 1, conv1 4 positions x 9 x 16
    assert activation_elems(cfg, 10, (8, 8, 1), "patches") == lax_elems + 16 * 9 + 4 * 9 * 16


@pytest.mark.parametrize("cfg,shape,match", [
    (ModelConfig(kind="cnn"), (64,), "model.kind='cnn'"),
    (ModelConfig(kind="cnn", depth=4), (8, 8, 1), "model.depth=4"),
    (ModelConfig(kind="resnet"), (40, 1), "model.kind='resnet'"),
    (ModelConfig(kind="resnet", depth=6), (8, 8, 1), "model.depth=6"),
])
def test_incompatible_input_shapes_raise(cfg, shape, match):
    with pytest.raises(JmemError, match=match):
        check_input(cfg, shape)


def test_bad_conv_impl_raises():
    with pytest.raises(JmemError, match="conv_impl='fft'"):
        build_model(ModelConfig(kind="cnn"), 10, "fft")


def test_mlp_widths_layer_by_layer():
    """``widths=(6, 4)`` builds 25-6-4-3 (Feldman & Zhang's 784-512-256-10 in small)."""
    from jmem import config as config_lib
    from jmem.engine.hparams import hidden_widths

    cfg = ModelConfig(kind="mlp", widths=(6, 4))
    module = build_model(cfg, 3)
    x = jnp.ones((2, 5, 5, 1))
    params = module.init(jax.random.PRNGKey(0), x)["params"]
    shapes = {k: v["kernel"].shape for k, v in params.items()}
    assert shapes == {"dense0": (25, 6), "dense1": (6, 4), "head": (4, 3)}
    logits, feats = module.apply({"params": params}, x)
    assert logits.shape == (2, 3) and feats.shape == (2, 4)
    assert hidden_widths(cfg) == (6, 4) and hidden_widths(ModelConfig(width=5, depth=3)) == (5, 5, 5)
    # Without widths the layout (and so every existing run) is unchanged.
    plain = build_model(ModelConfig(kind="mlp", width=6, depth=2), 3).init(jax.random.PRNGKey(0), x)["params"]
    assert {k: v["kernel"].shape for k, v in plain.items()} == {"dense0": (25, 6), "dense1": (6, 6), "head": (6, 3)}
    parsed = config_lib.apply_overrides(config_lib.Config(), ["model.widths=512,256"])
    assert parsed.model.widths == (512, 256) and all(type(w) is int for w in parsed.model.widths)
    with pytest.raises(JmemError, match=r"model.widths contains 2.5; every width must be an integer >= 1"):
        ModelConfig(widths=(2.5,))
    with pytest.raises(JmemError, match=r"model.widths contains 0"):
        ModelConfig(widths=(4, 0))
    with pytest.raises(JmemError, match=r"model.widths=\[8\] is for model.kind='mlp' only, not 'cnn'"):
        ModelConfig(kind="cnn", widths=(8,))
