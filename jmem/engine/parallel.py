"""Several devices and several hosts: the model axis, sharded; nothing else is shared.

Models of a wave are independent, so scale-out needs no communication at all:

* **Devices.** The model axis of a wave is sharded over a 1-D mesh of this process's
  devices (axis ``"models"``) with :func:`jax.shard_map`; the dataset is replicated on each
  device. Each device runs ``vmap(train_one)`` on its own block of models, and the compiled
  step contains no collective (a test reads the HLO). Waves are padded to a multiple of the
  device count with dummy models whose outputs are dropped.
* **Hosts.** After :func:`initialize_distributed` each process trains its own share of the
  waves on its own devices (a process-local mesh) and writes each finished wave to the
  shared run directory; process 0 assembles the final arrays after a barrier. The only
  cross-process traffic is a broadcast of the start-up decision and barriers.

Host-platform devices (``--xla_force_host_platform_device_count``) must be configured before
JAX initialises its backends; ``jmem.cli`` does that, before anything imports JAX.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jmem.errors import JmemError

MODEL_AXIS = "models"


# ----------------------------------------------------------------------------- devices


def local_devices(num_devices: int | None = None) -> list:
    """The first ``num_devices`` devices of this process (all of them when None or 0).

    Raises JmemError if more are asked for than exist.
    """
    devices = jax.local_devices()
    if not num_devices:
        return list(devices)
    if num_devices > len(devices):
        raise JmemError(f"--devices={num_devices} but this process has only {len(devices)} "
                        f"{devices[0].platform} device(s); on CPU set it before JAX starts "
                        f"(the jmem command does) or use XLA_FLAGS="
                        f"--xla_force_host_platform_device_count={num_devices}")
    return list(devices[:num_devices])


def model_mesh(devices):
    """A 1-D :class:`jax.sharding.Mesh` over ``devices`` with the axis ``"models"``."""
    return Mesh(np.asarray(devices, dtype=object), (MODEL_AXIS,))


def padded_size(num_models: int, num_devices: int) -> int:
    """The smallest multiple of ``num_devices`` that is >= ``num_models``."""
    return -(-num_models // num_devices) * num_devices


def pad_models(array: np.ndarray, size: int) -> np.ndarray:
    """Pad the leading (model) axis of ``array`` to ``size`` with copies of row 0.

    Padding rows are dummy models: a copy of a valid model is always valid input (a keep row
    selecting examples, a finite learning rate), and since models never interact, what a
    dummy computes cannot affect the real ones. Their outputs are dropped.
    """
    array = np.asarray(array)
    short = size - array.shape[0]
    if short <= 0:
        return array
    return np.concatenate([array, np.repeat(array[:1], short, axis=0)])


def shard_over_models(fn, mesh, num_shared: int, num_per_model: int, num_replicated: int = 0):
    """``shard_map(fn)`` over the model axis of ``mesh`` (wrap it in ``jax.jit``).

    ``fn(*shared, *per_model, *replicated)`` must be a *batched* function (e.g. a ``vmap``):
    ``shared`` arguments (the dataset) are replicated on every device, ``per_model``
    arguments (pytrees whose leaves lead with the model axis) are split into one block per
    device, ``replicated`` arguments (scalars such as epoch bounds) are passed whole. Every
    output leaf leads with the model axis and is sharded the same way. Nothing is reduced
    over the model axis, so the program has no collectives.
    """
    in_specs = (P(),) * num_shared + (P(MODEL_AXIS),) * num_per_model + (P(),) * num_replicated
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=P(MODEL_AXIS))


def put_models(tree, mesh):
    """Place a pytree whose leaves lead with the model axis, split over ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, P(MODEL_AXIS)))


def put_replicated(tree, mesh):
    """Place a pytree whole on every device of ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


COLLECTIVE_OPS = ("all-gather", "all-reduce", "collective-permute", "all-to-all",
                  "reduce-scatter", "collective-broadcast")


def collectives_in(hlo_text: str) -> list[str]:
    """The collective op names that occur in compiled HLO text (empty: communication-free)."""
    return [op for op in COLLECTIVE_OPS if f" {op}(" in hlo_text or f" {op}-start(" in hlo_text]


# ----------------------------------------------------------------------------- hosts


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, auto: bool = False) -> bool:
    """Join a multi-process JAX job; returns True if one was joined.

    ``auto``: ``jax.distributed.initialize()`` with no arguments, which detects Cloud TPU
    pods, SLURM and other supported clusters. Otherwise all three of ``coordinator``
    (``host:port`` of process 0), ``num_processes`` and ``process_id`` are needed. CPU
    processes need a cross-process collectives implementation for the start-up broadcast and
    barriers, so gloo is selected (it only affects the CPU backend).
    """
    manual = (coordinator, num_processes, process_id)
    if not auto and all(v is None for v in manual):
        return False
    if not auto and any(v is None for v in manual):
        raise JmemError(f"--coordinator={coordinator!r} --num-processes={num_processes!r} "
                        f"--process-id={process_id!r}: give all three (or --distributed auto)")
    if not auto and not 0 <= process_id < num_processes:
        raise JmemError(f"--process-id={process_id} must be in [0, --num-processes={num_processes})")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        if auto:
            jax.distributed.initialize()
        else:
            jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)
    except (RuntimeError, ValueError) as err:  # no cluster detected, coordinator unreachable
        flags = "--distributed auto" if auto else f"--coordinator={coordinator}"
        message = " ".join(str(err).split())[:300]
        raise JmemError(f"{flags}: jax.distributed.initialize() failed: {message}") from err
    return True


def process_index() -> int:
    return jax.process_index()


def process_count() -> int:
    return jax.process_count()


def broadcast_from_primary(tree):
    """Process 0's value of a pytree of fixed-shape numpy arrays, on every process.

    Every process must call it with the same shapes and dtypes (non-primary values are
    ignored). Also a barrier. Booleans travel as uint8 (the broadcast is a sum).
    """
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    as_int = jax.tree_util.tree_map(
        lambda a: np.asarray(a).astype(np.uint8) if np.asarray(a).dtype == bool else np.asarray(a), tree)
    out = multihost_utils.broadcast_one_to_all(as_int)
    return jax.tree_util.tree_map(lambda o, a: np.asarray(o).astype(np.asarray(a).dtype), out, tree)


def gather_int(value: int) -> np.ndarray:
    """int64[P]: every process's ``value``, by process index (also a barrier)."""
    if jax.process_count() == 1:
        return np.asarray([value], np.int64)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(np.int32(value)), np.int64).reshape(-1)


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier ``name`` (no-op for one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def my_waves(waves: list, index: int, count: int) -> list:
    """The waves process ``index`` of ``count`` trains: round-robin by position in ``waves``."""
    return [wave for i, wave in enumerate(waves) if i % count == index]
