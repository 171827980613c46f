"""The networks jmem trains: an MLP, a small CNN (2-D images and 1-D sequences), a small ResNet.

Every module returns ``(logits, features)``: ``features`` is the penultimate representation
(what the classifier head sees), used by the leakage detector. Parameters are plain pytrees;
the functions below add a leading model axis ``R`` so a whole wave of models is one pytree.

Convolutions come in two implementations with *identical parameters*:

* ``conv_impl="lax"``: ``lax.conv_general_dilated``. Under ``vmap`` over models XLA turns it
  into a grouped convolution (``feature_group_count = R``), which is slow on CPU and a weak
  spot on GPU (BACKGROUND section 5).
* ``conv_impl="patches"``: ``lax.conv_general_dilated_patches`` + a matmul. Extracting
  patches involves only the (model-batched) activations, so ``vmap`` folds the model axis into
  the batch axis; the matmul with the weights then becomes a batched GEMM over models.

Because both implementations declare the same ``kernel``/``bias`` parameters, a model
trained with one can be evaluated with the other.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jmem.errors import JmemError
from jmem.engine.hparams import ModelConfig

CONV_IMPLS = ("lax", "patches")

_DIMENSION_NUMBERS = {
    1: ("NWC", "OIW", "NWC"),
    2: ("NHWC", "OIHW", "NHWC"),
}


class Conv(nn.Module):
    """'SAME'-padded convolution over 1 or 2 spatial dims, channels last.

    x: float[B, *spatial, C_in] -> float[B, *spatial / stride, features].
    Params: kernel float32[*window, C_in, features] (lecun normal), bias float32[features].
    """

    features: int
    kernel_size: int = 3
    stride: int = 1
    use_bias: bool = True
    impl: str = "lax"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        spatial = x.ndim - 2
        window = (self.kernel_size,) * spatial
        strides = (self.stride,) * spatial
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            window + (x.shape[-1], self.features), jnp.float32)
        x = x.astype(self.dtype)
        kernel = kernel.astype(self.dtype)
        if self.impl == "lax":
            lhs, _, out = _DIMENSION_NUMBERS[spatial]
            y = lax.conv_general_dilated(x, kernel, strides, "SAME",
                                         dimension_numbers=(lhs, "".join(lhs[1:-1]) + "IO", out))
        else:
            patches = _patches(x, window, strides)
            # The patch feature axis is ordered (C_in, *window): match the kernel to it.
            perm = (spatial,) + tuple(range(spatial)) + (spatial + 1,)
            flat = jnp.transpose(kernel, perm).reshape(-1, self.features)
            y = jnp.einsum("...k,kf->...f", patches, flat)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(self.dtype)
        return y


def _patches(x, window: tuple, strides: tuple):
    """'SAME' patches of x: float[B, *spatial, C] -> float[B, *out, C * prod(window)], the
    feature axis ordered (C, *window) like ``lax.conv_general_dilated_patches``.

    Built from strided slices of the padded input, not from
    ``conv_general_dilated_patches`` (a convolution with a one-hot kernel): inside the
    training loop (``lax.scan`` / ``while``) XLA:CPU runs convolutions as slow generic loops
    (measured here: a CNN trained in one scanned program at ~1/6 the speed of a Python loop
    over a jitted step), whereas slices are plain copies.
    """
    outs, pads = [], [(0, 0)]
    for size, k, s in zip(x.shape[1:-1], window, strides):
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        outs.append(out)
        pads.append((total // 2, total - total // 2))
    padded = jnp.pad(x, pads + [(0, 0)])
    columns = []
    for offsets in itertools.product(*(range(k) for k in window)):
        index = tuple(slice(o, o + (n - 1) * s + 1, s) for o, n, s in zip(offsets, outs, strides))
        columns.append(padded[(slice(None),) + index + (slice(None),)])
    stacked = jnp.stack(columns, axis=-1)  # [B, *out, C, prod(window)]: (C, *window) order
    return stacked.reshape(stacked.shape[:-2] + (-1,))


class _Norm(nn.Module):
    """BatchNorm with per-model statistics, or nothing; ``mask`` excludes padded examples.

    mask: bool[B] or None. Padded batch slots must not move the batch statistics, else a
    model would depend on examples outside its subset.
    """

    kind: str
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool, mask=None):
        if self.kind == "none":
            return x
        if mask is not None:
            mask = mask.reshape((-1,) + (1,) * (x.ndim - 1))
            mask = jnp.broadcast_to(mask, x.shape)
        return nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x, mask=mask)


class MLP(nn.Module):
    """Flatten, ``depth`` x (Dense(width) [+ BatchNorm] + ReLU), Dense(num_classes); with
    ``widths`` one hidden layer per entry instead (e.g. (512, 256)).

    x: float[B, ...] -> (logits float32[B, K], features float32[B, last hidden width]).
    """

    num_classes: int
    width: int = 256
    depth: int = 1
    norm: str = "none"
    conv_impl: str = "lax"  # unused: accepted so every model has the same constructor
    kernel_size: int = 3
    dtype: Any = jnp.float32
    widths: tuple = ()

    @nn.compact
    def __call__(self, x, train: bool = False, mask=None):
        h = x.reshape(x.shape[0], -1).astype(self.dtype)
        for i, width in enumerate(self.widths or (self.width,) * self.depth):
            h = nn.Dense(width, dtype=self.dtype, name=f"dense{i}")(h)
            h = _Norm(self.norm, self.dtype, name=f"norm{i}")(h, train, mask)
            h = nn.relu(h)
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(h)
        return logits.astype(jnp.float32), h.astype(jnp.float32)


class CNN(nn.Module):
    """``depth`` x (Conv(width, stride 2) [+ BatchNorm] + ReLU), flatten, Dense(num_classes).

    Works on images [B, H, W, C] (8x8 digits, 28x28 MNIST) and sequences [B, L, C]
    (MNIST-1D is [B, 40, 1]). Strided convolutions instead of pooling keep the patches path a
    pure GEMM. Flattening (not global pooling) keeps position, which MNIST-1D needs.
    x -> (logits float32[B, K], features float32[B, width * prod(spatial / 2**depth)]).
    """

    num_classes: int
    width: int = 32
    depth: int = 2
    norm: str = "none"
    conv_impl: str = "lax"
    kernel_size: int = 3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False, mask=None):
        h = x.astype(self.dtype)
        for i in range(self.depth):
            h = Conv(self.width, self.kernel_size, 2, impl=self.conv_impl, dtype=self.dtype,
                     use_bias=self.norm == "none", name=f"conv{i}")(h)
            h = _Norm(self.norm, self.dtype, name=f"norm{i}")(h, train, mask)
            h = nn.relu(h)
        h = h.reshape(h.shape[0], -1)
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(h)
        return logits.astype(jnp.float32), h.astype(jnp.float32)


class _Block(nn.Module):
    """Pre-activation-free basic residual block: conv-norm-relu-conv-norm (+ shortcut), relu.

    Norm-free blocks scale the residual branch by a learned scalar initialised at zero
    (SkipInit, De & Smith 2020), so the network starts as a shallow one and trains stably.
    """

    features: int
    stride: int
    norm: str
    conv_impl: str
    kernel_size: int
    dtype: Any

    @nn.compact
    def __call__(self, x, train, mask):
        conv = lambda f, k, s, name: Conv(f, k, s, impl=self.conv_impl, dtype=self.dtype,  # noqa: E731
                                          use_bias=self.norm == "none", name=name)
        h = conv(self.features, self.kernel_size, self.stride, "conv_a")(x)
        h = nn.relu(_Norm(self.norm, self.dtype, name="norm_a")(h, train, mask))
        h = conv(self.features, self.kernel_size, 1, "conv_b")(h)
        h = _Norm(self.norm, self.dtype, name="norm_b")(h, train, mask)
        if self.norm == "none":
            h = h * self.param("skip_gain", nn.initializers.zeros, (), jnp.float32).astype(self.dtype)
        if self.stride != 1 or x.shape[-1] != self.features:
            x = conv(self.features, 1, self.stride, "shortcut")(x)
            x = _Norm(self.norm, self.dtype, name="norm_shortcut")(x, train, mask)
        return nn.relu(x + h)


class ResNet(nn.Module):
    """Small ResNet for 32x32x3: stem conv, ``depth`` stages of one basic block (stage i has
    width * 2**i channels, stride 2 from the second), global average pool, Dense.

    x: float[B, H, W, C] -> (logits float32[B, K], features float32[B, width * 2**(depth-1)]).
    """

    num_classes: int
    width: int = 16
    depth: int = 3
    norm: str = "batchnorm"
    conv_impl: str = "lax"
    kernel_size: int = 3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False, mask=None):
        h = Conv(self.width, self.kernel_size, 1, impl=self.conv_impl, dtype=self.dtype,
                 use_bias=self.norm == "none", name="stem")(x.astype(self.dtype))
        h = nn.relu(_Norm(self.norm, self.dtype, name="stem_norm")(h, train, mask))
        for i in range(self.depth):
            h = _Block(self.width * 2 ** i, 1 if i == 0 else 2, self.norm, self.conv_impl,
                       self.kernel_size, self.dtype, name=f"stage{i}")(h, train, mask)
        h = jnp.mean(h, axis=(1, 2))
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(h)
        return logits.astype(jnp.float32), h.astype(jnp.float32)


_KINDS = {"mlp": MLP, "cnn": CNN, "resnet": ResNet}


def check_input(model_cfg: ModelConfig, example_shape: tuple[int, ...]) -> None:
    """Raise :class:`JmemError` if ``model_cfg.kind`` cannot take examples of this shape."""
    shape = tuple(example_shape)
    if model_cfg.kind == "mlp":
        if len(shape) < 1:
            raise JmemError(f"model.kind='mlp' needs examples with >= 1 dim; got example shape {shape}")
        return
    if model_cfg.kind == "cnn":
        if len(shape) not in (2, 3):
            raise JmemError(f"model.kind='cnn' needs [L, C] sequences or [H, W, C] images; "
                            f"got example shape {shape}")
        if min(shape[:-1]) < 2 ** model_cfg.depth:
            raise JmemError(f"model.depth={model_cfg.depth} halves the spatial size {shape[:-1]} "
                            f"below 1 for model.kind='cnn'")
        return
    if len(shape) != 3:
        raise JmemError(f"model.kind='resnet' needs [H, W, C] images; got example shape {shape}")
    if min(shape[:-1]) < 2 ** (model_cfg.depth - 1):
        raise JmemError(f"model.depth={model_cfg.depth} is too deep for images of size {shape[:-1]}")


def build_model(model_cfg: ModelConfig, num_classes: int, conv_impl: str = "lax",
                compute_dtype: str = "float32") -> nn.Module:
    """The flax module for one model. ``conv_impl`` is "lax" or "patches" (same params)."""
    if conv_impl not in CONV_IMPLS:
        raise JmemError(f"conv_impl={conv_impl!r} is not one of {CONV_IMPLS}")
    extra = {"widths": tuple(model_cfg.widths)} if model_cfg.widths else {}
    return _KINDS[model_cfg.kind](
        num_classes=num_classes, width=model_cfg.width, depth=model_cfg.depth,
        norm=model_cfg.norm, conv_impl=conv_impl, kernel_size=model_cfg.kernel_size,
        dtype=jnp.dtype(compute_dtype), **extra)


def init_one(module: nn.Module, key: jax.Array, example_shape: tuple[int, ...]):
    """Initialise one model. key: uint32[2]. Returns (params, state) pytrees; state holds
    BatchNorm statistics (``{}`` without norm). Depends on the key and shapes only."""
    variables = module.init(key, jnp.zeros((1,) + tuple(example_shape), jnp.float32), train=False)
    variables = dict(variables)
    params = variables.pop("params")
    return params, variables


def init_models(model_cfg: ModelConfig, num_classes: int, example_shape: tuple[int, ...],
                keys: jax.Array):
    """Initialise R models. keys: uint32[R, 2] (``rng.model_keys(seed, "init", ids)``).

    Returns (params, state) with a leading model axis R on every leaf.
    """
    check_input(model_cfg, example_shape)
    module = build_model(model_cfg, num_classes)
    return jax.jit(jax.vmap(lambda k: init_one(module, k, example_shape)))(keys)


def apply_one(module: nn.Module, params, state, x, train: bool = False, mask=None):
    """One model's forward pass. x: float32[B, ...]; mask: bool[B] or None (BatchNorm only).

    Returns (logits float32[B, K], features float32[B, D], new_state). In training mode
    BatchNorm uses (masked) batch statistics and ``new_state`` holds the updated averages.
    """
    variables = {"params": params, **state}
    if train and state:
        (logits, feats), new_state = module.apply(variables, x, train=True, mask=mask,
                                                  mutable=list(state.keys()))
        return logits, feats, dict(new_state)
    logits, feats = module.apply(variables, x, train=False)
    return logits, feats, state


def num_classes_of(params) -> int:
    """K, read from the classifier head of a (batched or single) parameter pytree."""
    return int(params["head"]["bias"].shape[-1])


def features(model_cfg: ModelConfig, params, state, x, conv_impl: str | None = None) -> jax.Array:
    """Penultimate-layer features of R models (inference mode).

    params/state: pytrees with a leading model axis R. x: float32[T, ...].
    Returns float32[R, T, D]. For many examples call it in chunks (see ``jmem.engine.predict``).
    """
    impl = conv_impl or ("lax" if model_cfg.kind == "mlp" else "patches")
    module = build_model(model_cfg, num_classes_of(params), impl)
    fn = jax.vmap(lambda p, s: apply_one(module, p, s, x)[1])
    return jax.jit(fn)(params, state)


def param_count(model_cfg: ModelConfig, num_classes: int, example_shape: tuple[int, ...]) -> int:
    """Number of trainable parameters of one model (from shapes only; nothing is computed)."""
    module = build_model(model_cfg, num_classes)
    shapes = jax.eval_shape(lambda k: init_one(module, k, example_shape)[0], jax.random.PRNGKey(0))
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(shapes))


def layer_shapes(model_cfg: ModelConfig, num_classes: int, example_shape: tuple[int, ...],
                 conv_impl: str = "lax"):
    """(param shapes, layer-output shapes) of one model on ONE example: two pytrees of
    ``jax.ShapeDtypeStruct``, from shapes only (``jax.eval_shape``, nothing is computed)."""
    module = build_model(model_cfg, num_classes, conv_impl)
    x = jnp.zeros((1,) + tuple(example_shape), jnp.float32)

    def run(key):
        variables = module.init(key, x, train=False)
        _, inter = module.apply(variables, x, train=False, capture_intermediates=True,
                                mutable=["intermediates"])
        return variables["params"], inter["intermediates"]

    return jax.eval_shape(run, jax.random.PRNGKey(0))


def activation_elems(model_cfg: ModelConfig, num_classes: int, example_shape: tuple[int, ...],
                     conv_impl: str = "lax") -> int:
    """Values of all layer outputs for ONE example (plus conv patch matrices for "patches").

    Used to size waves and prediction chunks.
    """
    params, inter = layer_shapes(model_cfg, num_classes, example_shape, conv_impl)
    elems = sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(inter))
    if conv_impl == "patches":
        # A conv's patch matrix holds (window * C_in) values per output position.
        outputs = dict(jax.tree_util.tree_flatten_with_path(inter)[0])
        for path, kernel in jax.tree_util.tree_flatten_with_path(params)[0]:
            if path[-1].key != "kernel" or len(kernel.shape) < 3:
                continue
            out = outputs.get(path[:-1] + (jax.tree_util.DictKey("__call__"), jax.tree_util.SequenceKey(0)))
            if out is not None:
                elems += math.prod(out.shape[:-1]) * math.prod(kernel.shape[:-1])
    return int(elems)
