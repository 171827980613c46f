"""What R trained models say about T examples: margins, in chunks that bound memory.

The margin of model r on example i is ``logit_y - max_{c != y} logit_c`` (float32); model r
classifies i correctly iff the margin is > 0. Predicting 512 models on every example in
one call took 2.5 GB, so examples are processed ``chunk_size`` at a time and models
``model_chunk_size`` at a time; every chunk is padded to the same shape (one compilation).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jmem.errors import JmemError
from jmem.engine.hparams import ModelConfig, auto_strategy
from jmem.engine.models import activation_elems, apply_one, build_model, check_input, num_classes_of

PREDICT_STRATEGIES = ("auto", "vmap", "patches", "sequential")

# Activation values one prediction call may hold on a CPU: 64 Mi values = 256 MB. On an
# accelerator, an eighth of the device's free memory: 256 MB held one ResNet per call there,
# 944 calls for 16 ResNets on 60,000 images (benchmarks/results/gpu-2026-12-04.md).
_CPU_ACTIVATION_BUDGET = 64 * 2 ** 20
_DEVICE_MEMORY_SHARE = 1 / 8

# Models per prediction call by backend (others: as many as the activation budget allows).
# On XLA:CPU, 64 digits MLPs on 2,234 examples took 0.108 s in one call of 64 and 0.046 s in
# four calls of 16 (their weights stay in cache; 8: 0.047 s), bitwise the same margins
# (2026-12-01, 2-core CPU; benchmarks/RESULTS.md, issue 15).
_MODELS_PER_CALL = {"cpu": 16}


def margins_from_logits(logits: jax.Array, y: jax.Array) -> jax.Array:
    """float32[..., K] logits and int[...] labels -> float32[...] margins."""
    logits = logits.astype(jnp.float32)
    true = jnp.take_along_axis(logits, y[..., None].astype(jnp.int32), axis=-1)[..., 0]
    others = jnp.where(jax.nn.one_hot(y, logits.shape[-1], dtype=bool), -jnp.inf, logits)
    return true - jnp.max(others, axis=-1)


def accuracy(margins) -> np.ndarray:
    """float32[R, T] margins -> float32[R] accuracies (fraction of margins > 0)."""
    return np.mean(np.asarray(margins) > 0, axis=-1, dtype=np.float32)


def _conv_impl(model_cfg: ModelConfig, strategy: str, backend: str) -> str:
    """"auto" follows training's measured rule (``hparams.auto_strategy``) for ``backend``."""
    if strategy == "auto":
        strategy = auto_strategy(model_cfg.kind, backend)
    return "patches" if strategy == "patches" else "lax"


def _activation_budget(backend: str) -> int:
    """Activation values (of 4 bytes) one prediction call may hold on ``backend``."""
    if backend == "cpu":
        return _CPU_ACTIVATION_BUDGET
    from jmem.engine.memory import available_device_bytes
    return max(_CPU_ACTIVATION_BUDGET, int(available_device_bytes() * _DEVICE_MEMORY_SHARE) // 4)


@functools.lru_cache(maxsize=32)
def _batched_fn(model_cfg: ModelConfig, num_classes: int, conv_impl: str, output: str,
                compute_dtype: str = "float32"):
    module = build_model(model_cfg, num_classes, conv_impl, compute_dtype)

    def one(params, state, x, y):
        logits, feats, _ = apply_one(module, params, state, x)
        return margins_from_logits(logits, y) if output == "margins" else feats

    return jax.jit(jax.vmap(one, in_axes=(0, 0, None, None)))


def _check(model_cfg, params, x, y=None):
    x = np.asarray(x, np.float32)
    check_input(model_cfg, x.shape[1:])
    if y is not None:
        y = np.asarray(y)
        if y.shape != (x.shape[0],):
            raise JmemError(f"y has shape {y.shape}; need [{x.shape[0]}] to match x")
        k = num_classes_of(params)
        if y.size and (y.min() < 0 or y.max() >= k):
            raise JmemError(f"y has labels in [{y.min()}, {y.max()}]; the models have {k} classes")
        y = y.astype(np.int32)
    leaves = jax.tree_util.tree_leaves(params)
    num_models = int(leaves[0].shape[0])
    return x, y, num_models


def _default_model_chunk(model_cfg, num_classes, example_shape, conv_impl, chunk_size, backend):
    per_model = chunk_size * max(1, activation_elems(model_cfg, num_classes, example_shape, conv_impl))
    return max(1, _activation_budget(backend) // per_model)


def _balanced_chunk(num_examples: int, chunk_size: int) -> int:
    """The smallest chunk that covers ``num_examples`` in as few calls of <= ``chunk_size``
    as possible (1,352 in chunks of 1,024: two of 676, not 2,048 with 696 padded)."""
    calls = -(-num_examples // chunk_size)
    return -(-num_examples // calls)


def _chunked(model_cfg, params, state, x, y, chunk_size, model_chunk_size, strategy, output,
             devices=None, compute_dtype="float32"):
    """Run ``_batched_fn`` over model and example chunks; returns a host array [R, T, ...].

    With several ``devices``, the model chunks go round-robin to them and run concurrently
    (a block's calls are all dispatched before the previous block's results are read). The
    outputs are the same on any device; other chunk sizes may change them by float rounding
    (XLA:CPU may round a vmapped matmul differently for another batch of models).
    """
    if strategy not in PREDICT_STRATEGIES:
        raise JmemError(f"strategy={strategy!r} is not one of {PREDICT_STRATEGIES}")
    if chunk_size < 1:
        raise JmemError(f"chunk_size={chunk_size} must be >= 1")
    x, y, num_models = _check(model_cfg, params, x, y)
    devices = list(devices or [None])
    backend = devices[0].platform if devices[0] is not None else jax.default_backend()
    num_classes = num_classes_of(params)
    impl = _conv_impl(model_cfg, strategy, backend)
    num_examples = x.shape[0]
    chunk_size = _balanced_chunk(num_examples, min(chunk_size, num_examples)) if num_examples else 1
    if strategy == "sequential":
        model_chunk_size = 1
    elif model_chunk_size is None:
        model_chunk_size = min(_default_model_chunk(model_cfg, num_classes, x.shape[1:], impl, chunk_size,
                                                    backend),
                               _MODELS_PER_CALL.get(backend, num_models),
                               -(-num_models // len(devices)))
    model_chunk_size = max(1, min(model_chunk_size, num_models))
    fn = _batched_fn(model_cfg, num_classes, impl, output, compute_dtype)
    labels = np.zeros(num_examples, np.int32) if y is None else y
    chunk_devices = [devices[i % len(devices)] for i in range(-(-num_models // model_chunk_size))]
    models = []  # per model chunk: (params, state) on its device
    for m0, device in zip(range(0, num_models, model_chunk_size), chunk_devices):
        take = lambda leaf: jax.device_put(leaf[m0:m0 + model_chunk_size], device)  # noqa: E731
        models.append((jax.tree_util.tree_map(take, params), jax.tree_util.tree_map(take, state)))
    columns, previous = [], None  # previous: the last block's results, still computing
    for e0 in range(0, num_examples, chunk_size):
        xc, yc = x[e0:e0 + chunk_size], labels[e0:e0 + chunk_size]
        real = xc.shape[0]
        if real < chunk_size:  # pad the last block so every call has one shape (one compilation)
            xc = np.concatenate([xc, np.zeros((chunk_size - real,) + xc.shape[1:], xc.dtype)])
            yc = np.concatenate([yc, np.zeros(chunk_size - real, yc.dtype)])
        placed = {d: (jax.device_put(xc, d), jax.device_put(yc, d)) for d in dict.fromkeys(chunk_devices)}
        outs = [fn(p_chunk, s_chunk, *placed[d]) for (p_chunk, s_chunk), d in zip(models, chunk_devices)]
        # Read the previous block only now: every device stays busy, and at most two blocks
        # of examples are held at once (a dataset-sized copy per device would not be).
        if previous is not None:
            columns.append(_gather(*previous))
        previous = (outs, real)
    if previous is not None:
        columns.append(_gather(*previous))
    return np.concatenate(columns, axis=1)


def _gather(outs: list, real: int) -> np.ndarray:
    """One example block's results of every model chunk -> host [R, real, ...]."""
    return np.concatenate([np.asarray(out)[:, :real] for out in outs], axis=0)


def predict_margins(model_cfg: ModelConfig, params, model_state, x, y, chunk_size: int = 1024,
                    model_chunk_size: int | None = None, strategy: str = "auto",
                    devices=None, compute_dtype: str = "float32") -> np.ndarray:
    """Margins of R models on T examples: float32[R, T].

    params / model_state: pytrees with a leading model axis R (``TrainResult.params`` /
      ``.model_state``); BatchNorm uses its running averages.
    x: float32[T, *example_shape]; y: int[T] in [0, K).
    chunk_size: examples per call. model_chunk_size: models per call (default: 16 on CPU,
      elsewhere as many as keep one call's activations under ~256 MB; at most a device's share).
    strategy: "auto" (vmap for MLPs, patches for conv nets), "vmap", "patches" or
      "sequential" (one model per call). All give the same margins up to float rounding.
    devices: devices to spread the model chunks over (default: the default device); the
      margins are the same whatever the devices. Parameters already on a device stay there
      (a slice of a device array is not copied through the host).
    compute_dtype: "float32" or "bfloat16": the dtype the layers compute in, as in training
      (``train.compute_dtype``); the margins are returned as float32 either way.
    """
    return _chunked(model_cfg, params, model_state, x, y, chunk_size, model_chunk_size,
                    strategy, "margins", devices, compute_dtype).astype(np.float32)


def predict_features(model_cfg: ModelConfig, params, model_state, x, chunk_size: int = 1024,
                     model_chunk_size: int | None = None, strategy: str = "auto") -> np.ndarray:
    """Penultimate-layer features of R models on T examples: float32[R, T, D], in chunks."""
    return _chunked(model_cfg, params, model_state, x, None, chunk_size, model_chunk_size,
                    strategy, "features").astype(np.float32)
