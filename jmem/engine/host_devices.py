"""Host-platform (CPU) devices: one JAX device per core, asked of XLA before JAX starts.

XLA:CPU fixes its device count when its backend starts, so this module imports no JAX:
the ``jmem`` command and ``python -m jmem.bench`` call :func:`configure_host_devices` first.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

from jmem.errors import JmemError, one_line

CPU_DEVICES_ENV = "JMEM_CPU_DEVICES"
HOST_DEVICE_FLAG = "--xla_force_host_platform_device_count"
EIGEN_FLAG = "--xla_cpu_multi_thread_eigen"
MAX_HOST_DEVICES = 1024  # asked on purpose ($JMEM_CPU_DEVICES); XLA starts a thread per device
_FLAG = re.compile(r"--[A-Za-z0-9_]+(=.*)?$")


def env_int(name: str):
    """The integer value of environment variable ``name``, or None when unset or empty."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise JmemError(f"${name}={text!r} must be an integer") from None


def cpu_devices_env() -> int | None:
    """``$JMEM_CPU_DEVICES``, validated: an integer in [1, MAX_HOST_DEVICES], or None."""
    count = env_int(CPU_DEVICES_ENV)
    if count is not None and not 1 <= count <= MAX_HOST_DEVICES:
        raise JmemError(f"${CPU_DEVICES_ENV}={count} must be an integer in [1, {MAX_HOST_DEVICES}] "
                        "(host devices to create on the CPU); unset it for one per core")
    return count


def check_xla_flags(flags: str, probe: bool = True) -> None:
    """JmemError for ``$XLA_FLAGS`` that XLA would abort on (before JAX starts).

    XLA reads a value that does not start with ``--`` as the name of a file of flags, and
    aborts the process (no Python error) on a missing file or an unknown flag. The format is
    checked here; with ``probe``, a child process starts JAX's CPU backend with the flags and
    an unknown flag it reports is named (flags of other platforms' plugins, e.g. ``--xla_tpu_``,
    are left to them).
    """
    text = flags.strip()
    if not text:
        return
    if not text.startswith("--"):
        if os.path.isfile(text):  # a flag file, as XLA allows
            return
        raise JmemError(f"XLA_FLAGS={flags!r} does not start with '--', so XLA would read it as a "
                        "file of flags, and there is no such file; give flags such as "
                        f"{HOST_DEVICE_FLAG}=2, or unset XLA_FLAGS")
    for token in text.split():
        if not _FLAG.match(token):
            raise JmemError(f"XLA_FLAGS={flags!r}: {token!r} is not a flag (--name or --name=value); "
                            "fix or unset XLA_FLAGS")
    if probe:
        _probe_xla_flags(flags)


def _probe_xla_flags(flags: str) -> None:
    """Start JAX's CPU backend in a child process with ``flags``; JmemError naming a flag XLA
    does not know (XLA would abort this process on it)."""
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    try:
        child = subprocess.run([sys.executable, "-c", "import jax; jax.devices()"], env=env,
                               capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return  # cannot tell: let JAX decide
    match = re.search(r"Unknown flags? in XLA_FLAGS: (\S+)", child.stderr)
    if child.returncode != 0 and match and not match.group(1).startswith("--xla_tpu"):
        raise JmemError(f"XLA_FLAGS={flags!r}: XLA does not know the flag {match.group(1)} "
                        "(it would abort); fix or unset XLA_FLAGS")
    if child.returncode != 0 and "XLA_FLAGS" in child.stderr and not match:
        line = next((ln for ln in child.stderr.splitlines() if "XLA_FLAGS" in ln), "")
        raise JmemError(f"XLA_FLAGS={flags!r} is refused by XLA ({one_line(line)[-300:]}); fix or "
                        "unset XLA_FLAGS")


def default_cpu_devices() -> int:
    """Host-platform devices to create when nothing asks otherwise: one per usable core.

    Measured on a 2-core CPU (docs/scale-out.md, "Several devices"): one device keeps only ~1.3 cores busy;
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
    requested, asked, cores = known.devices, cpu_devices_env(), default_cpu_devices()
    if requested is not None and requested > MAX_HOST_DEVICES:
        # A typo like --devices 100000 must not make XLA start 100,000 host devices (it hangs):
        # keep to the cores; the command refuses the flag once JAX runs (jmem.cli.check_devices).
        requested = cores
    count = requested or asked or cores
    if count > 1:
        os.environ["XLA_FLAGS"] = xla_flags_with_host_devices(os.environ.get("XLA_FLAGS", ""), count)
