"""Train many small models at once, each on its own subset of one dataset.

The unit of work is a *wave*: R models given by ``keep: bool[R, N]`` and ``model_ids: int[R]``.
The whole training of a wave is one jitted computation (``lax.scan`` over epochs, inner
``lax.scan`` over steps); the dataset lives on the device and a batch is an index gather.

**A model is a function of (seed, model id, its own keep row, configs) only.** Its init,
data-order and augmentation keys are ``rng.model_keys(seed, stream, model_ids)``; its
steps per epoch are ``ceil(n_r / batch_size)`` from *its own* subset size ``n_r``; each
epoch's order is a permutation of all N indices with the kept ones moved to the front, so
it does not depend on the padded length of the wave. Models with smaller subsets than the
largest of their wave sit idle (state unchanged) for the few leftover steps of each epoch.
Hence model 17 is the same whether it is trained alone, in a wave of 8, or by another
strategy (bitwise where XLA computes the same ops; within float tolerance otherwise).

A model never reads an example outside its subset: slots past ``n_r`` are replaced by zeros
(label 0) and masked out of the loss and of BatchNorm statistics.

Batching strategies (``TrainConfig.strategy``):

* ``"vmap"``: ``vmap`` over the models of a wave. Convolutions become grouped convolutions.
* ``"patches"``: ``vmap`` with convolutions as patches x matmul (``jmem.models.Conv``), so the
  model axis becomes a batched GEMM. Identical to ``"vmap"`` for the MLP.
* ``"sequential"``: one model at a time, each fully jitted (one compilation per wave shape).
* ``"auto"``: see :func:`resolve_strategy`.

A model whose loss (or updated parameters) becomes non-finite is marked diverged and its
parameters are frozen at their last finite value; everything is per model (clipping is per
model's own gradient norm), so one diverging model cannot affect the others of its wave.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jmem import rng
from jmem.dataset import Dataset
from jmem.errors import JmemError
from jmem.hparams import ModelConfig, TrainConfig
from jmem.models import activation_elems, apply_one, build_model, check_input, init_one, param_count

STRATEGIES = ("vmap", "patches", "sequential")


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """The outcome of training one wave of R models.

    params: flax parameter pytree, every leaf with a leading model axis R (float32).
    model_state: BatchNorm statistics with leading axis R (``{}`` for norm-free models).
    diverged: bool[R]; a diverged model's params are frozen at their last finite value.
    final_loss: float32[R], mean training loss over the model's last epoch (NaN if diverged).
    loss_history: float32[R, epochs], mean training loss per epoch (NaN from divergence on).
    steps: int32[R], optimizer steps each model took (epochs * ceil(n_r / batch_size)).
    model_ids: int64[R], the ids that determined each model's keys.
    strategy: the batching strategy actually used ("vmap", "patches" or "sequential").
    seconds: wall time of the call, compilation included.
    """

    params: Any
    model_state: Any
    diverged: np.ndarray
    final_loss: np.ndarray
    loss_history: np.ndarray
    steps: np.ndarray
    model_ids: np.ndarray
    strategy: str
    seconds: float


# ----------------------------------------------------------------------------- strategy


def resolve_strategy(model_cfg: ModelConfig, train_cfg: TrainConfig, backend: str | None = None) -> str:
    """The concrete strategy for ``train_cfg.strategy`` ("auto" resolved).

    Rule (measured on the 2-core CPU, see benchmarks/trainer_strategies.py and the README):
    MLPs use "vmap" (a batched GEMM already; "patches" is the same program). Convolutional
    models use "patches" on every backend: vmapped convolutions lower to grouped
    convolutions, measured 2-4x slower per model than a loop on CPU and a known weak spot of
    GPU backward passes, while patches x matmul under vmap was the fastest way on CPU.
    """
    del backend  # The rule does not depend on the backend yet; kept for a measured GPU rule.
    if train_cfg.strategy != "auto":
        return train_cfg.strategy
    return "vmap" if model_cfg.kind == "mlp" else "patches"


def _conv_impl(strategy: str) -> str:
    return "patches" if strategy == "patches" else "lax"


# ----------------------------------------------------------------------------- optimizer


def make_optimizer(train_cfg: TrainConfig) -> optax.GradientTransformation:
    """The optax optimizer of one model, with its learning rate injected as state.

    ``optax.inject_hyperparams`` keeps the learning rate in the optimizer state (a scalar per
    model under vmap), so each model can have its own and the schedule is applied by
    overwriting it each step. Weight decay: L2 added to the gradient for sgd/adam, decoupled
    for adamw. Gradient clipping is by the *model's own* global norm.
    """
    cfg = train_cfg

    def build(learning_rate):
        parts = []
        if cfg.grad_clip > 0:
            parts.append(optax.clip_by_global_norm(cfg.grad_clip))
        if cfg.optimizer == "adamw":
            parts.append(optax.adamw(learning_rate, weight_decay=cfg.weight_decay))
        else:
            if cfg.weight_decay > 0:
                parts.append(optax.add_decayed_weights(cfg.weight_decay))
            if cfg.optimizer == "sgd":
                parts.append(optax.sgd(learning_rate, momentum=cfg.momentum or None,
                                       nesterov=cfg.nesterov))
            else:
                parts.append(optax.adam(learning_rate))
        return optax.chain(*parts)

    return optax.inject_hyperparams(build)(learning_rate=1.0)


def lr_factor(train_cfg: TrainConfig, step: jax.Array, total: jax.Array) -> jax.Array:
    """Multiplier of the base learning rate at ``step`` (int32) of ``total`` steps: float32.

    ``total`` is per model (it depends on the model's subset size), so schedules are written
    as functions of progress instead of optax schedules with a baked-in length.
    """
    step = step.astype(jnp.float32)
    total = jnp.maximum(total.astype(jnp.float32), 1.0)
    if train_cfg.schedule == "onecycle":
        peak = float(train_cfg.warmup_steps) if train_cfg.warmup_steps else jnp.round(0.3 * total)
        peak = jnp.maximum(peak, 1.0)
        up = 1.0 / 25 + (1.0 - 1.0 / 25) * step / peak
        down = 1.0 - (step - peak) / jnp.maximum(total - peak, 1.0)
        return jnp.clip(jnp.where(step < peak, up, down), 0.0, 1.0)
    warmup = float(train_cfg.warmup_steps)
    warm = jnp.minimum((step + 1.0) / warmup, 1.0) if warmup else 1.0
    progress = jnp.clip((step - warmup) / jnp.maximum(total - warmup, 1.0), 0.0, 1.0)
    decay = {
        "constant": 1.0,
        "cosine": 0.5 * (1.0 + jnp.cos(jnp.pi * progress)),
        "linear": 1.0 - progress,
    }[train_cfg.schedule]
    return jnp.asarray(warm * decay, jnp.float32)


# ----------------------------------------------------------------------------- one model


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Everything static about a wave's computation (the jit cache key)."""

    model_cfg: ModelConfig
    train_cfg: TrainConfig
    num_classes: int
    example_shape: tuple
    steps_per_epoch: int  # S: the largest ceil(n_r / B) of the wave
    conv_impl: str


def _epoch_order(key: jax.Array, keep_row: jax.Array) -> jax.Array:
    """int32[N]: a random permutation of all N indices with the kept ones first.

    Permuting all N (not a padded list) makes the order independent of the wave's padding.
    """
    perm = jax.random.permutation(key, keep_row.shape[0])
    kept_first = jnp.argsort(~keep_row[perm], stable=True)
    return perm[kept_first].astype(jnp.int32)


def crop_flip(key: jax.Array, x: jax.Array, pad: int) -> jax.Array:
    """Random crop after zero padding by ``pad``, and random horizontal flip, per example.

    x: float32[B, H, W, C] -> float32[B, H, W, C].
    """
    b, h, w, c = x.shape
    k_crop, k_flip = jax.random.split(key)
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = jax.random.randint(k_crop, (b, 2), 0, 2 * pad + 1)
    crops = jax.vmap(lambda im, o: lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, c)))(padded, offsets)
    flip = jax.random.bernoulli(k_flip, 0.5, (b,))
    return jnp.where(flip[:, None, None, None], crops[:, :, ::-1, :], crops)


def _all_finite(tree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def _select(pred, on_true, on_false):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def _train_one(plan: _Plan, x_all, y_all, keep_row, init_key, order_key, aug_key, base_lr):
    """Train one model; pure, so ``vmap`` over its last five arguments trains a wave.

    x_all: float32[N, ...], y_all: int32[N] (shared), keep_row: bool[N], keys: uint32[2],
    base_lr: float32[]. Returns (params, state, diverged bool[], history float32[E], steps int32[]).
    """
    cfg = plan.train_cfg
    module = build_model(plan.model_cfg, plan.num_classes, plan.conv_impl, cfg.compute_dtype)
    params, state = init_one(module, init_key, plan.example_shape)
    tx = make_optimizer(cfg)
    opt_state = tx.init(params)

    n_total, bsz, n_steps = keep_row.shape[0], cfg.batch_size, plan.steps_per_epoch
    n = jnp.sum(keep_row, dtype=jnp.int32)
    own_steps = (n + bsz - 1) // bsz
    total = cfg.epochs * own_steps
    example_axes = (slice(None),) + (None,) * len(plan.example_shape)

    def loss_fn(p, s, xb, yb, valid):
        logits, _, new_s = apply_one(module, p, s, xb, train=True, mask=valid if s else None)
        targets = jax.nn.one_hot(yb, plan.num_classes)
        if cfg.label_smoothing:
            targets = optax.smooth_labels(targets, cfg.label_smoothing)
        weights = valid.astype(jnp.float32)
        per_example = optax.softmax_cross_entropy(logits, targets)
        return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1.0), new_s

    def step(carry, j, order):
        params, state, opt_state, diverged, k = carry
        active = j < own_steps
        idx = lax.dynamic_slice(order, (j * bsz,), (bsz,))
        valid = j * bsz + jnp.arange(bsz) < n
        # Zeroing (not just masking) the padded slots makes independence from excluded
        # examples structural: their values never enter the computation.
        xb = jnp.where(valid[example_axes], x_all[idx], 0.0)
        yb = jnp.where(valid, y_all[idx], 0)
        if cfg.augment == "crop_flip":
            xb = crop_flip(jax.random.fold_in(aug_key, k), xb, cfg.crop_padding)
        (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, xb, yb, valid)
        lr = base_lr * lr_factor(cfg, k, total)
        opt_state_lr = opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": lr})
        updates, new_opt_state = tx.update(grads, opt_state_lr, params)
        new_params = optax.apply_updates(params, updates)
        finite = jnp.isfinite(loss) & _all_finite(new_params)
        diverged = diverged | (active & ~finite)
        take = active & ~diverged
        carry = (_select(take, new_params, params), _select(take, new_state, state),
                 _select(take, new_opt_state, opt_state), diverged, k + active.astype(jnp.int32))
        return carry, (jnp.where(take, loss, 0.0), take)

    def epoch(carry, e):
        order = _epoch_order(jax.random.fold_in(order_key, e), keep_row)
        order = jnp.pad(order, (0, max(0, n_steps * bsz - n_total)))
        carry, (losses, taken) = lax.scan(functools.partial(step, order=order), carry,
                                          jnp.arange(n_steps))
        mean = jnp.sum(losses) / jnp.maximum(jnp.sum(taken), 1)
        return carry, jnp.where(carry[3], jnp.nan, mean)

    carry = (params, state, opt_state, jnp.zeros((), bool), jnp.zeros((), jnp.int32))
    (params, state, _, diverged, steps), history = lax.scan(epoch, carry, jnp.arange(cfg.epochs))
    return params, state, diverged, history, steps


@functools.lru_cache(maxsize=64)
def _compiled(plan: _Plan, batched: bool):
    fn = functools.partial(_train_one, plan)
    if batched:
        fn = jax.vmap(fn, in_axes=(None, None, 0, 0, 0, 0, 0))
    return jax.jit(fn)


# ----------------------------------------------------------------------------- public entry


def _validate(keep, dataset, model_cfg, train_cfg, model_ids, learning_rates):
    keep = np.asarray(keep)
    if keep.dtype != bool:
        raise JmemError(f"keep has dtype {keep.dtype}; need bool[R, N]")
    if keep.ndim != 2 or keep.shape[1] != dataset.num_train:
        raise JmemError(f"keep has shape {keep.shape}; need [R, {dataset.num_train}] "
                        f"for dataset {dataset.name!r}")
    num_models = keep.shape[0]
    if num_models < 1:
        raise JmemError("keep has 0 rows; need at least one model")
    empty = np.flatnonzero(keep.sum(axis=1) == 0)
    if empty.size:
        raise JmemError(f"keep[{int(empty[0])}] selects no training example")
    check_input(model_cfg, dataset.example_shape)
    if train_cfg.augment == "crop_flip" and len(dataset.example_shape) != 3:
        raise JmemError(f"train.augment='crop_flip' needs [H, W, C] images; dataset "
                        f"{dataset.name!r} has example shape {dataset.example_shape}")
    ids = np.arange(num_models) if model_ids is None else np.asarray(model_ids)
    if ids.shape != (num_models,) or not np.issubdtype(ids.dtype, np.integer):
        raise JmemError(f"model_ids has shape {ids.shape} and dtype {ids.dtype}; need int[{num_models}]")
    if ids.size and (ids.min() < 0 or ids.max() >= 2 ** 32):
        raise JmemError(f"model_ids must be in [0, 2**32); got range [{ids.min()}, {ids.max()}]")
    if learning_rates is None:
        lrs = np.full(num_models, train_cfg.learning_rate, np.float32)
    else:
        lrs = np.asarray(learning_rates, np.float32)
        if lrs.shape != (num_models,):
            raise JmemError(f"learning_rates has shape {lrs.shape}; need [{num_models}]")
        if not np.all(np.isfinite(lrs) & (lrs > 0)):
            raise JmemError(f"learning_rates must be finite and > 0; got {lrs[~(np.isfinite(lrs) & (lrs > 0))][:3]}")
    return keep, ids.astype(np.int64), lrs


def _cache_key_cfg(train_cfg: TrainConfig) -> TrainConfig:
    """TrainConfig with the fields that do not enter the traced program normalised away,
    so waves with other learning rates / sizes reuse one compilation."""
    return dataclasses.replace(train_cfg, num_models=1, wave_size=0, strategy="auto",
                               learning_rate=1.0)


def train_models(keep, dataset: Dataset, model_cfg: ModelConfig, train_cfg: TrainConfig,
                 seed: int, model_ids=None, learning_rates=None) -> TrainResult:
    """Train R models, model r on the training examples where ``keep[r]`` is True.

    keep: bool[R, N] with N = dataset.num_train; every row must select >= 1 example.
    seed: the run's root seed (``jmem.rng``).
    model_ids: int[R], default ``arange(R)``: with ``seed`` they fully determine each model's
      init / data order / augmentation, so a runner can train any partition into waves.
    learning_rates: float32[R] or None (all ``train_cfg.learning_rate``): per-model base rate.

    All R models are one wave: split larger runs with :func:`choose_wave_size`.
    Returns a :class:`TrainResult` with host-side numpy summaries and device-side params.
    """
    start = time.perf_counter()
    keep, ids, lrs = _validate(keep, dataset, model_cfg, train_cfg, model_ids, learning_rates)
    strategy = resolve_strategy(model_cfg, train_cfg)
    bsz = train_cfg.batch_size
    plan = _Plan(model_cfg, _cache_key_cfg(train_cfg), dataset.num_classes,
                 tuple(dataset.example_shape), int(-(-keep.sum(axis=1).max() // bsz)),
                 _conv_impl(strategy))
    x_all = jnp.asarray(dataset.x_train, jnp.float32)
    y_all = jnp.asarray(dataset.y_train, jnp.int32)
    per_model = (jnp.asarray(keep), rng.model_keys(seed, "init", ids),
                 rng.model_keys(seed, "data_order", ids), rng.model_keys(seed, "augment", ids),
                 jnp.asarray(lrs))
    if strategy == "sequential":
        fn = _compiled(plan, batched=False)
        outs = [fn(x_all, y_all, *(a[r] for a in per_model)) for r in range(len(ids))]
        params, state, diverged, history, steps = jax.tree_util.tree_map(
            lambda *leaves: jnp.stack(leaves), *outs)
    else:
        params, state, diverged, history, steps = _compiled(plan, batched=True)(x_all, y_all, *per_model)
    diverged = np.asarray(diverged)
    history = np.asarray(history, np.float32)
    return TrainResult(
        params=params, model_state=state, diverged=diverged,
        final_loss=np.where(diverged, np.nan, history[:, -1]).astype(np.float32),
        loss_history=history, steps=np.asarray(steps, np.int32), model_ids=ids,
        strategy=strategy, seconds=time.perf_counter() - start)


# ----------------------------------------------------------------------------- waves


def estimate_model_bytes(model_cfg: ModelConfig, train_cfg: TrainConfig, dataset: Dataset) -> int:
    """Rough device bytes one model of a wave needs during training.

    params + gradients + updated copies (x3) + optimizer slots, each float32; activations of
    one batch x 3 (forward values kept for the backward pass, their gradients, temporaries);
    the per-epoch order (int32[N]) and its sort temporaries.
    """
    check_input(model_cfg, dataset.example_shape)
    strategy = resolve_strategy(model_cfg, train_cfg)
    n_params = param_count(model_cfg, dataset.num_classes, dataset.example_shape)
    slots = {"sgd": 1 if train_cfg.momentum else 0, "adam": 2, "adamw": 2}[train_cfg.optimizer]
    param_bytes = 4 * n_params * (3 + 2 * slots)
    act = activation_elems(model_cfg, dataset.num_classes, dataset.example_shape, _conv_impl(strategy))
    act_bytes = 4 * 3 * train_cfg.batch_size * (act + math.prod(dataset.example_shape))
    order_bytes = 4 * 4 * dataset.num_train
    return int(param_bytes + act_bytes + order_bytes)


def available_device_bytes() -> int:
    """Free bytes on the default device (its memory stats), else free host memory."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - backends without stats raise various errors
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def choose_wave_size(model_cfg: ModelConfig, train_cfg: TrainConfig, dataset: Dataset,
                     available_bytes: int | None = None, headroom: float = 0.5,
                     max_wave: int = 1024) -> int:
    """Models to train at once: ``train_cfg.wave_size`` if > 0, else what fits in memory.

    Uses ``headroom`` of the available bytes (``available_device_bytes()`` by default) after
    the dataset itself, divided by :func:`estimate_model_bytes`; capped by
    ``train_cfg.num_models`` and ``max_wave`` (larger waves gain nothing on these models and
    make waves coarse). Always >= 1.
    """
    if train_cfg.wave_size > 0:
        return min(train_cfg.wave_size, train_cfg.num_models)
    if available_bytes is None:
        available_bytes = available_device_bytes()
    data_bytes = dataset.x_train.nbytes + dataset.y_train.nbytes
    budget = headroom * available_bytes - data_bytes
    per_model = estimate_model_bytes(model_cfg, train_cfg, dataset)
    fits = int(budget // per_model) if budget > 0 else 1
    return max(1, min(fits, train_cfg.num_models, max_wave))
