"""Train many small models at once, each on its own subset of one dataset.

The unit of work is a *wave*: R models given by ``keep: bool[R, N]`` and ``model_ids: int[R]``.
Training a wave is one jitted computation (``lax.fori_loop`` over epochs, inner ``lax.scan``
over steps); the dataset lives on the device and a batch is an index gather. The epoch
bounds are traced arguments, so a wave can be trained in segments (to checkpoint between
them, see ``jmem.study.waves``) by one compiled program, with bitwise the same result as in one
call: :func:`prepare_wave`, :func:`init_state`, :func:`train_epochs`, :func:`finish`.

Several devices: the model axis of a wave is sharded over them with ``jax.shard_map`` (the
dataset replicated on each, see ``jmem.engine.parallel``); the program has no collectives.

**A model is a function of (seed, model id, its own keep row, configs) only.** Its init,
data-order and augmentation keys are ``rng.model_keys(seed, stream, model_ids)``; its
steps per epoch are ``ceil(n_r / batch_size)`` from *its own* subset size ``n_r``; each
epoch's order is its kept indices in random order followed by the excluded ones (one stable
sort of all N by a random key with the "excluded" bit on top, see :func:`epoch_order`), so
it does not depend on the padded length of the wave. In a vmapped block, models with
smaller subsets than the largest of their block sit idle (state unchanged) for the few
leftover steps of each epoch; one model at a time, they simply stop. Hence model 17 is the
same whether it is trained alone, in a wave of 8, or by another strategy or layout (bitwise
where XLA computes the same ops; within float tolerance otherwise).

A model never reads an example outside its subset: slots past ``n_r`` are replaced by zeros
(label 0) and masked out of the loss and of BatchNorm statistics.

Batching strategies (``TrainConfig.strategy``):

* ``"vmap"``: ``vmap`` over the models of a wave. Convolutions become grouped convolutions.
* ``"patches"``: ``vmap`` with convolutions as patches x matmul (``jmem.engine.models.Conv``), so the
  model axis becomes a batched GEMM. Identical to ``"vmap"`` for the MLP.
* ``"sequential"``: one model at a time, each fully jitted (one compilation per wave shape);
  with several devices, model r runs on device ``r % D`` (dispatched without waiting).
* ``"auto"``: see :func:`resolve_strategy`.

Layout of the batched strategies on a device (``chunk``, :func:`resolve_chunk`): the device's
block of models is split into chunks of ``chunk`` models, each chunk one ``vmap``, the chunks
run one after another by ``lax.map`` inside the same program (``chunk`` = 1: one model at a
time, unbatched; 0: the whole block one ``vmap``). On XLA:CPU one model at a time is the
fastest for the MLP; accelerators want the whole block.

A model whose loss (or updated parameters) becomes non-finite during an epoch is marked
diverged at the end of that epoch and its state is reset to its value at the start of that
epoch (its last state checked finite), and stays frozen there; everything is per model
(clipping is per model's own gradient norm), so one diverging model cannot affect the
others of its wave. (Checked per epoch, not per step: see :func:`_epochs_one`.)
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jmem.engine import parallel
from jmem import rng
from jmem.data.dataset import Dataset
from jmem.errors import JmemError
from jmem.engine.hparams import ModelConfig, TrainConfig
from jmem.engine.models import apply_one, build_model, check_input, init_one
from jmem.engine.optim import lr_factor, make_optimizer
from jmem.engine.batches import crop_flip, epoch_order, steps_per_epoch
from jmem.engine.strategy import conv_impl, resolve_chunk, resolve_strategy

@dataclasses.dataclass(frozen=True)
class TrainResult:
    """The outcome of training one wave of R models.

    params: flax parameter pytree, every leaf with a leading model axis R (float32).
    model_state: BatchNorm statistics with leading axis R (``{}`` for norm-free models).
    diverged: bool[R]; a diverged model's params are frozen at their value at the start of
      the epoch in which it diverged (its last state checked finite).
    final_loss: float32[R], mean training loss over the model's last epoch (NaN if diverged).
    loss_history: float32[R, epochs], mean training loss per epoch (NaN from divergence on).
    steps: int32[R], optimizer steps each model took (epochs * ceil(n_r / batch_size)).
    model_ids: int64[R], the ids that determined each model's keys.
    strategy: the batching strategy actually used ("vmap", "patches" or "sequential").
    seconds: wall time of the call, compilation included.
    cum_loss: float32[R, N] or None: with ``train.record_proxies``, each model's summed
      training loss on each example (0 where it never trained on it; see :class:`TrainState`).
    learned_epoch: int32[R, N] or None: the epoch from which the model classified the
      example correctly in every later training pass (0: from the first; ``epochs``: still
      wrong in the last), meaningful where the model trained on the example.
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
    cum_loss: np.ndarray | None = None
    learned_epoch: np.ndarray | None = None


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
    min_steps: int = 0  # the smallest ceil(n_r / B) of the wave: steps every model takes
    chunk: int = 0  # models vectorised together on a device (0: all of its block)
    num_train: int = 0  # N, the length of the proxies' per-example arrays


def _all_finite(tree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def _select(pred, on_true, on_false):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


class TrainState(NamedTuple):
    """In-flight training state of one model (of a wave: every leaf leads with the model axis).

    params / model_state / opt_state: the flax parameters, BatchNorm statistics (``{}`` for
      norm-free models) and the optax state (learning rate injected), all float32 or int32.
    diverged: bool[]; steps: int32[], optimizer steps taken so far;
    history: float32[E], mean training loss per epoch (NaN for epochs not yet run, and from
      divergence on).
    proxies: ``{}``, or with ``train.record_proxies`` the two cheap memorization proxies of
      every example, from the model's own training passes (train-mode forward, before each
      update): ``cum_loss`` float32[N], the summed training loss on the example over all its
      steps (cumulative sample loss, Ravikumar et al., ICML 2025), and ``last_wrong`` int32[N],
      one plus the last epoch in which the example was misclassified (0: never), i.e. the
      epoch from which it stays learned. Examples the model never trains on keep 0.

    Together with the epoch counter of its wave this is everything training needs to go on:
    the data-order and augmentation keys are recomputed from (seed, model id, epoch, steps).
    """

    params: Any
    model_state: Any
    opt_state: Any
    diverged: jax.Array
    steps: jax.Array
    history: jax.Array
    proxies: Any = None


def _init_proxies(plan: _Plan, n_total: int) -> dict:
    if not plan.train_cfg.record_proxies:
        return {}
    return {"cum_loss": jnp.zeros((n_total,), jnp.float32), "last_wrong": jnp.zeros((n_total,), jnp.int32)}


def _init_one(plan: _Plan, init_key) -> TrainState:
    """The state of one model before its first step. init_key: uint32[2]."""
    module = build_model(plan.model_cfg, plan.num_classes, plan.conv_impl, plan.train_cfg.compute_dtype)
    params, state = init_one(module, init_key, plan.example_shape)
    opt_state = make_optimizer(plan.train_cfg).init(params)
    history = jnp.full((plan.train_cfg.epochs,), jnp.nan, jnp.float32)
    return TrainState(params, state, opt_state, jnp.zeros((), bool), jnp.zeros((), jnp.int32), history,
                      _init_proxies(plan, plan.num_train))


def _epochs_one(plan: _Plan, batched: bool, x_all, y_all, keep_row, order_key, aug_key, base_lr,
                carry: TrainState, e_start, e_stop) -> TrainState:
    """Train one model from epoch ``e_start`` to ``e_stop`` (exclusive); pure.

    x_all: float32[N, ...], y_all: int32[N] (shared), keep_row: bool[N], keys: uint32[2],
    base_lr: float32[], e_start / e_stop: int32[] (traced, so every segment of a run uses one
    compiled program: a run cut into k segments executes exactly the same arithmetic as one
    segment, hence bitwise-identical results).

    ``batched``: the function will be ``vmap``-ed with other models, so its loops must have
    the same length for all of them: each epoch runs the wave's ``plan.steps_per_epoch``
    steps, and steps past the model's own count leave its state unchanged (a select, only on
    the ``plan.min_steps``.. steps where some model of the wave is idle). Unbatched (one model
    at a time, ``lax.map``), the epoch loop runs exactly the model's own steps. Both take
    the same steps on the same batches.

    Divergence is checked once per epoch, not per step (a per-step check over every
    parameter, and per-step selects over the whole state, cost ~20% of a digits-MLP step):
    the epoch starts from a copy of the state; if its loss or its updated parameters are
    non-finite at the end, the model is marked diverged and the copy (its last finite state)
    is kept, and every later epoch's result is discarded the same way.
    """
    cfg = plan.train_cfg
    module = build_model(plan.model_cfg, plan.num_classes, plan.conv_impl, cfg.compute_dtype)
    tx = make_optimizer(cfg)

    n_total, bsz, n_steps = keep_row.shape[0], cfg.batch_size, plan.steps_per_epoch
    coupled = cfg.data_order == "coupled"
    # n: the positions this model's epochs run over (coupled: all N, its excluded ones masked).
    n = jnp.int32(n_total) if coupled else jnp.sum(keep_row, dtype=jnp.int32)
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
        wrong = jnp.argmax(logits, axis=-1) != yb
        mean = jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1.0)
        return mean, (new_s, per_example, wrong)

    def record(prox, idx, valid, per_example, wrong, e):
        """Scatter one batch's losses and mistakes into the model's proxies (valid slots only;
        the indices of a batch are distinct, padding aside, which ``valid`` masks)."""
        if not prox:
            return prox
        loss = jnp.where(valid, per_example, 0.0)
        last = jnp.where(valid & wrong, e + 1, 0).astype(jnp.int32)
        return {"cum_loss": prox["cum_loss"].at[idx].add(loss),
                "last_wrong": prox["last_wrong"].at[idx].max(last)}

    def step(j, carry, order, guard, e):
        params, state, opt_state, k, loss_sum, prox = carry
        idx = lax.dynamic_slice(order, (j * bsz,), (bsz,))
        valid = j * bsz + jnp.arange(bsz) < n
        if coupled:
            valid &= keep_row[idx]
        # Zeroing (not just masking) the padded slots makes independence from excluded
        # examples structural: their values never enter the computation.
        xb = jnp.where(valid[example_axes], x_all[idx], 0.0)
        yb = jnp.where(valid, y_all[idx], 0)
        if cfg.augment == "crop_flip":
            xb = crop_flip(jax.random.fold_in(aug_key, k), xb, cfg.crop_padding)
        (loss, (new_state, per_example, wrong)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, state, xb, yb, valid)
        new_prox = record(prox, idx, valid, per_example, wrong, e)
        lr = base_lr * lr_factor(cfg, k, total)
        opt_state_lr = opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": lr})
        updates, new_opt_state = tx.update(grads, opt_state_lr, params)
        new_params = optax.apply_updates(params, updates)
        if not guard:
            return new_params, new_state, new_opt_state, k + 1, loss_sum + loss, new_prox
        active = j < own_steps  # idle steps of a model with fewer steps than the wave's longest
        # (an idle step's slots are all past n, so ``valid`` already kept it out of the proxies)
        return (_select(active, new_params, params), _select(active, new_state, state),
                _select(active, new_opt_state, opt_state), k + active.astype(jnp.int32),
                loss_sum + jnp.where(active, loss, 0.0), new_prox)

    def epoch(e, ts: TrainState) -> TrainState:
        order = epoch_order(jax.random.fold_in(order_key, e), keep_row, coupled)
        order = jnp.pad(order, (0, max(0, n_steps * bsz - n_total)))
        # base_lr * 0 (finite by validation), not a constant: under shard_map the loss sum
        # must be typed as varying over the model axis like the rest of the carry.
        inner = (ts.params, ts.model_state, ts.opt_state, ts.steps, base_lr * 0.0, ts.proxies)
        plain = functools.partial(step, order=order, guard=False, e=e)
        if batched:
            inner = lax.fori_loop(0, plan.min_steps, plain, inner)
            if plan.min_steps < n_steps:
                inner = lax.fori_loop(plan.min_steps, n_steps,
                                      functools.partial(step, order=order, guard=True, e=e), inner)
        else:
            inner = lax.fori_loop(0, own_steps, plain, inner)
        params, state, opt_state, steps, loss_sum, proxies = inner
        finite = jnp.isfinite(loss_sum) & _all_finite(params)
        keep_new = finite & ~ts.diverged
        params, state, opt_state = _select(keep_new, (params, state, opt_state),
                                           (ts.params, ts.model_state, ts.opt_state))
        diverged = ts.diverged | ~finite
        mean = loss_sum / jnp.maximum(own_steps, 1).astype(jnp.float32)
        history = lax.dynamic_update_index_in_dim(ts.history, jnp.where(diverged, jnp.nan, mean), e, 0)
        return TrainState(params, state, opt_state, diverged, steps, history, proxies)

    return lax.fori_loop(e_start, e_stop, epoch, carry)


def _over_models(fn, chunk: int, num_shared: int):
    """A batched version of ``fn(*shared, *per_model, *rest)`` over the leading axis of the
    ``per_model`` arguments (the first ``num_shared`` arguments are shared, the last two are
    the epoch bounds): ``lax.map`` over blocks of ``chunk`` models, each block a ``vmap``
    (``chunk`` == 1: one model at a time, unbatched; ``chunk`` == 0 or >= the block: one vmap).

    The layout is a matter of speed only: every model computes the same function.
    """
    def batched(*args):
        shared, per_model, rest = args[:num_shared], args[num_shared:-2], args[-2:]
        width = jax.tree_util.tree_leaves(per_model)[0].shape[0]
        if chunk == 1:
            return lax.map(lambda p: fn(False, *shared, *p, *rest), per_model)
        vec = jax.vmap(lambda *p: fn(True, *shared, *p, *rest))
        if not chunk or chunk >= width:
            return vec(*per_model)
        blocks = jax.tree_util.tree_map(lambda a: a.reshape((width // chunk, chunk) + a.shape[1:]), per_model)
        out = lax.map(lambda p: vec(*p), blocks)
        return jax.tree_util.tree_map(lambda a: a.reshape((width,) + a.shape[2:]), out)

    return batched


@functools.lru_cache(maxsize=64)
def _compiled_init(plan: _Plan, mesh):
    """init_keys uint32[R, 2] -> TrainState[R]; one model (no model axis) when mesh is None."""
    fn = functools.partial(_init_one, plan)
    if mesh is None:
        return jax.jit(fn)
    return jax.jit(parallel.shard_over_models(jax.vmap(fn), mesh, num_shared=0, num_per_model=1))


@functools.lru_cache(maxsize=64)
def _compiled_epochs(plan: _Plan, mesh):
    """(x, y, keep, order_keys, aug_keys, lrs, state, e_start, e_stop) -> state.

    With a mesh: ``jit(shard_map(over_models(_epochs_one)))``, the dataset replicated, every
    per-model argument and the state split over the model axis, the epoch bounds passed
    whole; on each device the block of models is laid out as ``plan.chunk`` says (see
    :func:`_over_models`). The incoming state is donated (its buffers become the outgoing
    state's), so a checkpoint must hold a host copy, never the device arrays themselves.
    """
    fn = functools.partial(_epochs_one, plan)
    if mesh is None:
        return jax.jit(functools.partial(fn, False))
    fn = _over_models(fn, plan.chunk, num_shared=2)
    fn = parallel.shard_over_models(fn, mesh, num_shared=2, num_per_model=5, num_replicated=2)
    return jax.jit(fn, donate_argnums=(6,))


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


@dataclasses.dataclass(frozen=True)
class Wave:
    """One wave, ready to train: its static plan and its inputs, placed on the devices.

    model_ids: int64[W], the real models; ``num_padded`` >= W rows are trained (dummies, copies
    of model 0, fill the wave to a multiple of the device count and are dropped).
    inputs: (keep bool[Wp, N], init_keys, order_keys, aug_keys uint32[Wp, 2], lrs float32[Wp]),
    split over ``mesh`` (batched strategies) or on the host ("sequential").
    data: (x float32[N, ...], y int32[N]) replicated on the mesh, or one copy per device.
    """

    plan: _Plan
    strategy: str
    devices: tuple
    mesh: Any
    model_ids: np.ndarray
    num_padded: int
    inputs: tuple
    data: Any
    started: float

    @property
    def num_models(self) -> int:
        return int(self.model_ids.shape[0])

    @property
    def epochs(self) -> int:
        return self.plan.train_cfg.epochs


def prepare_wave(keep, dataset: Dataset, model_cfg: ModelConfig, train_cfg: TrainConfig,
                 seed: int, model_ids=None, learning_rates=None, devices=None,
                 chunk: int | None = None) -> Wave:
    """Validate a wave's inputs and place them on ``devices`` (default: all local devices).

    Arguments as for :func:`train_models`. Batched strategies shard the model axis over the
    devices (a wave of W models is padded to a multiple of their number; with fewer models
    than devices only the first W devices are used); "sequential" trains model r on device
    ``r % len(devices)``.
    """
    started = time.perf_counter()
    keep, ids, lrs = _validate(keep, dataset, model_cfg, train_cfg, model_ids, learning_rates)
    devices = tuple(parallel.local_devices() if devices is None else devices)
    strategy = resolve_strategy(model_cfg, train_cfg, devices[0].platform)
    num_models = len(ids)
    devices = devices[:num_models] if strategy != "sequential" else devices
    own_steps = steps_per_epoch(keep, train_cfg)
    padded = parallel.padded_size(num_models, len(devices))
    block = padded // len(devices)
    if chunk is None:
        chunk = resolve_chunk(model_cfg, train_cfg, devices[0].platform)
    plan = _Plan(model_cfg, _cache_key_cfg(train_cfg), dataset.num_classes,
                 tuple(dataset.example_shape), int(own_steps.max()), conv_impl(strategy),
                 min_steps=int(own_steps.min()), chunk=_divisor_at_most(block, chunk),
                 num_train=int(dataset.num_train) if train_cfg.record_proxies else 0)
    x_all = np.asarray(dataset.x_train, np.float32)
    y_all = np.asarray(dataset.y_train, np.int32)
    inputs = (keep, np.asarray(rng.model_keys(seed, "init", ids)),
              np.asarray(rng.model_keys(seed, "data_order", ids)),
              np.asarray(rng.model_keys(seed, "augment", ids)), lrs)
    if strategy == "sequential":
        data = {d: jax.device_put((x_all, y_all), d) for d in devices}
        return Wave(plan, strategy, devices, None, ids, num_models, inputs, data, started)
    mesh = parallel.model_mesh(devices)
    inputs = parallel.put_models(tuple(parallel.pad_models(a, padded) for a in inputs), mesh)
    data = parallel.put_replicated((x_all, y_all), mesh)
    return Wave(plan, strategy, devices, mesh, ids, padded, inputs, data, started)


def _divisor_at_most(block: int, chunk: int) -> int:
    """The largest divisor of ``block`` that is <= ``chunk`` (``chunk`` 0: ``block``), so a
    device's block of models splits into equal chunks without extra dummy models."""
    if chunk <= 0 or chunk >= block:
        return block
    return max(c for c in range(1, chunk + 1) if block % c == 0)


def init_state(wave: Wave) -> TrainState:
    """Every model's state before its first step (device arrays; host arrays if sequential)."""
    keys = wave.inputs[1]
    if wave.mesh is not None:
        return _compiled_init(wave.plan, wave.mesh)(keys)
    fn = _compiled_init(wave.plan, None)
    outs = [fn(jax.device_put(keys[r], _device_of(wave, r))) for r in range(wave.num_models)]
    return _stack_on_host(outs)


def train_epochs(wave: Wave, state: TrainState, start: int, stop: int) -> TrainState:
    """Advance every model of ``wave`` from epoch ``start`` to ``stop``; returns the new state.

    Dispatch is asynchronous: the result may still be computing (``jax.block_until_ready``).
    The incoming state's device buffers are donated: do not use ``state`` afterwards.
    """
    if not 0 <= start <= stop <= wave.epochs:
        raise JmemError(f"epochs [{start}, {stop}) are outside [0, train.epochs={wave.epochs}]")
    bounds = (np.int32(start), np.int32(stop))
    if wave.mesh is not None:
        x_all, y_all = wave.data
        keep, _, order_keys, aug_keys, lrs = wave.inputs
        return _compiled_epochs(wave.plan, wave.mesh)(x_all, y_all, keep, order_keys, aug_keys,
                                                      lrs, state, *bounds)
    fn = _compiled_epochs(wave.plan, None)
    outs = []
    for r in range(wave.num_models):  # dispatched without waiting: devices run concurrently
        device = _device_of(wave, r)
        keep, _, order_key, aug_key, lr = jax.device_put(tuple(a[r] for a in wave.inputs), device)
        row = jax.device_put(jax.tree_util.tree_map(lambda leaf: leaf[r], state), device)
        outs.append(fn(*wave.data[device], keep, order_key, aug_key, lr, row, *bounds))
    return _stack_on_host(outs)


def _device_of(wave: Wave, r: int):
    return wave.devices[r % len(wave.devices)]


def _stack_on_host(states: list) -> TrainState:
    return jax.tree_util.tree_map(lambda *leaves: np.stack([np.asarray(x) for x in leaves]), *states)


def state_to_host(wave: Wave, state: TrainState) -> TrainState:
    """A host copy (numpy) of the real models' rows of ``state``: safe to keep while the
    device buffers are donated to the next segment (e.g. by an asynchronous checkpoint)."""
    return jax.tree_util.tree_map(lambda leaf: np.array(np.asarray(leaf)[:wave.num_models]), state)


def state_from_host(wave: Wave, host_state: TrainState) -> TrainState:
    """The inverse of :func:`state_to_host`: pad with dummies and place on the devices."""
    if wave.mesh is None:
        return jax.tree_util.tree_map(np.asarray, host_state)
    padded = jax.tree_util.tree_map(lambda leaf: parallel.pad_models(leaf, wave.num_padded), host_state)
    return parallel.put_models(padded, wave.mesh)


def abstract_state(wave: Wave) -> TrainState:
    """Shapes and dtypes of :func:`state_to_host`'s result (jax.ShapeDtypeStruct leaves)."""
    keys = jax.ShapeDtypeStruct((wave.num_models, 2), jnp.uint32)
    return jax.eval_shape(jax.vmap(functools.partial(_init_one, wave.plan)), keys)


def finish(wave: Wave, state: TrainState) -> TrainResult:
    """The :class:`TrainResult` of a fully trained wave (dummy models dropped)."""
    host = jax.tree_util.tree_map(lambda leaf: np.asarray(leaf)[:wave.num_models],
                                  (state.diverged, state.history, state.steps))
    diverged, history, steps = host
    params, model_state = jax.tree_util.tree_map(
        lambda leaf: leaf[:wave.num_models] if leaf.shape[0] != wave.num_models else leaf,
        (state.params, state.model_state))
    proxies = {name: np.asarray(leaf)[:wave.num_models] for name, leaf in (state.proxies or {}).items()}
    return TrainResult(
        params=params, model_state=model_state, diverged=np.asarray(diverged, bool),
        final_loss=np.where(diverged, np.nan, history[:, -1]).astype(np.float32),
        loss_history=np.asarray(history, np.float32), steps=np.asarray(steps, np.int32),
        model_ids=wave.model_ids, strategy=wave.strategy,
        seconds=time.perf_counter() - wave.started,
        cum_loss=proxies.get("cum_loss"), learned_epoch=proxies.get("last_wrong"))


def segment_program(wave: Wave):
    """The compiled training program of one segment of ``wave`` (a ``jax.stages.Compiled``):
    ``.as_text()`` is its HLO, ``.memory_analysis()`` its device memory (arguments, outputs,
    temporaries). Compiles once more unless JAX's persistent compilation cache holds it."""
    if wave.mesh is None:
        raise JmemError("strategy='sequential' has no sharded program to inspect")
    x_all, y_all = wave.data
    keep, init_keys, order_keys, aug_keys, lrs = wave.inputs
    state = _compiled_init(wave.plan, wave.mesh)(init_keys)
    lowered = _compiled_epochs(wave.plan, wave.mesh).lower(
        x_all, y_all, keep, order_keys, aug_keys, lrs, state, np.int32(0), np.int32(1))
    return lowered.compile()


def segment_hlo(wave: Wave) -> str:
    """Compiled HLO text of the wave's training program (to check it has no collectives)."""
    return segment_program(wave).as_text()


def train_models(keep, dataset: Dataset, model_cfg: ModelConfig, train_cfg: TrainConfig,
                 seed: int, model_ids=None, learning_rates=None, devices=None,
                 chunk: int | None = None) -> TrainResult:
    """Train R models, model r on the training examples where ``keep[r]`` is True.

    keep: bool[R, N] with N = dataset.num_train; every row must select >= 1 example.
    seed: the run's root seed (``jmem.rng``).
    model_ids: int[R], default ``arange(R)``: with ``seed`` they fully determine each model's
      init / data order / augmentation, so a runner can train any partition into waves.
    learning_rates: float32[R] or None (all ``train_cfg.learning_rate``): per-model base rate.
    devices: the devices to shard the model axis over (default: all of this process's).
    chunk: batched strategies only: models vectorised together on a device, the rest of its
      block run one chunk after another inside the same program (1: one model at a time;
      0: the whole block in one ``vmap``; None: :func:`resolve_chunk`). Speed only: results
      agree within float rounding whatever the chunk.

    All R models are one wave: split larger runs with :func:`choose_wave_size`; to train a
    wave in segments (checkpoints), use :func:`prepare_wave` / :func:`init_state` /
    :func:`train_epochs` / :func:`finish`, which this function composes.
    Returns a :class:`TrainResult` with host-side numpy summaries and device-side params.
    """
    wave = prepare_wave(keep, dataset, model_cfg, train_cfg, seed, model_ids, learning_rates, devices,
                        chunk)
    state = train_epochs(wave, init_state(wave), 0, wave.epochs)
    return finish(wave, state)
