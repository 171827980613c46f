"""Models/s of each batching strategy of ``jmem.train`` (the evidence for the "auto" rule).

Two workloads, as in BACKGROUND section 5:
  * digits MLP 64-256-10, 70% Bernoulli subsets, 20 epochs, Adam 1e-3, batch 64;
  * MNIST-1D CNN (width 32, depth 3, kernel 5), 70% subsets, AdamW, batch 128, ``--cnn-epochs``
    epochs (2 by default, to keep the slow strategies measurable in minutes).
at R = 1, 8, 32, 128 models per wave. Every (workload, R, strategy) is compiled and run
once as warm-up, then the strategies are timed in alternating order ``--reps`` times and
the median is reported (CPU timing is noisy: compare side by side in one run). A
(strategy, R) whose predicted time (from the previous R) exceeds ``--max-seconds`` is
skipped and reported as such.

Run:  python benchmarks/trainer_strategies.py [--reps 3] [--sizes 1,8,32,128]
Prints a markdown table and writes it as JSON to ``--out`` if given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import time

import jax
import numpy as np

from jmem.dataset import Dataset
from jmem.hparams import ModelConfig, TrainConfig
from jmem.train import resolve_strategy, train_models


def _normalised(name, x_train, y_train, x_test, y_test):
    mean, std = x_train.mean(), x_train.std()
    return Dataset(name, ((x_train - mean) / std).astype(np.float32), y_train.astype(np.int32),
                   ((x_test - mean) / std).astype(np.float32), y_test.astype(np.int32), 10)


def digits() -> Dataset:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = data.images.astype(np.float32)[..., None]
    order = np.random.RandomState(0).permutation(len(x))
    return _normalised("digits", x[order[:1437]], data.target[order[:1437]],
                       x[order[1437:]], data.target[order[1437:]])


def mnist1d() -> Dataset:
    import mnist1d.data

    np_state, py_state = np.random.get_state(), random.getstate()  # make_dataset reseeds
    try:
        data = mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return _normalised("mnist1d", data["x"][..., None].astype(np.float32), data["y"],
                       data["x_test"][..., None].astype(np.float32), data["y_test"])


def workloads(cnn_epochs: int):
    mlp = (digits(), ModelConfig(kind="mlp", width=256, depth=1),
           TrainConfig(epochs=20, batch_size=64, optimizer="adam", learning_rate=1e-3),
           ("vmap", "sequential"))  # "patches" is the same program as "vmap" for an MLP
    cnn = (mnist1d(), ModelConfig(kind="cnn", width=32, depth=3, kernel_size=5),
           TrainConfig(epochs=cnn_epochs, batch_size=128, optimizer="adamw", learning_rate=1e-2,
                       weight_decay=1e-4, schedule="cosine"),
           ("vmap", "patches", "sequential"))
    return {"digits-mlp": mlp, f"mnist1d-cnn ({cnn_epochs} ep)": cnn}


def run(sizes, reps, max_seconds, cnn_epochs):
    rows = []
    for name, (ds, model_cfg, train_cfg, strategies) in workloads(cnn_epochs).items():
        auto = resolve_strategy(model_cfg, train_cfg)
        last = {}  # strategy -> (R, seconds) of the previous size, to predict the next
        for size in sizes:
            keep = np.random.RandomState(size).rand(size, ds.num_train) < 0.7
            timed = {}
            for strategy in strategies:
                if strategy in last and last[strategy][1] * size / last[strategy][0] > max_seconds:
                    continue
                cfg = dataclasses.replace(train_cfg, strategy=strategy)
                start = time.perf_counter()
                jax.block_until_ready(train_models(keep, ds, model_cfg, cfg, seed=0).params)
                timed[strategy] = {"cfg": cfg, "first": time.perf_counter() - start, "times": []}
            for rep in range(reps):
                order = list(timed)[rep % max(len(timed), 1):] + list(timed)[:rep % max(len(timed), 1)]
                for strategy in order:
                    start = time.perf_counter()
                    result = train_models(keep, ds, model_cfg, timed[strategy]["cfg"], seed=0)
                    jax.block_until_ready(result.params)
                    timed[strategy]["times"].append(time.perf_counter() - start)
            for strategy in strategies:
                if strategy not in timed:
                    rows.append(dict(workload=name, R=size, strategy=strategy, models_per_s=None,
                                     note=f"skipped (> {max_seconds:.0f} s predicted)"))
                    continue
                median = statistics.median(timed[strategy]["times"])
                last[strategy] = (size, median)
                rows.append(dict(workload=name, R=size, strategy=strategy,
                                 models_per_s=size / median, median_s=median,
                                 first_call_s=timed[strategy]["first"],
                                 note="auto" if strategy == auto else ""))
                print(f"{name:22s} R={size:4d} {strategy:10s} {size / median:8.2f} models/s "
                      f"(median {median:.2f} s, first call {timed[strategy]['first']:.1f} s)", flush=True)
    return rows


def markdown(rows) -> str:
    lines = ["| workload | R | strategy | models/s | median s | note |", "|---|---|---|---|---|---|"]
    for row in rows:
        rate = "-" if row["models_per_s"] is None else f"{row['models_per_s']:.1f}"
        median = "-" if row.get("median_s") is None else f"{row['median_s']:.2f}"
        lines.append(f"| {row['workload']} | {row['R']} | {row['strategy']} | {rate} | {median} | {row['note']} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,8,32,128")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=40.0)
    parser.add_argument("--cnn-epochs", type=int, default=2)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.devices()}")
    rows = run([int(s) for s in args.sizes.split(",")], args.reps, args.max_seconds, args.cnn_epochs)
    print(markdown(rows))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
