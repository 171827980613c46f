"""Digits (UCI's 1,797 real 8x8 handwritten digits, embedded in jmem): the embedded default study.

``jmem run`` with no arguments runs this. One estimation pool holds both inclusion rates of
the question (0.7, Feldman & Zhang's; 0.95, the critique's correction) at equal precision:
160 MLPs at 0.7 and 960 at 0.95 (64-256-10, Adam), balanced masks, so every example is held
out of exactly 48 models at each rate (24 per cross-fitting half). 2% of the training labels
are re-drawn as canaries (known memorized points that validate the scores; never removed,
never seen by a retrained model). The removal experiment then runs the 2^4 ablation of the
four corrections (rate, definition, threshold, leakage) as defined and size-matched, in two
independent estimation pools (the halves), each removal set against a class-matched random
removal of the same size, 15 paired retraining seeds per arm and pool (coupled data order),
plus each protocol's size-matched removal curve (k/2, k, 2k). 40 epochs at lr 3e-3: long
enough that models fit (memorize) their canaries.

Run:      jmem run                       (or: jmem run experiments/digits.py --workdir runs/digits)
Runtime:  see experiments/results/digits/RUN.md for the measured wall time on a 2-core CPU.
Expected: each model ~97.6% test accuracy; the verdicts of both protocols with intervals
          that cover new test data and a new estimation run, and the gates behind them.
Variants: ``small`` (tests, CI smoke): 16 models at one rate, 3 epochs, seconds;
          ``fz`` / ``corrected``: one protocol's estimation alone (one rate), with the
          scoring stage's fixed / calibrated_fractional rules retrained;
          ``sweep``: a rate sweep 0.1 ... 0.95 for score-versus-rate curves (40 models per
          rate; F&Z's rule at rate 0.7 retrained with 4 seeds);
          ``loo``: the default study plus leave-one-out validation on 100 sampled examples with
          50 paired seeds (5,050 models) and the proxies recorded (over 5 minutes on 2 cores).
"""

from jmem.config import Config, DataConfig, RetrainConfig, SubsetConfig, with_variant
from jmem.engine.hparams import ModelConfig, TrainConfig


def get_config(variant: str = "") -> Config:
    config = Config(
        seed=0,
        data=DataConfig(name="digits"),
        subsets=SubsetConfig(design="balanced", rates=(0.7, 0.95), canary_fraction=0.02,
                             equal_heldout=True),
        model=ModelConfig(kind="mlp", width=256, depth=1),
        train=TrainConfig(num_models=1120, epochs=40, batch_size=64, optimizer="adam",
                          learning_rate=3e-3),
        retrain=RetrainConfig(methods="", seeds=15, ablation=True, curve=(0.5, 2.0)),
    )
    return with_variant(config, variant, VARIANTS)


VARIANTS = {
    "small": ["subsets.design=fixed", "subsets.rates=0.7", "subsets.equal_heldout=false", "train.num_models=16",
              "train.epochs=3", "retrain.ablation=false", "retrain.methods=fixed", "retrain.curve=",
              "retrain.seeds=2"],
    "fz": ["subsets.design=fixed", "subsets.rates=0.7", "train.num_models=256", "retrain.ablation=false",
           "retrain.methods=fixed", "retrain.curve=", "retrain.seeds=25"],
    "corrected": ["subsets.rates=0.95", "train.num_models=960", "retrain.ablation=false",
                  "retrain.methods=calibrated_fractional", "retrain.curve=", "retrain.seeds=25"],
    # the default study plus leave-one-out validation (K = 100, S = 50: 5,050 more models)
    # with the proxies recorded: jmem run experiments/digits.py:loo --workdir runs/digits_loo
    "loo": ["loo.enabled=true", "train.record_proxies=true"],
    "sweep": ["subsets.rates=0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,0.95", "train.num_models=400",
              "subsets.design=fixed", "subsets.equal_heldout=false", "score.rate=0.7",
              "retrain.ablation=false", "retrain.methods=fixed", "retrain.curve=", "retrain.seeds=4"],
}
