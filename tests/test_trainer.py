"""The vectorized trainer (``jmem.engine.trainer``, with its strategy, optimizer and wave-size
rules): isolation between models, determinism by model id, learning."""

import dataclasses
import random

import jax
import numpy as np
import pytest

from jmem.data.dataset import Dataset
from jmem.errors import JmemError
from jmem.engine.hparams import ModelConfig, TrainConfig
from jmem.engine.predict import accuracy, predict_margins
from jmem.engine.memory import choose_wave_size, estimate_model_bytes
from jmem.engine.optim import lr_factor
from jmem.engine.strategy import resolve_strategy
from jmem.engine.batches import crop_flip, epoch_order, steps_per_epoch
from jmem.engine.trainer import train_models

# ----------------------------------------------------------------------------- datasets


def _normalised(name, x_train, y_train, x_test, y_test, num_classes):
    mean = x_train.mean(axis=tuple(range(x_train.ndim - 1)))
    std = x_train.std(axis=tuple(range(x_train.ndim - 1)))
    norm = lambda x: ((x - mean) / std).astype(np.float32)  # noqa: E731
    return Dataset(name, norm(x_train), y_train.astype(np.int32), norm(x_test),
                   y_test.astype(np.int32), num_classes,
                   channel_mean=mean.astype(np.float32), channel_std=std.astype(np.float32)).validate()


def digits_dataset(num_train: int = 1437) -> Dataset:
    """sklearn's 8x8 digits as NHWC [N, 8, 8, 1]; a fixed 1,437 / 360 train / test split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32)[..., None]
    order = np.random.RandomState(0).permutation(len(x))
    train, test = order[:num_train], order[1437:]
    return _normalised("digits", x[train], digits.target[train], x[test], digits.target[test], 10)


def mnist1d_dataset() -> Dataset:
    """MNIST-1D [N, 40, 1], generated locally (never ``get_dataset``: it downloads)."""
    import mnist1d.data

    # make_dataset reseeds the global numpy / random state: keep the test session's intact.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return _normalised("mnist1d", data["x"][..., None].astype(np.float32), data["y"],
                       data["x_test"][..., None].astype(np.float32), data["y_test"], 10)


def random_images(n=24, shape=(32, 32, 3), num_classes=3, seed=0) -> Dataset:
    rs = np.random.RandomState(seed)
    x = rs.randn(n, *shape).astype(np.float32)
    y = rs.randint(0, num_classes, n).astype(np.int32)
    return Dataset("random", x, y, x[:4], y[:4], num_classes)


@pytest.fixture(scope="module")
def digits():
    return digits_dataset()


@pytest.fixture(scope="module")
def small_digits():
    return digits_dataset(num_train=300)


MLP = ModelConfig(kind="mlp", width=32, depth=1)
CNN = ModelConfig(kind="cnn", width=8, depth=2)
SHORT = TrainConfig(epochs=1, batch_size=32)  # 300 examples at ~70%: <= 7 steps per model


def _leaves(tree, index=None):
    leaves = jax.tree_util.tree_leaves(tree)
    return [np.asarray(leaf if index is None else leaf[index]) for leaf in leaves]


def _max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(_leaves(a), _leaves(b)))


def _row(tree, i):
    return jax.tree_util.tree_map(lambda leaf: leaf[i], tree)


def _bernoulli_keep(num_models, n, rate=0.7, seed=1):
    return np.random.RandomState(seed).rand(num_models, n) < rate


# ----------------------------------------------------------------------------- isolation


@pytest.mark.parametrize("model_cfg,strategy", [
    (MLP, "vmap"),
    (dataclasses.replace(CNN, norm="batchnorm"), "patches"),
])
def test_excluded_examples_never_reach_the_model(small_digits, model_cfg, strategy):
    """Changing every label and pixel model 0 excludes leaves model 0 bitwise unchanged."""
    ds = small_digits
    keep = _bernoulli_keep(2, ds.num_train)
    keep[0, 0] = False  # index 0 is the padding index: it must be excluded and edited too
    cfg = dataclasses.replace(SHORT, epochs=2, strategy=strategy)
    # A partial last batch makes the padded slots gather excluded examples.
    assert keep[0].sum() % cfg.batch_size != 0
    before = train_models(keep, ds, model_cfg, cfg, seed=3)

    out = ~keep[0]
    x, y = ds.x_train.copy(), ds.y_train.copy()
    x[out] = np.random.RandomState(9).randn(*x[out].shape) * 5  # statistics held fixed
    y[out] = (y[out] + 1) % ds.num_classes
    after = train_models(keep, dataclasses.replace(ds, x_train=x, y_train=y), model_cfg, cfg, seed=3)

    for a, b in zip(_leaves(before.params, 0), _leaves(after.params, 0)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(_leaves(before.model_state, 0), _leaves(after.model_state, 0)):
        np.testing.assert_array_equal(a, b)
    # The check can fail: model 1 saw some of the edited examples and did change.
    assert _max_diff(_row(before.params, 1), _row(after.params, 1)) > 1e-3


# ----------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("model_cfg", [MLP, CNN], ids=["mlp", "cnn"])
def test_model_is_determined_by_its_id_not_its_wave_or_strategy(small_digits, model_cfg):
    """Model id 13 alone, in a wave of 8, in a reordered wave of 3, and under every strategy.

    Subset sizes differ within the wave (Bernoulli masks), so this also checks that a model's
    steps do not depend on the wave's padded length. Bitwise equality is not promised: XLA
    rounds a batched matmul differently from a single one, so short runs, tight tolerance.
    """
    ds = small_digits
    keep = _bernoulli_keep(8, ds.num_train)
    cfg = dataclasses.replace(SHORT, batch_size=16, strategy="vmap")
    assert len(set(-(-keep.sum(axis=1) // cfg.batch_size))) > 1  # unequal steps per epoch
    ids = np.arange(10, 18)
    wave = train_models(keep, ds, model_cfg, cfg, seed=0, model_ids=ids)
    alone = train_models(keep[3:4], ds, model_cfg, cfg, seed=0, model_ids=ids[3:4])
    shuffled = train_models(keep[[5, 3, 0]], ds, model_cfg, cfg, seed=0, model_ids=ids[[5, 3, 0]])
    assert wave.steps[3] == alone.steps[0] == shuffled.steps[1] == -(-keep[3].sum() // 16)
    assert _max_diff(_row(wave.params, 3), _row(alone.params, 0)) < 1e-5
    assert _max_diff(_row(wave.params, 3), _row(shuffled.params, 1)) < 1e-5
    for strategy in ("sequential", "patches"):
        other = train_models(keep, ds, model_cfg, dataclasses.replace(cfg, strategy=strategy),
                             seed=0, model_ids=ids)
        assert other.strategy == strategy
        assert _max_diff(wave.params, other.params) < 1e-5, strategy
    # ...and a different id or seed is a different model.
    other_id = train_models(keep[3:4], ds, model_cfg, cfg, seed=0, model_ids=[99])
    assert _max_diff(alone.params, other_id.params) > 1e-3


# ----------------------------------------------------------------------------- coupled order


def test_coupled_order_keeps_every_other_example_in_place():
    """Removing examples leaves the others at the same positions (hence the same batches and
    steps) within each epoch; the compact order shifts them."""
    n = 200
    full = np.ones(n, bool)
    removed = full.copy()
    removed[[3, 50, 51, 120]] = False
    for epoch in range(3):
        key = jax.random.fold_in(jax.random.PRNGKey(7), epoch)
        a = np.asarray(epoch_order(key, full, coupled=True))
        b = np.asarray(epoch_order(key, removed, coupled=True))
        np.testing.assert_array_equal(a, b)  # the same positions; the removed ones are masked
        compact = np.asarray(epoch_order(key, removed, coupled=False))
        kept = compact[:removed.sum()]
        assert set(kept) == set(np.flatnonzero(removed))
        # the same relative order of the remaining examples, but shifted positions
        np.testing.assert_array_equal(kept, a[removed[a]])
        assert (compact[:len(kept)] != a[:len(kept)]).any()


def test_coupled_steps_and_determinism(small_digits):
    """Coupled: every model takes ceil(N / B) steps; with nothing removed it is the compact
    recipe bitwise; a model is still a function of its id, not its wave."""
    ds = small_digits
    cfg = dataclasses.replace(SHORT, batch_size=16, strategy="vmap", data_order="coupled")
    keep = np.ones((4, ds.num_train), bool)
    keep[1, :7] = False
    keep[2, 100:140] = False
    steps = steps_per_epoch(keep, cfg)
    assert (steps == -(-ds.num_train // 16)).all()
    assert list(steps_per_epoch(keep, dataclasses.replace(cfg, data_order="compact"))) == list(
        -(-keep.sum(axis=1) // 16))
    ids = np.full(4, 5)  # one seed for every arm, as the removal experiment trains them
    wave = train_models(keep, ds, MLP, cfg, seed=0, model_ids=ids)
    assert (wave.steps == cfg.epochs * steps).all()
    alone = train_models(keep[2:3], ds, MLP, cfg, seed=0, model_ids=ids[2:3])
    assert _max_diff(_row(wave.params, 2), _row(alone.params, 0)) < 1e-5
    compact = train_models(keep[:1], ds, MLP, dataclasses.replace(cfg, data_order="compact"),
                           seed=0, model_ids=ids[:1])
    for a, b in zip(_leaves(wave.params, 0), _leaves(compact.params, 0)):
        np.testing.assert_array_equal(a, b)
    # Removing examples changes the model, and excluded examples still never reach it.
    assert _max_diff(_row(wave.params, 0), _row(wave.params, 1)) > 1e-4
    x, y = ds.x_train.copy(), ds.y_train.copy()
    x[:7] = 9.0
    y[:7] = (y[:7] + 1) % ds.num_classes
    edited = train_models(keep[1:2], dataclasses.replace(ds, x_train=x, y_train=y), MLP, cfg, seed=0,
                          model_ids=ids[1:2])
    for a, b in zip(_leaves(wave.params, 1), _leaves(edited.params, 0)):
        np.testing.assert_array_equal(a, b)


def test_strategies_agree_with_batchnorm_and_options(small_digits):
    """20 steps of a BatchNorm CNN with SGD+nesterov, weight decay, smoothing, clipping, a
    cosine schedule with warm-up: vmap, patches and sequential agree within tolerance."""
    ds = small_digits
    keep = _bernoulli_keep(3, ds.num_train)
    cfg = TrainConfig(epochs=3, batch_size=32, optimizer="sgd", learning_rate=0.05, nesterov=True,
                      weight_decay=5e-4, label_smoothing=0.1, grad_clip=1.0, schedule="cosine",
                      warmup_steps=3)
    model_cfg = dataclasses.replace(CNN, norm="batchnorm")
    results = [train_models(keep, ds, model_cfg, dataclasses.replace(cfg, strategy=s), seed=1)
               for s in ("vmap", "patches", "sequential")]
    assert results[0].steps.max() <= 21
    for other in results[1:]:
        assert _max_diff(results[0].params, other.params) < 1e-4
        assert _max_diff(results[0].model_state, other.model_state) < 1e-4
        np.testing.assert_allclose(results[0].final_loss, other.final_loss, rtol=1e-4)


# ----------------------------------------------------------------------------- divergence


def test_divergent_model_is_flagged_and_isolated(small_digits):
    ds = small_digits
    keep = _bernoulli_keep(4, ds.num_train)
    cfg = dataclasses.replace(SHORT, epochs=2, grad_clip=1.0)
    lrs = np.array([1e-3, 2e-3, 1e30, 1e-3], np.float32)
    with_bad = train_models(keep, ds, MLP, cfg, seed=0, learning_rates=lrs)
    assert with_bad.diverged.tolist() == [False, False, True, False]
    assert np.isnan(with_bad.final_loss[2]) and np.all(np.isfinite(with_bad.final_loss[[0, 1, 3]]))
    assert all(np.all(np.isfinite(leaf)) for leaf in _leaves(with_bad.params))  # frozen, not NaN
    good = [0, 1, 3]
    without = train_models(keep[good], ds, MLP, cfg, seed=0, model_ids=good, learning_rates=lrs[good])
    assert not without.diverged.any()
    for i, j in enumerate(good):
        assert _max_diff(_row(with_bad.params, j), _row(without.params, i)) < 1e-5


# ----------------------------------------------------------------------------- learning


def test_digits_mlp_learns(digits):
    """64-256-10 MLP, Adam, 20 epochs on the full training set: >= 95% test accuracy."""
    keep = np.ones((2, digits.num_train), bool)
    cfg = TrainConfig(epochs=20, batch_size=64, optimizer="adam", learning_rate=1e-3)
    result = train_models(keep, digits, ModelConfig(kind="mlp", width=256), cfg, seed=0)
    acc = accuracy(predict_margins(ModelConfig(kind="mlp", width=256), result.params,
                                   result.model_state, digits.x_test, digits.y_test))
    print(f"digits mlp test accuracy {acc}")
    assert np.all(acc >= 0.95), acc
    assert np.all(np.diff(result.loss_history, axis=1)[:, :5] < 0)  # loss falls early on


def test_mnist1d_cnn_learns():
    """1-D CNN (width 32, depth 3, kernel 5), AdamW 2e-2 cosine, 30 epochs: >= 90% test.

    Measured on the 2-core CPU: 94.3% test accuracy; ~4 s with a warm compilation cache,
    ~6 s cold (patches strategy). (The experiment's AdamW 3e-3 reaches only ~83-86%.)
    """
    ds = mnist1d_dataset()
    model_cfg = ModelConfig(kind="cnn", width=32, depth=3, kernel_size=5)
    cfg = TrainConfig(epochs=30, batch_size=128, optimizer="adamw", learning_rate=2e-2,
                      weight_decay=1e-4, schedule="cosine", warmup_steps=50)
    result = train_models(np.ones((1, ds.num_train), bool), ds, model_cfg, cfg, seed=0)
    acc = accuracy(predict_margins(model_cfg, result.params, result.model_state, ds.x_test, ds.y_test))
    print(f"mnist1d cnn test accuracy {acc[0]:.3f}")
    assert acc[0] >= 0.90, acc


# ----------------------------------------------------------------------------- other paths


def test_resnet_batchnorm_crop_flip_and_norm_free_run():
    ds = random_images()
    keep = _bernoulli_keep(2, ds.num_train, rate=0.8)
    cfg = TrainConfig(epochs=2, batch_size=8, augment="crop_flip", crop_padding=2,
                      optimizer="sgd", learning_rate=0.05, schedule="onecycle")
    for norm in ("batchnorm", "none"):
        model_cfg = ModelConfig(kind="resnet", width=4, depth=2, norm=norm)
        result = train_models(keep, ds, model_cfg, cfg, seed=0)
        assert result.strategy == "patches"
        assert not result.diverged.any() and np.all(np.isfinite(result.final_loss))
        if norm == "batchnorm":
            stats = _leaves(result.model_state)
            assert stats and all(leaf.shape[0] == 2 for leaf in stats)
            assert not np.array_equal(stats[0][0], stats[0][1])  # per-model statistics
        else:
            assert result.model_state == {}


def test_bfloat16_compute_trains(small_digits):
    keep = _bernoulli_keep(2, small_digits.num_train)
    cfg = dataclasses.replace(SHORT, epochs=3, compute_dtype="bfloat16", learning_rate=3e-3)
    result = train_models(keep, small_digits, MLP, cfg, seed=0)
    assert all(leaf.dtype == np.float32 for leaf in _leaves(result.params))  # master weights
    assert np.all(result.loss_history[:, -1] < result.loss_history[:, 0])


def test_crop_flip_is_a_shift_or_mirror():
    x = np.arange(2 * 4 * 4 * 1, dtype=np.float32).reshape(2, 4, 4, 1)
    flipped_only = np.asarray(crop_flip(jax.random.PRNGKey(0), x, pad=0))
    for a, b in zip(flipped_only, x):
        assert np.array_equal(a, b) or np.array_equal(a, b[:, ::-1])
    out = np.asarray(crop_flip(jax.random.PRNGKey(1), x, pad=1))
    assert out.shape == x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    for a, p in zip(out, padded):
        windows = [p[i:i + 4, j:j + 4] for i in range(3) for j in range(3)]
        assert any(np.array_equal(a, w) or np.array_equal(a, w[:, ::-1]) for w in windows)


def test_lr_factor_schedules():
    total = np.int32(100)
    at = lambda cfg, s: float(lr_factor(cfg, np.int32(s), total))  # noqa: E731
    cosine = TrainConfig(schedule="cosine", warmup_steps=10)
    assert at(cosine, 0) == pytest.approx(0.1) and at(cosine, 10) == pytest.approx(1.0)
    assert at(cosine, 99) < 0.01
    assert at(TrainConfig(schedule="linear"), 50) == pytest.approx(0.5)
    assert at(TrainConfig(schedule="constant"), 77) == 1.0
    onecycle = TrainConfig(schedule="onecycle")
    assert at(onecycle, 0) == pytest.approx(1 / 25) and at(onecycle, 30) == pytest.approx(1.0)
    assert at(onecycle, 100) == pytest.approx(0.0)


def test_choose_wave_size(small_digits):
    cfg = TrainConfig(num_models=500)
    per_model = estimate_model_bytes(MLP, cfg, small_digits)
    assert per_model > 4 * 3 * 2000  # at least params + grads + updates of ~2k params
    data = small_digits.x_train.nbytes + small_digits.y_train.nbytes
    assert choose_wave_size(MLP, cfg, small_digits, available_bytes=2 * (data + 10 * per_model)) == 10
    assert choose_wave_size(MLP, cfg, small_digits, available_bytes=1) == 1
    assert choose_wave_size(MLP, cfg, small_digits, available_bytes=10 ** 15, max_wave=1024) == 500
    # With no explicit cap, the backend's: 32 models per device on CPU (cache-sized waves).
    assert choose_wave_size(MLP, cfg, small_digits, available_bytes=10 ** 15) == 32
    assert choose_wave_size(MLP, dataclasses.replace(cfg, wave_size=7), small_digits) == 7
    assert 1 <= choose_wave_size(MLP, cfg, small_digits) <= 500
    # patches trade memory for speed: a conv model's estimate grows with the patch matrices
    lax_cfg = dataclasses.replace(cfg, strategy="vmap")
    assert estimate_model_bytes(CNN, cfg, small_digits) > estimate_model_bytes(CNN, lax_cfg, small_digits)
    # Accelerators have no constant cap: memory decides (the CPU's 32 is a cache effect).
    assert choose_wave_size(MLP, cfg, small_digits, available_bytes=10 ** 15, backend="gpu") == 500
    big = dataclasses.replace(cfg, num_models=10 ** 6)
    assert choose_wave_size(MLP, big, small_digits, available_bytes=10 ** 12, backend="gpu") > 1024


def test_model_bytes_count_activations_in_the_compute_dtype(small_digits):
    """Master weights stay float32; only the activation term halves in bfloat16."""
    def per_batch_growth(dtype):  # bytes added by 128 more examples per batch
        cfg = TrainConfig(batch_size=128, strategy="vmap", compute_dtype=dtype)
        return (estimate_model_bytes(CNN, dataclasses.replace(cfg, batch_size=256), small_digits)
                - estimate_model_bytes(CNN, cfg, small_digits))

    assert per_batch_growth("bfloat16") * 2 == per_batch_growth("float32") > 0


def test_auto_strategy_rule():
    assert resolve_strategy(MLP, TrainConfig()) == "vmap"
    assert resolve_strategy(CNN, TrainConfig(), "cpu") == "patches"
    # Measured on an H200 (benchmarks/results/gpu-2026-12-04.md): vmapped convolutions win.
    assert resolve_strategy(CNN, TrainConfig(), "gpu") == "vmap"
    assert resolve_strategy(MLP, TrainConfig(), "gpu") == "vmap"
    assert resolve_strategy(CNN, TrainConfig(), "tpu") == "patches"  # unmeasured: unchanged
    assert resolve_strategy(CNN, TrainConfig(strategy="sequential")) == "sequential"


@pytest.mark.parametrize("change,match", [
    (dict(keep=np.ones((2, 299), bool)), "keep has shape"),
    (dict(keep=np.ones((2, 300), np.int32)), "keep has dtype"),
    (dict(keep=np.vstack([np.ones(300, bool), np.zeros(300, bool)])), r"keep\[1\] selects no"),
    (dict(model_cfg=ModelConfig(kind="resnet", depth=5)), "model.depth=5"),
    (dict(model_cfg=ModelConfig(kind="cnn", depth=4)), "model.depth=4"),
    (dict(learning_rates=[1e-3]), "learning_rates has shape"),
    (dict(learning_rates=[1e-3, -1.0]), "learning_rates must be"),
    (dict(model_ids=[0, 1, 2]), "model_ids has shape"),
])
def test_bad_input_raises(small_digits, change, match):
    args = dict(keep=np.ones((2, 300), bool), dataset=small_digits, model_cfg=MLP,
                train_cfg=SHORT, seed=0)
    args.update(change)
    with pytest.raises(JmemError, match=match):
        train_models(**args)


def test_bad_input_shapes_raise():
    flat = Dataset("flat", np.zeros((8, 64), np.float32), np.zeros(8, np.int32),
                   np.zeros((2, 64), np.float32), np.zeros(2, np.int32), 2)
    with pytest.raises(JmemError, match="model.kind='cnn'"):
        train_models(np.ones((1, 8), bool), flat, CNN, SHORT, seed=0)
    with pytest.raises(JmemError, match="model.kind='resnet'"):
        train_models(np.ones((1, 8), bool), flat, ModelConfig(kind="resnet"), SHORT, seed=0)
    seq = Dataset("seq", np.zeros((8, 40, 1), np.float32), np.zeros(8, np.int32),
                  np.zeros((2, 40, 1), np.float32), np.zeros(2, np.int32), 2)
    with pytest.raises(JmemError, match="train.augment='crop_flip'"):
        train_models(np.ones((1, 8), bool), seq, CNN, dataclasses.replace(SHORT, augment="crop_flip"), seed=0)
    with pytest.raises(JmemError, match="model.kernel_size=0"):
        ModelConfig(kind="cnn", kernel_size=0)
    with pytest.raises(JmemError, match="train.crop_padding=-1"):
        TrainConfig(crop_padding=-1)


# ----------------------------------------------------------------------------- proxies


def test_recorded_proxies(small_digits):
    """Cumulative loss and learned epoch: zero off the subset, higher and later for examples
    with flipped labels; recording them does not change training."""
    ds = small_digits
    flipped = np.arange(0, ds.num_train, 10)
    y = ds.y_train.copy()
    y[flipped] = (y[flipped] + 3) % ds.num_classes
    ds = dataclasses.replace(ds, y_train=y)
    keep = _bernoulli_keep(4, ds.num_train)
    cfg = dataclasses.replace(SHORT, epochs=15, learning_rate=1e-2, strategy="vmap")
    plain = train_models(keep, ds, MLP, cfg, seed=1)
    rec = train_models(keep, ds, MLP, dataclasses.replace(cfg, record_proxies=True), seed=1)
    assert plain.cum_loss is None and plain.learned_epoch is None
    for a, b in zip(_leaves(plain.params, 0), _leaves(rec.params, 0)):
        np.testing.assert_array_equal(a, b)
    assert rec.cum_loss.shape == keep.shape and rec.learned_epoch.shape == keep.shape
    assert (rec.cum_loss[~keep] == 0).all() and (rec.learned_epoch[~keep] == 0).all()
    assert (rec.cum_loss[keep] > 0).all()
    assert rec.learned_epoch.min() >= 0 and rec.learned_epoch.max() <= cfg.epochs
    is_flipped = np.zeros(ds.num_train, bool)
    is_flipped[flipped] = True
    on = keep & is_flipped[None, :]
    off = keep & ~is_flipped[None, :]
    assert rec.cum_loss[on].mean() > 2 * rec.cum_loss[off].mean()
    assert rec.learned_epoch[on].mean() > rec.learned_epoch[off].mean() + 1
    # The epoch mean of the recorded losses is the loss history (same passes, same weights).
    seq = train_models(keep, ds, MLP, dataclasses.replace(cfg, record_proxies=True, strategy="sequential"), seed=1)
    np.testing.assert_allclose(seq.cum_loss, rec.cum_loss, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(seq.learned_epoch, rec.learned_epoch)
