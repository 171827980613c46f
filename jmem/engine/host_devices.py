"""Host-platform (CPU) devices: one JAX device per core, asked of XLA before JAX starts.

XLA:CPU fixes its device count when its backend starts, so this module imports no JAX:
the ``jmem`` command and ``python -m jmem.bench`` call :func:`configure_host_devices` first.
"""

from __future__ import annotations

import argparse
import os
import sys

from jmem.errors import JmemError

CPU_DEVICES_ENV = "JMEM_CPU_DEVICES"
HOST_DEVICE_FLAG = "--xla_force_host_platform_device_count"
EIGEN_FLAG = "--xla_cpu_multi_thread_eigen"


def env_int(name: str):
    """The integer value of environment variable ``name``, or None when unset or empty."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise JmemError(f"${name}={text!r} must be an integer") from None


def default_cpu_devices() -> int:
    """Host-platform devices to create when nothing asks otherwise: one per usable core.

    Measured on the 2-core CPU (README, "Scale-out and resume"): one device keeps only ~1.3 cores busy;
    two devices (Eigen pool off) trained the digits MLP at 1.94x and the MNIST-1D CNN at
    1.30x the models/s of one.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def xla_flags_with_host_devices(flags: str, count: int) -> str:
    """``$XLA_FLAGS`` with ``count`` host devices added, unless it already sets a count.

    With one device per core each device already runs on its own thread; XLA:CPU's shared
    intra-op (Eigen) thread pool then only makes the devices contend, so it is turned off
    (unless the flags set it): measured 1.95x one device's models/s for the digits MLP on 2
    cores with it off, 1.5x (and erratic) with it on.
    """
    if HOST_DEVICE_FLAG in flags:
        return flags
    flags = f"{flags} {HOST_DEVICE_FLAG}={count}".strip()
    if EIGEN_FLAG not in flags:
        flags += f" {EIGEN_FLAG}=false"
    return flags


def configure_host_devices(argv: list[str]) -> None:
    """Ask XLA:CPU for host-platform devices before JAX starts (a no-op once it has).

    The count is ``--devices N`` if given, else ``$JMEM_CPU_DEVICES``, else one per core. It
    only affects the CPU backend: on a machine with an accelerator, JAX's devices are the
    accelerators, and the extra host devices stay unused.
    """
    if "jax" in sys.modules:  # too late: the backend may already exist (e.g. under pytest)
        return
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--devices", type=int, default=None)
    known, _ = pre.parse_known_args(argv)
    count = known.devices or env_int(CPU_DEVICES_ENV) or default_cpu_devices()
    if count > 1:
        os.environ["XLA_FLAGS"] = xla_flags_with_host_devices(os.environ.get("XLA_FLAGS", ""), count)
