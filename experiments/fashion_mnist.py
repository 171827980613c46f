"""Fashion-MNIST with Feldman & Zhang's MNIST recipe: memorization at the scale they worked at.

Data: Fashion-MNIST (Xiao, Rasul & Vollgraf 2017), 60,000 / 10,000 28x28 grayscale images,
10 classes (`apt-get install dataset-fashion-mnist`, or see docs/datasets.md).

Main config (the accelerator run): Feldman & Zhang's MNIST recipe, 2,000 MLPs 784-512-256-10,
SGD lr 0.1 momentum 0.9, batch 128, 10 epochs, constant learning rate, fixed 70% subsets
(42,000 examples each), no canaries.

Run:      jmem run experiments/fashion_mnist.py --workdir runs/fmnist   (an accelerator)
Runtime:  on one H200 (2026-12-04, benchmarks/results/gpu-2026-12-04.md) F&Z's MLP trains at
          624 model-epochs/s in bf16: the 2,000 x 10 model-epochs take about 32 s of training.
Expected: 87.2% mean test accuracy; after 10 epochs the models fit only 91% of their training
          examples and the canaries' AUROC of mem is 0.61-0.67 (measured at 2,100 models):
          nothing is memorized yet, so the study's gates would hold any verdict back.

Variant ``fz_scale``: the two-protocol study at F&Z's scale for one lent accelerator: 30 epochs,
          150 + 900 MLPs at rates 0.7 and 0.95 (equal held-out precision), 1% canaries, the
          ablation, 10 seeds per arm and pool. Run: benchmarks/gpu_fmnist.sh.
Runtime:  ESTIMATE from the rates above: about 2 minutes of estimation and 1.5 of retraining
          on one H200, one command of under 8 minutes with start-up and compilation.

Variant ``study``: the largest two-protocol study sized for this 2-core CPU: 280 MLPs 784-128-10
          (40 at rate 0.7, 240 at 0.95), Adam 1e-3, 10 epochs, 1% canaries, the ablation with
          3 seeds per arm and pool.
Runtime:  measured 2026-12-04: 23 min wall (train 722 s, score 45 s, retrain 597 s, report
          12 s), peak RSS 1.9 GiB, on the 2-core CPU shared with another study.
Expected: experiments/results/fashion_mnist/: 87.8% mean test accuracy; "inconclusive:
          convergence" (the models fit 92% of their examples, canary AUROC 0.53-0.57) and the
          corrected protocol selects nothing in one pool: 10 epochs memorize nothing yet, and
          30 epochs of enough models do not fit an hour of this CPU (use ``fz_scale``).

Variant ``cpu``: estimation (train + score) on a 2-core CPU: 512 MLPs 784-64-10, 2 epochs,
          the same SGD recipe and subsets.
Runtime:  measured 2026-12-01 with `jmem run experiments/fashion_mnist.py:cpu`: 30.7 min wall
          on a 2-core CPU shared with four other jobs (load average 8-13, this job got 22% of
          the machine); 418 s of CPU time in all (389 user + 30 system), so about 4-7 minutes
          on a quiet 2-core machine (not measured quiet). Peak RSS 1.36 GiB.
Expected: mean test accuracy 82.0% (sd 1.7%, range 67.0-84.6%), 81.0% on the leakage-free
          test set; no model diverged; 107 training examples with mem >= 0.25, 728 selected
          by the FDR rule.

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
