"""Measurement: timing with warm-up and rotation, host and device peak memory, matmul peak."""

from __future__ import annotations

import dataclasses
import math
import resource
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp

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
