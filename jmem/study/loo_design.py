"""What ``jmem loo`` measures, chosen from the scored run before any model trains.

* the run's estimates **one rate at a time** (:func:`run_estimates`): every per-example score
  of the healthy models of each inclusion rate, which examples some rule selects
  (:func:`protocol_selections_for_loo`), which are never misclassified, and the cheap proxies
  when the run recorded them;
* the stratified sample of K examples (:func:`choose_sample`, canaries never: they are an
  instrument, not data);
* the keep rows of the paired design (:func:`design_rows`): S seeds x (K + 1) rows, one
  full-set row per seed shared by all K examples;
* the test partners whose leave-one-out influence is checked (:func:`estimated_partners`):
  each sampled example's top test examples by the run's influence estimate at one rate.

Pure functions of the run's arrays (no training, no files written).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from jmem import rng
from jmem.config import Config, LooConfig, ScoreConfig
from jmem.errors import JmemError
from jmem.scores import estimators
from jmem.scores import loo as loo_stats
from jmem.study import rundir, scoring

# LOO seed s trains with model id LOO_MODEL_ID_OFFSET + s: keys that no estimation model
# (ids 0..R-1) and no retrained model (2**30 + s) has, so the ground truth is independent of
# the models it checks.
LOO_MODEL_ID_OFFSET = 3 * 2**29
SALT_SAMPLE, SALT_BOOTSTRAP = 1, 2


@dataclasses.dataclass(frozen=True)
class RateModels:
    """The healthy (non-diverged) estimation models of one inclusion rate: rows int64[R_r]."""

    rate: float
    rows: np.ndarray


@dataclasses.dataclass(frozen=True)
class RunEstimates:
    """The scored run's estimates, never pooled over rates.

    by_rate: {rate: ExampleScores} (increasing rates); models: [RateModels] in the same order;
    eligible: bool[N] (not a canary); never_wrong: bool[N] (every model right at every rate);
    selections: {rule name: bool[N]} (eligible examples only);
    proxies: {rate: {"csl": float64[N], "learned_epoch": float64[N]}}, or None with the reason
    in ``proxies_missing``; options: the scoring stage's recorded options (the scores' floor).
    """

    by_rate: dict
    models: list
    eligible: np.ndarray
    never_wrong: np.ndarray
    selections: dict
    proxies: dict | None
    proxies_missing: str | None
    options: ScoreConfig = ScoreConfig()


def rate_models(run: scoring.RunArrays, config: Config) -> list[RateModels]:
    """The healthy models of each rate, increasing. A run without model_rates.npy holds one
    rate, the config's."""
    num_models = run.keep.shape[0]
    if run.model_rates is not None:
        rates, group = estimators.group_rates(run.model_rates, num_models)
    elif len(config.subsets.rates) == 1:
        rates, group = np.array(config.subsets.rates), np.zeros(num_models, np.int64)
    else:
        raise JmemError(f"the run has no {rundir.MODEL_RATES} but subsets.rates="
                        f"{config.subsets.rates}; cannot tell the rates apart")
    healthy = np.ones(num_models, bool) if run.diverged is None else ~run.diverged
    out = []
    for g, rate in enumerate(rates):
        rows = np.flatnonzero((group == g) & healthy)
        if rows.size < 2:
            raise JmemError(f"rate {rate:g} has {rows.size} healthy estimation model(s); "
                            "leave-one-out validation needs the run's scores at every rate")
        out.append(RateModels(float(rate), rows))
    return out


def rate_scores(run: scoring.RunArrays, models: RateModels, opt: ScoreConfig):
    """(Counts, ExampleScores) of the models of one rate, with the scoring options ``opt``."""
    counts = estimators.example_counts(run.keep[models.rows], np.asarray(run.margins_train[models.rows]),
                                       chunk_size=opt.chunk_size, name=rundir.MARGINS_TRAIN)
    return counts, estimators.scores_from_counts(counts, confidence=opt.confidence,
                                                 fractional_floor=opt.fractional_floor)


def eligible_examples(run: scoring.RunArrays) -> np.ndarray:
    """bool[N]: every example but the canaries (an instrument of the estimation run)."""
    n = run.labels_train.size
    return np.ones(n, bool) if run.canaries is None else ~np.asarray(run.canaries, bool)


def protocol_selections_for_loo(run_dir, run: scoring.RunArrays, config: Config) -> dict:
    """The removal sets of the run's selection rules, name -> bool[N] (eligible examples only).

    At each rate, from that rate's models alone, every rule of the scoring stage with its
    recorded options (:func:`jmem.study.scoring.select_all`: ``fixed``, ``fractional``,
    ``calibrated``, ``calibrated_fractional``, ``fdr``; the canary rule is an instrument and is
    left out). Names are ``<rule>@<rate>``.
    """
    opt = scoring.recorded_options(run_dir)
    out = {}
    for models in rate_models(run, config):
        _, s = rate_scores(run, models, opt)
        rules = scoring.select_all(s, run.canaries, opt)
        for name, res in rules.items():
            if name != "canary":
                out[f"{name}@{models.rate:g}"] = np.asarray(res.selected, bool)
    return out


def never_wrong(by_rate: dict) -> np.ndarray:
    """bool[N]: every model, in or out, classified the example correctly at every rate."""
    return np.logical_and.reduce([(s.correct_in == s.n_in) & (s.correct_out == s.n_out)
                                  for s in by_rate.values()])


def load_proxies(run_dir, run: scoring.RunArrays, models: list[RateModels]):
    """({rate: {"csl": float64[N], "learned_epoch": float64[N]}}, None) averaged over the
    healthy models of each rate that trained on the example (NaN where none did), or
    (None, why) when the run did not record them."""
    d = Path(run_dir)
    if not (d / rundir.CUM_LOSS).exists() or not (d / rundir.LEARNED_EPOCH).exists():
        return None, (f"the estimation run did not record them ({rundir.CUM_LOSS} and "
                      f"{rundir.LEARNED_EPOCH} need train.record_proxies=true)")
    arrays = {"csl": rundir.load_array(d / rundir.CUM_LOSS, mmap=True),
              "learned_epoch": rundir.load_array(d / rundir.LEARNED_EPOCH, mmap=True)}
    for name, arr in arrays.items():
        if arr.shape != run.keep.shape:
            raise JmemError(f"{name} array has shape {arr.shape}; keep.npy has {run.keep.shape}")
    out = {}
    for m in models:
        keep = run.keep[m.rows]
        n_in = keep.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[m.rate] = {name: np.where(n_in > 0, np.where(keep, np.asarray(arr[m.rows], np.float64), 0.0)
                                          .sum(axis=0) / n_in, np.nan)
                           for name, arr in arrays.items()}
    return out, None


def run_estimates(run_dir, run: scoring.RunArrays, config: Config) -> RunEstimates:
    """Everything :func:`choose_sample` and the validation need from the scored run."""
    opt = scoring.recorded_options(run_dir)
    models = rate_models(run, config)
    by_rate = {m.rate: rate_scores(run, m, opt)[1] for m in models}
    proxies, missing = load_proxies(run_dir, run, models)
    return RunEstimates(by_rate, models, eligible_examples(run), never_wrong(by_rate),
                        protocol_selections_for_loo(run_dir, run, config), proxies, missing, opt)


def estimator_arrays(s: estimators.ExampleScores) -> dict:
    """The scores :data:`ESTIMATORS` of one rate, float64[N] each, higher = more memorized
    (Fisher p as -log10 p; the C-score, held-out accuracy, as 1 - C-score)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"mem": s.mem, "fractional": s.fractional, "neg_log10_p": -np.log10(s.p_value),
                "one_minus_cscore": 1 - s.cscore, "lira": s.lira}


# ----------------------------------------------------------------------------- the design


def sample_seed(seed: int) -> int:
    """The numpy seed of the sample draw: from the run's root seed, stream "loo"."""
    return int(rng.numpy_stream(seed, "loo", SALT_SAMPLE).integers(2**62))


def bootstrap_seed(seed: int) -> int:
    """The numpy seed of every bootstrap of the validation."""
    return int(rng.numpy_stream(seed, "loo", SALT_BOOTSTRAP).integers(2**62))


def choose_sample(est: RunEstimates, cfg: LooConfig, seed: int) -> loo_stats.LooSample:
    """K eligible examples stratified as :func:`jmem.scores.loo.strata_of` documents:
    "selected" = the union of every rule's selection, "easy" = never misclassified, ten
    deciles of the highest mem over the rates for the rest."""
    selected_any = np.logical_or.reduce(list(est.selections.values())) if est.selections \
        else np.zeros(est.eligible.shape, bool)
    stratum, names = loo_stats.strata_of({r: s.mem for r, s in est.by_rate.items()}, selected_any,
                                         est.never_wrong, est.eligible)
    return loo_stats.stratified_sample(stratum, names, cfg.examples, sample_seed(seed),
                                       cfg.selected_share, cfg.easy_share)


def design_rows(num_examples: int, sample_index: np.ndarray, seeds: int):
    """(keep bool[S * (K + 1), N], model_ids int64[S * (K + 1)]): row ``s * (K + 1)`` is seed
    s's full-set model, row ``s * (K + 1) + 1 + k`` the same seed without example
    ``sample_index[k]``; every row of seed s has model id ``LOO_MODEL_ID_OFFSET + s``."""
    rows = loo_stats.loo_rows(num_examples, sample_index)
    keep = np.tile(rows, (seeds, 1))
    ids = LOO_MODEL_ID_OFFSET + np.repeat(np.arange(seeds, dtype=np.int64), rows.shape[0])
    return keep, ids


def influence_models(models: list[RateModels], rate: float | None) -> RateModels:
    """The models whose influence estimate picks the partners: ``rate``'s (None: the lowest)."""
    if rate is None:
        return models[0]
    for m in models:
        if round(m.rate, estimators.RATE_DECIMALS) == round(rate, estimators.RATE_DECIMALS):
            return m
    raise JmemError(f"loo.influence_rate={rate:g} matches no rate of the run "
                    f"({', '.join(f'{m.rate:g}' for m in models)})")


def estimated_partners(run: scoring.RunArrays, models: RateModels, sample_index: np.ndarray,
                       partners: int) -> tuple[np.ndarray, np.ndarray]:
    """Each sampled example's ``partners`` test examples of highest estimated influence
    (Feldman & Zhang's estimator on the models ``models``, main test set):
    (index int64[K, P], value float32[K, P]); -1 / NaN where fewer are defined."""
    margins_test = run.test_sets["test"][0]
    num_test = margins_test.shape[1]
    p = min(partners, num_test)
    k = sample_index.size
    if p == 0:
        return np.zeros((k, 0), np.int64), np.zeros((k, 0), np.float32)
    correct = estimators.correct_matrix(np.asarray(margins_test[models.rows]), models.rows.size,
                                        rundir.MARGINS_TEST)
    keep = run.keep[models.rows][:, sample_index]
    ((_, infl),) = estimators.iter_influence(keep, correct, chunk_size=max(k, 1))
    value = infl.T  # [K, T]
    order = np.argsort(np.where(np.isnan(value), -np.inf, -value), axis=1, kind="stable")[:, :p]
    top = np.take_along_axis(value, order, axis=1)
    return np.where(np.isnan(top), -1, order).astype(np.int64), top.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class LooDesign:
    """Everything the stage trains and measures.

    estimates: the run's (:class:`RunEstimates`); sample: the K sampled examples; seeds: S;
    keep: bool[S * (K + 1), N]; model_ids: int64[S * (K + 1)] (:func:`design_rows`);
    influence_rate: the rate whose models chose the partners; partner_index int64[K, P] and
    partner_value float32[K, P] (:func:`estimated_partners`).
    """

    estimates: RunEstimates
    sample: loo_stats.LooSample
    seeds: int
    keep: np.ndarray
    model_ids: np.ndarray
    influence_rate: float
    partner_index: np.ndarray
    partner_value: np.ndarray


def build_design(run_dir, run: scoring.RunArrays, config: Config, cfg: LooConfig) -> LooDesign:
    """The leave-one-out design of ``cfg`` on the scored run (no training, no files)."""
    est = run_estimates(run_dir, run, config)
    sample = choose_sample(est, cfg, config.seed)
    keep, ids = design_rows(run.labels_train.size, sample.index, cfg.seeds)
    models = influence_models(est.models, cfg.influence_rate)
    index, value = estimated_partners(run, models, sample.index, cfg.partners)
    return LooDesign(est, sample, cfg.seeds, keep, ids, models.rate, index, value)
