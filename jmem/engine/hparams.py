"""Model and training settings: plain, validated dataclasses with no JAX import.

These are the ``model`` and ``train`` sections of an experiment config. Library functions in
``jmem.engine.models`` / ``jmem.engine.trainer`` take them as explicit arguments; only the CLI reads configs.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

from jmem.errors import JmemError


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which network to train.

    kind: "mlp" (flattens its input), "cnn" (small conv net for 8x8 / 28x28 images and 1-D
      sequences), or "resnet" (small ResNet-style CNN for 32x32x3).
    width: hidden width of the MLP / base channel count of the CNNs.
    depth: number of hidden layers (MLP) or conv stages (CNNs).
    norm: "none" or "batchnorm" (BatchNorm keeps per-model statistics under vmap). Norm-free
      ResNet blocks use a zero-initialised residual gain (SkipInit) instead.
    kernel_size: convolution window (per spatial dim) of the CNNs; ignored by the MLP.
    widths: MLP only: the hidden widths layer by layer (e.g. ``(512, 256)`` for Feldman &
      Zhang's MNIST MLP 784-512-256-10); when given, ``width`` and ``depth`` are ignored.
      ``()`` (default) means ``depth`` layers of ``width``.
    """

    kind: str = "mlp"
    width: int = 256
    depth: int = 1
    norm: str = "none"
    kernel_size: int = 3
    widths: tuple = ()

    def __post_init__(self):
        widths = self.widths if isinstance(self.widths, (tuple, list)) else (self.widths,)
        for w in widths:
            if isinstance(w, bool) or not float(w).is_integer() or w < 1:
                raise JmemError(f"model.widths contains {w!r}; every width must be an integer >= 1")
        object.__setattr__(self, "widths", tuple(int(w) for w in widths))
        if self.widths and self.kind != "mlp":
            raise JmemError(f"model.widths={list(self.widths)} is for model.kind='mlp' only, not {self.kind!r}")
        if self.kind not in ("mlp", "cnn", "resnet"):
            raise JmemError(f"model.kind={self.kind!r} is not one of 'mlp', 'cnn', 'resnet'")
        if self.width < 1:
            raise JmemError(f"model.width={self.width} must be >= 1")
        if self.depth < 1:
            raise JmemError(f"model.depth={self.depth} must be >= 1")
        if self.kernel_size < 1:
            raise JmemError(f"model.kernel_size={self.kernel_size} must be >= 1")
        if self.norm not in ("none", "batchnorm"):
            raise JmemError(f"model.norm={self.norm!r} is not one of 'none', 'batchnorm'")


def hidden_widths(model_cfg: ModelConfig) -> tuple[int, ...]:
    """The MLP's hidden widths: ``widths`` if given, else ``depth`` x ``width``."""
    return model_cfg.widths or (model_cfg.width,) * model_cfg.depth


def auto_strategy(model_kind: str, backend: str) -> str:
    """What ``strategy="auto"`` means for a model family on a backend (measured rules).

    MLPs: "vmap" everywhere (a batched GEMM already; "patches" is the same program).
    Convolutional models: "vmap" on GPUs: on one H200 the CIFAR preset's ResNet in bf16 ran
    at 116,013 images/s with vmapped (grouped) convolutions at R = 64 against 68,091 with
    patches x matmul, which also took 2.6x the memory; at R = 16 the two were within 1%
    (benchmarks/results/gpu-2026-12-04.md). "patches" on CPUs (vmapped convolutions measured
    2-4x slower per model than a loop there, patches the fastest way, benchmarks/RESULTS.md)
    and on TPUs, where nothing is measured yet.
    """
    if model_kind == "mlp":
        return "vmap"
    return "vmap" if backend in ("gpu", "cuda", "rocm") else "patches"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How every model is trained. All models of a run share these settings.

    num_models: R, the number of models (one keep-mask each).
    epochs: passes over each model's own subset: model r takes epochs * ceil(n_r / batch_size)
      steps (n_r = its subset size), so a model never depends on the other models of its wave.
    batch_size: examples per step per model.
    optimizer: "sgd", "adam" or "adamw".
    learning_rate: the base learning rate (the schedule multiplies it).
    momentum, nesterov: heavy-ball momentum and its Nesterov form ("sgd" only; 0 = none).
    weight_decay: L2 added to the gradient ("sgd", "adam"), decoupled ("adamw"); 0 = none.
    schedule: "constant", "cosine", "linear" (decay to 0 over the model's steps), or "onecycle"
      (linear ramp from lr/25 to lr over warmup_steps, or 30% of the steps when 0, then linear
      decay to 0).
    warmup_steps: steps of linear warm-up for "constant", "cosine" and "linear" (0 = none);
      "onecycle": the length of its ramp.
    label_smoothing: label smoothing of the cross-entropy targets (0 = off).
    grad_clip: clip each model's gradient to this global norm (0 = off).
    augment: "none" or "crop_flip" (random crop with padding + horizontal flip, images only).
    crop_padding: pixels of zero padding on each side before the random crop ("crop_flip").
    compute_dtype: "float32" or "bfloat16" (accelerators).
    strategy: how models are batched (see ``jmem.engine.trainer``): "auto", "vmap", "sequential",
      "patches".
    wave_size: models trained at once (0 = chosen from available memory).
    data_order: "compact" (each epoch runs over the model's own subset, ceil(n_r / batch_size)
      steps: the estimation recipe) or "coupled" (each epoch runs over all N positions in one
      random order per seed, the model's excluded examples masked out of their batches, so
      models that share a seed and differ by a few removed examples see every other example
      at the same step: the removal experiment's paired arms).
    record_proxies: also record, per model and training example, the cumulative training loss
      and the epoch from which the example stays learned (two [R, N] arrays; cheap
      memorization proxies, validated against leave-one-out by ``jmem loo``).
    """

    num_models: int = 256
    epochs: int = 20
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0
    label_smoothing: float = 0.0
    grad_clip: float = 0.0
    augment: str = "none"
    crop_padding: int = 4
    compute_dtype: str = "float32"
    strategy: str = "auto"
    wave_size: int = 0
    data_order: str = "compact"
    record_proxies: bool = False

    def __post_init__(self):
        positive = {"num_models": self.num_models, "epochs": self.epochs,
                    "batch_size": self.batch_size}
        for name, value in positive.items():
            if value < 1:
                raise JmemError(f"train.{name}={value} must be >= 1")
        choices = {
            "optimizer": ("sgd", "adam", "adamw"),
            "schedule": ("constant", "cosine", "linear", "onecycle"),
            "augment": ("none", "crop_flip"),
            "compute_dtype": ("float32", "bfloat16"),
            "strategy": ("auto", "vmap", "sequential", "patches"),
            "data_order": ("compact", "coupled"),
        }
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                raise JmemError(f"train.{name}={value!r} is not one of {', '.join(map(repr, allowed))}")
        for name in ("learning_rate", "momentum", "weight_decay", "grad_clip", "label_smoothing"):
            value = getattr(self, name)
            if not (isinstance(value, numbers.Real) and not isinstance(value, bool)
                    and math.isfinite(value)):
                raise JmemError(f"train.{name}={value!r} must be a finite number")
        if not self.learning_rate > 0:
            raise JmemError(f"train.learning_rate={self.learning_rate} must be > 0")
        if not 0 <= self.label_smoothing < 1:
            raise JmemError(f"train.label_smoothing={self.label_smoothing} must be in [0, 1)")
        for name in ("weight_decay", "grad_clip", "momentum", "warmup_steps", "wave_size",
                     "crop_padding"):
            if getattr(self, name) < 0:
                raise JmemError(f"train.{name}={getattr(self, name)} must be >= 0")
