"""The ``jmem`` command: the only place that reads configs and flags.

Every subcommand turns bad input into one line on stderr (``jmem: error: ...``) and exit
status 2; nothing is written before the input has been validated. A failed file operation
(read-only or full disk, a file where a directory should be) is such an error too. An
unexpected internal error prints one line and exit status 1 (``JMEM_DEBUG=1`` shows the
traceback). Warnings are one line, ``jmem: warning: ...``. A command stopped by SIGTERM or
SIGINT (Ctrl-C) stops at its next safe point, checkpointed, and exits with status 143 or
130 (re-run to resume). The environment is checked before anything is written: ``$XLA_FLAGS``
(before JAX starts: XLA aborts on a bad flag), ``$JMEM_CPU_DEVICES``, ``$JAX_PLATFORMS`` (a
backend this machine lacks), ``--devices``. Every table of faults and the one line each
gives: ``docs/faults.md``.

On a machine without an accelerator the CPU cores become JAX devices: before anything
imports JAX, :func:`main` asks XLA for one host-platform device per core (``--devices N`` or
``$JMEM_CPU_DEVICES`` choose another count; a device count already in ``$XLA_FLAGS`` wins),
and training shards each wave's models over them. Importing this module imports no JAX.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from pathlib import Path

from jmem.engine.host_devices import (CPU_DEVICES_ENV, HOST_DEVICE_FLAG, MAX_HOST_DEVICES,
                                      check_xla_flags, configure_host_devices, cpu_devices_env,
                                      default_cpu_devices, env_int)
from jmem.errors import JmemError, one_line, os_error, warn

DEBUG_ENV = "JMEM_DEBUG"
NO_JAX_COMMANDS = ("config", "data")  # commands that never start a JAX backend
# Commands that may join a multi-process job: JAX's backend starts after jax.distributed.
DISTRIBUTED_COMMANDS = ("train", "run")


def _add_config_args(parser: argparse.ArgumentParser, optional: bool = False) -> None:
    if optional:
        parser.add_argument("config", nargs="?", default=None,
                            help="experiment file (default: experiments/digits.py, the embedded digits study)")
    else:
        parser.add_argument("config", help="experiment file, e.g. experiments/digits.py (or FILE.py:VARIANT)")
    _add_set_arg(parser, "override a config field, e.g. --set train.num_models=64 (repeatable)")
    parser.add_argument("--workdir", required=not optional, type=Path, default=None,
                        help="run directory to write (or resume)" + (
                            " (default: runs/<experiment file's name>[_<variant>], e.g. runs/digits, "
                            "runs/digits_loo)" if optional else ""))
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_execution_args(parser)


def _add_set_arg(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--set SECTION.FIELD=VALUE`` (repeatable): the one override grammar of every command."""
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.FIELD=VALUE", help=help_text)


def _add_execution_args(parser: argparse.ArgumentParser) -> None:
    """Flags that change how a run executes, never its results (not part of config.json)."""
    group = parser.add_argument_group("execution (never changes results)")
    group.add_argument("--devices", type=int, default=None, metavar="N",
                       help="local devices to shard each wave over (default: all; on CPU, one "
                            f"host device per core, or ${CPU_DEVICES_ENV})")
    group.add_argument("--checkpoint-every-seconds", type=float, default=300.0, metavar="T",
                       help="checkpoint a wave in training every T seconds (default 300; 0 = off)")
    group.add_argument("--checkpoint-every-epochs", type=int, default=0, metavar="K",
                       help="checkpoint a wave in training every K epochs (default 0 = off)")
    group.add_argument("--distributed", choices=("auto",), default=None,
                       help="join a multi-process job detected by jax.distributed.initialize() "
                            "(Cloud TPU pods, SLURM, ...)")
    group.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                       help="multi-process job: address of process 0 ($JMEM_COORDINATOR)")
    group.add_argument("--num-processes", type=int, default=None, metavar="P",
                       help="multi-process job: number of processes ($JMEM_NUM_PROCESSES)")
    group.add_argument("--process-id", type=int, default=None, metavar="I",
                       help="multi-process job: this process's index in [0, P) ($JMEM_PROCESS_ID)")


def _add_retrain_execution_args(parser: argparse.ArgumentParser) -> None:
    """The single-process execution flags of ``jmem train``: `jmem retrain` and `jmem loo` run
    alone in one process (under `jmem run --distributed` their waves use every process)."""
    group = parser.add_argument_group("execution (never changes results)")
    group.add_argument("--devices", type=int, default=None, metavar="N",
                       help="local devices to shard each wave over (default: all)")
    group.add_argument("--checkpoint-every-seconds", type=float, default=300.0, metavar="T",
                       help="checkpoint a wave in training every T seconds (default 300; 0 = off)")
    group.add_argument("--checkpoint-every-epochs", type=int, default=0, metavar="K",
                       help="checkpoint a wave in training every K epochs (default 0 = off)")


def _add_scored_run_stage(sub, name: str, help_text: str, example: str, handler) -> None:
    """A training stage that acts on a scored run directory (``retrain``, ``loo``): RUN_DIR,
    ``--set`` for its config section (``example``: one such override), the progress switch
    and the single-process execution flags."""
    p = sub.add_parser(name, help=help_text)
    p.add_argument("run_dir", type=Path, help="a scored run directory")
    section = example.split(".")[0]
    _add_set_arg(p, f"override a field of the run's {section} section, e.g. --set {example} (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_retrain_execution_args(p)
    p.set_defaults(handler=handler)


def execution_from_args(args):
    """The :class:`jmem.study.waves.Execution` of the parsed flags."""
    from jmem.study.waves import Execution

    return Execution(devices=args.devices or 0,
                     checkpoint_every_seconds=args.checkpoint_every_seconds,
                     checkpoint_every_epochs=args.checkpoint_every_epochs)


def initialize_distributed(args) -> bool:
    """Join a multi-process job if the flags or ``$JMEM_COORDINATOR`` etc. ask for one."""
    coordinator = args.coordinator or os.environ.get("JMEM_COORDINATOR") or None
    num_processes = args.num_processes if args.num_processes is not None else env_int("JMEM_NUM_PROCESSES")
    process_id = args.process_id if args.process_id is not None else env_int("JMEM_PROCESS_ID")
    auto = args.distributed == "auto"
    if not auto and coordinator is None and num_processes is None and process_id is None:
        return False
    from jmem.engine import parallel

    return parallel.initialize_distributed(coordinator, num_processes, process_id, auto=auto)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``jmem train: error: ...``), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    import jmem

    parser = _Parser(
        prog="jmem",
        description="Train many small JAX models on random subsets at once to measure memorization.")
    parser.add_argument("--version", action="version", version=f"jmem {jmem.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="the main job, the whole study: train, score, retrain, report "
                                   "(resumes; with no CONFIG, the digits study)")
    _add_config_args(p, optional=True)
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("train", help="train R models on R keep-masks and record their margins")
    _add_config_args(p)
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("score", help="memorization scores, thresholds and high-influence pairs of a run")
    p.add_argument("run_dir", type=Path)
    _add_set_arg(p, "override a field of the run's score section, e.g. --set score.fdr_q=0.05 "
                    "(repeatable)")
    p.set_defaults(handler=cmd_score)

    p = sub.add_parser("leakage", help="train/test near-duplicates of a dataset or run directory")
    p.add_argument("target", help="dataset name, .npz path, or run directory")
    _add_set_arg(p, "override a config field, e.g. --set leakage.threshold=0.005 (repeatable)")
    p.add_argument("--data-dir", default="", help="TFDS data directory")
    p.add_argument("--idx-dir", default="", help="directory of Fashion-MNIST's IDX files")
    p.add_argument("--out", type=Path, default=None, help="where to write duplicates.csv (default: the run directory, else ./duplicates.csv)")
    p.add_argument("--details", action="store_true",
                   help="print the counts per detector and per class (default: one line)")
    p.set_defaults(handler=cmd_leakage)

    p = sub.add_parser("data", help="print a dataset's sizes, shapes, classes and class balance")
    p.add_argument("name", nargs="?", help="dataset name or .npz path")
    p.add_argument("--data-dir", default="", help="TFDS data directory (default: $TFDS_DATA_DIR)")
    p.add_argument("--idx-dir", default="", help="directory of Fashion-MNIST's IDX files "
                   "(default: $JMEM_FASHION_MNIST_DIR, then /usr/share/datasets/fashion-mnist)")
    p.add_argument("--list", action="store_true", help="list the known datasets")
    p.set_defaults(handler=cmd_data)

    p = sub.add_parser("bench", help="throughput benchmark of mass subset training (models/s, %% of peak, baselines)")
    from jmem.bench import command as bench  # imports JAX: main() has already set the host device count

    bench.add_arguments(p)
    p.set_defaults(handler=_bench)

    _add_scored_run_stage(sub, "retrain", "the removal experiment: retrain without the selected "
                          "examples and compare with matched random removal", "retrain.seeds=32",
                          cmd_retrain)
    _add_scored_run_stage(sub, "loo", "leave-one-out ground truth on a sample of a scored run: "
                          "checks every score, selection rule and proxy against it",
                          "loo.examples=100", cmd_loo)

    p = sub.add_parser("report", help="report.md with plots, reliability of the estimates, F&Z-layout export")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--no-export", action="store_true", help="do not write fz_layout.npz")
    p.add_argument("--half-width", type=float, default=0.1, metavar="H",
                   help="target half-width of the mem interval in the models-needed table (default 0.1)")
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser("config", help="print the resolved config of an experiment file and list "
                                      "its variants (runs nothing)")
    p.add_argument("config", help="experiment file, e.g. experiments/digits.py (or FILE.py:VARIANT)")
    _add_set_arg(p, "override a config field, e.g. --set train.num_models=64 (repeatable)")
    p.set_defaults(handler=cmd_config)
    return parser


def cmd_report(args) -> int:
    from jmem.study import endings
    from jmem.study.report.stage import build_report  # holds the run directory's lock
    from jmem.study.report.view import retrain_path

    out = build_report(args.run_dir, export_fz=not args.no_export, half_width=args.half_width)
    if out["verdict"]:
        print(out["verdict"].rstrip() + "\n")
    has_loo = (args.run_dir / "loo" / "loo.json").exists()
    print("\n".join(endings.report_ending(out, args.run_dir, retrain_path(args.run_dir) is not None, has_loo)))
    return 0


def _bench(args) -> int:
    from jmem.bench import command as bench

    check_devices(args.devices)
    return bench.run(args)


def check_devices(requested: int | None) -> None:
    """Refuse ``--devices N`` beyond this machine's CPU cores when JAX runs on the CPU,
    unless the user asked for that many host devices himself ($JMEM_CPU_DEVICES, XLA_FLAGS):
    host devices beyond the cores only take turns on them."""
    if not requested:
        return
    import jax

    if requested < 0:
        raise JmemError(f"--devices={requested} must be >= 1")
    cores = default_cpu_devices()
    on_purpose = (cpu_devices_env() or 0) >= requested or HOST_DEVICE_FLAG in _USER_XLA_FLAGS
    if jax.default_backend() == "cpu" and requested > cores and not on_purpose:
        purpose = (f" (${CPU_DEVICES_ENV}={requested} creates more host devices on purpose)"
                   if requested <= MAX_HOST_DEVICES else "")
        raise JmemError(f"--devices={requested} but this machine has {cores} CPU core(s) and no "
                        f"accelerator; use --devices {cores} or fewer{purpose}")
    here = jax.local_devices()
    if requested > len(here):
        raise JmemError(f"--devices={requested} but this process has {len(here)} "
                        f"{here[0].platform} device(s); use --devices {len(here)} or fewer")


def check_backend() -> None:
    """Start JAX's backend now: a ``$JAX_PLATFORMS`` this machine cannot provide (``gpu``
    without a GPU) is one line naming it, not a traceback in the middle of a stage."""
    import jax

    try:
        jax.devices()
    except RuntimeError as err:
        reason = one_line(err).split(". (")[0][:300]
        raise JmemError(f"JAX_PLATFORMS={os.environ.get('JAX_PLATFORMS', '')!r}: JAX cannot start "
                        f"that backend here ({reason}); unset JAX_PLATFORMS to use the devices "
                        "this machine has, or set JAX_PLATFORMS=cpu") from None


def check_environment(argv: list[str]) -> None:
    """Before JAX starts (nothing is written yet): ``$JMEM_CPU_DEVICES`` and ``$XLA_FLAGS``,
    which XLA would abort the process on (checked in a child process, only when set)."""
    cpu_devices_env()
    command = next((a for a in argv if not a.startswith("-")), None)
    if "jax" in sys.modules or command in NO_JAX_COMMANDS or command is None:
        return  # JAX has started already (tests), or will not
    check_xla_flags(_USER_XLA_FLAGS)


_USER_XLA_FLAGS = os.environ.get("XLA_FLAGS", "")  # before configure_host_devices adds to it


DEFAULT_EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "digits.py"


def default_workdir(spec: str) -> Path:
    """``runs/<experiment file's stem>[_<variant>]``: ``experiments/digits.py`` -> runs/digits,
    ``experiments/digits.py:loo`` -> runs/digits_loo, so two variants never share a directory."""
    from jmem import config as config_lib

    path_text, variant = config_lib.split_spec(spec)
    return Path("runs") / (Path(path_text).stem + (f"_{variant}" if variant else ""))


def load_config(args):
    from jmem import config as config_lib

    if args.config is None:  # `jmem run` alone: the embedded default study
        if not DEFAULT_EXPERIMENT.exists():
            raise JmemError(f"no CONFIG given and the default {DEFAULT_EXPERIMENT} is not here "
                            "(jmem is not run from a clone); give an experiment file")
        args.config = str(DEFAULT_EXPERIMENT)
    config = config_lib.load_experiment(args.config)
    return config_lib.apply_overrides(config, args.overrides)


def _load_dataset(config):
    from jmem.study.inputs import load_dataset

    return load_dataset(config)


def _prepare_training(args):
    """(config, execution, dataset) of ``jmem train`` / ``jmem run``, checked before any file
    is written (size bound, suspicious settings warned)."""
    from jmem.study import preflight

    config = load_config(args)
    if args.workdir is None:  # `jmem run` without --workdir
        args.workdir = default_workdir(args.config)
        print(f"run directory: {args.workdir} (--workdir chooses another)")
    execution = execution_from_args(args)
    initialize_distributed(args)
    check_backend()
    check_devices(args.devices)
    dataset = _load_dataset(config)
    num_test = (dataset.num_test * (2 if config.leakage.clean_test else 1)  # + test_clean
                + sum(y.shape[0] for _, y in dataset.extra_tests.values()))
    preflight.check_run_size(config, dataset.num_train, num_test, _memory_bytes())
    for message in preflight.suspicious_settings(config, dataset.num_train):
        warn(message)
    return config, execution, dataset


def cmd_train(args) -> int:
    from jmem.study.training import run_training

    from jmem.study import endings

    config, execution, dataset = _prepare_training(args)
    summary = run_training(config, args.workdir, dataset, progress=not args.no_progress,
                           execution=execution)
    report_diverged(summary)
    print("\n".join(endings.train_ending(summary, args.workdir)))
    return 0


def _memory_bytes() -> int:
    """This machine's physical memory in bytes (no limit where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def report_diverged(summary: dict) -> None:
    """Say loudly which models diverged; every model diverged is an error."""
    ids, models = summary.get("diverged_ids") or [], summary.get("models", 0)
    if not ids:
        return
    shown = ", ".join(map(str, ids[:20])) + (", ..." if len(ids) > 20 else "")
    if len(ids) == models:
        raise JmemError(f"all {models} models diverged (non-finite training loss or margins); "
                        "nothing can be scored: lower train.learning_rate or set train.grad_clip")
    warn(f"{len(ids)} of {models} models diverged (non-finite training loss or margins): ids "
         f"{shown}; every later stage leaves them out")


def cmd_run(args) -> int:
    from jmem.study import endings
    from jmem.study.pipeline import run_study

    config, execution, dataset = _prepare_training(args)
    out = run_study(config, args.workdir, dataset, execution=execution, progress=not args.no_progress)
    report_diverged(out["train"])
    if "verdict" not in out:  # not process 0 of a multi-process job
        return 0
    print("\n" + out["verdict"].rstrip() + "\n")
    print("\n".join(endings.run_ending(out, args.workdir, has_loo=config.loo.enabled)))
    return 0


def cmd_retrain(args) -> int:
    execution = execution_from_args(args)
    check_devices(args.devices)
    from jmem.study import endings
    from jmem.study.retrain.stage import run_retrain

    with _run_lock(args.run_dir):  # no re-scoring under the experiment's feet
        summary = run_retrain(args.run_dir, args.overrides, execution=execution,
                              progress=not args.no_progress)
    print("\n" + summary["verdict"].rstrip() + "\n")
    print("\n".join(endings.retrain_ending(summary, args.run_dir)))
    return 0


def cmd_loo(args) -> int:
    execution = execution_from_args(args)
    from jmem.study import endings
    from jmem.study.loo import run_loo

    summary = run_loo(args.run_dir, args.overrides, execution=execution, progress=not args.no_progress)
    print("\n" + summary["text"].rstrip() + "\n")
    print("\n".join(endings.loo_ending(summary, args.run_dir)))
    return 0


def run_config(run_dir: Path):
    """The config a run directory records (``config.json``), or the defaults without one."""
    from jmem import config as config_lib
    from jmem.study import rundir

    path = Path(run_dir) / rundir.CONFIG
    if not path.exists():
        return config_lib.Config()
    return config_lib.from_dict(rundir.load_json(path, expect=dict))


def _run_lock(run_dir: Path):
    """The run directory's lock (none for a directory that does not exist: the stage says so)."""
    from jmem.study.workdir import workdir_lock

    return workdir_lock(run_dir) if Path(run_dir).is_dir() else contextlib.nullcontext()


def cmd_score(args) -> int:
    from jmem import config as config_lib
    from jmem.study import endings
    from jmem.study.scoring import format_summary, score_run

    config = config_lib.apply_overrides(run_config(args.run_dir), args.overrides,
                                        sections=("score",), command="jmem score")
    if args.run_dir.is_dir() and not os.access(args.run_dir, os.W_OK):
        raise JmemError(f"run directory {str(args.run_dir)!r} is not writable; scoring writes "
                        "scores.csv, thresholds.json and pairs.csv into it")
    with _run_lock(args.run_dir):
        summary = score_run(args.run_dir, config.score)
    print(format_summary(summary))
    print("\n".join(endings.score_ending(args.run_dir)))
    return 0


def cmd_leakage(args) -> int:
    from jmem import config as config_lib
    from jmem.data.leakage import format_leakage_summary, leakage_line
    from jmem.data.loaders import load_dataset
    from jmem.study import endings, inputs, integrity, rundir
    from jmem.study.leakage import detect_leakage, write_duplicates_csv

    target, run_dir, changed = Path(args.target), None, None
    if (target / rundir.CONFIG).exists():  # a run directory: its dataset, its settings
        manifest = integrity.load_manifest(target)
        if manifest is not None:
            integrity.check_files(target, manifest, "inputs", names=[rundir.CONFIG])
        inputs.require_run_dir(target)
        run_dir = target
        recorded = run_config(target)
        config = config_lib.apply_overrides(recorded, args.overrides)
        changed = config_lib.first_difference(config_lib.to_dict(recorded), config_lib.to_dict(config),
                                              ignore=(), ignore_sections=("score", "retrain"))
        if changed and args.out is None:  # the run's duplicates.csv is the one it trained with
            raise JmemError(f"--set changes the run's settings ({changed}); give --out to write "
                            f"the result elsewhere than {str(target / rundir.DUPLICATES)!r}")
        out = args.out or target / rundir.DUPLICATES
    else:  # a dataset name or .npz path: the default settings and the --set overrides
        config = config_lib.apply_overrides(config_lib.Config(data=config_lib.DataConfig(name=args.target)),
                                            args.overrides)
        out = args.out or Path(rundir.DUPLICATES)
    if Path(out).is_dir():  # before the detection, not after
        raise JmemError(f"--out {str(out)!r} is a directory; give a file name, e.g. "
                        f"{str(Path(out) / rundir.DUPLICATES)!r}")
    dataset = load_dataset(config.data.name, data_dir=(args.data_dir or config.data.data_dir) or None,
                           idx_dir=(args.idx_dir or config.data.idx_dir) or None)
    if run_dir is not None and not changed:  # the run's own data: the one it was trained on?
        inputs.verify_dataset(run_dir, config, dataset)
    into_run = run_dir is not None and Path(out).resolve() == (run_dir / rundir.DUPLICATES).resolve()
    with _run_lock(run_dir) if into_run else contextlib.nullcontext():
        result = detect_leakage(config, dataset)
        if into_run:  # what the run trained with: rewritten only with the same pairs
            from jmem.study.leakage import check_run_duplicates

            check_run_duplicates(run_dir, result)
        write_duplicates_csv(out, result)
    from jmem.study.figures_leakage import save_leakage_figures

    figures = save_leakage_figures(Path(out).parent, result, dataset)
    print(format_leakage_summary(result, dataset).rstrip() if args.details else leakage_line(result, dataset))
    print("\n".join(endings.leakage_ending([Path(out), *figures], args.target, args.details,
                                           run_dir is not None)))
    return 0


def cmd_config(args) -> int:
    """Print the resolved config (JSON, as config.json records it) and the file's variants."""
    from jmem import config as config_lib
    from jmem.study import rundir

    config = config_lib.apply_overrides(config_lib.load_experiment(args.config), args.overrides)
    print(rundir.json_text(config_lib.to_dict(config)), end="")
    path_text, variant = config_lib.split_spec(args.config)
    variants = config_lib.experiment_variants(args.config)
    lines = [f"variants of {path_text}" + (f" (this is {variant!r})" if variant else "") + ":"]
    lines += [f"  {name}: {' '.join(items)}" for name, items in variants.items()] or ["  (none)"]
    print("\n".join(lines))
    return 0


def cmd_data(args) -> int:
    from jmem.data.loaders import KNOWN_DATASETS, describe, load_dataset

    if args.list or not args.name:
        for name, text in KNOWN_DATASETS.items():
            print(f"{name:16s} {text}")
        print(f"{'PATH.npz':16s} any file with x_train, y_train, x_test, y_test")
        return 0
    print(describe(load_dataset(args.name, data_dir=args.data_dir or None, idx_dir=args.idx_dir or None)))
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        check_environment(argv)  # before JAX starts: XLA aborts the process on a bad flag
        configure_host_devices(argv)  # first: before anything (a subcommand too) imports JAX
        # Re-runs, resumes and later stages skip recompiling: JAX's persistent compilation
        # cache, for every program (JAX's default keeps only those that took >= 1 s to
        # compile: none of jmem's small models, whose ~30 programs cost ~2 s per process).
        os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path.home() / ".cache" / "jmem" / "jax"))
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command not in NO_JAX_COMMANDS + DISTRIBUTED_COMMANDS:
            check_backend()
        return args.handler(args)
    except JmemError as err:
        print(f"jmem: error: {one_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:  # read-only or full disk, a file for a directory, permissions
        print(f"jmem: error: {one_line(os_error(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jmem: interrupted; finished waves and checkpoints are kept, re-run the same command to resume",
              file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the last resort: one line, not a traceback
        from jmem.study.workdir import Preempted

        if isinstance(err, Preempted):
            print(f"jmem: stopped by {err.signal_name} ({err}); re-run the same command to resume",
                  file=sys.stderr)
            return err.exit_code
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            traceback.print_exc()
        print(f"jmem: internal error: {type(err).__name__}: {one_line(err)[:500]} "
              f"(run with {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
