"""Experiment configs: typed, validated sections, command-line overrides, a JSON record.

An experiment is a Python file under ``experiments/`` defining ``get_config(variant: str)``
that returns a :class:`Config`. Every field can be overridden from the command line with
``--set section.field=value``; the resolved config is what a run records in ``config.json``.
This module is the only place that knows the config schema; library functions take explicit
arguments.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import types
import typing
from pathlib import Path

from jmem.errors import JmemError
from jmem.engine.hparams import ModelConfig, TrainConfig


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which dataset: a name from ``jmem data --list`` or a path ending in ``.npz``.

    data_dir: where prepared TFDS datasets live ("" = ``$TFDS_DATA_DIR`` or TFDS' default).
    idx_dir: a directory of Fashion-MNIST's four IDX files ("" = ``$JMEM_FASHION_MNIST_DIR``,
      then ``/usr/share/datasets/fashion-mnist``); ``fashion_mnist`` only, see
      ``jmem.data.loaders.fashion_mnist_sources``.
    """

    name: str = "digits"
    data_dir: str = ""
    idx_dir: str = ""

    def __post_init__(self):
        if not self.name:
            raise JmemError("data.name='' is empty; give a dataset name or a .npz path")


@dataclasses.dataclass(frozen=True)
class SubsetConfig:
    """How keep-masks are drawn (see ``jmem.data.subsets``).

    design: "fixed" (exactly round(rate*N) per model, Feldman & Zhang), "bernoulli", or
      "balanced" (each example in exactly round(rate*R) models, LiRA).
    rates: one inclusion rate, or several (model r gets rates[r % len(rates)]).
    canary_fraction: fraction of training examples whose label is re-drawn to another class
      (known "memorized" positives for evaluating thresholds); 0 disables.
    """

    design: str = "fixed"
    rates: tuple = (0.7,)
    canary_fraction: float = 0.0

    def __post_init__(self):
        rates = self.rates if isinstance(self.rates, (tuple, list)) else (self.rates,)
        object.__setattr__(self, "rates", tuple(float(r) for r in rates))
        if not self.rates:
            raise JmemError("subsets.rates=() is empty; give at least one rate in (0, 1)")
        for rate in self.rates:
            if not 0.0 < rate < 1.0:
                raise JmemError(f"subsets.rates contains {rate}; every rate must be in (0, 1)")
        if self.design not in ("fixed", "bernoulli", "balanced"):
            raise JmemError(f"subsets.design={self.design!r} is not one of 'fixed', 'bernoulli', 'balanced'")
        if not 0.0 <= self.canary_fraction < 1.0:
            raise JmemError(f"subsets.canary_fraction={self.canary_fraction} must be in [0, 1)")


@dataclasses.dataclass(frozen=True)
class LeakageConfig:
    """Train/test near-duplicates (see ``jmem.data.leakage``), measured before training.

    clean_test: attach a leakage-free test set ``test_clean`` (the test set minus examples
      with a training near-duplicate: the Barz & Denzler lists for CIFAR, detection
      otherwise), so every model is also evaluated on it.
    metric: "cosine" or "l2" for the pixel-space detector.
    threshold: distance below which a pair is a duplicate (0 = the detector's default).
    features: also compare in the penultimate-layer feature space of one model of the run's
      architecture trained on the whole training set (``jmem.study.leakage``).
    """

    clean_test: bool = True
    metric: str = "cosine"
    threshold: float = 0.0
    features: bool = False

    def __post_init__(self):
        if self.metric not in ("cosine", "l2"):
            raise JmemError(f"leakage.metric={self.metric!r} is not one of 'cosine', 'l2'")
        if self.threshold < 0:
            raise JmemError(f"leakage.threshold={self.threshold} must be >= 0 (0 = default)")


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole experiment. ``seed`` is the root of every random stream (see ``jmem.rng``)."""

    seed: int = 0
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    subsets: SubsetConfig = dataclasses.field(default_factory=SubsetConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    leakage: LeakageConfig = dataclasses.field(default_factory=LeakageConfig)


# Fields that change how a run executes but not what it computes: a run directory may be
# resumed with different values. Everything else defines the run.
EXECUTION_ONLY_FIELDS = frozenset({"train.wave_size"})


def to_dict(config) -> dict:
    """The config as plain JSON-able nested dicts (tuples become lists)."""
    return _jsonable(dataclasses.asdict(config))


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def from_dict(raw: dict, cls=Config):
    """Rebuild a config from :func:`to_dict` output, validating every field."""
    if not isinstance(raw, dict):
        raise JmemError(f"config section {cls.__name__} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        if key not in hints:
            raise JmemError(f"unknown config field {key!r} in section {cls.__name__}")
        if dataclasses.is_dataclass(hints[key]):
            kwargs[key] = from_dict(value, hints[key])
        else:
            kwargs[key] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)


def flatten(config_dict: dict, prefix: str = "") -> dict:
    """``{"train": {"epochs": 3}}`` -> ``{"train.epochs": 3}``."""
    flat = {}
    for key, value in config_dict.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def first_difference(a: dict, b: dict, ignore=EXECUTION_ONLY_FIELDS) -> str | None:
    """The first dotted field whose value differs between two config dicts, with both values."""
    flat_a, flat_b = flatten(a), flatten(b)
    for key in sorted(set(flat_a) | set(flat_b)):
        if key in ignore:
            continue
        if flat_a.get(key, "<missing>") != flat_b.get(key, "<missing>"):
            return f"{key}: {flat_a.get(key, '<missing>')!r} vs {flat_b.get(key, '<missing>')!r}"
    return None


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply ``section.field=value`` strings; values are parsed by the field's type."""
    for item in overrides:
        if "=" not in item:
            raise JmemError(f"--set {item!r} must look like section.field=value")
        path, text = item.split("=", 1)
        config = _replace_path(config, path.strip().split("."), text.strip(), path.strip())
    return config


def _replace_path(node, parts, text, full_path):
    hints = typing.get_type_hints(type(node))
    name = parts[0]
    if name not in hints:
        close = difflib.get_close_matches(name, list(hints), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(hints)}"
        raise JmemError(f"unknown config field {full_path!r}{hint}")
    current = getattr(node, name)
    if len(parts) == 1:
        if dataclasses.is_dataclass(current):
            raise JmemError(f"{full_path!r} is a section; set one of its fields, e.g. {full_path}.{next(iter(typing.get_type_hints(type(current))))}=...")
        value = parse_value(text, current, full_path)
    else:
        if not dataclasses.is_dataclass(current):
            raise JmemError(f"config field {'.'.join(full_path.split('.')[:-len(parts) + 1])!r} has no sub-fields")
        value = _replace_path(current, parts[1:], text, full_path)
    return dataclasses.replace(node, **{name: value})


def parse_value(text: str, current, field: str):
    """Parse ``text`` into the type of the field's current value."""
    try:
        if isinstance(current, bool):
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if current is None:  # optional numeric field (e.g. score.rate); "none" clears it
            return None if text.lower() in ("", "none", "null") else float(text)
        if isinstance(current, tuple):
            items = [t for t in text.strip("()[] ").split(",") if t.strip()]
            return tuple(float(t) for t in items)
        return text
    except ValueError:
        expected = "number" if current is None else type(current).__name__
        raise JmemError(f"--set {field}={text!r}: expected a {expected}") from None


def with_variant(config: Config, variant: str, variants: dict) -> Config:
    """``config`` with the overrides of a named variant applied ("" = the config itself).

    variants: name -> list of ``section.field=value`` strings, e.g.
    ``{"small": ["train.num_models=16", "train.epochs=3"]}``.
    """
    if variant and variant not in variants:
        raise JmemError(f"unknown variant {variant!r}; known: {', '.join(map(repr, variants))}")
    return apply_overrides(config, variants[variant]) if variant else config


def load_experiment(spec: str) -> Config:
    """Load ``path/to/experiment.py`` or ``path/to/experiment.py:variant``.

    The file must define ``get_config(variant: str = "") -> Config``.
    """
    path_text, _, variant = spec.partition(":") if not Path(spec).exists() else (spec, "", "")
    path = Path(path_text)
    if not path.exists():
        raise JmemError(f"config file {path_text!r} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"jmem_experiment_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
        get_config = getattr(module, "get_config", None)
        if not isinstance(get_config, types.FunctionType):
            raise JmemError(f"config file {path_text!r} defines no get_config(variant) function")
        config = get_config(variant)
    except JmemError:
        raise
    except Exception as err:  # a broken experiment file: say which and why, in one line
        raise JmemError(f"config file {path_text!r} failed to load: {type(err).__name__}: {err}") from err
    if not isinstance(config, Config):
        raise JmemError(f"{path_text}: get_config({variant!r}) returned {type(config).__name__}, not jmem.config.Config")
    return config
