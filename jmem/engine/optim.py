"""The optimizer of one model and its learning-rate schedule (a function of progress)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jmem.engine.hparams import TrainConfig


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
