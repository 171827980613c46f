"""Fashion-MNIST with Feldman & Zhang's MNIST recipe: memorization at the scale they worked at.

Data: Fashion-MNIST (Xiao, Rasul & Vollgraf 2017), 60,000 / 10,000 28x28 grayscale images,
10 classes (`apt-get install dataset-fashion-mnist`, or see docs/datasets.md).

Main config (the accelerator run): Feldman & Zhang's MNIST recipe, 2,000 MLPs 784-512-256-10,
SGD lr 0.1 momentum 0.9, batch 128, 10 epochs, constant learning rate, fixed 70% subsets
(42,000 examples each), no canaries.

Run:      jmem run experiments/fashion_mnist.py --workdir runs/fmnist   (GPU: benchmarks/gpu.sh)
Runtime:  not measured on an accelerator yet (none was available). On the shared 2-core CPU
          (load average ~8) 8 of these models took 101 s per epoch of training and margins,
          ~13 s per model-epoch: the 20,000 model-epochs would take days here.
Expected: after 1 epoch the 8 models averaged 82.7% test accuracy; 10 epochs not measured.

Variant ``cpu``: estimation (train + score) on a 2-core CPU: 512 MLPs 784-64-10, 2 epochs,
          the same SGD recipe and subsets.
Runtime:  measured 2026-12-01 with `jmem run experiments/fashion_mnist.py:cpu`: 30.7 min wall
          on a 2-core CPU shared with four other jobs (load average 8-13, this job got 22% of
          the machine); 418 s of CPU time in all (389 user + 30 system), so about 4-7 minutes
          on a quiet 2-core machine (not measured quiet). Peak RSS 1.36 GiB.
Expected: mean test accuracy 82.0% (sd 1.7%, range 67.0-84.6%), 81.0% on the leakage-free
          test set; no model diverged; 107 training examples with mem >= 0.25, 728 selected
          by the FDR rule.

The removal experiment (``jmem run``'s retrain stage) retrains the scoring stage's ``fixed``
and ``fdr`` selections with 50 seeds (``cpu``: 20) per arm on the full training set minus
each removal set; its time comes on top of the estimation figures above.

Variant ``sweep``: a rate sweep 0.1, 0.2, ..., 0.9, 0.95 (40 MLPs 784-64-10 per rate, fixed
          masks, 2 epochs of the same SGD recipe) for score-versus-rate curves (C-score
          consistency profiles, Jiang et al. 2021), with a 10-seed retrain of ``fixed``.
Runtime:  ESTIMATE, not measured: ``study`` trained 400 of these MLPs at mean rate 0.825 in
          124 s on the quiet 2-core CPU and scored them in 22 s; the sweep's mean rate is
          0.545, so ~80 s of training, plus 40 retraining models (the study's 170 took 70 s:
          ~16 s) and scoring at ten rates: about 2-3 minutes.

Variant ``small`` (tests): 8 models of 784-16-10, 1 epoch, a 2-seed retrain of ``fixed``; the
tests run it on a slice of the data (``--set data.name=idx:DIR``), seconds.
"""

from jmem.config import Config, DataConfig, SubsetConfig, with_variant
from jmem.engine.hparams import ModelConfig, TrainConfig

VARIANTS = {
    # the study at Feldman & Zhang's MNIST scale, sized for one lent accelerator (one command of
    # at most 8 minutes: benchmarks/gpu_fmnist.sh): F&Z's MLP and SGD recipe, but 30 epochs (at
    # their 10, measured on an H200 on 2026-12-04, the models fit 91% of their training examples
    # and the canaries' AUROC of mem is 0.61-0.67: nothing is memorized yet); 150 + 900 MLPs at
    # rates 0.7 and 0.95 with equal held-out precision (45 held-out models per example at each
    # rate), 1% canaries, the removal experiment with the ablation as defined and size-matched,
    # 10 seeds per arm and pool.
    "fz_scale": ["subsets.design=balanced", "subsets.rates=0.7,0.95", "subsets.equal_heldout=true",
                 "subsets.canary_fraction=0.01", "train.num_models=1050", "train.epochs=30",
                 "retrain.methods=", "retrain.ablation=true", "retrain.seeds=10", "retrain.curve=0.5,2"],
    "cpu": ["model.widths=64", "train.epochs=2", "train.num_models=512", "retrain.seeds=20"],
    # the two-protocol study sized for about half an hour of a 2-core CPU (results and runtime in
    # experiments/results/fashion_mnist/): MLPs 784-128-10 (Adam 1e-3, 10 epochs), 40 + 240 at
    # rates 0.7 and 0.95 with equal held-out precision (12 held-out models per example at each
    # rate: under-powered, and it says so), 1% canaries, the ablation as defined and size-matched
    # with 3 seeds per arm and pool. Too small to pass the gates; fz_scale is the run that answers.
    "study": ["model.widths=128", "train.optimizer=adam", "train.learning_rate=1e-3", "train.epochs=10",
              "subsets.design=balanced", "subsets.rates=0.7,0.95", "subsets.equal_heldout=true",
              "subsets.canary_fraction=0.01", "train.num_models=280", "retrain.methods=",
              "retrain.ablation=true", "retrain.seeds=3", "retrain.resamples=2000"],
    # a rate sweep for score-versus-rate curves (runtime estimate in the docstring)
    "sweep": ["model.widths=64", "train.epochs=2", "train.num_models=400",
              "subsets.rates=0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,0.95", "retrain.methods=fixed",
              "retrain.seeds=10"],
    "small": ["model.widths=16", "train.epochs=1", "train.num_models=8", "retrain.methods=fixed",
              "retrain.seeds=2"],
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
