"""The engine: train R small flax/optax models on R keep-masks and record their margins.

It knows nothing of memorization and never reads a config: models, the vectorized trainer
and its batching strategies, prediction, device sharding and multi-host set-up, in-flight
checkpoints. Imports nothing heavy itself, so ``jmem.engine.host_devices`` can run before JAX.
"""
