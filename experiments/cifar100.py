"""CIFAR-100 at Feldman & Zhang's scale: the two-protocol study with the 2^4 ablation.

Needs TFDS data prepared offline (docs/datasets.md, "Real TFDS datasets"); the leakage-free test set is the
test set minus Barz & Denzler's 891 listed CIFAR-100 duplicates (``jmem/data/known_duplicates/``,
mapped through the TFDS record ids; ``leakage.clean_test=true``, the default).

Pool: 4,000 ResNets (F&Z used 4,000 ResNet-50 at rate 0.7): 2,000 at rate 0.7 and 2,000 at
0.95 on balanced masks (every example out of exactly 600 and 100 models), 1% canaries.
Model: jmem's ResNet width 64, 3 stages of one basic block (64/128/256 channels, BatchNorm,
1.25 M parameters, 194.7 M multiply-adds per image by ``jmem.bench.workloads.forward_macs``):
the shape of RepDistiller's ``resnet8x4``. SGD nesterov, one-cycle, 30 epochs, crop+flip,
bfloat16. No label smoothing: it is a regulariser against fitting noisy labels, i.e. against
the memorization measured here. Retrain: the 8 ablation removal sets and one sweep point
(mem >= 0.25), each selected + class-matched random, and the full set, 20 seeds each.

Run:      jmem run experiments/cifar100.py --workdir runs/cifar100 --set data.data_dir=/path/to/tfds
          (TPU pod slice: the same on every worker with ``--distributed auto``; see docs/scale-out.md)
Runtime:  ESTIMATE, not measured (no accelerator was available). Training FLOPs = 6 x MACs =
          1.17 GFLOP per image.
          estimation: 2,000 x 30 x (35,000 + 47,500) images = 4.95e9 images -> 5.78 EFLOP
          margins: 4,000 models x ~69,000 images x 0.39 GFLOP -> 0.11 EFLOP
          retrain: <= 19 arms x 20 seeds x 30 epochs x 50,000 -> 0.67 EFLOP; total ~6.6 EFLOP.
          Rate: airbench94 does 0.36 PFLOP in 3.29 s on one A100 (KellerJordan/cifar10-airbench
          README) = 109 TFLOP/s, 35% of the A100's 312 TFLOP/s bf16 peak; take 35% as the
          optimistic and 10% as the cautious fraction of peak (jmem's batched convolutions
          have no accelerator measurement yet).
          one H200 (989 TFLOP/s bf16): 6.6e18 / 3.46e14 = 5.3 h (35%) ... 18 h (10%)
          one A100 (312): 17 h (35%) ... 58 h (10%)
          TPU v4-32 (16 chips x 275 = 4,400 TFLOP/s): estimation 5.9e18 / 1.54e15 = 1.1 h
          (35%) ... 3.7 h (10%); retrain runs on process 0's 4 chips only: 0.5 ... 1.7 h
          TPU v5e-16 (16 chips x 197 = 3,152): estimation 1.5 ... 5.2 h; retrain 0.7 ... 2.4 h.
          Scoring (R=4,000 x N=60,000) is minutes on the host CPU (R=2,000 took 111 CPU-s,
          benchmarks/RESULTS.md).
Expected: NOT measured. Reference: resnet8x4 reaches 72.50% on CIFAR-100 with the full
          training set and 240 epochs (Tian et al. 2020, HobbitLong/RepDistiller README);
          F&Z's ResNet-50 76.06% (BACKGROUND.md section 4). With 70-95% of the data and 30
          epochs expect clearly less (roughly 55-65%, a guess); the report measures it.
Variant ``small`` (tests, on mock data): the same two-rate balanced pool and ablation, 40 ResNets
          of width 8 with one stage, 1 epoch, float32, 2 retraining seeds: seconds on a CPU.
"""

from jmem.config import Config, DataConfig, RetrainConfig, SubsetConfig, with_variant
from jmem.engine.hparams import ModelConfig, TrainConfig

VARIANTS = {
    "small": ["model.width=8", "model.depth=1", "train.num_models=40", "train.epochs=1",
              "train.batch_size=16", "train.compute_dtype=float32", "subsets.canary_fraction=0",
              "retrain.seeds=2", "retrain.sweep=", "retrain.resamples=200"],
}


def get_config(variant: str = "") -> Config:
    config = Config(
        seed=0,
        data=DataConfig(name="cifar100"),
        subsets=SubsetConfig(design="balanced", rates=(0.7, 0.95), canary_fraction=0.01),
        model=ModelConfig(kind="resnet", width=64, depth=3, norm="batchnorm"),
        train=TrainConfig(num_models=4000, epochs=30, batch_size=256, optimizer="sgd",
                          learning_rate=0.2, momentum=0.9, nesterov=True, weight_decay=5e-4,
                          schedule="onecycle", augment="crop_flip", compute_dtype="bfloat16"),
        retrain=RetrainConfig(methods="", seeds=20, sweep=(0.25,), ablation=True),
    )
    return with_variant(config, variant, VARIANTS)
