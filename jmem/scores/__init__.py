"""Scores: memorization and influence estimators, tests, intervals and thresholds.

Pure numpy/scipy: nothing here imports jax, flax, optax or the engine.
"""
