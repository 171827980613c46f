"""jmem: train many small JAX models on random subsets at once to measure memorization.

The package is split by role (see "Layout" in docs/development.md): ``engine`` (models, the
vectorized trainer, prediction, sharding, checkpoints), ``data`` (datasets, keep-mask
designs, canaries, leakage detection), ``scores`` (pure statistics), ``study`` (the stages
acting on a run directory), ``bench`` (the benchmark) and ``cli`` (the command).
"""

__version__ = "0.1.0"
