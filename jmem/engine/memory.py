"""How many models a wave holds: a rough per-model byte count against the device's memory."""

from __future__ import annotations

import math
import os

import jax

from jmem.data.dataset import Dataset
from jmem.engine.hparams import ModelConfig, TrainConfig
from jmem.engine.models import activation_elems, check_input, param_count
from jmem.engine.strategy import conv_impl, resolve_strategy


def estimate_model_bytes(model_cfg: ModelConfig, train_cfg: TrainConfig, dataset: Dataset,
                         backend: str | None = None) -> int:
    """Device bytes one model of a wave needs during training (an upper estimate).

    Parameters, gradients and updated copies (x3) plus optimizer slots, always float32 (the
    master weights); the activations of one batch (layer outputs, and the patch matrices
    under "patches") and the batch itself, in the compute dtype; the per-epoch order (int32[N])
    and its sort temporaries. Calibrated on one H200 (benchmarks/results/gpu-2026-12-04.md):
    XLA's memory analysis gave 239 MB per model for the CIFAR preset's ResNet in bf16 (vmap)
    and 623 MB (patches) against 302 MB and 795 MB here, and 10.5 MB per F&Z MLP against
    12.3 MB: the activations enter once, not three times as until then, and at 2 bytes in bf16.
    """
    check_input(model_cfg, dataset.example_shape)
    strategy = resolve_strategy(model_cfg, train_cfg, backend)
    n_params = param_count(model_cfg, dataset.num_classes, dataset.example_shape)
    slots = {"sgd": 1 if train_cfg.momentum else 0, "adam": 2, "adamw": 2}[train_cfg.optimizer]
    param_bytes = 4 * n_params * (3 + 2 * slots)
    act = activation_elems(model_cfg, dataset.num_classes, dataset.example_shape, conv_impl(strategy))
    itemsize = 2 if train_cfg.compute_dtype == "bfloat16" else 4
    act_bytes = itemsize * train_cfg.batch_size * (act + math.prod(dataset.example_shape))
    order_bytes = 4 * 4 * dataset.num_train
    return int(param_bytes + act_bytes + order_bytes)


def available_device_bytes() -> int:
    """Free bytes on this process's first device (its memory stats), else free host memory."""
    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - backends without stats raise various errors
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


# Largest wave per device on a CPU: the per-model cost is lowest at 8-32 models there (their
# parameters and optimizer state still fit in cache; measured in benchmarks/RESULTS.md: the
# digits MLP's cost per model rises from 0.39x of R=1 at R=32 to 0.52x at R=128), and small
# waves keep the progress bar and checkpoints fine-grained. Accelerators: memory decides
# (on an H200 the ResNet's throughput still rose from R = 16 to 64).
MAX_WAVE_PER_DEVICE = {"cpu": 32}


def default_max_wave(backend: str | None = None) -> int | None:
    """The per-device wave cap of ``backend`` (default: JAX's): 32 on CPU, None elsewhere."""
    return MAX_WAVE_PER_DEVICE.get(backend or jax.default_backend())


def choose_wave_size(model_cfg: ModelConfig, train_cfg: TrainConfig, dataset: Dataset,
                     available_bytes: int | None = None, headroom: float = 0.5,
                     max_wave: int | None = None, backend: str | None = None) -> int:
    """Models to train at once on one device: ``train_cfg.wave_size`` if > 0, else what fits.

    Uses ``headroom`` of the available bytes (``available_device_bytes()`` by default) after
    the dataset itself (at 4 bytes a value), divided by :func:`estimate_model_bytes`; capped by
    ``train_cfg.num_models`` and ``max_wave`` (default :func:`default_max_wave`: 32 on CPU,
    no cap elsewhere). Always >= 1.
    """
    if max_wave is None:
        max_wave = default_max_wave(backend)
    if train_cfg.wave_size > 0:
        return min(train_cfg.wave_size, train_cfg.num_models)
    if available_bytes is None:
        available_bytes = available_device_bytes()
    data_bytes = dataset.x_train.nbytes + dataset.y_train.nbytes
    budget = headroom * available_bytes - data_bytes
    per_model = estimate_model_bytes(model_cfg, train_cfg, dataset, backend)
    fits = int(budget // per_model) if budget > 0 else 1
    return max(1, min(fits, train_cfg.num_models, max_wave or fits))
