"""jmem: train many small JAX models on random subsets at once to measure memorization.

The package is split by responsibility (see DESIGN in the README):
``data`` (datasets as arrays), ``subsets`` (keep-mask designs), ``models`` / ``train`` /
``predict`` (the vectorized trainer), ``scoring`` / ``thresholds`` (pure statistics),
``leakage`` (train/test near-duplicates), ``artifacts`` (the run directory) and ``cli``.
"""

__version__ = "0.1.0"
