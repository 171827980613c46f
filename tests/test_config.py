"""Experiment configs: loading, overrides, validation, the JSON record."""

from pathlib import Path

import pytest

from jmem import config as config_lib
from jmem.config import Config, apply_overrides, first_difference, from_dict, load_experiment, to_dict
from jmem.errors import JmemError

EXPERIMENTS = sorted((Path(__file__).parent.parent / "experiments").glob("*.py"))


def _variants(path: Path) -> list[str]:
    """The variant names of an experiment file: the keys of its module-level VARIANTS."""
    return sorted(config_lib.experiment_variants(str(path)))


EXPERIMENT_VARIANTS = [(p, v) for p in EXPERIMENTS for v in ["", *_variants(p)]]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_experiment_lists_its_variants_with_a_small_one(path):
    assert "small" in _variants(path), f"{path.name}: no module-level VARIANTS with 'small'"


@pytest.mark.parametrize("path, variant", EXPERIMENT_VARIANTS,
                         ids=[f"{p.stem}:{v or 'default'}" for p, v in EXPERIMENT_VARIANTS])
def test_every_experiment_loads_and_round_trips(path, variant):
    config = load_experiment(f"{path}:{variant}" if variant else str(path))
    assert isinstance(config, Config)
    assert from_dict(to_dict(config)) == config
    assert config.__class__.__module__ == "jmem.config"


def test_small_variant_is_smaller():
    full = load_experiment("experiments/digits.py")
    small = load_experiment("experiments/digits.py:small")
    assert small.train.num_models < full.train.num_models
    assert small.train.epochs < full.train.epochs and small.retrain.seeds < full.retrain.seeds
    # the model and the data stay those of the full study: small tests the same code paths
    assert small.model == full.model and small.data == full.data
    assert first_difference(to_dict(full), to_dict(small)) is not None


def test_overrides_parse_by_field_type():
    config = apply_overrides(Config(), [
        "train.num_models=64", "train.learning_rate=0.01", "train.nesterov=true",
        "subsets.rates=0.5,0.9", "model.kind=cnn", "seed=3"])
    assert config.train.num_models == 64 and isinstance(config.train.num_models, int)
    assert config.train.learning_rate == 0.01
    assert config.train.nesterov is True
    assert config.subsets.rates == (0.5, 0.9)
    assert config.model.kind == "cnn"
    assert config.seed == 3


@pytest.mark.parametrize("override, fragment", [
    ("train.num_model=3", "did you mean 'num_models'"),
    ("trian.epochs=3", "did you mean 'train'"),
    ("train.epochs=three", "train.epochs='three': expected a int"),
    ("train.nesterov=maybe", "expected a bool"),
    ("train", "must look like section.field=value"),
    ("train=3", "'train' is a section"),
    ("train.num_models=0", "train.num_models=0 must be >= 1"),
    ("subsets.rates=1.5", "subsets.rates contains 1.5"),
    ("subsets.design=random", "subsets.design='random'"),
    ("model.kind=transformer", "model.kind='transformer'"),
    ("train.optimizer=lion", "train.optimizer='lion'"),
])
def test_bad_overrides_name_the_field(override, fragment):
    with pytest.raises(JmemError, match=None) as err:
        apply_overrides(Config(), [override])
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_first_difference_names_the_field_and_ignores_execution_only_fields():
    a = to_dict(Config())
    b = to_dict(apply_overrides(Config(), ["train.epochs=7", "train.wave_size=8"]))
    assert first_difference(a, b) == "train.epochs: 20 vs 7"
    c = to_dict(apply_overrides(Config(), ["train.wave_size=8"]))
    assert first_difference(a, c) is None


def test_from_dict_rejects_unknown_fields():
    raw = to_dict(Config())
    raw["train"]["bogus"] = 1
    with pytest.raises(JmemError, match="bogus"):
        from_dict(raw)


def test_load_experiment_errors(tmp_path):
    with pytest.raises(JmemError, match="does not exist"):
        load_experiment(str(tmp_path / "missing.py"))
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(JmemError, match="defines no get_config"):
        load_experiment(str(tmp_path / "empty.py"))
    (tmp_path / "wrong.py").write_text("def get_config(variant=''):\n    return {}\n")
    with pytest.raises(JmemError, match="returned dict"):
        load_experiment(str(tmp_path / "wrong.py"))
    (tmp_path / "broken.py").write_text("import nonexistent_module_xyz\n")
    with pytest.raises(JmemError, match="failed to load: ModuleNotFoundError"):
        load_experiment(str(tmp_path / "broken.py"))
    with pytest.raises(JmemError, match="unknown variant"):
        load_experiment("experiments/digits.py:huge")


def test_flatten():
    assert config_lib.flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


@pytest.mark.parametrize("name", ["mnist1d", "fashion_mnist"])
def test_sweep_variants_span_rates_for_score_versus_rate_curves(name):
    full = load_experiment(f"experiments/{name}.py")
    sweep = load_experiment(f"experiments/{name}.py:sweep")
    assert min(sweep.subsets.rates) == 0.1 and max(sweep.subsets.rates) == 0.95
    assert len(sweep.subsets.rates) == 10 and sweep.subsets.design == "fixed"
    assert sweep.train.num_models % 10 == 0  # the same number of models at every rate
    assert sweep.data == full.data and sweep.model.kind == full.model.kind


@pytest.mark.parametrize("name, classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_presets_are_feldman_zhang_sized_two_rate_studies(name, classes):
    config = load_experiment(f"experiments/{name}.py")
    assert config.data.name == name and config.model.kind == "resnet"
    assert config.train.num_models >= 2000 and config.subsets.design == "balanced"
    assert config.subsets.rates == (0.7, 0.95)
    assert config.retrain.ablation and config.retrain.methods == ""
    assert config.leakage.clean_test  # the Barz & Denzler list gives test_clean


def test_score_section_is_a_config_section():
    from jmem.scores import estimators

    config = apply_overrides(Config(), ["score.fdr_q=0.05", "score.rate=0.7", "score.pair_same_class=no"])
    assert config.score.fdr_q == 0.05 and config.score.rate == 0.7 and config.score.pair_same_class is False
    assert from_dict(to_dict(config)) == config
    assert apply_overrides(config, ["score.rate=none"]).score.rate is None
    assert config_lib.DEFAULT_CHUNK == estimators.DEFAULT_CHUNK  # held equal by hand (see config.py)
    # A run may be resumed and re-scored with other score settings, like retrain ones.
    assert first_difference(to_dict(Config()), to_dict(config)) is None
    with pytest.raises(JmemError, match=r"score.fdr_q=1.5 must be in \(0, 1\)"):
        apply_overrides(Config(), ["score.fdr_q=1.5"])


def test_an_experiment_file_sets_every_section(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text("from jmem.config import Config, RetrainConfig, ScoreConfig\n"
                    "VARIANTS = {'strict': ['score.fdr_q=0.01']}\n"
                    "def get_config(variant=''):\n"
                    "    from jmem.config import with_variant\n"
                    "    config = Config(score=ScoreConfig(fixed_threshold=0.3), retrain=RetrainConfig(seeds=8))\n"
                    "    return with_variant(config, variant, VARIANTS)\n")
    config = load_experiment(f"{path}:strict")
    assert (config.score.fixed_threshold, config.score.fdr_q, config.retrain.seeds) == (0.3, 0.01, 8)
    assert config_lib.experiment_variants(str(path)) == {"strict": ["score.fdr_q=0.01"]}
    assert config_lib.split_spec(f"{path}:strict") == (str(path), "strict")


def test_overrides_limited_to_sections_name_the_command_and_the_closest_field():
    def error(overrides, **kw):
        with pytest.raises(JmemError) as err:
            apply_overrides(Config(), overrides, **kw)
        return str(err.value)

    assert error(["train.epochs=2"], sections=("retrain",), command="jmem retrain") == (
        "--set 'train.epochs=2': jmem retrain takes only retrain.* fields (the run's other "
        "settings are fixed by its config.json)")
    assert "did you mean 'score.fdr_q'?" in error(["fdr_q=0.1"], sections=("score",), command="jmem score")
    assert "did you mean 'seeds'?" in error(["retrain.seed=3"], sections=("retrain",), command="jmem retrain")
    assert apply_overrides(Config(), ["retrain.seeds=3"], sections=("retrain",)).retrain.seeds == 3
