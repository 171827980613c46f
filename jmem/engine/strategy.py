"""Which batching strategy and which per-device layout a wave trains with (measured rules).

See :mod:`jmem.engine.trainer` for what the strategies and the chunk layout are.
"""

from __future__ import annotations

from jmem.engine.hparams import ModelConfig, TrainConfig


def resolve_strategy(model_cfg: ModelConfig, train_cfg: TrainConfig, backend: str | None = None) -> str:
    """The concrete strategy for ``train_cfg.strategy`` ("auto" resolved).

    Rule (measured on the 2-core CPU, see benchmarks/RESULTS.md and the README):
    MLPs use "vmap" (a batched GEMM already; "patches" is the same program). Convolutional
    models use "patches" on every backend: vmapped convolutions lower to grouped
    convolutions, measured 2-4x slower per model than a loop on CPU and a known weak spot of
    GPU backward passes, while patches x matmul under vmap was the fastest way on CPU.
    """
    del backend  # The rule does not depend on the backend yet; kept for a measured GPU rule.
    if train_cfg.strategy != "auto":
        return train_cfg.strategy
    return "vmap" if model_cfg.kind == "mlp" else "patches"


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
    Accelerators: the whole block in one vmap (one small model leaves the chip idle; no
    GPU measurement yet, benchmarks/gpu.sh measures the chunk layouts too).
    """
    del train_cfg
    if backend != "cpu":
        return 0
    return CPU_CHUNK.get(model_cfg.kind, 0)
