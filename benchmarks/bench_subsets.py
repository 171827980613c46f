"""Time to draw the keep-masks of a study (a benchmark, not a test).

    python benchmarks/bench_subsets.py [--repeats 3]

For each design (fixed, bernoulli, balanced at rates 0.7 and 0.95 with equal held-out
precision) and size (560 x 20,000; 2,100 x 60,000, F&Z's MNIST scale), the best of
``--repeats`` calls of :func:`jmem.data.subsets.make_keep`, in seconds, with the machine's
load average. Drawing the masks should stay a small share of a study's start-up.
"""

from __future__ import annotations

import argparse
import os
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from jmem.data.subsets import make_keep

    cases = [("fixed", 0.7, False), ("bernoulli", 0.7, False), ("balanced", (0.7, 0.95), True)]
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()[0]:.1f}")
    for models, examples in ((560, 20_000), (2_100, 60_000)):
        for design, rates, equal in cases:
            best = float("inf")
            for _ in range(args.repeats):
                start = time.perf_counter()
                make_keep(0, models, examples, design, rates, equal_heldout=equal)
                best = min(best, time.perf_counter() - start)
            print(f"{design:>9} {models:>5} x {examples:>6}: {best:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
