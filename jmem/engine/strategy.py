"""Which batching strategy and which per-device layout a wave trains with (measured rules).

See :mod:`jmem.engine.trainer` for what the strategies and the chunk layout are.
"""

from __future__ import annotations

from jmem.engine.hparams import ModelConfig, TrainConfig, auto_strategy


def resolve_strategy(model_cfg: ModelConfig, train_cfg: TrainConfig, backend: str | None = None) -> str:
    """The concrete strategy for ``train_cfg.strategy``: "auto" resolved by
    :func:`jmem.engine.hparams.auto_strategy` for ``backend`` (default: JAX's default backend;
    the measured rule: vmap for MLPs everywhere and for conv nets on GPUs, patches otherwise)."""
    if train_cfg.strategy != "auto":
        return train_cfg.strategy
    if backend is None:
        import jax  # only here: this module is otherwise free of JAX
        backend = jax.default_backend()
    return auto_strategy(model_cfg.kind, backend)


def conv_impl(strategy: str) -> str:
    return "patches" if strategy == "patches" else "lax"


# Chunk per model family on CPU (see resolve_chunk); measured in benchmarks/RESULTS.md.
CPU_CHUNK = {"mlp": 1, "cnn": 1, "resnet": 1}


def resolve_chunk(model_cfg: ModelConfig, train_cfg: TrainConfig, backend: str) -> int:
    """Models vectorised together on one device (0: all of its block), by measured rule.

    CPU (XLA:CPU, one thread per device): one model at a time inside the program
    (``lax.map``) for every family. Measured on the 2-core CPU, 2026-12-01 (RESULTS.md,
    "Issue 15"; loaded machine, alternated runs, medians): digits MLP at R=256, chunk 1
    18.5-18.9 models/s vs 14.0 for chunks of 4 and 8.9-13.2 for one vmap per device block
    (vmapping tiny per-model matmuls does not pay on XLA:CPU, BACKGROUND section 5);
    MNIST-1D CNN at R=32, chunk 1 6.3 vs 5.0 (chunks of 4) and 3.7 (one vmap), at R=8
    within noise of each other. The ResNet is not measured on CPU; it follows the CNN.
    Accelerators: the whole block in one vmap. On one H200 (benchmarks/results/
    gpu-2026-12-04.md) the CIFAR preset's ResNet at R = 64 trained at 116,013 images/s in one
    vmap against 101,086 in patches chunks of 8; at R = 16 patches chunks of 4 gave 95,657
    against 98,173 unchunked.
    """
    del train_cfg
    if backend != "cpu":
        return 0
    return CPU_CHUNK.get(model_cfg.kind, 0)
