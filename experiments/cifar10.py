"""CIFAR-10 at Feldman & Zhang's scale: the two-protocol study with the 2^4 ablation.

Needs TFDS data prepared offline (docs/datasets.md, "Real TFDS datasets"); the leakage-free test set is the
test set minus Barz & Denzler's 286 listed CIFAR-10 duplicates (``jmem/data/known_duplicates/``,
mapped through the TFDS record ids; ``leakage.clean_test=true``, the default); CIFAR-10.1 is
evaluated as an extra test set when prepared.

Pool: 4,000 ResNets (F&Z used 4,000 ResNet-50 on CIFAR-100 at rate 0.7): 2,000 at rate 0.7
and 2,000 at 0.95 on balanced masks (every example out of exactly 600 and 100 models), 1%
canaries. Model: jmem's ResNet width 32, 3 stages of one basic block (32/64/128 channels,
BatchNorm, 0.31 M parameters, 49.1 M multiply-adds per image by
``jmem.bench.workloads.forward_macs``). SGD nesterov, one-cycle, 30 epochs, crop+flip,
bfloat16, no label smoothing (a regulariser against fitting noisy labels, i.e. against the
memorization measured here). Retrain: the 8 ablation removal sets and one sweep point
(mem >= 0.25), each selected + class-matched random, and the full set, 20 seeds each.

Run:      jmem run experiments/cifar10.py --workdir runs/cifar10 --set data.data_dir=/path/to/tfds
          (TPU pod slice: the same on every worker with ``--distributed auto``; see docs/scale-out.md)
Runtime:  ESTIMATE, not measured (no accelerator was available). Training FLOPs = 6 x MACs =
          0.295 GFLOP per image.
          estimation: 2,000 x 30 x (35,000 + 47,500) images = 4.95e9 images -> 1.46 EFLOP
          (0.36 PFLOP per model: one airbench94 run, ~1,100-1,400 of which fit in an
          A100-hour, BACKGROUND.md section 4: 4,000 models ~ 3-3.6 A100-hours at that rate)
          margins ~0.03 EFLOP; retrain <= 19 arms x 20 seeds x 30 x 50,000 -> 0.17 EFLOP;
          total ~1.66 EFLOP.
          Rate: airbench94 does 0.36 PFLOP in 3.29 s on one A100 (KellerJordan/cifar10-airbench
          README) = 109 TFLOP/s, 35% of the A100's 312 TFLOP/s bf16 peak; take 35% as the
          optimistic and 10% as the cautious fraction of peak (jmem's batched convolutions
          have no accelerator measurement yet; 32-channel convs are less efficient than
          airbench's).
          one H200 (989 TFLOP/s bf16): 1.66e18 / 3.46e14 = 1.3 h (35%) ... 4.7 h (10%)
          one A100 (312): 4.2 h (35%) ... 15 h (10%)
          TPU v4-32 (16 chips x 275 = 4,400 TFLOP/s): estimation 0.27 ... 0.94 h; retrain
          runs on process 0's 4 chips only: 0.12 ... 0.42 h
          TPU v5e-16 (16 chips x 197 = 3,152): estimation 0.38 ... 1.3 h; retrain 0.17 ... 0.6 h.
Expected: NOT measured. References on the full training set: He et al. 2016's ResNet-20
          (0.27 M parameters, 164 epochs) 91.25%; airbench94 (~10 epochs) 94%. This shallower
          8-layer net on 70-95% of the data for 30 epochs: expect roughly 85-90% (a guess);
          the report measures it.
Variant ``small`` (tests, on mock data): 8 ResNets of width 8 with one stage at rate 0.7
          (fixed masks), 1 epoch, float32, the ``fixed`` selection retrained with 2 seeds.
"""

from jmem.config import Config, DataConfig, RetrainConfig, SubsetConfig, with_variant
from jmem.engine.hparams import ModelConfig, TrainConfig

VARIANTS = {
    "small": ["model.width=8", "model.depth=1", "train.num_models=8", "train.epochs=1",
              "train.batch_size=16", "train.compute_dtype=float32", "subsets.canary_fraction=0",
              "subsets.design=fixed", "subsets.rates=0.7", "retrain.ablation=false",
              "retrain.methods=fixed", "retrain.sweep=", "retrain.seeds=2", "retrain.resamples=200"],
}


def get_config(variant: str = "") -> Config:
    config = Config(
        seed=0,
        data=DataConfig(name="cifar10"),
        subsets=SubsetConfig(design="balanced", rates=(0.7, 0.95), canary_fraction=0.01),
        model=ModelConfig(kind="resnet", width=32, depth=3, norm="batchnorm"),
        train=TrainConfig(num_models=4000, epochs=30, batch_size=256, optimizer="sgd",
                          learning_rate=0.2, momentum=0.9, nesterov=True, weight_decay=5e-4,
                          schedule="onecycle", augment="crop_flip", compute_dtype="bfloat16"),
        retrain=RetrainConfig(methods="", seeds=20, sweep=(0.25,), ablation=True),
    )
    return with_variant(config, variant, VARIANTS)
