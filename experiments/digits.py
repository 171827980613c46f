"""Digits (sklearn's 1,797 real 8x8 handwritten digits): the embedded default experiment.

256 MLPs (64-256-10, Adam) on fixed 70% subsets, 2% of training labels re-drawn as canaries
(known memorized points for evaluating thresholds).

Run:      jmem run experiments/digits.py --workdir runs/digits
Runtime:  ~1-2 minutes on a 2-core CPU (training ~256 models at ~20+ models/s).
Expected: each model ~95-97% test accuracy with 70% of the data; canaries get the highest
          memorization scores (canary AUROC close to 1).
Variant ``small`` (tests, CI smoke): 16 models, 3 epochs, seconds.
"""

import dataclasses

from jmem.config import Config, DataConfig, SubsetConfig
from jmem.hparams import ModelConfig, TrainConfig


def get_config(variant: str = "") -> Config:
    config = Config(
        seed=0,
        data=DataConfig(name="digits"),
        subsets=SubsetConfig(design="fixed", rates=(0.7,), canary_fraction=0.02),
        model=ModelConfig(kind="mlp", width=256, depth=1),
        train=TrainConfig(num_models=256, epochs=20, batch_size=64, optimizer="adam",
                          learning_rate=1e-3),
    )
    if variant == "small":
        config = dataclasses.replace(
            config, train=dataclasses.replace(config.train, num_models=16, epochs=3))
    elif variant:
        raise ValueError(f"unknown variant {variant!r}; known: 'small'")
    return config
