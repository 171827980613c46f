"""Fashion-MNIST with Feldman & Zhang's MNIST recipe: memorization at the scale they worked at.

Data: Fashion-MNIST (Xiao, Rasul & Vollgraf 2017), 60,000 / 10,000 28x28 grayscale images,
10 classes (`apt-get install dataset-fashion-mnist`, or see README "Fashion-MNIST").

Main config (the accelerator run): Feldman & Zhang's MNIST recipe, 2,000 MLPs 784-512-256-10,
SGD lr 0.1 momentum 0.9, batch 128, 10 epochs, fixed 70% subsets (42,000 examples each).

Run:      jmem run experiments/fashion_mnist.py --workdir runs/fmnist        (GPU: benchmarks/gpu.sh)
Runtime:  not measured here (no accelerator in this session); on the 2-core CPU one model-epoch
          of this MLP takes ~MAIN_S s, so the 20,000 model-epochs would take ~MAIN_H hours.

Variant ``cpu``: estimation (train + score) on a 2-core CPU: CPU_DESC
Runtime:  CPU_RUNTIME
Expected: CPU_ACC

Variant ``small`` (tests, CI smoke): 8 models of 784-16-10, 1 epoch; on a slice of the data
(``--set``-free: tests cut the dataset themselves).
"""

from jmem.config import Config, DataConfig, SubsetConfig, with_variant
from jmem.engine.hparams import ModelConfig, TrainConfig

VARIANTS = {
    "cpu": ["model.widths=64", "train.epochs=2", "train.num_models=512"],
    "small": ["model.widths=16", "train.epochs=1", "train.num_models=8"],
}


def get_config(variant: str = "") -> Config:
    config = Config(
        seed=0,
        data=DataConfig(name="fashion_mnist"),
        subsets=SubsetConfig(design="fixed", rates=(0.7,)),
        model=ModelConfig(kind="mlp", widths=(512, 256)),
        train=TrainConfig(num_models=2000, epochs=10, batch_size=128, optimizer="sgd",
                          learning_rate=0.1, momentum=0.9),
    )
    return with_variant(config, variant, VARIANTS)
