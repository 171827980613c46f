"""What ``jmem train`` and ``jmem run`` check of a config before anything is written:
whether the run's arrays fit in memory, and legal settings that are probably mistakes."""

from __future__ import annotations

from jmem.config import Config
from jmem.errors import JmemError


def check_run_size(config: Config, num_train: int, num_test: int, memory_bytes: int) -> None:
    """JmemError if the run's R x N arrays cannot fit in memory (refused before training).

    The keep-masks (bool[R, N]) and the assembled margins (float32[R, N + T]) are held in
    memory at once; ``memory_bytes`` is the machine's physical memory.
    """
    r = config.train.num_models
    need = r * num_train + 4 * r * (num_train + num_test)
    if need > memory_bytes:
        raise JmemError(f"train.num_models={r}: the run's arrays (keep-masks and margins on "
                        f"{num_train} + {num_test} examples) need {need / 2**30:.1f} GiB, more than "
                        f"this machine's {memory_bytes / 2**30:.1f} GiB of memory")


def suspicious_settings(config: Config, num_train: int) -> list[str]:
    """Warnings (one line each) for legal settings that are probably mistakes.

    num_train: N, the training-set size (a model trains on about ``rate * N`` examples).
    """
    out = []
    train = config.train
    if train.momentum >= 1:
        unused = "" if train.optimizer == "sgd" else f" (unused by train.optimizer={train.optimizer!r})"
        out.append(f"train.momentum={train.momentum:g} >= 1: heavy-ball momentum this large "
                   f"makes SGD diverge; usual values are 0.9-0.99{unused}")
    smallest = min(config.subsets.rates) * num_train
    if train.batch_size >= smallest:
        out.append(f"train.batch_size={train.batch_size} >= the ~{int(smallest)} examples of a "
                   f"model's subset (rate {min(config.subsets.rates):g} of {num_train}): every "
                   "step is one full-batch step")
    return out
