"""Peer baselines, each training one model at a time or as a hand-written ensemble: the
Feldman & Zhang-style loop, a lean jitted scan, and PyTorch (optional)."""

from __future__ import annotations

import dataclasses
import importlib
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jmem.engine.hparams import hidden_widths
from jmem.engine.models import build_model, init_one
from jmem.bench.workloads import SEED, Workload

BASELINES = ("fz_loop", "jax_scan", "torch_loop", "torch_vmap", "torch_bmm")
# Which peer each target in the issue is stated against (see benchmarks/RESULTS.md).
BASELINE_NAMES = {
    "fz_loop": "(a) F&Z style: Python loop over a jitted step",
    "jax_scan": "(b) one model at a time, whole loop jitted",
    "torch_loop": "(c) PyTorch, one model at a time",
    "torch_vmap": "(c) PyTorch torch.func vmap ensemble",
    "torch_bmm": "(c) PyTorch stacked-weight baddbmm ensemble",
}

# ============================================================================ JAX baselines


def epoch_orders(keep: np.ndarray, epochs: int, seed: int = SEED) -> np.ndarray:
    """int64[R, epochs, n]: each model's kept indices, shuffled afresh each epoch (host-side,
    as a practitioner's data loader does). Assumes every row keeps the same number n."""
    rs = np.random.RandomState(seed)
    kept = [np.flatnonzero(row) for row in keep]
    return np.stack([np.stack([rs.permutation(k) for _ in range(epochs)]) for k in kept])


def _loss(module, params, x, y, weights):
    logits = module.apply({"params": params}, x)[0]
    per_example = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def _plain_model(work: Workload):
    """The workload's flax module in a baseline's hands. BatchNorm would need mutable state in
    every baseline; the baselines drop it (norm="none": SkipInit ResNet), stated in the JSON."""
    cfg = dataclasses.replace(work.model_cfg, norm="none")
    impl = "lax"
    return build_model(cfg, work.dataset.num_classes, impl, work.train_cfg.compute_dtype)


def baseline_optimizer(train_cfg) -> optax.GradientTransformation:
    """The plain optax optimizer a practitioner writes for the recipe: SGD (with momentum,
    Nesterov) for ``optimizer="sgd"``, else Adam; constant learning rate."""
    if train_cfg.optimizer == "sgd":
        return optax.sgd(train_cfg.learning_rate, momentum=train_cfg.momentum or None,
                         nesterov=train_cfg.nesterov)
    return optax.adam(train_cfg.learning_rate)


def fz_loop_runner(work: Workload, keep: np.ndarray):
    """Baseline (a): one model at a time, a Python loop over a jitted optimizer step (Adam, or
    SGD for an SGD recipe), batches sliced from host arrays (Feldman & Zhang's MNIST example
    style; the last, smaller batch of an epoch compiles once more)."""
    module = _plain_model(work)
    tx = baseline_optimizer(work.train_cfg)
    bsz, epochs = work.train_cfg.batch_size, work.train_cfg.epochs
    x, y = work.dataset.x_train, work.dataset.y_train

    @jax.jit
    def step(params, opt_state, xb, yb):
        grads = jax.grad(lambda p: _loss(module, p, xb, yb, jnp.ones(yb.shape[0])))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def run():
        orders = epoch_orders(keep, epochs)
        for r in range(keep.shape[0]):
            params, _ = init_one(module, jax.random.fold_in(jax.random.PRNGKey(SEED), r),
                                 work.dataset.example_shape)
            opt_state = tx.init(params)
            for order in orders[r]:
                for b in range(0, order.shape[0], bsz):
                    idx = order[b:b + bsz]
                    params, opt_state = step(params, opt_state, x[idx], y[idx])
            jax.block_until_ready(params)

    return run


def padded_batches(order: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """One model's epochs as fixed-size batches: (int32[E * S, B] indices, float32[E * S, B]
    weights) with S = ceil(n / B); the last batch of an epoch is padded with weight 0."""
    epochs, n = order.shape
    steps = -(-n // batch_size)
    padded = np.zeros((epochs, steps * batch_size), np.int32)
    padded[:, :n] = order
    weights = np.zeros((epochs, steps * batch_size), np.float32)
    weights[:, :n] = 1.0
    return (padded.reshape(epochs * steps, batch_size),
            weights.reshape(epochs * steps, batch_size))


def jax_scan_runner(work: Workload, keep: np.ndarray):
    """Baseline (b): one model at a time, its whole training one jitted ``lax.scan`` over
    host-shuffled, padded batch indices; the dataset lives on the device."""
    module = _plain_model(work)
    tx = baseline_optimizer(work.train_cfg)
    x = jnp.asarray(work.dataset.x_train)
    y = jnp.asarray(work.dataset.y_train)

    @jax.jit
    def train(key, idx, weights):
        params, _ = init_one(module, key, work.dataset.example_shape)

        def step(carry, batch):
            params, opt_state = carry
            i, w = batch
            grads = jax.grad(lambda p: _loss(module, p, x[i], y[i], w))(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, _), _ = lax.scan(step, (params, tx.init(params)), (idx, weights))
        return params

    def run():
        orders = epoch_orders(keep, work.train_cfg.epochs)
        for r in range(keep.shape[0]):
            idx, weights = padded_batches(orders[r], work.train_cfg.batch_size)
            key = jax.random.fold_in(jax.random.PRNGKey(SEED), r)
            jax.block_until_ready(train(key, idx, weights))

    return run


# ============================================================================ torch baselines


def torch_or_none():
    """The ``torch`` module, or None when it is not installed (an optional extra)."""
    try:
        return importlib.import_module("torch")
    except ImportError:
        return None


TORCH_MISSING = "torch is not installed (pip install 'jmem[torch]')"


def torch_skip_reason(name: str, work: Workload, backend: str) -> str | None:
    """Why a torch baseline cannot run for this workload here, or None if it can."""
    if torch_or_none() is None:
        return TORCH_MISSING
    if backend != "cpu":
        return "torch baselines run on the CPU only (the CPU wheel)"
    if work.train_cfg.compute_dtype != "float32":
        return "torch baselines are float32 only"
    if work.model_cfg.kind == "resnet":
        return "no torch ResNet baseline (the GPU target is stated against baseline (b))"
    if name == "torch_bmm" and work.model_cfg.kind != "mlp":
        return "the hand-written baddbmm ensemble exists for the MLP only"
    return None


def _torch_module(torch, work: Workload):
    """The workload's architecture in torch (same layer shapes as jmem's flax module)."""
    nn = torch.nn
    cfg, k = work.model_cfg, work.dataset.num_classes
    if cfg.kind == "mlp":
        d = math.prod(work.dataset.example_shape)
        layers, dims = [nn.Flatten()], (d,) + hidden_widths(cfg)
        for a, b in zip(dims, dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(dims[-1], k))
    length, channels = work.dataset.example_shape  # MNIST-1D: [L, C]
    layers, c = [], channels
    for _ in range(cfg.depth):
        # padding k//2 with stride 2 gives 'SAME''s output length ceil(L / 2).
        layers += [nn.Conv1d(c, cfg.width, cfg.kernel_size, stride=2, padding=cfg.kernel_size // 2),
                   nn.ReLU()]
        c, length = cfg.width, -(-length // 2)
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(cfg.width * length, k))


def _torch_data(torch, work: Workload):
    """Training arrays as torch tensors in torch's layout (MLP: flat; CNN: [N, C, L])."""
    x = work.dataset.x_train
    x = x.reshape(x.shape[0], -1) if work.model_cfg.kind == "mlp" else np.swapaxes(x, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(work.dataset.y_train.astype(np.int64))


def torch_loop_runner(work: Workload, keep: np.ndarray):
    """Baseline (c1): PyTorch, one model at a time, the textbook loop with torch.optim.Adam."""
    torch = torch_or_none()
    F = torch.nn.functional
    x, y = _torch_data(torch, work)
    bsz, lr = work.train_cfg.batch_size, work.train_cfg.learning_rate

    def run():
        orders = torch.from_numpy(epoch_orders(keep, work.train_cfg.epochs))
        for r in range(keep.shape[0]):
            torch.manual_seed(r)
            model = _torch_module(torch, work)
            opt = torch.optim.Adam(model.parameters(), lr=lr)
            for order in orders[r]:
                for b in range(0, order.shape[0], bsz):
                    idx = order[b:b + bsz]
                    opt.zero_grad(set_to_none=True)
                    F.cross_entropy(model(x[idx]), y[idx]).backward()
                    opt.step()

    return run


def _torch_ensemble_loop(torch, params: list, loss_fn, work: Workload, keep: np.ndarray):
    """Train stacked parameters (leading axis R) with one Adam: Adam is elementwise and the
    summed loss separates over models, so this is R independent Adam runs."""
    x, y = _torch_data(torch, work)
    opt = torch.optim.Adam(params, lr=work.train_cfg.learning_rate)
    orders = torch.from_numpy(epoch_orders(keep, work.train_cfg.epochs))  # [R, E, n]
    bsz = work.train_cfg.batch_size
    for e in range(orders.shape[1]):
        for b in range(0, orders.shape[2], bsz):
            idx = orders[:, e, b:b + bsz]  # [R, B]: every model's own batch
            opt.zero_grad(set_to_none=True)
            loss_fn(x[idx], y[idx]).backward()
            opt.step()


def torch_vmap_runner(work: Workload, keep: np.ndarray):
    """Baseline (c2): a ``torch.func`` ensemble: ``stack_module_state`` + ``functional_call``
    under ``vmap`` (the PyTorch model-ensembling recipe), Adam over the stacked parameters."""
    torch = torch_or_none()
    from torch.func import functional_call, stack_module_state, vmap

    F = torch.nn.functional

    def run():
        torch.manual_seed(0)
        models = [_torch_module(torch, work) for _ in range(keep.shape[0])]
        params, buffers = stack_module_state(models)
        base = _torch_module(torch, work).to("meta")

        def one(p, b, xb, yb):
            return F.cross_entropy(functional_call(base, (p, b), (xb,)), yb)

        loss = lambda xb, yb: vmap(one)(params, buffers, xb, yb).sum()  # noqa: E731
        _torch_ensemble_loop(torch, list(params.values()), loss, work, keep)

    return run


def torch_bmm_runner(work: Workload, keep: np.ndarray):
    """Baseline (c3): the MLP ensemble by hand: stacked weights [R, in, out] and
    ``torch.baddbmm`` per layer, Adam over the stacked tensors."""
    torch = torch_or_none()
    F = torch.nn.functional
    cfg, k = work.model_cfg, work.dataset.num_classes
    dims = [math.prod(work.dataset.example_shape), *hidden_widths(cfg), k]

    def run():
        torch.manual_seed(0)
        r = keep.shape[0]
        weights = [(torch.randn(r, a, b) / math.sqrt(a)).requires_grad_() for a, b in zip(dims, dims[1:])]
        biases = [torch.zeros(r, 1, b, requires_grad=True) for b in dims[1:]]

        def loss(xb, yb):  # xb [R, B, D], yb [R, B]
            h = xb
            for i, (w, b) in enumerate(zip(weights, biases)):
                h = torch.baddbmm(b, h, w)
                if i < len(weights) - 1:
                    h = torch.relu(h)
            # Sum over models of each model's mean loss.
            return F.cross_entropy(h.reshape(-1, k), yb.reshape(-1), reduction="sum") / yb.shape[1]

        _torch_ensemble_loop(torch, weights + biases, loss, work, keep)

    return run


def with_torch_threads(fn: Callable[[], None], threads: int) -> Callable[[], None]:
    """``fn`` run with torch's intra-op thread count set to ``threads`` (it is process-wide,
    and torch rows with different counts alternate)."""
    def run():
        torch_or_none().set_num_threads(threads)
        fn()
    return run


def torch_label(name: str, threads: int, default: int) -> str:
    """Row label of a torch baseline: its name, with ``/<k>t`` unless it uses ``default``
    threads (every usable core)."""
    return name if threads == default else f"{name}/{threads}t"


BASELINE_RUNNERS = {"fz_loop": fz_loop_runner, "jax_scan": jax_scan_runner,
                    "torch_loop": torch_loop_runner, "torch_vmap": torch_vmap_runner,
                    "torch_bmm": torch_bmm_runner}
ONE_AT_A_TIME = ("sequential", "fz_loop", "jax_scan", "torch_loop")
