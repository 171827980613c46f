"""CIFAR-10 with a small ResNet: needs TFDS data prepared offline (see README, "Real datasets").

Feldman & Zhang used rate 0.7 and thousands of models; start with 512 on an accelerator.
Run:      jmem run experiments/cifar10.py --workdir runs/cifar10 --set data.data_dir=/path/to/tfds
Runtime:  accelerator recommended (hours on a CPU).
Expected: ~85-90% test accuracy per model at rate 0.7 with 30 epochs.
Variant ``small``: 4 models, 1 epoch (smoke test on mocked data).
"""

from jmem.config import Config, DataConfig, SubsetConfig, with_variant
from jmem.engine.hparams import ModelConfig, TrainConfig


def get_config(variant: str = "") -> Config:
    config = Config(
        seed=0,
        data=DataConfig(name="cifar10"),
        subsets=SubsetConfig(design="fixed", rates=(0.7,), canary_fraction=0.0),
        model=ModelConfig(kind="resnet", width=32, depth=3, norm="batchnorm"),
        train=TrainConfig(num_models=512, epochs=30, batch_size=256, optimizer="sgd",
                          learning_rate=0.2, momentum=0.9, nesterov=True, weight_decay=5e-4,
                          schedule="onecycle", label_smoothing=0.1, augment="crop_flip"),
    )
    return with_variant(config, variant, {"small": ["train.num_models=4", "train.epochs=1"]})
