"""How close jmem comes to what this CPU does with a lean program (issue 15's CPU targets).

The *lean limit*: one process per core, each pinned (``taskset -c i``) and single-threaded
(XLA's Eigen pool off), each training its share of the models one at a time with the
whole training one jitted ``lax.scan`` over host-precomputed index batches (nothing else in
the step: ``jmem.bench.baselines.jax_scan_runner``). Their models/s added up is the
machine's practical limit for a recipe. Every comparison below runs its configurations
alternately in one invocation and reports medians; it also reports the load average,
because this machine is shared.

Besides wall-clock rates, every row reports *models per CPU-second* (process CPU time:
user + system of all threads). On a loaded machine that is the fairer efficiency measure:
it does not depend on how many cores other processes left us.

Subcommands (all print a markdown table and write ``--out`` JSON):

* ``loop``: training loop only, digits MLP 64-256-10, Adam 1e-3, batch 64, 20 epochs, fixed
  70% subsets, R models (default 256): the two lean processes vs ``train_models`` over the
  host devices with each ``--chunks`` layout (1 = one model at a time inside the program,
  0 = one vmap over a device's whole block).
* ``process``: whole process (start-up and compilation included), R = 512: ``jmem train``
  vs the two lean processes (each training 256).
* ``fz``: whole process, R = 512, SGD (momentum 0.9) lr 0.05, batch 128: ``jmem train`` vs
  a Feldman & Zhang-style script (a Python loop over a jitted step, batches sliced on the
  host, one model at a time).

  Both run ``jmem train`` twice per repeat: with an empty JAX compilation cache (a first
  run: every program compiled) and with a warm one (a re-run; the baselines compile one
  small step per process and have no cache).
* ``cnn``: training loop, MNIST-1D CNN (width 32, depth 3, kernel 5; Adam 1e-3, batch 64,
  2 epochs): jmem ``auto`` and each chunk layout vs the best one-at-a-time baselines
  (``fz_loop``, ``jax_scan``, jmem ``sequential``), at each R of ``--R``.

Run from the repository root: ``python benchmarks/bench_cpu_limit.py loop``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The recipe's subsets (fixed 70%, no canaries), whatever experiments/digits.py's default study uses.
FIXED_SUBSETS = ["subsets.design=fixed", "subsets.rates=0.7", "subsets.canary_fraction=0"]
SINGLE_THREAD_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _child_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("JAX_PLATFORMS", "cpu")
    env.update(extra)
    return env


def _cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


# ============================================================================ workers


def lean_worker(args) -> dict:
    """One pinned single-threaded lean process: trains models ``share::parts`` of the wave."""
    import jax

    from jmem.bench.baselines import jax_scan_runner
    from jmem.bench.workloads import RATE, SEED, make_workload
    from jmem.data.subsets import make_keep

    work = make_workload(args.model, "cpu", epochs=args.epochs)
    keep, _ = make_keep(SEED, args.R, work.dataset.num_train, "fixed", RATE)
    mine = keep[args.share::args.parts]
    jax_scan_runner(work, mine[:1])()  # compile (and warm up) once
    cpu, start = _cpu_seconds(), time.perf_counter()
    jax_scan_runner(work, mine)()
    return {"models": int(mine.shape[0]), "loop_s": time.perf_counter() - start,
            "cpu_s": _cpu_seconds() - cpu, "devices": len(jax.devices())}


def fz_worker(args) -> dict:
    """The Feldman & Zhang-style script, whole: load data, then for each model a Python loop
    over a jitted SGD step with batches sliced on the host."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from jmem.bench.baselines import epoch_orders
    from jmem.bench.workloads import RATE, SEED
    from jmem.data.loaders import load_dataset
    from jmem.data.subsets import make_keep
    from jmem.engine.hparams import ModelConfig
    from jmem.engine.models import build_model, init_one

    ds = load_dataset("digits")
    module = build_model(ModelConfig(kind="mlp", width=256, depth=1), ds.num_classes)
    tx = optax.sgd(args.lr, momentum=0.9)
    keep, _ = make_keep(SEED, args.R, ds.num_train, "fixed", RATE)

    @jax.jit
    def step(params, opt_state, xb, yb):
        def loss(p):
            logits = module.apply({"params": p}, xb)[0]
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
        grads = jax.grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    predict = jax.jit(lambda p, x: module.apply({"params": p}, x)[0])
    orders = epoch_orders(keep, args.epochs)
    margins = []
    for r in range(args.R):
        params, _ = init_one(module, jax.random.fold_in(jax.random.PRNGKey(SEED), r), ds.example_shape)
        opt_state = tx.init(params)
        for order in orders[r]:
            for b in range(0, order.shape[0], args.batch_size):
                idx = order[b:b + args.batch_size]
                params, opt_state = step(params, opt_state, ds.x_train[idx], ds.y_train[idx])
        logits = np.asarray(predict(params, jnp.asarray(ds.x_test)))
        margins.append((logits.argmax(1) == ds.y_test).mean())
    return {"models": args.R, "test_accuracy": float(np.mean(margins))}


# ============================================================================ launching


def run_lean_pair(model: str, R: int, epochs: int | None) -> dict:
    """Both lean processes at once, one pinned per core; their loop rates and wall time."""
    cores = _cores()
    procs = []
    start = time.perf_counter()
    for i, core in enumerate(cores):
        cmd = ["taskset", "-c", str(core), sys.executable, __file__, "lean-worker", "--model", model,
               "--R", str(R), "--share", str(i), "--parts", str(len(cores))]
        if epochs:
            cmd += ["--epochs", str(epochs)]
        procs.append(subprocess.Popen(cmd, env=_child_env(XLA_FLAGS=SINGLE_THREAD_FLAGS),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"lean worker failed: {err[-2000:]}")
        outs.append(json.loads(out.strip().splitlines()[-1]))
    wall = time.perf_counter() - start
    return {"wall_s": wall, "models_per_s": sum(o["models"] / o["loop_s"] for o in outs),
            "models_per_cpu_s": sum(o["models"] for o in outs) / sum(o["cpu_s"] for o in outs),
            "workers": outs}


def run_jmem_train(R: int, sets: list[str], cache_dir: str | None = None) -> dict:
    """``jmem train`` as a user runs it (default devices and waves), whole process.

    ``cache_dir``: JAX's persistent compilation cache for the run (a warm cache: a re-run);
    None: an empty one (cold: every program compiled, as on a first run)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "jmem", "train", "experiments/digits.py", "--workdir",
               f"{tmp}/run", "--no-progress", "--set", f"train.num_models={R}"]
        for s in sets:
            cmd += ["--set", s]
        env = _child_env(JAX_COMPILATION_CACHE_DIR=cache_dir or f"{tmp}/jax-cache")
        start = time.perf_counter()
        run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if run.returncode != 0:
            raise RuntimeError(f"jmem train failed: {run.stderr[-2000:]}")
        summary = json.loads(run.stdout[run.stdout.index("{"):])
        complete = (Path(tmp) / "run" / "models.csv").exists()
    return {"wall_s": wall, "complete": complete, "summary": summary}


def run_fz(R: int, epochs: int, batch: int, lr: float) -> dict:
    start = time.perf_counter()
    run = subprocess.run([sys.executable, __file__, "fz-worker", "--R", str(R), "--epochs", str(epochs),
                          "--batch-size", str(batch), "--lr", str(lr)],
                         cwd=REPO, env=_child_env(), capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"fz worker failed: {run.stderr[-2000:]}")
    return {"wall_s": time.perf_counter() - start, **json.loads(run.stdout.strip().splitlines()[-1])}


# ============================================================================ in-process jmem


def _setup_devices():
    from jmem.engine.host_devices import configure_host_devices

    configure_host_devices([])


def _trainer_from(path: str):
    """The ``train_models`` of another version of jmem/engine/trainer.py (e.g. the one before
    a change: ``git show REV:jmem/engine/trainer.py > before.py``), imported from a file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("jmem_trainer_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.train_models


def jmem_loop(work, keep, chunk, strategy="auto", trainer: str | None = None):
    """A callable training ``keep``'s models in one wave over all host devices; returns
    (wall s, CPU s) of the call. ``trainer``: a file with another version of the trainer."""
    import dataclasses

    import jax

    from jmem.bench.workloads import SEED
    from jmem.engine.trainer import train_models

    if trainer:
        train_models = _trainer_from(trainer)  # noqa: F811

    cfg = dataclasses.replace(work.train_cfg, num_models=keep.shape[0], wave_size=keep.shape[0],
                              strategy=strategy)

    def run():
        cpu, start = _cpu_seconds(), time.perf_counter()
        extra = {} if trainer else {"chunk": chunk}
        result = train_models(keep, work.dataset, work.model_cfg, cfg, seed=SEED,
                              devices=jax.local_devices(), **extra)
        jax.block_until_ready(result.params)
        return time.perf_counter() - start, _cpu_seconds() - cpu

    return run


def _summary(label, models, walls, cpus):
    med = statistics.median(walls)
    return {"config": label, "models": models, "median_s": med, "times_s": walls,
            "models_per_s": models / med, "models_per_cpu_s": models / statistics.median(cpus)}


def _chunk_label(chunk):
    if chunk == "before":
        return "before this change (--before)"
    return "auto" if chunk is None else ("vmap block" if chunk == 0 else f"chunk {chunk}")


def cmd_loop(args) -> dict:
    _setup_devices()
    from jmem.bench.workloads import RATE, SEED, make_workload
    from jmem.data.subsets import make_keep

    work = make_workload("mlp", "cpu")
    keep, _ = make_keep(SEED, args.R, work.dataset.num_train, "fixed", RATE)
    chunks = [None] + args.chunks + (["before"] if args.before else [])
    runs = {c: jmem_loop(work, keep, None, trainer=args.before) if c == "before" else jmem_loop(work, keep, c)
            for c in chunks}
    for fn in runs.values():
        fn()  # compile
    walls = {c: [] for c in chunks}
    cpus = {c: [] for c in chunks}
    lean = []
    for rep in range(args.repeats):
        lean.append(run_lean_pair("mlp", args.R, None))
        for c in (chunks if rep % 2 == 0 else chunks[::-1]):
            w, u = runs[c]()
            walls[c].append(w)
            cpus[c].append(u)
    limit = statistics.median(r["models_per_s"] for r in lean)
    limit_cpu = statistics.median(r["models_per_cpu_s"] for r in lean)
    rows = [{"config": "lean limit (2 pinned processes)", "models": args.R,
             "models_per_s": limit, "models_per_cpu_s": limit_cpu,
             "times_s": [r["models_per_s"] for r in lean]}]
    for c in chunks:
        row = _summary("jmem " + _chunk_label(c), args.R, walls[c], cpus[c])
        rows.append(row)
    for row in rows:
        row["of_limit"] = row["models_per_s"] / limit
        row["cpu_of_limit"] = row["models_per_cpu_s"] / limit_cpu
    return {"rows": rows}


def _against_jmem_train(baseline, sets: list[str], R: int, repeats: int) -> tuple[list, list, list]:
    """Wall times of ``baseline()``, of ``jmem train`` with a cold compilation cache and of
    ``jmem train`` with a warm one (filled by one untimed run first), alternated."""
    base, cold, warm = [], [], []
    with tempfile.TemporaryDirectory() as cache:
        run_jmem_train(R, sets, cache)  # fills the warm cache
        for rep in range(repeats):
            order = [0, 1, 2] if rep % 2 == 0 else [2, 1, 0]
            for which in order:
                if which == 0:
                    base.append(baseline())
                elif which == 1:
                    cold.append(run_jmem_train(R, sets)["wall_s"])
                else:
                    warm.append(run_jmem_train(R, sets, cache)["wall_s"])
    return base, cold, warm


def _rows(base_label: str, R: int, times: tuple[list, list, list]) -> list[dict]:
    labels = (base_label, "jmem train, cold compilation cache (a first run)",
              "jmem train, warm compilation cache (a re-run)")
    return [{"config": label, "models": R, "times_s": t, "median_s": statistics.median(t)}
            for label, t in zip(labels, times)]


def cmd_process(args) -> dict:
    sets = FIXED_SUBSETS + ["train.epochs=20", "train.learning_rate=0.001"]
    times = _against_jmem_train(lambda: run_lean_pair("mlp", args.R, None)["wall_s"], sets, args.R,
                                args.repeats)
    rows = _rows("two lean processes (R/2 each)", args.R, times)
    for row in rows:
        row["vs_lean"] = row["median_s"] / rows[0]["median_s"]
    return {"rows": rows}


def cmd_fz(args) -> dict:
    sets = FIXED_SUBSETS + ["train.epochs=20", "train.optimizer=sgd", f"train.learning_rate={args.lr}",
                            "train.momentum=0.9", "train.batch_size=128"]
    times = _against_jmem_train(lambda: run_fz(args.R, 20, 128, args.lr)["wall_s"], sets, args.R,
                                args.repeats)
    rows = _rows("F&Z-style Python loop", args.R, times)
    for row in rows:
        row["speedup_vs_fz"] = rows[0]["median_s"] / row["median_s"]
    return {"rows": rows}


def cmd_cnn(args) -> dict:
    _setup_devices()
    from jmem.bench.baselines import fz_loop_runner, jax_scan_runner
    from jmem.bench.workloads import RATE, SEED, make_workload
    from jmem.data.subsets import make_keep

    work = make_workload("cnn", "cpu")
    rows = []
    for R in args.R:
        keep, _ = make_keep(SEED, R, work.dataset.num_train, "fixed", RATE)
        seq = keep[:min(R, args.seq_models)]
        configs = {f"jmem {_chunk_label(c)}": (jmem_loop(work, keep, c), R) for c in [None] + args.chunks}
        configs["jmem sequential"] = (jmem_loop(work, seq, None, "sequential"), seq.shape[0])

        def wrap(fn):
            def run():
                cpu, start = _cpu_seconds(), time.perf_counter()
                fn()
                return time.perf_counter() - start, _cpu_seconds() - cpu
            return run

        configs["fz_loop"] = (wrap(fz_loop_runner(work, seq)), seq.shape[0])
        configs["jax_scan"] = (wrap(jax_scan_runner(work, seq)), seq.shape[0])
        for fn, _ in configs.values():
            fn()
        walls = {k: [] for k in configs}
        cpus = {k: [] for k in configs}
        for rep in range(args.repeats):
            for label in (list(configs) if rep % 2 == 0 else list(configs)[::-1]):
                w, u = configs[label][0]()
                walls[label].append(w)
                cpus[label].append(u)
        these = [dict(_summary(label, configs[label][1], walls[label], cpus[label]), R=R) for label in configs]
        best_seq = max(r["models_per_s"] for r in these if r["config"] in ("fz_loop", "jax_scan", "jmem sequential"))
        best = max(r["models_per_s"] for r in these)
        for r in these:
            r["vs_best_one_at_a_time"] = r["models_per_s"] / best_seq
            r["vs_best"] = r["models_per_s"] / best
        rows += these
        print(table(these), flush=True)  # each R as it completes: a time limit loses nothing
    return {"rows": rows}


# ============================================================================ output


def table(rows: list[dict]) -> str:
    keys = [k for k in rows[0] if k not in ("times_s",)]
    for r in rows:
        keys += [k for k in r if k not in keys and k != "times_s"]
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    p = sub.add_parser("loop")
    p.add_argument("--R", type=int, default=256)
    p.add_argument("--chunks", type=ints, default=[1, 4, 0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--before", default=None,
                   help="a file holding an earlier jmem/engine/trainer.py, timed as one more row")
    p = sub.add_parser("process")
    p.add_argument("--R", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p = sub.add_parser("fz")
    p.add_argument("--R", type=int, default=512)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--repeats", type=int, default=3)
    p = sub.add_parser("cnn")
    p.add_argument("--R", type=ints, default=[1, 8, 32, 128])
    p.add_argument("--chunks", type=ints, default=[1, 4, 0])
    p.add_argument("--seq-models", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    for name in ("lean-worker", "fz-worker"):
        p = sub.add_parser(name)
        p.add_argument("--model", default="mlp")
        p.add_argument("--R", type=int, default=256)
        p.add_argument("--share", type=int, default=0)
        p.add_argument("--parts", type=int, default=1)
        p.add_argument("--epochs", type=int, default=20)
        p.add_argument("--batch-size", type=int, default=128)
        p.add_argument("--lr", type=float, default=0.05)
    for p in sub.choices.values():
        p.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.command in ("lean-worker", "fz-worker"):
        print(json.dumps((lean_worker if args.command == "lean-worker" else fz_worker)(args)))
        return 0
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    result = {"loop": cmd_loop, "process": cmd_process, "fz": cmd_fz, "cnn": cmd_cnn}[args.command](args)
    result.update(command=" ".join([sys.executable, *sys.argv]), started=started,
                  load_before=load_before, load_after=os.getloadavg(), cores=_cores())
    print(f"{args.command}: started {started}, load average {load_before[0]:.1f} before, "
          f"{result['load_after'][0]:.1f} after, cores {result['cores']}")
    print(table(result["rows"]))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
