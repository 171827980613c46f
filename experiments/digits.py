"""Digits (sklearn's 1,797 real 8x8 handwritten digits): the embedded default experiment.

256 MLPs (64-256-10, Adam) on fixed 70% subsets, 2% of training labels re-drawn as canaries
(known memorized points for evaluating thresholds). 40 epochs at lr 3e-3: long enough that
the models fit (memorize) their re-labelled canaries; at 20 epochs they fit under half of
them, and memorization scores then cannot find them (measured canary AUROC of mem: 0.60 at
20 epochs, 0.997 at 40).

Run:      jmem run experiments/digits.py --workdir runs/digits
Runtime:  about a minute on a 2-core CPU.
Expected: each model ~97.6% test accuracy with 70% of the data; canaries get the highest
          memorization scores (canary AUROC of mem and lira close to 1).
Variant ``small`` (tests, CI smoke): 16 models, 3 epochs, seconds.
"""

from jmem.config import Config, DataConfig, SubsetConfig, with_variant
from jmem.engine.hparams import ModelConfig, TrainConfig


def get_config(variant: str = "") -> Config:
    config = Config(
        seed=0,
        data=DataConfig(name="digits"),
        subsets=SubsetConfig(design="fixed", rates=(0.7,), canary_fraction=0.02),
        model=ModelConfig(kind="mlp", width=256, depth=1),
        train=TrainConfig(num_models=256, epochs=40, batch_size=64, optimizer="adam",
                          learning_rate=3e-3),
    )
    return with_variant(config, variant, {"small": ["train.num_models=16", "train.epochs=3"]})
