"""MNIST-1D (Greydanus 2020; generated locally, 4,000 train / 1,000 test sequences of 40).

256 small 1-D CNNs on fixed 70% subsets with 2% canaries.

Run:      jmem run experiments/mnist1d.py --workdir runs/mnist1d
Runtime:  several minutes on a 2-core CPU.
Expected: ~94% test accuracy per model with the full training set (measured), less at 70%.
Variant ``small``: 8 models, 2 epochs.
Variant ``study``: the two-protocol study with the 2^4 ablation, sized for a 2-core CPU: 400
CNNs at rates 0.7 and 0.95 (balanced masks: each example out of 60 and 10 models), 10 epochs,
20 paired retraining seeds per arm, one removal-curve point (mem >= 0.25). Run:
``jmem run experiments/mnist1d.py:study --workdir runs/mnist1d_study``; measured runtime and
results in ``experiments/results/mnist1d/``.
Variant ``sweep``: a rate sweep 0.1, 0.2, ..., 0.9, 0.95 (40 CNNs per rate, fixed masks, 10
epochs) for score-versus-rate curves (C-score consistency profiles, Jiang et al. 2021), with a
10-seed retrain of ``fixed``. Run: ``jmem run experiments/mnist1d.py:sweep --workdir
runs/mnist1d_sweep``. Runtime: ESTIMATE, not measured: ``study`` trained 400 CNNs at mean rate
0.825 in 124 s on the quiet 2-core CPU; the sweep's mean rate is 0.545, so ~80 s of training,
plus ~40 retraining models (the study's 380 took 135 s: ~15 s): about 2 minutes.
"""

from jmem.config import Config, DataConfig, SubsetConfig, with_variant
from jmem.engine.hparams import ModelConfig, TrainConfig

VARIANTS = {
    "small": ["train.num_models=8", "train.epochs=2", "retrain.methods=fixed", "retrain.seeds=2"],
    "study": ["subsets.design=balanced", "subsets.rates=0.7,0.95", "train.num_models=400",
              "train.epochs=10", "retrain.methods=", "retrain.ablation=true", "retrain.seeds=20",
              "retrain.sweep=0.25"],
    "sweep": ["subsets.rates=0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,0.95", "train.num_models=400",
              "train.epochs=10", "retrain.methods=fixed", "retrain.seeds=10"],
}


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
    return with_variant(config, variant, VARIANTS)
