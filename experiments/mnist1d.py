"""MNIST-1D (Greydanus 2020; generated locally, 4,000 train / 1,000 test sequences of 40).

Default: 256 small 1-D CNNs (width 32, depth 3, kernel 5; AdamW 2e-2, cosine schedule, 30
epochs) on fixed 70% subsets with 2% canaries. At 30 epochs the models fit every training
example they see and the canaries' AUROC of mem is 0.995 (48 models, measured 2026-12-04);
at 10 epochs it was 0.69.

Run:      jmem run experiments/mnist1d.py --workdir runs/mnist1d
Variant ``small``: 8 models, 2 epochs (tests).
Variant ``study``: the converged two-protocol study with leave-one-out: 150 + 900 CNNs at rates
          0.7 and 0.95 with equal held-out precision (balanced masks: every example out of 45
          models at each rate), 30 epochs; the removal experiment (two pools, the 2^4 ablation
          as defined and size-matched, 8 paired seeds per arm and pool, the protocols'
          removal curves); leave-one-out on 60 sampled examples with 20 paired seeds (1,220
          models) and the proxies recorded. Run: ``jmem run experiments/mnist1d.py:study``;
          measured runtime and results in ``experiments/results/mnist1d/`` (~72 min here; its
          two pools agree on only two thirds of their selections, so the verdict is
          "inconclusive: reliability"). With twice the models and no leave-one-out
          (``--set train.num_models=2100 --set loo.enabled=false``, 38 min here) the gates
          pass: ``experiments/results/mnist1d_2x/``.
Variant ``sweep``: a rate sweep 0.1, 0.2, ..., 0.9, 0.95 (40 CNNs per rate, fixed masks, 30
          epochs) for score-versus-rate curves (C-score consistency profiles, Jiang et al.
          2021), with a 4-seed retrain of F&Z's rule at rate 0.7.
"""

from jmem.config import Config, DataConfig, SubsetConfig, with_variant
from jmem.engine.hparams import ModelConfig, TrainConfig

VARIANTS = {
    "small": ["train.num_models=8", "train.epochs=2", "retrain.methods=fixed", "retrain.seeds=2"],
    "study": ["subsets.design=balanced", "subsets.rates=0.7,0.95", "subsets.equal_heldout=true",
              "train.num_models=1050", "train.record_proxies=true", "retrain.methods=",
              "retrain.ablation=true", "retrain.seeds=8", "retrain.curve=0.5,2",
              "loo.enabled=true", "loo.examples=60", "loo.seeds=20"],
    "sweep": ["subsets.rates=0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,0.95", "train.num_models=400",
              "score.rate=0.7", "retrain.methods=fixed", "retrain.seeds=4"],
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
