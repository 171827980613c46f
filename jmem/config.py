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

import numpy as np

from jmem.errors import JmemError
from jmem.jsonable import to_jsonable
from jmem.engine.hparams import ModelConfig, TrainConfig


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which dataset, and where its files are.

    name: a name from ``jmem data --list`` (``digits``, ``mnist1d``, ``fashion_mnist``,
      ``cifar10``, ``idx:DIR``, ...) or a path ending in ``.npz``.
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
    rates: one inclusion rate, or several (model r gets rates[r % len(rates)], unless
      ``equal_heldout``).
    canary_fraction: fraction of training examples whose label is re-drawn to another class
      (known "memorized" positives for evaluating thresholds); 0 disables. Canaries are an
      instrument of the estimation run only: no selection, removal set or retrained model
      ever uses them or their labels.
    equal_heldout: with several rates, give each rate a share of the models proportional to
      ``1 / (1 - rate)``, so every example has the same expected number of held-out models at
      every rate (equal precision: at 0.7 and 0.95 the 0.95 group gets 6x the models), and
      order the models in blocks of one rate (waves of equal subset sizes). False: the same
      number per rate, alternating.
    """

    design: str = "fixed"
    rates: tuple = (0.7,)
    canary_fraction: float = 0.0
    equal_heldout: bool = False

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
        if not isinstance(self.equal_heldout, bool):
            raise JmemError(f"subsets.equal_heldout={self.equal_heldout!r} must be true or false")


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
        if not (isinstance(self.threshold, (int, float)) and 0 <= self.threshold < float("inf")):
            raise JmemError(f"leakage.threshold={self.threshold} must be a finite number >= 0 (0 = default)")


# Training examples per chunk of the per-example statistics: ``jmem.scores.estimators.DEFAULT_CHUNK``
# (this module may not import the scores; tests/test_config.py holds the two equal).
DEFAULT_CHUNK = 2048


@dataclasses.dataclass(frozen=True)
class ScoreConfig:
    """The scoring stage, ``jmem score`` (see ``jmem.study.scoring``): how scores become selections.

    Every score comes from the models of one inclusion rate (never pooled): ``scores.csv``
    has columns for every rate, and its main columns are those of ``rate``.

    rate: the rate of the main columns and of ``retrain.methods`` (None: the run's lowest,
      F&Z's 0.7 in the studies).
    fixed_threshold: F&Z's hand-picked cut, ``mem >= 0.25``; fractional_threshold: the same
      kind of cut on the fractional score (the critique's definition).
    calibrated_q: the estimated false discovery rate the null-calibrated cut holds
      (``jmem.scores.calibration``).
    fdr_q: jmem's rule: the Benjamini-Hochberg level of the one-sided Fisher test per example.
    min_effect: jmem's rule: the minimum ``mem`` of a discovery.
    influence_threshold: F&Z's high-influence pairs need ``infl`` at least this (0.15);
      pair_mem_threshold: and the training example's ``mem`` at least this (0.25);
      pair_same_class: and the two examples in the same class.
    influencers_k: top influencers kept per test example (in the returned summary only).
    canary_tpr: TPR at which FPR is reported and the canary threshold is set.
    confidence: level of the ``mem`` intervals.
    fractional_floor: the fractional score is 0 where ``acc_in`` is below this, so it is never
      1 on noise (``jmem.scores.estimators``).
    min_heldout: held-out models per example per cross-fitting half below which a rate is
      reported as under-powered.
    chunk_size: training examples per chunk for per-example statistics;
    influence_chunk_size: training examples per influence matrix product.
    max_pairs: refuse (error) rather than write more pairs than this.
    """

    rate: float | None = None
    fixed_threshold: float = 0.25
    fractional_threshold: float = 0.25
    calibrated_q: float = 0.05
    fdr_q: float = 0.1
    min_effect: float = 0.1
    influence_threshold: float = 0.15
    pair_mem_threshold: float = 0.25
    pair_same_class: bool = True
    influencers_k: int = 10
    canary_tpr: float = 0.95
    confidence: float = 0.95
    fractional_floor: float = 0.1
    min_heldout: int = 20
    chunk_size: int = DEFAULT_CHUNK
    influence_chunk_size: int = DEFAULT_CHUNK
    max_pairs: int = 10_000_000

    def __post_init__(self):
        def need(ok, field, rule):
            if not ok:
                raise JmemError(f"score.{field}={getattr(self, field)!r} {rule}")

        for f in ("fixed_threshold", "fractional_threshold", "min_effect", "influence_threshold",
                  "pair_mem_threshold"):
            v = getattr(self, f)
            need(_is_real(v) and -1 <= v <= 1, f, "must be a number in [-1, 1]")
        for f in ("fdr_q", "calibrated_q", "confidence"):
            v = getattr(self, f)
            need(_is_real(v) and 0 < v < 1, f, "must be in (0, 1)")
        for f in ("canary_tpr", "fractional_floor"):
            v = getattr(self, f)
            need(_is_real(v) and 0 < v <= 1, f, "must be in (0, 1]")
        for f in ("influencers_k", "min_heldout"):
            v = getattr(self, f)
            need(_is_int(v) and v >= 0, f, "must be an integer >= 0")
        for f in ("chunk_size", "influence_chunk_size", "max_pairs"):
            v = getattr(self, f)
            need(_is_int(v) and v >= 1, f, "must be an integer >= 1")
        need(isinstance(self.pair_same_class, bool), "pair_same_class", "must be true or false")
        need(self.rate is None or (_is_real(self.rate) and 0 < self.rate < 1), "rate",
             "must be null or in (0, 1)")


def _is_real(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) \
        and bool(np.isfinite(v))


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


# JAX's PRNGKey(seed) keeps 32 bits: 2**32 would silently be seed 0, -1 seed 2**32 - 1.
MAX_SEED = 2**32 - 1
SEED_RULE = f"must be an integer in [0, {MAX_SEED}] (seeds are unsigned 32-bit)"


def _is_seed(v) -> bool:
    return _is_int(v) and 0 <= v <= MAX_SEED


@dataclasses.dataclass(frozen=True)
class RetrainConfig:
    """The removal experiment, ``jmem retrain`` (see ``jmem.study.retrain``).

    The retrained models train on the dataset's true labels (never the canaries'), with the
    coupled data order, and no selection or random arm ever removes a canary.

    methods: comma-separated selection rules applied at ``score.rate`` (``fixed``,
      ``fractional``, ``calibrated``, ``calibrated_fractional``, ``fdr``, ``canary``); each
      gets a selected, a class-matched random and a uniform random arm ("" = none).
    seeds: retraining seeds per arm and pool; seed s of every arm of a pool shares its init,
      data-order and augmentation keys.
    pools: independent estimation pools: 2 = the two cross-fitting halves of the estimation
      models, each selecting its own removal sets (the other half finds the test examples they
      influence), so the verdict's interval covers selection noise; 1 = select from all the
      models (selection treated as fixed).
    sweep: thresholds tau: remove mem >= tau, each with its class-matched random arm.
    remove: path of a user removal set (``.npy``: int indices or bool[N]); "" = none.
    lowest: also remove as many of the lowest-scoring examples, for each method.
    resamples: bootstrap replicates of the seed-only intervals.
    ablation: the 2^4 factorial ablation of the four corrections (``jmem.scores.protocols``):
      the 8 removal sets of its cells as defined, each with a class-matched random arm, from
      a run holding two inclusion rates (the lowest is the "off" level, the highest "on").
    size_matched: with the ablation, also every cell's own top ``matched_k`` examples by its
      own score, so the factors' effects compare which examples, not how many.
    matched_k: the size of the size-matched sets (0: the F&Z cell's own count, averaged over
      the pools).
    curve: the protocols' size-matched removal curve: extra sizes as multiples of k (e.g.
      0.5,2); () = none.
    data_order: "coupled" (removing examples changes no other example's step; arms at one
      seed pair tightly) or "compact" (each arm's own order, as estimation trains).
    alpha: the family-wise error rate of the headline comparisons (Holm; decision intervals
      at the Bonferroni level alpha / m, and the minimum detectable effect at the same level).
    gate_fitted: the share of non-canary training examples the estimation models must fit
      (classify right when trained on them) before a verdict; gate_canary_auroc: the
      canaries' AUROC of mem that must be reached (with canaries); gate_jaccard: the split-half
      Jaccard each removal set used must reach (selection reliability; F&Z's two CIFAR-100
      estimates agreed at 0.7); gate_mde_pp: a "no change" verdict needs a minimum detectable
      effect at or below this many percentage points.
    """

    methods: str = "fixed,fdr"
    seeds: int = 25
    pools: int = 2
    sweep: tuple = ()
    remove: str = ""
    lowest: bool = False
    resamples: int = 10000
    ablation: bool = False
    size_matched: bool = True
    matched_k: int = 0
    curve: tuple = ()
    data_order: str = "coupled"
    alpha: float = 0.05
    gate_fitted: float = 0.95
    gate_canary_auroc: float = 0.9
    gate_jaccard: float = 0.7
    gate_mde_pp: float = 2.0

    def __post_init__(self):
        for name in ("sweep", "curve"):
            value = getattr(self, name)
            value = value if isinstance(value, (tuple, list)) else (value,)
            object.__setattr__(self, name, tuple(float(t) for t in value))
        if not isinstance(self.methods, str):
            raise JmemError(f"retrain.methods={self.methods!r} must be a comma-separated string")
        if not _is_int(self.seeds) or self.seeds < 2:
            raise JmemError(f"retrain.seeds={self.seeds!r} must be an integer >= 2 (paired statistics)")
        if self.pools not in (1, 2) or isinstance(self.pools, bool):
            raise JmemError(f"retrain.pools={self.pools!r} must be 1 or 2")
        for tau in self.sweep:
            if not -1.0 < tau <= 1.0:
                raise JmemError(f"retrain.sweep contains {tau}; every threshold must be in (-1, 1]")
        if len(set(self.sweep)) != len(self.sweep):
            raise JmemError(f"retrain.sweep={self.sweep} repeats a threshold")
        for m in self.curve:
            if not (np.isfinite(m) and m > 0) or m == 1.0:
                raise JmemError(f"retrain.curve contains {m}; every multiple of k must be > 0 and not 1 "
                                "(k itself is always measured)")
        if not _is_int(self.resamples) or self.resamples < 100:
            raise JmemError(f"retrain.resamples={self.resamples!r} must be an integer >= 100")
        if not _is_int(self.matched_k) or self.matched_k < 0:
            raise JmemError(f"retrain.matched_k={self.matched_k!r} must be an integer >= 0 (0 = the F&Z cell's count)")
        for name in ("lowest", "ablation", "size_matched"):
            if not isinstance(getattr(self, name), bool):
                raise JmemError(f"retrain.{name}={getattr(self, name)!r} must be true or false")
        if self.data_order not in ("coupled", "compact"):
            raise JmemError(f"retrain.data_order={self.data_order!r} is not one of 'coupled', 'compact'")
        for name in ("alpha", "gate_fitted", "gate_canary_auroc", "gate_jaccard"):
            v = getattr(self, name)
            if not (_is_real(v) and 0 <= v <= 1) or (name == "alpha" and not 0 < v < 1):
                raise JmemError(f"retrain.{name}={v!r} must be in {'(0, 1)' if name == 'alpha' else '[0, 1]'}")
        if not (_is_real(self.gate_mde_pp) and self.gate_mde_pp > 0):
            raise JmemError(f"retrain.gate_mde_pp={self.gate_mde_pp!r} must be a number > 0")

    @property
    def method_list(self) -> tuple[str, ...]:
        """The names in ``methods``, in order, without blanks."""
        return tuple(m.strip() for m in self.methods.split(",") if m.strip())


@dataclasses.dataclass(frozen=True)
class LooConfig:
    """Leave-one-out ground truth, ``jmem loo`` (see ``jmem.study.loo``); sized for digits.

    enabled: also run it as a stage of ``jmem run`` (after retrain, before the report).
    examples: K, training examples sampled (stratified over the run's scores, canaries never).
    seeds: S paired seeds; seed s trains one full-set model and one model per sampled example
      without it, S * (K + 1) models in all.
    partners: test examples per sampled example whose LOO influence is measured (its top
      partners by the run's influence estimate at ``influence_rate``; 0 = none).
    influence_rate: the run's rate whose models estimate influence (None = its lowest rate).
    min_effect: "LOO-memorized" = LOO mem >= min_effect with its interval excluding 0.
    selected_share, easy_share: shares of the sample drawn from the examples some rule
      selected and from the never-misclassified ones (the rest spread over mem deciles).
    confidence: level of every interval; resamples: stratified bootstrap replicates.
    """

    enabled: bool = False
    examples: int = 100
    seeds: int = 50
    partners: int = 5
    influence_rate: float | None = None
    min_effect: float = 0.1
    selected_share: float = 0.4
    easy_share: float = 0.1
    confidence: float = 0.95
    resamples: int = 1000

    def __post_init__(self):
        def need(ok, field, rule):
            if not ok:
                raise JmemError(f"loo.{field}={getattr(self, field)!r} {rule}")

        need(isinstance(self.enabled, bool), "enabled", "must be true or false")
        need(_is_int(self.examples) and self.examples >= 1, "examples", "must be an integer >= 1")
        need(_is_int(self.seeds) and self.seeds >= 2, "seeds", "must be an integer >= 2 (paired statistics)")
        need(_is_int(self.partners) and self.partners >= 0, "partners", "must be an integer >= 0")
        need(_is_int(self.resamples) and self.resamples >= 100, "resamples", "must be an integer >= 100")
        need(self.influence_rate is None or (_is_real(self.influence_rate) and 0 < self.influence_rate < 1),
             "influence_rate", "must be null or in (0, 1)")
        need(_is_real(self.min_effect) and 0 <= self.min_effect <= 1, "min_effect", "must be in [0, 1]")
        need(_is_real(self.confidence) and 0 < self.confidence < 1, "confidence", "must be in (0, 1)")
        for f in ("selected_share", "easy_share"):
            need(_is_real(getattr(self, f)) and 0 <= getattr(self, f) <= 1, f, "must be in [0, 1]")
        need(self.selected_share + self.easy_share <= 1, "easy_share",
             f"plus loo.selected_share={self.selected_share!r} must be <= 1")


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole experiment: one section per stage.

    seed: the root of every random stream (``jmem.rng``); model r's keys are
      ``fold_in(stream, r)``. An unsigned 32-bit integer (JAX folds 2^32 into 0).
    """

    seed: int = 0
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    subsets: SubsetConfig = dataclasses.field(default_factory=SubsetConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    leakage: LeakageConfig = dataclasses.field(default_factory=LeakageConfig)
    score: ScoreConfig = dataclasses.field(default_factory=ScoreConfig)
    retrain: RetrainConfig = dataclasses.field(default_factory=RetrainConfig)
    loo: LooConfig = dataclasses.field(default_factory=LooConfig)

    def __post_init__(self):
        if not _is_seed(self.seed):
            raise JmemError(f"seed={self.seed!r} {SEED_RULE}")


# Sections that configure a later stage, not training: ``jmem train`` records them but a run
# directory may be resumed with other values (``jmem retrain`` checks its own section, and the
# scoring stage records the options it used in thresholds.json).
NOT_TRAINING_SECTIONS = ("score", "retrain", "loo")

# Fields that change how a run executes but not what it computes: a run directory may be
# resumed with different values. Everything else defines the run.
EXECUTION_ONLY_FIELDS = frozenset({"train.wave_size"})


def to_dict(config) -> dict:
    """The config as plain JSON-able nested dicts (tuples become lists)."""
    return to_jsonable(dataclasses.asdict(config))


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
    try:
        return cls(**kwargs)
    except TypeError as err:  # a value of the wrong type, e.g. "epochs": "ten"
        raise JmemError(f"config section {cls.__name__} has a value of the wrong type "
                        f"({err}): {kwargs}") from err


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


def first_difference(a: dict, b: dict, ignore=EXECUTION_ONLY_FIELDS,
                     ignore_sections=NOT_TRAINING_SECTIONS) -> str | None:
    """The first dotted field whose value differs between two config dicts, with both values.

    Fields in ``ignore`` and every field of the sections in ``ignore_sections`` are skipped.
    """
    flat_a, flat_b = flatten(a), flatten(b)
    for key in sorted(set(flat_a) | set(flat_b)):
        if key in ignore or key.split(".", 1)[0] in ignore_sections:
            continue
        if flat_a.get(key, "<missing>") != flat_b.get(key, "<missing>"):
            return f"{key}: {flat_a.get(key, '<missing>')!r} vs {flat_b.get(key, '<missing>')!r}"
    return None


def apply_overrides(config: Config, overrides: list[str], sections: tuple[str, ...] | None = None,
                    command: str = "") -> Config:
    """Apply ``section.field=value`` strings (``--set``); values are parsed by the field's type.

    sections: the sections ``command`` may change (None = every field): a command acting on
    a run directory changes only its own section, the run's config.json fixes the rest.
    An unknown field names the closest known one ("did you mean").
    """
    for item in overrides:
        if "=" not in item:
            raise JmemError(f"--set {item!r} must look like section.field=value")
        path, text = item.split("=", 1)
        parts = path.strip().split(".")
        config = _replace_path(config, parts, text.strip(), path.strip())
        if sections is not None and (len(parts) < 2 or parts[0] not in sections):
            fields = " and ".join(f"{name}.*" for name in sections)
            raise JmemError(f"--set {item!r}: {command} takes only {fields} fields (the run's "
                            "other settings are fixed by its config.json)")
    return config


def _replace_path(node, parts, text, full_path):
    hints = typing.get_type_hints(type(node))
    name = parts[0]
    if name not in hints:
        # A section's field given without its section (``fdr_q``) is named in full.
        owners = [f"{key}.{name}" for key, cls in hints.items()
                  if len(parts) == 1 and dataclasses.is_dataclass(cls) and name in typing.get_type_hints(cls)]
        close = owners or difflib.get_close_matches(name, list(hints), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(hints)}"
        raise JmemError(f"unknown config field {full_path!r}{hint}")
    current = getattr(node, name)
    if len(parts) == 1:
        if dataclasses.is_dataclass(current):
            raise JmemError(f"{full_path!r} is a section; set one of its fields, e.g. {full_path}.{next(iter(typing.get_type_hints(type(current))))}=...")
        optional = type(None) in typing.get_args(hints[name])  # e.g. score.rate: float | None
        value = (None if optional and text.lower() in ("", "none", "null")
                 else parse_value(text, current, full_path))
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
            if not text.strip("()[] "):  # "" or "()": the empty list (e.g. retrain.sweep=)
                return ()
            items = [t.strip() for t in text.strip("()[] ").split(",")]
            if items and not items[-1] and len(items) > 1:
                items.pop()  # one trailing comma, as in (0.5,)
            if any(not t for t in items):
                raise JmemError(f"--set {field}={text!r}: item {items.index('') + 1} of the list is "
                                "empty; separate the values with single commas, e.g. 0.5,0.7")
            return tuple(float(t) for t in items)
        return text
    except JmemError:
        raise
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
    path_text, variant = split_spec(spec)
    module = _experiment_module(path_text)
    try:
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


def experiment_variants(spec: str) -> dict:
    """The named variants of an experiment file (its ``VARIANTS``: name -> override strings)."""
    path_text, _ = split_spec(spec)
    variants = getattr(_experiment_module(path_text), "VARIANTS", {})
    if not isinstance(variants, dict):
        raise JmemError(f"config file {path_text!r}: VARIANTS is a {type(variants).__name__}, not a dict")
    return variants


def split_spec(spec: str) -> tuple[str, str]:
    """``FILE.py[:VARIANT]`` -> (file, variant); a path that exists is a file even with a colon."""
    path_text, _, variant = spec.partition(":") if not Path(spec).exists() else (spec, "", "")
    return path_text, variant


def _experiment_module(path_text: str) -> types.ModuleType:
    """Execute an experiment file; JmemError naming it when it is not one or does not run."""
    path = Path(path_text)
    if not path.exists():
        raise JmemError(f"config file {path_text!r} does not exist")
    if path.is_dir():
        raise JmemError(f"config file {path_text!r} is a directory; give an experiment file, "
                        "e.g. experiments/digits.py")
    if path.suffix != ".py":
        raise JmemError(f"config file {path_text!r} is not a Python file (.py); experiments are "
                        "Python files defining get_config(variant), e.g. experiments/digits.py")
    module_spec = importlib.util.spec_from_file_location(f"jmem_experiment_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except JmemError:
        raise
    except Exception as err:  # a broken experiment file: say which and why, in one line
        raise JmemError(f"config file {path_text!r} failed to load: {type(err).__name__}: {err}") from err
    return module
