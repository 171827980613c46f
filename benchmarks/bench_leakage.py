"""CIFAR-scale pixel-space leakage detection: wall time and peak memory on this machine.

Random data of CIFAR's shape (50,000 train x 10,000 test, 32x32x3 = 3,072 values each, already
"normalised"): the detector's cost does not depend on the content. Reports the wall time of
each stage of ``jmem.data.leakage.find_leakage`` and the process's peak resident set size (RSS)
against the RSS with the data alone, i.e. what the detector adds on top of the dataset.

Run:  python benchmarks/bench_leakage.py [--train 50000] [--test 10000] [--no-within-test]
Sizes can be lowered for a quick check (``--train 5000 --test 1000``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time

import numpy as np


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=50_000)
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--train-chunk-size", type=int, default=8192)
    parser.add_argument("--no-within-test", action="store_true")
    args = parser.parse_args()

    import jax

    from jmem.data import leakage
    from jmem.data.dataset import Dataset

    rng = np.random.default_rng(0)
    x_train = rng.standard_normal((args.train, 32, 32, 3), dtype=np.float32)
    x_test = rng.standard_normal((args.test, 32, 32, 3), dtype=np.float32)
    x_test[:100] = x_train[:100]  # a few exact copies, so the result can be checked
    ds = Dataset("random-cifar", x_train, rng.integers(0, 10, args.train).astype(np.int32),
                 x_test, rng.integers(0, 10, args.test).astype(np.int32), 10)
    rss_data = current_rss_mib()

    t0 = time.perf_counter()
    result = leakage.find_leakage(ds, chunk_size=args.chunk_size, train_chunk_size=args.train_chunk_size,
                                  within_test=not args.no_within_test)
    total = time.perf_counter() - t0

    # The train-test search alone, on warm compilation caches, for the per-stage split.
    t1 = time.perf_counter()
    leakage.pixel_nearest(ds.x_test, ds.x_train, chunk_size=args.chunk_size, ref_chunk_size=args.train_chunk_size)
    train_test = time.perf_counter() - t1

    found = int(np.sum(result.nearest["pixel"].index[:100] == np.arange(100)))
    report = {
        "train": args.train, "test": args.test, "example_shape": [32, 32, 3],
        "chunk_size": args.chunk_size, "train_chunk_size": args.train_chunk_size,
        "within_test": not args.no_within_test,
        "find_leakage_s": round(total, 1),
        "train_test_search_warm_s": round(train_test, 1),
        "rss_with_data_mib": round(rss_data), "peak_rss_mib": round(peak_rss_mib()),
        "peak_minus_data_mib": round(peak_rss_mib() - rss_data),
        "planted_exact_copies_found": f"{found}/100",
        "flagged": int(result.leaked.sum()),
        "jax": jax.__version__, "backend": jax.default_backend(), "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
