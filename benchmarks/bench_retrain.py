"""Removal-experiment training throughput against ``jmem train`` (a benchmark, not a test).

    python benchmarks/bench_retrain.py RUN_DIR [--seeds 50] [--methods fixed,fdr] [--repeats 1]

RUN_DIR is a scored run (e.g. ``jmem run experiments/digits.py --workdir /tmp/d``). For the
retrain of RUN_DIR's default experiment (every arm x seed, M models) and for ``jmem train``
of M models with the same recipe (the run's config, ``train.num_models = M``), both in fresh
directories, it reports the training phase's wall time, models/s and example-epochs/s
(``sum(keep) * epochs / s``: retrain rows keep ~93-100% of the examples, ``jmem train`` rows
70%, so models/s alone favours the latter). Selection and statistics are timed separately.
Both use the persistent compilation cache of the ``jmem`` command, so warm it with one run of
each first (or read the repeats). ``--match-rate`` trains ``jmem train``'s models at the
retrain rows' mean kept fraction instead of the run's rate. Issue 11's target: retrain models/s >= 0.9x train's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path.home() / ".cache" / "jmem" / "jax"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--methods", default="fixed,fdr")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--match-rate", action="store_true",
                        help="train jmem train's models at the retrain rows' mean kept fraction "
                             "(equal work per model: isolates the machinery's overhead)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args(argv)

    from jmem.engine.host_devices import configure_host_devices

    configure_host_devices([])  # the jmem command's CPU set-up: one device per core
    import numpy as np

    from jmem import config as config_lib
    from jmem.data.loaders import load_dataset
    from jmem.study import rundir
    from jmem.study.retrain import stage
    from jmem.study.training import run_training

    config = config_lib.from_dict(rundir.load_json(args.run_dir / rundir.CONFIG))
    dataset = load_dataset(config.data.name, data_dir=config.data.data_dir or None)
    overrides = [f"retrain.seeds={args.seeds}", f"retrain.methods={args.methods}"]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            # retrain, in a fresh copy of the run (no retrain/ yet)
            copy = Path(tmp) / f"run_{repeat}"
            shutil.copytree(args.run_dir, copy, ignore=shutil.ignore_patterns("retrain"))
            began = time.perf_counter()
            summary = stage.run_retrain(copy, overrides, dataset=dataset, progress=False,
                                        log=lambda *a: None)
            total = time.perf_counter() - began
            keep = np.load(copy / stage.RETRAIN_DIR / stage.KEEP)
            models = keep.shape[0]
            retrain_row = {"what": "retrain", "repeat": repeat, "models": models,
                           "train_seconds": summary["train_seconds"],
                           "models_per_second": models / summary["train_seconds"],
                           "example_epochs_per_second":
                               float(keep.sum()) * config.train.epochs / summary["train_seconds"],
                           "total_seconds": round(total, 2),
                           "other_seconds": round(total - summary["train_seconds"], 2)}
            # jmem train of the same number of models, same recipe
            train_config = dataclasses.replace(config, train=dataclasses.replace(
                config.train, num_models=models))
            if args.match_rate:
                rate = min(float(keep.mean()), 0.999)
                train_config = dataclasses.replace(train_config, subsets=dataclasses.replace(
                    config.subsets, rates=(rate,)))
            workdir = Path(tmp) / f"train_{repeat}"
            began = time.perf_counter()
            trained = run_training(train_config, workdir, dataset, progress=False,
                                   log=lambda *a: None)
            total = time.perf_counter() - began
            train_keep = np.load(workdir / rundir.KEEP)
            train_row = {"what": "jmem train", "repeat": repeat, "models": models,
                         "rate": train_config.subsets.rates[0],
                         "train_seconds": trained["seconds"],
                         "models_per_second": models / trained["seconds"],
                         "example_epochs_per_second":
                             float(train_keep.sum()) * config.train.epochs / trained["seconds"],
                         "total_seconds": round(total, 2)}
            results += [retrain_row, train_row]
            ratio = retrain_row["models_per_second"] / train_row["models_per_second"]
            work = retrain_row["example_epochs_per_second"] / train_row["example_epochs_per_second"]
            print(json.dumps({"retrain": retrain_row, "train": train_row,
                              "models_per_second_ratio": round(ratio, 3),
                              "example_epochs_per_second_ratio": round(work, 3)}, indent=2))
            sys.stdout.flush()
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
