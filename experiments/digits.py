"""Digits (UCI's 1,797 real 8x8 handwritten digits, embedded in jmem): the embedded default study.

``jmem run`` with no arguments runs this. One estimation pool holds both inclusion rates of
the question (0.7, Feldman & Zhang's; 0.95, the critique's correction), 400 MLPs each
(64-256-10, Adam) on balanced masks (every example is out of exactly 120 models at 0.7 and
20 at 0.95), 2% of training labels re-drawn as canaries (known memorized points). The
removal experiment then runs the 2^4 ablation of the four corrections (rate, definition,
threshold, leakage): the 8 removal sets of its cells, each against a class-matched random
removal of the same size, 30 paired retraining seeds per arm, plus a removal curve
(mem >= 0.1, 0.25, 0.5). 40 epochs at lr 3e-3: long enough that models fit (memorize) their
canaries (canary AUROC of mem: 0.60 at 20 epochs, 0.997 at 40).

Run:      jmem run                       (or: jmem run experiments/digits.py --workdir runs/digits)
Runtime:  see the README ("Two commands") for the measured wall time on a 2-core CPU.
Expected: each model ~97.6% test accuracy; the verdicts of both protocols with intervals.
Variants: ``small`` (tests, CI smoke): 16 models at one rate, 3 epochs, seconds;
          ``fz`` / ``corrected``: one protocol's estimation alone (one rate), with the
          scoring stage's fixed / fdr methods retrained;
          ``sweep``: a rate sweep 0.1 ... 0.95 for score-versus-rate curves (no retraining).
"""

from jmem.config import Config, DataConfig, RetrainConfig, SubsetConfig, with_variant
from jmem.engine.hparams import ModelConfig, TrainConfig


def get_config(variant: str = "") -> Config:
    config = Config(
        seed=0,
        data=DataConfig(name="digits"),
        subsets=SubsetConfig(design="balanced", rates=(0.7, 0.95), canary_fraction=0.02),
        model=ModelConfig(kind="mlp", width=256, depth=1),
        train=TrainConfig(num_models=800, epochs=40, batch_size=64, optimizer="adam",
                          learning_rate=3e-3),
        retrain=RetrainConfig(methods="", seeds=30, sweep=(0.1, 0.25, 0.5), ablation=True),
    )
    return with_variant(config, variant, VARIANTS)


VARIANTS = {
    "small": ["subsets.design=fixed", "subsets.rates=0.7", "train.num_models=16", "train.epochs=3",
              "retrain.ablation=false", "retrain.methods=fixed", "retrain.sweep=", "retrain.seeds=2"],
    "fz": ["subsets.design=fixed", "subsets.rates=0.7", "train.num_models=256", "retrain.ablation=false",
           "retrain.methods=fixed", "retrain.sweep=", "retrain.seeds=50"],
    "corrected": ["subsets.rates=0.95", "train.num_models=400", "retrain.ablation=false",
                  "retrain.methods=fdr", "retrain.sweep=", "retrain.seeds=50"],
    # the default study plus leave-one-out validation (K = 100, S = 50: 5,050 more models,
    # ~8 min on the 2-core CPU) with the proxies recorded: jmem run experiments/digits.py:loo --workdir runs/digits_loo
    "loo": ["loo.enabled=true", "train.record_proxies=true"],
    "sweep": ["subsets.rates=0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,0.95", "train.num_models=400",
              "subsets.design=fixed", "retrain.ablation=false", "retrain.methods=fixed"],
}
