"""The ``jmem`` command: the only place that reads configs and flags.

Every subcommand turns bad input into one line on stderr (``jmem: error: ...``) and exit
status 2; nothing is written before the input has been validated.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from jmem.errors import JmemError


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="experiment file, e.g. experiments/digits.py (or FILE.py:VARIANT)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override a config field, e.g. --set train.num_models=64 (repeatable)")
    parser.add_argument("--workdir", required=True, type=Path, help="run directory to write (or resume)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jmem",
        description="Train many small JAX models on random subsets at once to measure memorization.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="the main job: train, then score (writes a complete run directory)")
    _add_config_args(p)
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("train", help="train R models on R keep-masks and record their margins")
    _add_config_args(p)
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("score", help="memorization scores, thresholds and high-influence pairs of a run")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a scoring option, e.g. --set fdr_q=0.05 (repeatable)")
    p.set_defaults(handler=cmd_score)

    p = sub.add_parser("leakage", help="train/test near-duplicates of a dataset or run directory")
    p.add_argument("target", help="dataset name, .npz path, or run directory")
    p.add_argument("--data-dir", default="", help="TFDS data directory")
    p.add_argument("--out", type=Path, default=None, help="where to write duplicates.csv (default: the run directory, else ./duplicates.csv)")
    p.set_defaults(handler=cmd_leakage)

    p = sub.add_parser("data", help="print a dataset's sizes, shapes, classes and class balance")
    p.add_argument("name", nargs="?", help="dataset name or .npz path")
    p.add_argument("--data-dir", default="", help="TFDS data directory (default: $TFDS_DATA_DIR)")
    p.add_argument("--list", action="store_true", help="list the known datasets")
    p.set_defaults(handler=cmd_data)

    for name, text in (("retrain", "the removal experiment (not yet available)"),
                       ("report", "markdown report and plots of a run (not yet available)"),
                       ("bench", "throughput benchmark of mass subset training (not yet available)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("args", nargs="*")
        p.set_defaults(handler=_not_yet(name))
    return parser


def _not_yet(name):
    def handler(args):
        raise JmemError(f"`jmem {name}` is not available yet in this version")
    return handler


def load_config(args):
    from jmem import config as config_lib

    config = config_lib.load_experiment(args.config)
    return config_lib.apply_overrides(config, args.overrides)


def _load_dataset(config):
    from jmem.data import load_dataset

    return load_dataset(config.data.name, data_dir=config.data.data_dir or None)


def cmd_train(args) -> int:
    from jmem.runner import run_training

    config = load_config(args)
    dataset = _load_dataset(config)
    summary = run_training(config, args.workdir, dataset, progress=not args.no_progress)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_run(args) -> int:
    cmd_train(args)
    return cmd_score(argparse.Namespace(run_dir=args.workdir, overrides=[]))


def cmd_score(args) -> int:
    from jmem.score_run import ScoreOptions, format_summary, score_run
    from jmem import config as config_lib
    import dataclasses

    options = ScoreOptions()
    for item in args.overrides:
        name, _, text = item.partition("=")
        name = name.removeprefix("score.")
        if not hasattr(options, name):
            raise JmemError(f"unknown scoring option {name!r}; known: {', '.join(f.name for f in dataclasses.fields(options))}")
        value = config_lib.parse_value(text, getattr(options, name), f"score.{name}")
        options = dataclasses.replace(options, **{name: value})
    summary = score_run(args.run_dir, options)
    print(format_summary(summary))
    return 0


def cmd_leakage(args) -> int:
    from jmem import artifacts, config as config_lib
    from jmem.data import load_dataset
    from jmem.leakage import find_leakage, format_leakage_summary, write_duplicates_csv

    target = Path(args.target)
    if (target / artifacts.CONFIG).exists():  # a run directory: its dataset, its settings
        config = config_lib.from_dict(artifacts.load_json(target / artifacts.CONFIG))
        name, data_dir = config.data.name, args.data_dir or config.data.data_dir
        metric, threshold = config.leakage.metric, config.leakage.threshold or None
        out = args.out or target / artifacts.DUPLICATES
    else:
        name, data_dir, metric, threshold = args.target, args.data_dir, "cosine", None
        out = args.out or Path(artifacts.DUPLICATES)
    dataset = load_dataset(name, data_dir=data_dir or None)
    result = find_leakage(dataset, metric=metric, threshold=threshold)
    write_duplicates_csv(out, result)
    print(format_leakage_summary(result, dataset))
    print(f"wrote {out}")
    return 0


def cmd_data(args) -> int:
    from jmem.data import KNOWN_DATASETS, describe, load_dataset

    if args.list or not args.name:
        for name, text in KNOWN_DATASETS.items():
            print(f"{name:16s} {text}")
        print(f"{'PATH.npz':16s} any file with x_train, y_train, x_test, y_test")
        return 0
    print(describe(load_dataset(args.name, data_dir=args.data_dir or None)))
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except JmemError as err:
        print(f"jmem: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jmem: interrupted; finished waves are kept, re-run the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
