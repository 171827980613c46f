"""The benchmarked workloads (model, data shape, recipe) and their analytic FLOP counts."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from jmem.data.dataset import Dataset
from jmem.errors import JmemError
from jmem.engine.hparams import ModelConfig, TrainConfig
from jmem.engine.models import apply_one, build_model, init_one, layer_shapes

MODELS = ("mlp", "fzmnist", "cnn", "resnet")
SEED = 0
RATE = 0.7


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
    from jmem.data.loaders import load_dataset

    cpu = backend == "cpu"
    if name == "mlp":
        dataset, model = load_dataset("digits"), ModelConfig(kind="mlp", width=256, depth=1)
        default_epochs, sizes = 20, (1, 8, 32, 128, 512) if cpu else (1, 64, 512, 2000)
    elif name == "fzmnist":
        # Feldman & Zhang's MNIST MLP 784-512-256-10 (SGD, batch 128) on synthetic 28x28
        # images of MNIST's size (the real data may be absent where this runs; only the
        # shapes matter for throughput).
        dataset = synthetic_images(2048 if cpu else 60_000, shape=(28, 28, 1))
        model = ModelConfig(kind="mlp", widths=(512, 256))
        default_epochs, sizes = (1, (1, 8, 32)) if cpu else (2, (1, 64, 512, 2000))
    elif name == "cnn":
        dataset = load_dataset("mnist1d")
        model = ModelConfig(kind="cnn", width=32, depth=3, kernel_size=5)
        default_epochs, sizes = (2, (1, 8, 32)) if cpu else (20, (1, 8, 32, 128, 512))
    elif name == "resnet":
        dataset = synthetic_images(512 if cpu else 10_000)
        model = ModelConfig(kind="resnet", width=16, depth=3, norm="batchnorm")
        default_epochs, sizes = (1, (1, 8)) if cpu else (5, (1, 8, 32, 128, 512))
    else:
        raise JmemError(f"--model={name!r} is not one of {', '.join(MODELS)}")
    if num_train:
        dataset = resize_train(dataset, num_train)
    if name == "fzmnist":
        train = TrainConfig(epochs=epochs or default_epochs, batch_size=128, optimizer="sgd",
                            learning_rate=0.05, momentum=0.9, compute_dtype=dtype)
    else:
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
