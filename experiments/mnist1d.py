"""MNIST-1D (Greydanus 2020; generated locally, 4,000 train / 1,000 test sequences of 40).

256 small 1-D CNNs on fixed 70% subsets with 2% canaries.

Run:      jmem run experiments/mnist1d.py --workdir runs/mnist1d
Runtime:  several minutes on a 2-core CPU.
Expected: ~94% test accuracy per model with the full training set (measured), less at 70%.
Variant ``small``: 8 models, 2 epochs.
"""

from jmem.config import Config, DataConfig, SubsetConfig, with_variant
from jmem.engine.hparams import ModelConfig, TrainConfig


def get_config(variant: str = "") -> Config:
    config = Config(
        seed=0,
        data=DataConfig(name="mnist1d"),
        subsets=SubsetConfig(design="fixed", rates=(0.7,), canary_fraction=0.02),
        model=ModelConfig(kind="cnn", width=32, depth=3, kernel_size=5),
        train=TrainConfig(num_models=256, epochs=30, batch_size=128, optimizer="adamw",
                          learning_rate=2e-2, weight_decay=1e-4, schedule="cosine",
                          warmup_steps=50),
    )
    return with_variant(config, variant, {"small": ["train.num_models=8", "train.epochs=2"]})
