"""``jmem bench``: the throughput benchmark of mass subset training.

For each workload (the digits MLP 64-256-10, the MNIST-1D CNN, the CIFAR-shaped ResNet on
synthetic 32x32x3 data) and each number of models R, every batching strategy of
:func:`jmem.train.train_models` and a set of peer baselines train R models on R random 70%
subsets with the same hyperparameters, and the benchmark reports:

* models/s and examples/s (steady state: the median of ``--repeats`` timed runs);
* compile time, separately (first call minus the steady-state median: it also contains the
  first run's one-off costs such as transfers, so it is an upper bound);
* peak host memory of a steady-state run: the process's resident-set high-water mark
  (``VmHWM``), reset before the run through ``/proc/self/clear_refs``, minus the resident set
  before it. On CPU this *is* the device memory (XLA's buffers live in the process). Where
  the reset is not allowed it falls back to ``ru_maxrss`` deltas, which only see growth past
  the earlier peak; the JSON names the method;
* device memory: ``peak_bytes_in_use`` from ``Device.memory_stats()`` when the backend has
  it (GPU/TPU; it is a running maximum over the whole process, so configurations are warmed
  up in increasing R); ``None`` on CPU;
* achieved FLOP/s, and its fraction of the device's peak measured in the same run with a
  large matmul of the same dtype. Model FLOPs are counted analytically: a dense or conv
  layer costs ``kernel.size * output positions`` multiply-adds per example, forward =
  2 x MACs, training = 3 x forward, over the examples each model actually trains on
  (epochs x subset size; the padding of the last batch is not counted, as in MFU).
  XLA's own cost analysis of the forward pass is recorded next to it as a cross-check.

Peer baselines (``--baselines``), each reported as a speed-up of jmem's ``auto`` over it:

* ``fz_loop``: Feldman & Zhang's official example style: one model at a time, a Python loop
  over a jitted step, batches sliced on the host;
* ``jax_scan``: one model at a time, the whole training one jitted ``lax.scan`` (a lean
  hand-written equivalent of jmem's ``sequential`` strategy);
* ``torch_loop``, ``torch_vmap``, ``torch_bmm``: PyTorch as a practitioner writes it: one
  model at a time; a ``torch.func`` ensemble (``stack_module_state`` + ``functional_call`` +
  ``vmap``) trained with one Adam over the stacked parameters; and, for the MLP, stacked
  weights with ``torch.baddbmm``. Optional (``pip install 'jmem[torch]'``): skipped with a
  message when torch is absent. ``torch_*`` use float32 on the CPU only.

One-at-a-time configurations have the same models/s at every R, so they train only the first
``--seq-models`` models of a wave. Hygiene: every configuration of one R is warmed up
(compiled) first, then the timed repeats run in a rotated order, and medians are reported;
timing on a shared CPU is noisy (BACKGROUND section 5), so compare rows of one run only.

Scaling (``--scaling``, default workload only): time vs R (from the main table) and vs N
(digits subsampled or replicated to N examples) for ``auto``.

Devices: like the ``jmem`` command, ``python -m jmem.bench`` makes one XLA host device per
core on a CPU (``--devices N`` or ``$JMEM_CPU_DEVICES`` choose another count). With several
devices, ``auto`` is what jmem does by default, the model axis sharded over all of them (the
``sharded`` row); ``vmap``, ``patches`` and ``sequential`` rows use one device.

Run: ``python -m jmem.bench [--model mlp,cnn,resnet] [--R 1,8,32,128] [--quick] [--out x.json]``;
results and how to read them: ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import json
import math
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from typing import Callable

if __name__ == "__main__":
    # Before JAX is imported: XLA:CPU fixes its device count at start-up. Same rule as the
    # `jmem` command: --devices N, else $JMEM_CPU_DEVICES, else one host device per core.
    from jmem.cli import configure_host_devices

    configure_host_devices(sys.argv[1:])

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax import lax  # noqa: E402

from jmem.dataset import Dataset  # noqa: E402
from jmem.errors import JmemError  # noqa: E402
from jmem.hparams import ModelConfig, TrainConfig  # noqa: E402
from jmem.models import apply_one, build_model, init_one, layer_shapes  # noqa: E402
from jmem.subsets import make_keep  # noqa: E402
from jmem.train import choose_wave_size, resolve_strategy, train_models  # noqa: E402

MODELS = ("mlp", "cnn", "resnet")
STRATEGIES = ("auto", "vmap", "patches", "sequential", "sharded")
BASELINES = ("fz_loop", "jax_scan", "torch_loop", "torch_vmap", "torch_bmm")
# Which peer each target in the issue is stated against (see benchmarks/RESULTS.md).
BASELINE_NAMES = {
    "fz_loop": "(a) F&Z style: Python loop over a jitted step",
    "jax_scan": "(b) one model at a time, whole loop jitted",
    "torch_loop": "(c) PyTorch, one model at a time",
    "torch_vmap": "(c) PyTorch torch.func vmap ensemble",
    "torch_bmm": "(c) PyTorch stacked-weight baddbmm ensemble",
}
SEED = 0
RATE = 0.7


# ============================================================================ workloads


@dataclasses.dataclass(frozen=True)
class Workload:
    """One benchmarked model and data shape, with the hyperparameters every row shares."""

    name: str
    dataset: Dataset
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    sizes: tuple[int, ...]  # default R list
    note: str = ""

    @property
    def subset_size(self) -> int:
        """Examples per model: the ``fixed`` design keeps round(rate * N) of N."""
        return int(round(RATE * self.dataset.num_train))


def synthetic_images(num_train: int, num_test: int = 256, shape=(32, 32, 3), num_classes: int = 10,
                     seed: int = 0) -> Dataset:
    """A CIFAR-shaped dataset of Gaussian images with a class-dependent mean (learnable,
    normalised-looking): x float32[N, 32, 32, 3], y int32[N]. Only its shape matters here."""
    rs = np.random.RandomState(seed)
    centres = rs.normal(0, 0.5, (num_classes,) + tuple(shape)).astype(np.float32)

    def draw(n):
        y = rs.randint(0, num_classes, n).astype(np.int32)
        return (centres[y] + rs.normal(0, 1, (n,) + tuple(shape))).astype(np.float32), y

    x_train, y_train = draw(num_train)
    x_test, y_test = draw(num_test)
    return Dataset("synthetic32", x_train, y_train, x_test, y_test, num_classes)


def resize_train(dataset: Dataset, num_train: int) -> Dataset:
    """The dataset with its training set cut to, or replicated up to, ``num_train`` examples
    (example i of the result is example ``i mod N``), for scaling in N."""
    if num_train < 1:
        raise JmemError(f"--n={num_train} must be >= 1")
    index = np.arange(num_train) % dataset.num_train
    return dataclasses.replace(dataset, name=f"{dataset.name}[N={num_train}]",
                               x_train=dataset.x_train[index], y_train=dataset.y_train[index],
                               train_source_ids=None)


def make_workload(name: str, backend: str, epochs: int | None = None, num_train: int | None = None,
                  dtype: str = "float32") -> Workload:
    """The workload ``name`` with its default epochs / R list for ``backend`` ("cpu" or other).

    Same hyperparameters as the issue fixes for the digits MLP (Adam 1e-3, batch 64, 20 epochs,
    70% subsets); the conv workloads keep Adam and batch 64 but default to fewer epochs on the
    CPU so that the slow one-at-a-time rows stay measurable in minutes.
    """
    from jmem.data import load_dataset

    cpu = backend == "cpu"
    if name == "mlp":
        dataset, model = load_dataset("digits"), ModelConfig(kind="mlp", width=256, depth=1)
        default_epochs, sizes = 20, (1, 8, 32, 128, 512)
    elif name == "cnn":
        dataset = load_dataset("mnist1d")
        model = ModelConfig(kind="cnn", width=32, depth=3, kernel_size=5)
        default_epochs, sizes = (2, (1, 8, 32)) if cpu else (20, (1, 8, 32, 128, 512))
    elif name == "resnet":
        dataset = synthetic_images(512 if cpu else 10_000)
        model = ModelConfig(kind="resnet", width=16, depth=3, norm="batchnorm")
        default_epochs, sizes = (1, (1, 8)) if cpu else (5, (1, 8, 32, 128))
    else:
        raise JmemError(f"--model={name!r} is not one of {', '.join(MODELS)}")
    if num_train:
        dataset = resize_train(dataset, num_train)
    train = TrainConfig(epochs=epochs or default_epochs, batch_size=64, optimizer="adam",
                        learning_rate=1e-3, compute_dtype=dtype)
    note = "" if train.epochs == 20 else f"{train.epochs} epochs (fewer than 20, to bound run time)"
    return Workload(name, dataset, model, train, sizes, note)


# ============================================================================ FLOPs


def forward_macs(model_cfg: ModelConfig, num_classes: int, example_shape: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass on one example: sum over dense and conv kernels of
    ``kernel.size * output positions`` (positions = product of the layer output's spatial
    dims; 1 for a dense layer). Biases, norms and activations are not counted (they are
    O(1/fan-in) of the total)."""
    params, inter = layer_shapes(model_cfg, num_classes, example_shape)
    outputs = {tuple(getattr(k, "key", getattr(k, "idx", None)) for k in path): leaf
               for path, leaf in jax.tree_util.tree_flatten_with_path(inter)[0]}
    total = 0
    for path, kernel in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = tuple(k.key for k in path)
        if keys[-1] != "kernel":
            continue
        out = outputs.get(keys[:-1] + ("__call__", 0))
        if out is None:
            raise JmemError(f"cannot find the output of layer {'/'.join(keys[:-1])} to count FLOPs")
        positions = math.prod(out.shape[1:-1])
        total += math.prod(kernel.shape) * positions
    return int(total)


def training_flops(macs_per_example: int, examples: int) -> float:
    """Model FLOPs of training on ``examples`` examples: forward 2 x MACs, backward 2 x
    forward (gradients of activations and of weights), so 3 x forward = 6 x MACs."""
    return 6.0 * macs_per_example * examples


def xla_forward_flops(model_cfg: ModelConfig, num_classes: int, example_shape: tuple[int, ...],
                      batch: int = 64) -> float | None:
    """FLOPs per example of the forward pass by XLA's cost analysis (None if unavailable)."""
    module = build_model(model_cfg, num_classes)
    params, state = init_one(module, jax.random.PRNGKey(0), example_shape)
    x = jnp.zeros((batch,) + tuple(example_shape), jnp.float32)
    fn = jax.jit(lambda p, s, x: apply_one(module, p, s, x)[0])
    try:
        cost = fn.lower(params, state, x).compile().cost_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement cost analysis
        return None
    if isinstance(cost, (list, tuple)):  # older JAX returned one dict per computation
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return None if flops is None or flops <= 0 else float(flops) / batch


# ============================================================================ measurement


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class HostMemoryProbe:
    """Peak extra resident memory of the process over a block of code, in bytes.

    Preferred: reset the kernel's high-water mark (``echo 5 > /proc/self/clear_refs``, Linux
    >= 4.0), then read ``VmHWM`` - ``VmRSS`` at the start: exact for this block. Fallback:
    the growth of ``ru_maxrss``, which is 0 whenever the block stays below an earlier peak.
    """

    def __init__(self):
        self.method = "VmHWM reset" if self._reset() else "ru_maxrss delta"
        self._start_rss = _status_kb("VmRSS")
        self._start_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    @staticmethod
    def _reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return _status_kb("VmHWM") is not None
        except OSError:
            return False

    def peak_bytes(self) -> int:
        """Growth of the resident set over the block. Often 0 on CPU for a configuration
        that reuses memory the allocator kept from an earlier, larger one."""
        if self.method == "VmHWM reset" and self._start_rss is not None:
            return max(0, _status_kb("VmHWM") - self._start_rss) * 1024
        return max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self._start_max) * 1024

    def peak_rss_bytes(self) -> int | None:
        """The process's peak resident set during the block (everything resident: Python,
        libraries, compiled programs, the datasets); None without the VmHWM reset."""
        return _status_kb("VmHWM") * 1024 if self.method == "VmHWM reset" else None


def device_peak_bytes() -> int | None:
    """``peak_bytes_in_use`` of device 0 (a running maximum), or None if not reported."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - backends without stats raise various errors
        return None
    return None if not stats else stats.get("peak_bytes_in_use")


def matmul_peak(dtype: str = "float32", size: int | None = None, repeats: int = 5) -> float:
    """Achievable FLOP/s of this device: median over ``repeats`` of a ``size``^2 matmul chain.

    Default size: 2048 on CPU (~0.1 s a product there), 8192 on accelerators, where a
    smaller product is too short to leave dispatch overhead behind. Each call chains
    ``chain`` dependent products (1 on CPU, 4 elsewhere) for the same reason.
    """
    cpu = jax.default_backend() == "cpu"
    size = size or (2048 if cpu else 8192)
    chain = 1 if cpu else 4
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    a = (a / math.sqrt(size)).astype(dtype)  # keeps repeated products finite

    @jax.jit
    def product(x):
        for _ in range(chain):
            x = x @ a
        return x

    jax.block_until_ready(product(a))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(product(a))
        times.append(time.perf_counter() - start)
    return chain * 2.0 * size ** 3 / statistics.median(times)


def rotated(items: list, shift: int) -> list:
    """``items`` rotated left by ``shift``: repeat k starts with a different configuration,
    so slow drifts of the machine do not always hit the same one."""
    if not items:
        return []
    shift %= len(items)
    return items[shift:] + items[:shift]


@dataclasses.dataclass
class Timing:
    """Raw measurements of one configuration."""

    first_s: float
    times_s: list
    host_peak_bytes: int | None = None
    host_peak_rss_bytes: int | None = None
    device_peak_bytes: int | None = None

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)


def time_configs(configs: dict[str, Callable[[], None]], repeats: int,
                 between: Callable[[], None] | None = None) -> dict[str, Timing]:
    """Warm up every configuration, then time ``repeats`` rounds in rotated order.

    Each callable must train and block until its results are ready. The first call of each
    (compilation included) is timed separately; the host peak of the first timed run is kept.
    ``between`` runs before each round (e.g. a peak-FLOP/s sample, interleaved the same way).
    """
    timings = {}
    for label, fn in configs.items():
        start = time.perf_counter()
        fn()
        timings[label] = Timing(first_s=time.perf_counter() - start, times_s=[],
                                device_peak_bytes=device_peak_bytes())
    for rep in range(repeats):
        if between is not None:
            between()
        for label in rotated(list(configs), rep):
            probe = HostMemoryProbe() if rep == 0 else None
            start = time.perf_counter()
            configs[label]()
            timings[label].times_s.append(time.perf_counter() - start)
            if probe is not None:
                timings[label].host_peak_bytes = probe.peak_bytes()
                timings[label].host_peak_rss_bytes = probe.peak_rss_bytes()
    return timings


# ============================================================================ jmem strategies


def jmem_runner(work: Workload, keep: np.ndarray, strategy: str, devices: list):
    """A callable training ``keep``'s models with ``train_models``, ``strategy`` and ``devices``
    (several devices: the model axis is sharded over them, as jmem does by default)."""
    cfg = dataclasses.replace(work.train_cfg, strategy=strategy, num_models=keep.shape[0],
                              wave_size=keep.shape[0])

    def run():
        result = train_models(keep, work.dataset, work.model_cfg, cfg, seed=SEED, devices=devices)
        jax.block_until_ready(result.params)

    return run


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


def fz_loop_runner(work: Workload, keep: np.ndarray):
    """Baseline (a): one model at a time, a Python loop over a jitted Adam step, batches
    sliced from host arrays (Feldman & Zhang's MNIST example style; the last, smaller batch
    of an epoch compiles once more)."""
    module = _plain_model(work)
    tx = optax.adam(work.train_cfg.learning_rate)
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
    tx = optax.adam(work.train_cfg.learning_rate)
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
        layers = [nn.Flatten()]
        for i in range(cfg.depth):
            layers += [nn.Linear(d if i == 0 else cfg.width, cfg.width), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(cfg.width, k))
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
    dims = [math.prod(work.dataset.example_shape)] + [cfg.width] * cfg.depth + [k]

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


# ============================================================================ rows


def auto_speedups(rows: list[dict]) -> list[dict]:
    """Rows with ``auto_speedup`` = models/s of jmem's ``auto`` row of the same workload and R
    divided by this row's models/s (> 1: auto is faster). None where either is missing."""
    auto = {(r["workload"], r["R"]): r["models_per_s"] for r in rows if r.get("auto") and r.get("models_per_s")}
    out = []
    for row in rows:
        ref = auto.get((row["workload"], row["R"]))
        mine = row.get("models_per_s")
        out.append({**row, "auto_speedup": ref / mine if ref and mine else None})
    return out


def measured_row(work: Workload, size: int, label: str, kind: str, models: int, timing: Timing,
                 train_flops_per_model: float, peak: float) -> dict:
    """One table row from a configuration's timing (``models`` trained per call)."""
    median = timing.median_s
    models_per_s = models / median
    flops = models_per_s * train_flops_per_model
    return {
        "workload": work.name, "R": size, "config": label, "kind": kind, "status": "ok",
        "models_timed": models, "median_s": median, "times_s": timing.times_s,
        "first_call_s": timing.first_s, "compile_s": max(0.0, timing.first_s - median),
        "models_per_s": models_per_s,
        "examples_per_s": models_per_s * work.train_cfg.epochs * work.subset_size,
        "flops_per_s": flops, "fraction_of_peak": flops / peak if peak else None,
        "host_peak_bytes": timing.host_peak_bytes, "host_peak_rss_bytes": timing.host_peak_rss_bytes,
        "device_peak_bytes": timing.device_peak_bytes,
    }


def skipped_row(work: Workload, size: int, label: str, kind: str, reason: str) -> dict:
    return {"workload": work.name, "R": size, "config": label, "kind": kind,
            "status": "skipped", "reason": reason, "models_per_s": None}


# ============================================================================ the sweep


@dataclasses.dataclass
class Options:
    """Everything ``run`` needs, parsed from the command line."""

    models: list
    sizes: list | None
    strategies: list
    baselines: list
    epochs: int | None
    repeats: int
    seq_models: int
    num_train: int | None
    dtype: str
    devices: int
    scaling: bool
    scaling_sizes: list
    scaling_r: int
    scaling_epochs: int
    max_seconds: float
    out: str | None
    quick: bool
    torch_threads: list = dataclasses.field(default_factory=lambda: [_usable_cores()])


@dataclasses.dataclass(frozen=True)
class StrategyRow:
    """One jmem configuration: a row label, the strategy passed to the trainer, its devices."""

    label: str
    strategy: str
    devices: tuple
    is_auto: bool


def plan_strategies(work: Workload, wanted: list, devices: list) -> tuple[list, list]:
    """(the jmem configurations to run, notes).

    ``vmap``, ``patches`` and ``sequential`` run on one device. ``sharded`` is ``auto``'s
    strategy with the model axis sharded over all ``devices``; with several devices that is
    what jmem does by default, so it is the ``auto`` row; with one device, ``auto`` is the row
    of the strategy it resolves to. Nothing is run twice, and ``patches`` is dropped for an
    MLP (the same program as ``vmap``).
    """
    resolved = resolve_strategy(work.model_cfg, work.train_cfg)
    one = (devices[0],)
    sharded = len(devices) > 1
    auto_label = "sharded" if sharded else resolved
    notes, rows = [], {}
    for name in wanted:
        label = auto_label if name == "auto" else name
        if label == "patches" and work.model_cfg.kind == "mlp":
            notes.append("patches: the same program as vmap for an MLP (not run)")
        elif label == "sharded" and not sharded:
            notes.append("sharded: needs >= 2 devices (on CPU: --devices 2 at start-up)")
        elif label == "sharded":
            rows[label] = StrategyRow(label, resolved, tuple(devices), True)
        elif label not in rows:
            rows[label] = StrategyRow(label, label, one, label == auto_label)
    if auto_label not in rows:  # every ratio is stated against auto
        rows = {auto_label: StrategyRow(auto_label, resolved, tuple(devices) if sharded else one, True), **rows}
    if sharded:
        notes.append(f"sharded (auto): {resolved} with the model axis over {len(devices)} devices; "
                     "the other jmem rows use one device")
    return list(rows.values()), notes


def fits_in_memory(work: Workload, size: int) -> bool:
    """Whether a wave of ``size`` models fits, by the trainer's own memory estimate."""
    cfg = dataclasses.replace(work.train_cfg, num_models=size, wave_size=0)
    return choose_wave_size(work.model_cfg, cfg, work.dataset, max_wave=size) >= size


def _predicted_seconds(history: dict, label: str, models: int) -> float | None:
    if label not in history:
        return None
    prev_models, prev_seconds = history[label]
    return prev_seconds * models / prev_models


def bench_workload(work: Workload, opts: Options, peak_samples: list, peak_fn, backend: str,
                   log=print) -> tuple[list, list]:
    """All rows of one workload: (rows, notes). Configurations of one R alternate."""
    devices = jax.local_devices()[:opts.devices] if opts.devices else jax.local_devices()
    strategies, notes = plan_strategies(work, opts.strategies, devices)
    auto = next(s.label for s in strategies if s.is_auto)
    macs = forward_macs(work.model_cfg, work.dataset.num_classes, work.dataset.example_shape)
    per_model = training_flops(macs, work.train_cfg.epochs * work.subset_size)
    rows, history = [], {}  # history: label -> (models, median s) of the previous R
    for size in (opts.sizes or work.sizes):
        keep, _ = make_keep(SEED, size, work.dataset.num_train, "fixed", RATE)
        if not fits_in_memory(work, size):
            for label in [s.label for s in strategies] + opts.baselines:
                rows.append(skipped_row(work, size, label, "-", "does not fit in memory"))
            continue
        configs, models, skipped = {}, {}, []
        candidates = [(s.label, "strategy", s, None) for s in strategies]
        for name in opts.baselines:
            threads = opts.torch_threads if name.startswith("torch") else [None]
            candidates += [(torch_label(name, t, _usable_cores()) if t else name, "baseline", None, t)
                           for t in threads]
        for label, kind, strategy, threads in candidates:
            base = label.split("/")[0]
            count = min(size, opts.seq_models) if base in ONE_AT_A_TIME else size
            reason = torch_skip_reason(base, work, backend) if base.startswith("torch") else None
            guess = _predicted_seconds(history, label, count)
            if reason is None and guess is not None and guess > opts.max_seconds and label != auto:
                reason = f"predicted {guess:.0f} s per call > --max-seconds {opts.max_seconds:.0f}"
            if reason:
                skipped.append(skipped_row(work, size, label, kind, reason))
                continue
            sub = keep[:count]
            if strategy:
                configs[label] = jmem_runner(work, sub, strategy.strategy, list(strategy.devices))
            else:
                fn = BASELINE_RUNNERS[base](work, sub)
                configs[label] = with_torch_threads(fn, threads) if threads else fn
            models[label] = (count, kind)
        log(f"[bench] {work.name} R={size}: warming up and timing {', '.join(configs)}")
        timings = time_configs(configs, opts.repeats, between=lambda: peak_samples.append(peak_fn()))
        for label, timing in timings.items():
            count, kind = models[label]
            row = measured_row(work, size, label, kind, count, timing, per_model,
                               statistics.median(peak_samples))
            row["auto"] = label == auto
            rows.append(row)
            history[label] = (count, timing.median_s)
            log(f"[bench]   {label:13s} {row['models_per_s']:9.2f} models/s  "
                f"(median {row['median_s']:.2f} s, first call {row['first_call_s']:.1f} s)")
        rows += skipped
    return auto_speedups(rows), notes


def bench_scaling_n(opts: Options, peak_samples: list, peak_fn, log=print) -> list:
    """Seconds of ``auto`` for R = ``scaling_r`` digits MLPs vs the training-set size N."""
    rows, configs, works = [], {}, {}
    for n in opts.scaling_sizes:
        work = make_workload("mlp", "cpu", opts.scaling_epochs, n, opts.dtype)
        keep, _ = make_keep(SEED, opts.scaling_r, n, "fixed", RATE)
        configs[f"N={n}"] = jmem_runner(work, keep, "auto", None)
        works[f"N={n}"] = work
    log(f"[bench] scaling in N at R={opts.scaling_r}: {', '.join(configs)}")
    timings = time_configs(configs, opts.repeats, between=lambda: peak_samples.append(peak_fn()))
    base = None
    for label, timing in timings.items():
        work = works[label]
        per_example = timing.median_s / work.dataset.num_train
        base = base or per_example
        rows.append({"N": work.dataset.num_train, "R": opts.scaling_r, "epochs": opts.scaling_epochs,
                     "median_s": timing.median_s, "first_call_s": timing.first_s,
                     "s_per_example": per_example, "relative_cost_per_example": per_example / base,
                     "host_peak_bytes": timing.host_peak_bytes})
    return rows


def scaling_in_r(rows: list, workload: str) -> list:
    """Seconds per model of ``auto`` vs R (from the main rows), relative to the smallest R."""
    autos = sorted((r for r in rows if r["workload"] == workload and r.get("auto")
                    and r.get("models_per_s")), key=lambda r: r["R"])
    out, base = [], None
    for r in autos:
        per_model = 1.0 / r["models_per_s"]
        base = base or per_model
        out.append({"R": r["R"], "median_s": r["median_s"], "s_per_model": per_model,
                    "relative_cost_per_model": per_model / base})
    return out


# ============================================================================ output


def machine_info() -> dict:
    """Date, machine and software versions for the results file."""
    cpu = platform.processor() or ""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        cpu = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines()
                    if line.startswith("Model name")), cpu)
    except (OSError, subprocess.SubprocessError):
        pass
    torch = torch_or_none()
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": _usable_cores(),
        "cpu": cpu, "python": platform.python_version(), "jax": jax.__version__,
        "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
        "torch": getattr(torch, "__version__", None),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, "-m", "jmem.bench"] + sys.argv[1:]),
    }


def _fmt(value, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value / scale, spec)


def _memory_cell(row: dict) -> str:
    """'peak RSS (+growth)' in MB, device peak appended when the backend reports one."""
    cell = f"{_fmt(row.get('host_peak_rss_bytes'), '.0f', 2 ** 20)} (+{_fmt(row['host_peak_bytes'], '.0f', 2 ** 20)})"
    if row.get("device_peak_bytes") is not None:
        cell += f", dev {row['device_peak_bytes'] / 2 ** 20:.0f}"
    return cell


def format_table(rows: list) -> str:
    """A markdown table of the main rows (one line per workload, R and configuration)."""
    head = ("| workload | R | config | models/s | examples/s | compile s | steady s | RSS MB (+grow) "
            "| GFLOP/s | % peak | auto x |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['workload']} | {r['R']} | {r['config']} | skipped: {r['reason']} "
                         "| | | | | | | |")
            continue
        label = r["config"] + (" (auto)" if r.get("auto") else "")
        if r["models_timed"] != r["R"]:
            label += f" [{r['models_timed']} timed]"
        lines.append(
            f"| {r['workload']} | {r['R']} | {label} | {_fmt(r['models_per_s'], '.2f')} "
            f"| {_fmt(r['examples_per_s'], '.3g')} | {_fmt(r['compile_s'], '.1f')} "
            f"| {_fmt(r['median_s'], '.2f')} | {_memory_cell(r)} "
            f"| {_fmt(r['flops_per_s'], '.1f', 1e9)} | {_fmt(r['fraction_of_peak'], '.0%')} "
            f"| {_fmt(r['auto_speedup'], '.2f')} |")
    return "\n".join(lines)


def format_scaling(result: dict) -> str:
    lines = []
    for workload, rs in result.get("scaling_r", {}).items():
        lines += [f"Scaling in R ({workload}, auto): cost per model relative to R={rs[0]['R'] if rs else '-'}",
                  "| R | steady s | s/model | relative |", "|---|---|---|---|"]
        lines += [f"| {r['R']} | {r['median_s']:.2f} | {r['s_per_model']:.4f} | {r['relative_cost_per_model']:.2f} |"
                  for r in rs]
    ns = result.get("scaling_n") or []
    if ns:
        lines += ["", f"Scaling in N (digits MLP replicated/subsampled, R={ns[0]['R']}, {ns[0]['epochs']} epochs, auto)",
                  "| N | steady s | us/example | relative |", "|---|---|---|---|"]
        lines += [f"| {r['N']} | {r['median_s']:.2f} | {1e6 * r['s_per_example']:.1f} "
                  f"| {r['relative_cost_per_example']:.2f} |" for r in ns]
    return "\n".join(lines)


def format_report(result: dict) -> str:
    """The terminal report: header, notes, scaling, then the main table last."""
    meta = result["meta"]
    lines = [f"jmem bench  {meta['date']}  {meta['nproc']} cores ({meta['cpu']})  jax {meta['jax']} "
             f"{meta['backend']} x{len(meta['devices'])}  torch {meta['torch'] or '-'}",
             f"peak {result['peak_dtype']} matmul: {result['peak_flops'] / 1e9:.1f} GFLOP/s "
             f"(median of {len(result['peak_samples'])} samples, max {max(result['peak_samples']) / 1e9:.1f}); "
             f"load average {meta['load_average_before'][0]:.1f} before, {meta['load_average_after'][0]:.1f} after"]
    for w in result["workloads"]:
        lines.append(f"- {w['name']}: {w['dataset']} N={w['N']}, {w['epochs']} epochs, subsets of "
                     f"{w['subset_size']}, {w['forward_macs']:,} MACs/example forward "
                     f"(XLA: {_fmt(w['xla_forward_flops'], ',.0f')} FLOPs), "
                     f"{w['train_flops_per_model'] / 1e9:.2f} GFLOP per model trained. {w['note']}".rstrip())
        lines += [f"    note: {n}" for n in w["notes"]]
    scaling = format_scaling(result)
    if scaling:
        lines += ["", scaling]
    lines += ["", format_table(result["rows"])]
    return "\n".join(lines)


# ============================================================================ CLI


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: need integers >= 1")
    return values


def _choice_list(choices: tuple, allow_none: bool = False):
    def parse(text: str) -> list[str]:
        if allow_none and text == "none":
            return []
        if text == "all":
            return list(choices)
        values = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in values if v not in choices]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(choices)} (comma-separated), or all")
        return values
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``jmem bench`` flags."""
    parser.add_argument("--model", type=_choice_list(MODELS), default=None,
                        help="workloads, comma-separated: mlp (digits MLP 64-256-10), cnn "
                             "(MNIST-1D CNN), resnet (CIFAR-shaped, synthetic data), or all "
                             "(default: all; mlp,cnn on CPU; --quick: mlp)")
    parser.add_argument("--R", dest="sizes", type=_int_list, default=None,
                        help="numbers of models, e.g. 1,8,32 (default per workload; MLP: 1,8,32,128,512)")
    parser.add_argument("--strategies", type=_choice_list(STRATEGIES), default=list(STRATEGIES),
                        help=f"jmem strategies: {', '.join(STRATEGIES)} (default: all)")
    parser.add_argument("--baselines", type=_choice_list(BASELINES, allow_none=True), default=list(BASELINES),
                        help=f"peer baselines: {', '.join(BASELINES)}, all or none (default: all)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs for every workload (default per workload)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (median reported)")
    parser.add_argument("--seq-models", type=int, default=8,
                        help="models timed for one-at-a-time configurations (their models/s does not depend on R)")
    parser.add_argument("--n", dest="num_train", type=int, default=None,
                        help="training examples (subsample or replicate the dataset to this many)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                        help="compute dtype of the models and of the peak matmul (default: float32 on CPU, bfloat16 otherwise)")
    parser.add_argument("--devices", type=int, default=None,
                        help="devices for the sharded (auto) row (default: all; on CPU one host device "
                             "per core, created at start-up like the jmem command does)")
    parser.add_argument("--scaling", action=argparse.BooleanOptionalAction, default=None,
                        help="also measure time vs N for the digits MLP (default: on when the MLP is benchmarked, off with --quick)")
    parser.add_argument("--scaling-n", dest="scaling_sizes", type=_int_list, default=[338, 676, 1352, 2704, 5408, 10816])
    parser.add_argument("--scaling-r", type=int, default=32)
    parser.add_argument("--scaling-epochs", type=int, default=5)
    parser.add_argument("--max-seconds", type=float, default=15.0,
                        help="skip a configuration whose call is predicted (from the previous R) to take longer")
    parser.add_argument("--torch-threads", type=_int_list, default=None,
                        help="torch intra-op thread counts, e.g. 2,1: each torch baseline runs once "
                             "per count (default: every usable core). On a shared, busy CPU, torch's "
                             "OpenMP barriers stall with more threads than free cores")
    parser.add_argument("--quick", action="store_true",
                        help="CI smoke test: digits MLP, R=1,2, 1 epoch, 1 repeat, no scaling (seconds)")
    parser.add_argument("--out", default=None, help="write every measurement as JSON to this path")


def options_from_args(args: argparse.Namespace, backend: str) -> Options:
    """Resolve defaults (``--quick``, backend-dependent dtype) into :class:`Options`."""
    quick = args.quick
    # The ResNet on a CPU takes minutes per model one at a time: ask for it explicitly there.
    models = args.model or (["mlp"] if quick else list(MODELS) if backend != "cpu" else ["mlp", "cnn"])
    for name, value in (("--repeats", args.repeats), ("--seq-models", args.seq_models)):
        if value < 1:
            raise JmemError(f"{name}={value} must be >= 1")
    if args.epochs is not None and args.epochs < 1:
        raise JmemError(f"--epochs={args.epochs} must be >= 1")
    scaling = args.scaling if args.scaling is not None else ("mlp" in models and not quick)
    return Options(
        models=models, sizes=args.sizes or ([1, 2] if quick else None),
        strategies=args.strategies, baselines=args.baselines,
        epochs=args.epochs or (1 if quick else None), repeats=1 if quick else args.repeats,
        seq_models=min(args.seq_models, 2) if quick else args.seq_models,
        num_train=args.num_train or (256 if quick else None),
        dtype=args.dtype or ("float32" if backend == "cpu" else "bfloat16"),
        devices=args.devices or len(jax.local_devices()), scaling=scaling,
        scaling_sizes=args.scaling_sizes, scaling_r=args.scaling_r, scaling_epochs=args.scaling_epochs,
        max_seconds=args.max_seconds, out=args.out, quick=quick,
        torch_threads=args.torch_threads or [_usable_cores()])


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def benchmark(opts: Options, log=print) -> dict:
    """Run every requested workload and return the JSON-ready result."""
    backend = jax.default_backend()
    load_before = os.getloadavg()
    peak_fn = lambda: matmul_peak(opts.dtype)  # noqa: E731
    samples = [peak_fn()]
    log(f"[bench] peak {opts.dtype} matmul: {samples[0] / 1e9:.1f} GFLOP/s")
    rows, workloads, scaling_r = [], [], {}
    for name in opts.models:
        work = make_workload(name, backend, opts.epochs, opts.num_train, opts.dtype)
        work_rows, notes = bench_workload(work, opts, samples, peak_fn, backend, log)
        rows += work_rows
        macs = forward_macs(work.model_cfg, work.dataset.num_classes, work.dataset.example_shape)
        workloads.append({
            "name": name, "dataset": work.dataset.name, "N": work.dataset.num_train,
            "example_shape": list(work.dataset.example_shape), "model": dataclasses.asdict(work.model_cfg),
            "train": dataclasses.asdict(work.train_cfg), "rate": RATE, "subset_size": work.subset_size,
            "epochs": work.train_cfg.epochs, "forward_macs": macs,
            "xla_forward_flops": xla_forward_flops(work.model_cfg, work.dataset.num_classes,
                                                   work.dataset.example_shape),
            "train_flops_per_model": training_flops(macs, work.train_cfg.epochs * work.subset_size),
            "note": work.note, "notes": notes + (["baselines train without BatchNorm (norm=none)"]
                                                 if work.model_cfg.norm != "none" else []),
        })
        scaling_r[name] = scaling_in_r(rows, name)
    scaling_n = bench_scaling_n(opts, samples, peak_fn, log) if opts.scaling else []
    meta = {**machine_info(), "load_average_before": load_before, "load_average_after": os.getloadavg()}
    return {"meta": meta, "peak_dtype": opts.dtype, "peak_flops": statistics.median(samples),
            "peak_samples": samples, "host_memory_method": HostMemoryProbe().method,
            "workloads": workloads, "rows": rows, "scaling_r": scaling_r, "scaling_n": scaling_n}


def run(args: argparse.Namespace) -> int:
    """``jmem bench``: run, print the report (table last), write ``--out``. Returns 0."""
    have = len(jax.local_devices())
    if args.devices and args.devices > have:
        raise JmemError(f"--devices={args.devices} but JAX has {have} device(s); on CPU the count is "
                        f"fixed when JAX starts: `python -m jmem.bench --devices {args.devices}` or "
                        f"`jmem bench --devices {args.devices}` set it")
    opts = options_from_args(args, jax.default_backend())
    result = benchmark(opts, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    if opts.out:
        with open(opts.out, "w") as f:
            json.dump(result, f, indent=1)
    print(format_report(result))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jmem.bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except JmemError as err:
        print(f"jmem bench: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
