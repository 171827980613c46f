"""Waves cut by subset size against waves cut in row order (a benchmark, not a test).

    python benchmarks/bench_wave_order.py [--models 160] [--wave-size 40] [--epochs 3] [--repeats 2]

A two-rate study (rates 0.7 and 0.95, alternating by model as ``subsets.design=balanced``
draws them) on the digits MLP, compact data order. In row order every wave holds models of
both rates and runs all of them for the 0.95 models' steps; :func:`jmem.study.waves.wave_order`
cuts waves from the rows sorted by steps per epoch. For both orders this trains every wave with
:func:`jmem.study.waves.train_wave` (no files) and reports wall time, the optimizer steps the
waves run (each wave: its longest model's steps x its models) against the steps the models
need, and checks that the margins agree model by model (the order changes no result beyond
float rounding). The orders alternate within each repeat, so a drifting machine load hits both.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path.home() / ".cache" / "jmem" / "jax"))


def wave_steps(steps: "np.ndarray", order: "np.ndarray", wave_size: int) -> int:
    """Optimizer steps (per epoch, summed over models) that waves of ``wave_size`` cut from
    ``order`` run: each wave runs all its models for its longest model's steps."""
    total = 0
    for start in range(0, order.size, wave_size):
        rows = order[start:start + wave_size]
        total += int(steps[rows].max()) * rows.size
    return total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=160)
    parser.add_argument("--wave-size", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args(argv)

    from jmem.engine.host_devices import configure_host_devices

    configure_host_devices([])
    import numpy as np

    from jmem import config as config_lib
    from jmem.data.loaders import load_dataset
    from jmem.data.subsets import make_keep
    from jmem.engine.batches import steps_per_epoch
    from jmem.study import waves

    config = config_lib.apply_overrides(config_lib.load_experiment("experiments/digits.py"), [
        f"train.num_models={args.models}", f"train.epochs={args.epochs}"])
    dataset = load_dataset(config.data.name)
    keep, _ = make_keep(config.seed, args.models, dataset.num_train, "balanced", (0.7, 0.95))
    job = waves.Job(dataset, keep, config.model, config.train, config.seed)
    steps = steps_per_epoch(keep, config.train)
    orders = {"row order": np.arange(args.models), "by subset size": job.order}
    timings = {name: [] for name in orders}
    margins = {}
    for repeat in range(args.repeats + 1):  # repeat 0 compiles (both wave shapes) and is not timed
        for name, order in orders.items():
            run = waves.Job(dataset, keep, config.model, config.train, config.seed)
            run.__dict__["order"] = order  # the cached wave order, replaced
            t0 = time.perf_counter()
            parts = [waves.train_wave(run, start, min(start + args.wave_size, args.models), log=lambda m: None)
                     for start in range(0, args.models, args.wave_size)]
            if repeat:
                timings[name].append(time.perf_counter() - t0)
            out = np.empty((args.models, dataset.num_test), np.float32)
            out[order] = np.concatenate([p["margins_test"] for p in parts])
            margins[name] = out
    needed = int(steps.sum())
    rows = []
    for name, order in orders.items():
        run_steps = wave_steps(steps, order, args.wave_size)
        rows.append({"order": name, "seconds": round(min(timings[name]), 3),
                     "steps_run_per_epoch": run_steps, "steps_needed_per_epoch": needed,
                     "wasted_fraction": round(1 - needed / run_steps, 4)})
    difference = float(np.abs(margins["row order"] - margins["by subset size"]).max())
    result = {"models": args.models, "wave_size": args.wave_size, "epochs": args.epochs,
              "rows": rows, "speedup": round(rows[0]["seconds"] / rows[1]["seconds"], 3),
              "max_margin_difference": difference,
              "load_average": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    for row in rows:
        print(f"{row['order']:>15}: {row['seconds']:.2f} s, {row['steps_run_per_epoch']} steps run per "
              f"epoch for {row['steps_needed_per_epoch']} needed ({row['wasted_fraction']:.1%} idle)")
    print(f"speed-up {result['speedup']:.2f}x; largest margin difference {difference:.2e}; "
          f"load {result['load_average']}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
