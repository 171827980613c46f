"""Fashion-MNIST, Feldman & Zhang's MNIST recipe: `jmem train` against an F&Z-style loop
(a benchmark, not a test). Both are timed as whole processes, in the same run.

    python benchmarks/bench_fmnist.py                       # the cpu variant's recipe, R=32
    python benchmarks/bench_fmnist.py --R 512               # the whole cpu variant
    python benchmarks/bench_fmnist.py --variant "" --R 8    # F&Z's 784-512-256-10 MLP
    python benchmarks/bench_fmnist.py --dry-run             # tiny: checks the plumbing (seconds)

1. ``jmem train experiments/fashion_mnist.py:VARIANT --set train.num_models=R`` in a fresh
   run directory (a subprocess): data loading, leakage detection, training, margins of every
   model on the 60,000 training and 10,000 test images, wave files, assembly.
2. The baseline in another subprocess: Feldman & Zhang's example style, one model at a time,
   a Python loop over a jitted SGD(momentum) step on batches sliced from host arrays
   (``jmem.bench.baselines.fz_loop_runner``), on **the same keep masks** (read from jmem's
   ``keep.npy``), the same architecture and recipe; then each model's margins on the training
   and test sets (a jitted forward in chunks), as F&Z also record. No leakage detection.

Reports wall seconds of both processes, their ratio (baseline / jmem: > 1 means jmem is
faster), models/s, each side's mean test accuracy (a sanity check that both trained the same
recipe), peak RSS, and ``uptime`` before and after (the machine may be shared). ``--dry-run``
cuts the training set to 600 images and R to 4, for tests.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = ROOT / "experiments" / "fashion_mnist.py"


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "uptime unavailable"


def _timed(cmd: list[str], env: dict) -> dict:
    """Run a subprocess; wall seconds, its peak RSS (MiB, RUSAGE_CHILDREN delta-free: each child
    is measured in a fresh ``resource`` reading), exit status, output tail."""
    began = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # max over children so far
    if proc.returncode != 0:
        raise SystemExit(f"bench_fmnist: {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"wall_s": wall, "max_child_rss_mib": peak, "stdout": proc.stdout}


def _slice_idx_dir(directory: Path, n_train: int, n_test: int) -> Path:
    """IDX files of the first examples of Fashion-MNIST (the dry run's data)."""
    sys.path.insert(0, str(ROOT))
    from jmem.data import idx
    from jmem.data.loaders import fashion_mnist_sources

    arrays = None
    for kind, source in fashion_mnist_sources():
        if kind == "idx" and Path(source).is_dir():
            arrays = idx.read_idx_dir(source)
            break
    if arrays is None:
        raise SystemExit("bench_fmnist: --dry-run needs the Fashion-MNIST IDX files (apt-get install dataset-fashion-mnist)")
    directory.mkdir(parents=True, exist_ok=True)
    for split, key, n in (("train", "train", n_train), ("t10k", "test", n_test)):
        idx.write_idx(directory / f"{split}-images-idx3-ubyte", arrays[f"{key}_images"][:n])
        idx.write_idx(directory / f"{split}-labels-idx1-ubyte", arrays[f"{key}_labels"][:n])
    return directory


# ----------------------------------------------------------------------------- the baseline child


def baseline_child(run_dir: str, out: str) -> None:
    """The F&Z-style process: same data, masks, model and recipe as the jmem run in run_dir."""
    import jax
    import numpy as np

    from jmem import config as config_lib
    from jmem.bench.baselines import _plain_model
    from jmem.bench.workloads import Workload
    from jmem.data.loaders import load_dataset

    began = time.perf_counter()
    cfg = config_lib.from_dict(json.loads((Path(run_dir) / "config.json").read_text()))
    dataset = load_dataset(cfg.data.name, data_dir=cfg.data.data_dir or None, idx_dir=cfg.data.idx_dir or None)
    keep = np.load(Path(run_dir) / "keep.npy")
    work = Workload(name="fashion_mnist", dataset=dataset, model_cfg=cfg.model, train_cfg=cfg.train, sizes=())
    module = _plain_model(work)

    accuracies = []
    apply = jax.jit(lambda p, x: module.apply({"params": p}, x)[0])

    def margins(params, x, y, chunk=10_000):
        out = []
        for s in range(0, len(y), chunk):
            logits = np.array(apply(params, x[s:s + chunk]))  # writable copy
            yy = y[s:s + chunk]
            true = logits[np.arange(len(yy)), yy]
            logits[np.arange(len(yy)), yy] = -np.inf
            out.append(true - logits.max(1))
        return np.concatenate(out)

    train_s = 0.0
    for r in range(keep.shape[0]):
        t0 = time.perf_counter()
        params = _train_one(work, keep[r:r + 1], r)
        train_s += time.perf_counter() - t0
        margins(params, dataset.x_train, dataset.y_train)
        accuracies.append(float((margins(params, dataset.x_test, dataset.y_test) > 0).mean()))
    Path(out).write_text(json.dumps({"train_s": train_s, "test_accuracy_mean": float(np.mean(accuracies)),
                                     "models": int(keep.shape[0]), "process_s": time.perf_counter() - began}))


def _train_one(work, keep_row, model_index):
    """``jmem.bench.baselines.fz_loop_runner``'s loop for one model (the same jitted step,
    compiled once per process), returning the model's parameters, which the runner drops."""
    import jax
    import jax.numpy as jnp
    import optax

    from jmem.bench.baselines import _loss, _plain_model, baseline_optimizer, epoch_orders
    from jmem.bench.workloads import SEED
    from jmem.engine.models import init_one

    module = _plain_model(work)
    tx = baseline_optimizer(work.train_cfg)
    step = _STEPS.get(id(work))
    if step is None:
        @jax.jit
        def step(params, opt_state, xb, yb):
            grads = jax.grad(lambda p: _loss(module, p, xb, yb, jnp.ones(yb.shape[0])))(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state
        _STEPS[id(work)] = step
    x, y, bsz = work.dataset.x_train, work.dataset.y_train, work.train_cfg.batch_size
    # Model r's own shuffles: epoch_orders of a one-row mask with the seed offset by r.
    orders = epoch_orders(keep_row, work.train_cfg.epochs, seed=SEED + model_index)[0]
    params, _ = init_one(module, jax.random.fold_in(jax.random.PRNGKey(SEED), model_index),
                         work.dataset.example_shape)
    opt_state = tx.init(params)
    for order in orders:
        for b in range(0, order.shape[0], bsz):
            idx = order[b:b + bsz]
            params, opt_state = step(params, opt_state, x[idx], y[idx])
    return jax.block_until_ready(params)


_STEPS: dict = {}


# ----------------------------------------------------------------------------- the driver


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="cpu", help="experiment variant ('' = the F&Z main config)")
    p.add_argument("--R", type=int, default=32, help="models (both sides)")
    p.add_argument("--epochs", type=int, default=0, help="override the variant's epochs (0 = keep)")
    p.add_argument("--workdir", default="/tmp/bench_fmnist", help="scratch directory (replaced)")
    p.add_argument("--dry-run", action="store_true", help="600 training images, R=4: plumbing only")
    p.add_argument("--out", default="", help="write the result JSON here")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="extra jmem config override, e.g. train.strategy=sequential (the baseline "
                        "reads the resolved config, so it follows model/train changes)")
    p.add_argument("--baseline-child", nargs=2, metavar=("RUN_DIR", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.baseline_child:
        baseline_child(*args.baseline_child)
        return {}

    import shutil

    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = 4 if args.dry_run else args.R
    spec = f"{EXPERIMENT}:{args.variant}" if args.variant else str(EXPERIMENT)
    overrides = ["--set", f"train.num_models={r}"]
    if args.epochs:
        overrides += ["--set", f"train.epochs={args.epochs}"]
    for item in args.set:
        overrides += ["--set", item]
    if args.dry_run:
        data = _slice_idx_dir(work / "data", 600, 200)
        overrides += ["--set", f"data.name=idx:{data}"]
    before = _uptime()
    jmem_cmd = [sys.executable, "-m", "jmem", "train", spec, "--workdir", str(work / "run"), "--no-progress", *overrides]
    jmem = _timed(jmem_cmd, env)
    summary = json.loads(jmem["stdout"][jmem["stdout"].index("{"):])
    base_out = work / "baseline.json"
    base_cmd = [sys.executable, str(Path(__file__).resolve()), "--baseline-child", str(work / "run"), str(base_out)]
    base = _timed(base_cmd, env)
    base_inner = json.loads(base_out.read_text())
    after = _uptime()
    result = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join([Path(sys.executable).name, "benchmarks/bench_fmnist.py", *(argv if argv is not None else sys.argv[1:])]),
        "uptime_before": before, "uptime_after": after,
        "variant": args.variant, "R": r, "config": json.loads((work / "run" / "config.json").read_text()),
        "jmem": {"wall_s": jmem["wall_s"], "train_stage_s": summary.get("seconds"),
                 "models_per_s": r / jmem["wall_s"], "test_accuracy_mean": summary.get("test_accuracy_mean"),
                 "diverged": summary.get("diverged"), "command": " ".join(jmem_cmd[1:])},
        "baseline_fz_loop": {"wall_s": base["wall_s"], "train_s": base_inner["train_s"],
                             "models_per_s": r / base["wall_s"],
                             "test_accuracy_mean": base_inner["test_accuracy_mean"]},
        "ratio_baseline_over_jmem_wall": base["wall_s"] / jmem["wall_s"],
        "max_child_rss_mib": base["max_child_rss_mib"],
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
