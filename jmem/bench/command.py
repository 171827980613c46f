"""``jmem bench`` / ``python -m jmem.bench``: command-line options and the entry point."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import jax

from jmem.engine.host_devices import default_cpu_devices
from jmem.errors import JmemError
from jmem.bench.baselines import BASELINES
from jmem.bench.harness import Options, STRATEGIES, benchmark
from jmem.bench.tables import format_report
from jmem.bench.workloads import MODELS

def _int_list(minimum: int):
    """An argparse type: a comma-separated list of integers, each >= ``minimum``."""
    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
        if not values or min(values) < minimum:
            raise argparse.ArgumentTypeError(f"{text!r}: need integers >= {minimum}")
        return values
    return parse

def _choice_list(choices: tuple, allow_none: bool = False):
    def parse(text: str) -> list[str]:
        if allow_none and text == "none":
            return []
        if text == "all":
            return list(choices)
        values = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in values if v not in choices]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(choices)} (comma-separated), or all")
        return values
    return parse

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``jmem bench`` flags."""
    parser.add_argument("--model", type=_choice_list(MODELS), default=None,
                        help="workloads, comma-separated: mlp (digits MLP 64-256-10), fzmnist "
                             "(Feldman & Zhang's MNIST MLP 784-512-256-10, SGD, batch 128, synthetic "
                             "28x28 data), cnn "
                             "(MNIST-1D CNN), resnet (CIFAR-shaped, synthetic data), or all "
                             "(default: all; mlp,cnn on CPU; --quick: mlp)")
    parser.add_argument("--R", dest="sizes", type=_int_list(1), default=None,
                        help="numbers of models, e.g. 1,8,32 (default per workload; MLP: 1,8,32,128,512)")
    parser.add_argument("--strategies", type=_choice_list(STRATEGIES), default=list(STRATEGIES),
                        help=f"jmem strategies: {', '.join(STRATEGIES)} (default: all)")
    parser.add_argument("--baselines", type=_choice_list(BASELINES, allow_none=True), default=list(BASELINES),
                        help=f"peer baselines: {', '.join(BASELINES)}, all or none (default: all)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs for every workload (default per workload)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (median reported)")
    parser.add_argument("--seq-models", type=int, default=8,
                        help="models timed for one-at-a-time configurations (their models/s does not depend on R)")
    parser.add_argument("--n", dest="num_train", type=int, default=None,
                        help="training examples (subsample or replicate the dataset to this many)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                        help="compute dtype of the models and of the peak matmul (default: float32 on CPU, bfloat16 otherwise)")
    parser.add_argument("--devices", type=int, default=None,
                        help="devices for the sharded (auto) row (default: all; on CPU one host device "
                             "per core, created at start-up like the jmem command does)")
    parser.add_argument("--scaling", action=argparse.BooleanOptionalAction, default=None,
                        help="also measure time vs N for the digits MLP (default: on when the MLP is benchmarked, off with --quick)")
    parser.add_argument("--scaling-n", dest="scaling_sizes", type=_int_list(1), default=[338, 676, 1352, 2704, 5408, 10816])
    parser.add_argument("--scaling-r", type=int, default=32)
    parser.add_argument("--scaling-epochs", type=int, default=5)
    parser.add_argument("--max-seconds", type=float, default=15.0,
                        help="skip a configuration whose call is predicted (from the previous R) to take longer")
    parser.add_argument("--torch-threads", type=_int_list(1), default=None,
                        help="torch intra-op thread counts, e.g. 2,1: each torch baseline runs once "
                             "per count (default: every usable core). On a shared, busy CPU, torch's "
                             "OpenMP barriers stall with more threads than free cores")
    parser.add_argument("--chunks", type=_int_list(0), default=[],
                        help="extra layouts of every batched strategy: models vectorised together per "
                             "device, e.g. 1,8,0 (0 = one vmap over a device's block; default: only the "
                             "trainer's rule)")
    parser.add_argument("--peak-size", type=int, default=None,
                        help="side of the square matmul that measures the device's peak (default 2048 on "
                             "CPU, 8192 on accelerators)")
    parser.add_argument("--quick", action="store_true",
                        help="CI smoke test: digits MLP, R=1,2, 1 epoch, 1 repeat, no scaling (seconds)")
    parser.add_argument("--out", default=None, help="write every measurement as JSON to this path")

def options_from_args(args: argparse.Namespace, backend: str) -> Options:
    """Resolve defaults (``--quick``, backend-dependent dtype) into :class:`Options`."""
    quick = args.quick
    # The ResNet on a CPU takes minutes per model one at a time: ask for it explicitly there.
    models = args.model or (["mlp"] if quick else list(MODELS) if backend != "cpu" else ["mlp", "cnn"])
    for name, value in (("--repeats", args.repeats), ("--seq-models", args.seq_models)):
        if value < 1:
            raise JmemError(f"{name}={value} must be >= 1")
    if args.epochs is not None and args.epochs < 1:
        raise JmemError(f"--epochs={args.epochs} must be >= 1")
    scaling = args.scaling if args.scaling is not None else ("mlp" in models and not quick)
    return Options(
        models=models, sizes=args.sizes or ([1, 2] if quick else None),
        strategies=args.strategies, baselines=args.baselines,
        epochs=args.epochs or (1 if quick else None), repeats=1 if quick else args.repeats,
        seq_models=min(args.seq_models, 2) if quick else args.seq_models,
        num_train=args.num_train or (256 if quick else None),
        dtype=args.dtype or ("float32" if backend == "cpu" else "bfloat16"),
        devices=args.devices or len(jax.local_devices()), scaling=scaling,
        scaling_sizes=args.scaling_sizes, scaling_r=args.scaling_r, scaling_epochs=args.scaling_epochs,
        max_seconds=args.max_seconds, out=args.out, quick=quick, chunks=args.chunks,
        peak_size=args.peak_size or (256 if quick else None),
        torch_threads=args.torch_threads or [default_cpu_devices()])

def check_out_path(out: str) -> None:
    """JmemError unless ``--out`` names a file that can be written (its folder exists and is
    writable, and it is not itself a folder)."""
    path = Path(out).expanduser()
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise JmemError(f"--out {out!r} is a directory; give a file name, e.g. {str(path / 'bench.json')!r}")
    if not parent.is_dir():
        raise JmemError(f"--out {out!r}: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise JmemError(f"--out {out!r} cannot be written (no permission)")


def run(args: argparse.Namespace) -> int:
    """``jmem bench``: run, print the report (table last), write ``--out``. Returns 0."""
    have = len(jax.local_devices())
    if args.devices and args.devices > have:
        raise JmemError(f"--devices={args.devices} but JAX has {have} device(s); on CPU the count is "
                        f"fixed when JAX starts: `python -m jmem.bench --devices {args.devices}` or "
                        f"`jmem bench --devices {args.devices}` set it")
    opts = options_from_args(args, jax.default_backend())
    if opts.out:
        check_out_path(opts.out)  # before minutes of measuring, not after
    result = benchmark(opts, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    if opts.out:
        with open(opts.out, "w") as f:
            json.dump(result, f, indent=1)
    print(format_report(result))
    return 0

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jmem.bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except JmemError as err:
        print(f"jmem bench: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
