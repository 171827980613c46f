"""One section of benchmarks/gpu.sh: measure, and append one JSON line per measurement.

    python3 benchmarks/gpu_bench.py SECTION --rows ROWS.jsonl [--deadline UNIX_SECONDS]
    python3 benchmarks/gpu_bench.py table --rows ROWS.jsonl

Sections (run by gpu.sh, each in its own process under its own time limit):

* ``ceilings``: a large bf16 and fp32 matmul (FLOP/s) and a device-to-device copy (HBM
  bytes/s, read + write). Later sections read these rows for "% of peak" and "% of HBM".
* ``mlp``: Feldman & Zhang's MNIST MLP 784-512-256-10 (SGD 0.05, momentum 0.9, batch 128) on
  60,000 synthetic 28x28 images, R = 1,024 models on fixed 70% subsets, one epoch, fp32 and
  bf16: jmem's engine, a lean stacked-weight einsum + optax loop (the same work written by
  hand in one jitted scan), and one model at a time (the lean loop at R = 1). Compile and
  steady times, % of the matmul peak, % of the HBM model, projection to F&Z's 2,000 models x
  10 epochs.
* ``resnet``: the CIFAR preset's ResNet (width 32, 3 stages, BatchNorm, bf16, SGD Nesterov,
  one-cycle, weight decay, crop + flip) on synthetic 32x32x3 images, one epoch of 28 steps
  of 256, at R = 16 and 64 in each layout (vmap: grouped convolutions; patches: patches x
  matmul; patches/cK: chunks of K models one after another by lax.map), one model at a time
  (jmem's ``sequential``), and one model at batch R x 256 (the ceiling: the same images per
  step with no model axis). Per-configuration device memory (XLA's memory analysis) and a
  projection to the preset's 4,000 models x 30 epochs.
* ``margins``: jmem's ``predict_margins`` for 1,024 MLPs on 70,000 images and for 16 ResNets
  on 60,000 images (the preset's train + test sets).

Rows are appended and flushed as soon as each exists, so a section killed by its time limit
keeps what it measured. A configuration predicted not to fit before ``--deadline`` is
written as ``skipped``; an error (out of memory, say) as ``error`` with its first line.

``JMEM_GPU_TINY=1``: the same code paths at tiny shapes on the CPU (for the test of gpu.sh).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
import traceback

TINY = os.environ.get("JMEM_GPU_TINY") == "1"

# Sizes: (full, tiny). Tiny mode keeps every code path and shrinks every shape.
MLP_N, MLP_R, MLP_WIDTHS, MLP_BATCH = (60_000, 1024, (512, 256), 128) if not TINY else (512, 4, (32, 16), 32)
MLP_SEQ_MODELS = 4 if not TINY else 2
RES_N, RES_RS, RES_WIDTH, RES_DEPTH, RES_BATCH = ((10_240, (16, 64), 32, 3, 256) if not TINY
                                                  else (128, (2, 4), 8, 1, 16))
RES_SEQ_MODELS = 2
CEILING_STEPS = 10 if not TINY else 2
MARGIN_MLPS, MARGIN_MLP_N = (1024, 70_000) if not TINY else (8, 256)
MARGIN_RESNETS, MARGIN_RES_N = (16, 60_000) if not TINY else (2, 64)
MATMUL_SIZE = 8192 if not TINY else 256
COPY_BYTES = 4 * 2 ** 30 if not TINY else 16 * 2 ** 20
RATE = 0.7

# Feldman & Zhang's MNIST run and the CIFAR preset, for the projections.
FZ_MODELS, FZ_EPOCHS, FZ_SUBSET = 2000, 10, 42_000
PRESET_IMAGES = 2000 * 30 * (35_000 + 47_500)  # 2,000 models at 0.7 and 2,000 at 0.95 of 50,000

# Datasheet fallbacks where the ceilings section left no row (H200 SXM).
NOMINAL = {"matmul_bfloat16": 989e12, "matmul_float32": 67e12, "copy": 4.8e12}


# ============================================================================ rows


class Rows:
    """Append-only JSON-lines writer: each row is on disk (flushed, fsynced) when ``add`` returns."""

    def __init__(self, path: str, section: str):
        self.path, self.section = path, section

    def add(self, **row) -> dict:
        row = {"section": self.section, "t": round(time.time(), 3), **row}
        with open(self.path, "a") as f:
            f.write(json.dumps(row, default=_jsonable) + "\n")
            f.flush()
            os.fsync(f.fileno())
        print(f"[{self.section}] {_brief(row)}", flush=True)
        return row


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _brief(row: dict) -> str:
    keys = ("name", "status", "R", "dtype", "steady_s", "compile_s", "models_per_s", "tflops",
            "gbps", "reason")
    return " ".join(f"{k}={_short(row[k])}" for k in keys if row.get(k) is not None)


def _short(v):
    return f"{v:.4g}" if isinstance(v, float) else v


def read_rows(path: str) -> list[dict]:
    """Every complete row of ``path`` (a line cut off by a kill is ignored)."""
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def ceiling(rows: list[dict], name: str) -> tuple[float, bool]:
    """(value, measured) of the ceiling ``name``: the measured row, else the datasheet figure."""
    for row in rows:
        if row.get("section") == "ceilings" and row.get("name") == name and row.get("status") == "ok":
            return row["value"], True
    return NOMINAL[name], False


class Budget:
    """Skips work predicted not to end before the deadline (unix seconds; None: no deadline)."""

    def __init__(self, deadline: float | None):
        self.deadline = deadline

    def left(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.time()

    def allows(self, predicted_s: float) -> bool:
        return predicted_s < self.left()


def measure(rows: Rows, budget: Budget, predicted_s: float, name: str, fn, **labels) -> dict | None:
    """Run ``fn() -> dict`` unless predicted (from a similar configuration measured before;
    0: nothing to go by, try) not to end in time; write its row (ok, error or skipped).
    ``$JMEM_GPU_ONLY`` (e.g. ``copy,vmap@64``): measure only the named configurations
    (``name`` or ``name@R``), to complete an earlier run that was cut short."""
    only = [x for x in os.environ.get("JMEM_GPU_ONLY", "").split(",") if x]
    if only and name not in only and f"{name}@{labels.get('R')}" not in only:
        return None
    if not budget.allows(predicted_s):
        rows.add(name=name, status="skipped", reason=f"predicted {predicted_s:.0f} s > "
                 f"{max(0.0, budget.left()):.0f} s left", **labels)
        return None
    try:
        return rows.add(name=name, status="ok", **labels, **fn())
    except Exception as err:  # noqa: BLE001 - out of memory and the like: record, go on
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        traceback.print_exc()
        rows.add(name=name, status="error", reason=f"{type(err).__name__}: {first}", **labels)
        return None


def timed(fn, repeats: int = 1) -> tuple[float, float]:
    """(first call, median of ``repeats`` further calls) in seconds; ``fn`` must block."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def compiled_bytes(compiled) -> int | None:
    """Device bytes of a compiled program: arguments + outputs + temporaries - aliased."""
    try:
        m = compiled.memory_analysis()
        return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                   - m.alias_size_in_bytes)
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None


def device_peak() -> int | None:
    import jax
    try:
        return (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
    except Exception:  # noqa: BLE001
        return None


def setup_jax():
    """Import JAX with a per-process persistent compilation cache, so that asking a compiled
    program for its memory analysis after running it does not compile it again."""
    import tempfile

    import jax
    if not jax.config.jax_compilation_cache_dir:  # a test's shared cache is kept
        jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="jmem_gpu_cache_"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    if jax.default_backend() == "cpu" and not TINY:
        raise SystemExit(f"gpu_bench: no accelerator visible to JAX ({jax.devices()}); "
                         "JMEM_GPU_TINY=1 runs the tiny CPU version")
    return jax


# ============================================================================ ceilings


def section_ceilings(rows: Rows, budget: Budget) -> None:
    jax = setup_jax()
    import jax.numpy as jnp

    rows.add(name="device", status="ok", device=str(jax.devices()[0]),
             kind=getattr(jax.devices()[0], "device_kind", ""), backend=jax.default_backend(),
             jax=jax.__version__)
    for dtype in ("bfloat16", "float32"):
        def matmul(dtype=dtype):
            n, chain = MATMUL_SIZE, 4
            a = (jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32) / math.sqrt(n)).astype(dtype)

            @jax.jit
            def product(x):
                for _ in range(chain):
                    x = x @ a
                return x

            first, steady = timed(lambda: jax.block_until_ready(product(a)), repeats=5)
            return {"value": chain * 2.0 * n ** 3 / steady, "tflops": chain * 2.0 * n ** 3 / steady / 1e12,
                    "size": n, "steady_s": steady, "compile_s": max(0.0, first - steady),
                    "precision": "JAX default"}
        measure(rows, budget, 0, f"matmul_{dtype}", matmul, dtype=dtype)

    def copy():
        x = jnp.ones((COPY_BYTES // 4,), jnp.float32)
        double = jax.jit(lambda v: v * 2.0)  # reads and writes every byte once; not elided
        first, steady = timed(lambda: jax.block_until_ready(double(x)), repeats=10)
        moved = 2 * COPY_BYTES
        return {"value": moved / steady, "gbps": moved / steady / 1e9, "bytes": moved,
                "steady_s": steady}
    measure(rows, budget, 0, "copy", copy)


# ============================================================================ F&Z MLP


def _fz_dataset():
    from jmem.bench.workloads import synthetic_images
    return synthetic_images(MLP_N, num_test=256, shape=(28, 28, 1))


def _fixed_keep(num_models: int, num_examples: int, seed: int = 0):
    from jmem.data.subsets import make_keep
    return make_keep(seed, num_models, num_examples, "fixed", RATE)[0]


def _mlp_params(widths, num_inputs: int, num_classes: int) -> int:
    sizes = (num_inputs,) + tuple(widths) + (num_classes,)
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def _mlp_macs(widths, num_inputs: int, num_classes: int) -> int:
    sizes = (num_inputs,) + tuple(widths) + (num_classes,)
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def hbm_bytes_per_step(num_params: int) -> int:
    """The HBM model of one SGD-momentum step of one MLP: every float32 parameter-sized array
    touched once per pass: weights read by the forward and by the backward pass, the gradient
    written, the optimizer reading weights, gradient and momentum and writing weights and
    momentum: 8 x 4 bytes per parameter. The batch and activations (under 5% here) are left
    out, so this is a lower bound on the traffic of the standard algorithm."""
    return 8 * 4 * num_params


def lean_mlp(widths, num_classes: int, batch: int, lr: float, momentum: float, dtype: str):
    """A hand-written ensemble: stacked weights [R, in, out], one einsum per layer, optax SGD
    over the stacked pytree (per-element, so every model is independent), one jitted
    ``lax.scan`` per epoch over batches gathered from the device-resident dataset.

    Returns (init(key, R) -> (params, opt_state), epoch(params, opt_state, x, y, kept, key)).
    kept: int32[R, n] each model's subset (all the same size n, as in the ``fixed`` design).
    """
    import jax
    import jax.numpy as jnp
    import optax
    from jax import lax

    tx = optax.sgd(lr, momentum=momentum)
    cdt = jnp.dtype(dtype)

    def init(key, num_models, num_inputs):
        sizes = (num_inputs,) + tuple(widths) + (num_classes,)
        params = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            w = jax.random.normal(jax.random.fold_in(key, i), (num_models, a, b), jnp.float32)
            params.append((w * math.sqrt(2.0 / a), jnp.zeros((num_models, b), jnp.float32)))
        return params, tx.init(params)

    def loss_fn(params, xb, yb, weight):
        h = xb.astype(cdt)
        for i, (w, b) in enumerate(params):
            h = jnp.einsum("rbi,rio->rbo", h, w.astype(cdt)) + b[:, None, :].astype(cdt)
            if i < len(params) - 1:
                h = jax.nn.relu(h)
        per = optax.softmax_cross_entropy_with_integer_labels(h.astype(jnp.float32), yb)
        # Sum over models of each model's mean loss: each model's gradient is its own.
        return jnp.sum(jnp.sum(per * weight, axis=1) / jnp.maximum(jnp.sum(weight, axis=1), 1.0))

    @jax.jit
    def epoch(params, opt_state, x_all, y_all, kept, key):
        num_models, n = kept.shape
        steps = -(-n // batch)
        keys = jax.random.split(key, num_models)
        order = jax.vmap(lambda k, row: row[jax.random.permutation(k, n)])(keys, kept)
        order = jnp.pad(order, ((0, 0), (0, steps * batch - n)))
        flat = x_all.reshape(x_all.shape[0], -1)

        def step(carry, j):
            params, opt_state = carry
            idx = lax.dynamic_slice_in_dim(order, j * batch, batch, axis=1)  # [R, B]
            valid = (j * batch + jnp.arange(batch) < n).astype(jnp.float32)
            weight = jnp.broadcast_to(valid, idx.shape)
            loss, grads = jax.value_and_grad(loss_fn)(params, flat[idx], y_all[idx], weight)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = lax.scan(step, (params, opt_state), jnp.arange(steps))
        return params, opt_state, losses

    return init, epoch


def section_mlp(rows: Rows, budget: Budget) -> None:
    jax = setup_jax()
    import jax.numpy as jnp
    import numpy as np

    from jmem.engine.hparams import ModelConfig, TrainConfig
    from jmem.engine.trainer import prepare_wave, segment_program, train_models

    all_rows = read_rows(rows.path)
    bandwidth, bw_measured = ceiling(all_rows, "copy")
    data = _fz_dataset()
    num_inputs, classes = 28 * 28, data.num_classes
    keep = _fixed_keep(MLP_R, MLP_N)
    subset = int(keep[0].sum())
    steps = -(-subset // MLP_BATCH)
    num_params = _mlp_params(MLP_WIDTHS, num_inputs, classes)
    flops_per_model_epoch = 6.0 * _mlp_macs(MLP_WIDTHS, num_inputs, classes) * subset
    hbm_s_per_model_epoch = steps * hbm_bytes_per_step(num_params) / bandwidth
    model_cfg = ModelConfig(kind="mlp", widths=MLP_WIDTHS)
    common = dict(workload="fz_mlp", N=MLP_N, subset=subset, batch=MLP_BATCH, steps=steps,
                  params=num_params, hbm_bandwidth_measured=bw_measured)

    def figures(models: int, steady: float, first: float, dtype: str) -> dict:
        peak, peak_measured = ceiling(all_rows, f"matmul_{dtype}")
        per_s = models / steady  # model-epochs per second
        return {"steady_s": steady, "compile_s": max(0.0, first - steady), "first_s": first,
                "models_per_s": per_s, "examples_per_s": per_s * subset,
                "tflops": per_s * flops_per_model_epoch / 1e12,
                "pct_peak": 100 * per_s * flops_per_model_epoch / peak, "peak_measured": peak_measured,
                "pct_hbm_model": 100 * per_s * hbm_s_per_model_epoch,
                "proj_fz_2000x10_s": FZ_MODELS * FZ_EPOCHS * (FZ_SUBSET / subset) / per_s}

    predicted = 0.0  # nothing measured yet: try
    for dtype in ("bfloat16", "float32"):
        train_cfg = TrainConfig(num_models=MLP_R, epochs=1, batch_size=MLP_BATCH, optimizer="sgd",
                                learning_rate=0.05, momentum=0.9, compute_dtype=dtype,
                                strategy="vmap", wave_size=MLP_R)

        def jmem_run(train_cfg=train_cfg, dtype=dtype):
            run = lambda: jax.block_until_ready(  # noqa: E731
                train_models(keep, data, model_cfg, train_cfg, seed=0).params)
            first, steady = timed(run)
            wave = prepare_wave(keep, data, model_cfg, train_cfg, seed=0)
            return {**figures(MLP_R, steady, first, dtype),
                    "program_bytes": compiled_bytes(segment_program(wave)), "device_peak_bytes": device_peak()}

        row = measure(rows, budget, predicted, "jmem", jmem_run, R=MLP_R, dtype=dtype, **common)
        if row:
            predicted = row["first_s"] + 2 * row["steady_s"]

        init, epoch = lean_mlp(MLP_WIDTHS, classes, MLP_BATCH, 0.05, 0.9, dtype)
        x_dev, y_dev = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
        kept = jnp.asarray(np.stack([np.flatnonzero(r) for r in keep]).astype(np.int32))

        def lean_run(epoch=epoch, init=init, dtype=dtype):
            state = {"p": init(jax.random.PRNGKey(0), MLP_R, num_inputs)}

            def run():
                params, opt = state["p"]
                params, opt, losses = epoch(params, opt, x_dev, y_dev, kept, jax.random.PRNGKey(1))
                jax.block_until_ready(losses)
                state["p"] = (params, opt)

            first, steady = timed(run)
            p0, o0 = init(jax.random.PRNGKey(0), MLP_R, num_inputs)
            program = epoch.lower(p0, o0, x_dev, y_dev, kept, jax.random.PRNGKey(1)).compile()
            return {**figures(MLP_R, steady, first, dtype), "program_bytes": compiled_bytes(program),
                    "device_peak_bytes": device_peak()}

        measure(rows, budget, predicted, "lean_einsum", lean_run, R=MLP_R, dtype=dtype, **common)

        def one_at_a_time(epoch=epoch, init=init, dtype=dtype):
            def train(m):
                params, opt = init(jax.random.PRNGKey(m), 1, num_inputs)
                jax.block_until_ready(epoch(params, opt, x_dev, y_dev, kept[m:m + 1], jax.random.PRNGKey(m))[2])

            start = time.perf_counter()
            train(0)
            first = time.perf_counter() - start
            start = time.perf_counter()
            for m in range(1, MLP_SEQ_MODELS + 1):
                train(m)
            steady = (time.perf_counter() - start) / MLP_SEQ_MODELS
            return {**figures(1, steady, first, dtype), "models_timed": MLP_SEQ_MODELS}

        measure(rows, budget, 0, "one_at_a_time", one_at_a_time, R=1, dtype=dtype, **common)


# ============================================================================ ResNet


def _resnet_configs(epochs: int = 1, dtype: str = "bfloat16"):
    """The CIFAR preset's model and recipe (experiments/cifar10.py), one epoch."""
    from jmem.engine.hparams import ModelConfig, TrainConfig
    model = ModelConfig(kind="resnet", width=RES_WIDTH, depth=RES_DEPTH, norm="batchnorm")
    train = TrainConfig(num_models=1, epochs=epochs, batch_size=RES_BATCH, optimizer="sgd",
                        learning_rate=0.2, momentum=0.9, nesterov=True, weight_decay=5e-4,
                        schedule="onecycle", augment="crop_flip", compute_dtype=dtype)
    return model, train


def section_resnet(rows: Rows, budget: Budget) -> None:
    jax = setup_jax()
    import jax.numpy as jnp
    import optax

    from jmem.bench.workloads import forward_macs, synthetic_images
    from jmem.engine.models import apply_one, build_model, init_one
    from jmem.engine.optim import make_optimizer
    from jmem.engine.batches import crop_flip
    from jmem.engine.trainer import prepare_wave, segment_program, train_models

    all_rows = read_rows(rows.path)
    peak, peak_measured = ceiling(all_rows, "matmul_bfloat16")
    data = synthetic_images(RES_N, num_test=64)
    model_cfg, base_cfg = _resnet_configs()
    macs = forward_macs(model_cfg, 10, (32, 32, 3))
    keep_all = _fixed_keep(max(RES_RS), RES_N)
    subset = int(keep_all[0].sum())
    common = dict(workload="cifar_resnet", N=RES_N, subset=subset, batch=RES_BATCH,
                  steps=-(-subset // RES_BATCH), macs_per_image=macs, peak_measured=peak_measured)

    def figures(images: float, steady: float, first: float) -> dict:
        per_s = images / steady
        return {"steady_s": steady, "compile_s": max(0.0, first - steady), "first_s": first,
                "images_per_s": per_s, "tflops": 6.0 * macs * per_s / 1e12,
                "pct_peak": 100 * 6.0 * macs * per_s / peak,
                "proj_preset_h": PRESET_IMAGES / per_s / 3600}

    def jmem_layout(num_models: int, strategy: str, chunk: int):
        keep = keep_all[:num_models]
        cfg = dataclasses.replace(base_cfg, num_models=num_models, wave_size=num_models, strategy=strategy)

        def fn():
            run = lambda: jax.block_until_ready(  # noqa: E731
                train_models(keep, data, model_cfg, cfg, seed=0, chunk=chunk).params)
            first, steady = timed(run)
            out = {**figures(num_models * subset, steady, first), "models_per_s": num_models / steady}
            if strategy != "sequential":
                wave = prepare_wave(keep, data, model_cfg, cfg, seed=0, chunk=chunk)
                out["program_bytes"] = compiled_bytes(segment_program(wave))
            return {**out, "device_peak_bytes": device_peak()}
        return fn

    def single_model_ceiling(batch: int):
        """One model, no model axis, batch R x 256: the same images per step as R models."""
        module = build_model(model_cfg, 10, "lax", base_cfg.compute_dtype)
        tx = make_optimizer(base_cfg)
        x_dev, y_dev = jnp.asarray(data.x_train), jnp.asarray(data.y_train)

        def loss_fn(params, state, xb, yb):
            logits, _, new_state = apply_one(module, params, state, xb, train=True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean(), new_state

        @jax.jit
        def steps(params, state, opt_state, key):
            def step(carry, k):
                params, state, opt_state = carry
                idx = jax.random.randint(k, (batch,), 0, x_dev.shape[0])
                xb = crop_flip(jax.random.fold_in(k, 1), x_dev[idx], base_cfg.crop_padding)
                (_, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, xb, y_dev[idx])
                updates, opt_state = tx.update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), state, opt_state), None
            carry, _ = jax.lax.scan(step, (params, state, opt_state), jax.random.split(key, CEILING_STEPS))
            return carry

        def fn():
            params, state = init_one(module, jax.random.PRNGKey(0), (32, 32, 3))
            opt_state = tx.init(params)
            args = (params, state, opt_state, jax.random.PRNGKey(1))
            first, steady = timed(lambda: jax.block_until_ready(steps(*args)))
            return {**figures(CEILING_STEPS * batch, steady, first),
                    "program_bytes": compiled_bytes(steps.lower(*args).compile()),
                    "device_peak_bytes": device_peak()}
        return fn

    small, large = RES_RS
    chunk_small, chunk_large = max(1, small // 4), max(1, large // 8)
    predicted = 0.0
    plan = [  # most informative first: a time limit cuts the tail
        ("patches", small, jmem_layout(small, "patches", 0)),
        ("vmap", small, jmem_layout(small, "vmap", 0)),
        ("single_model_ceiling", small, single_model_ceiling(small * RES_BATCH)),
        ("sequential", RES_SEQ_MODELS, jmem_layout(RES_SEQ_MODELS, "sequential", 1)),
        ("patches", large, jmem_layout(large, "patches", 0)),
        ("vmap", large, jmem_layout(large, "vmap", 0)),
        (f"patches/c{chunk_small}", small, jmem_layout(small, "patches", chunk_small)),
        (f"patches/c{chunk_large}", large, jmem_layout(large, "patches", chunk_large)),
        ("single_model_ceiling", large, single_model_ceiling(large * RES_BATCH)),
    ]
    for name, num_models, fn in plan:
        row = measure(rows, budget, predicted, name, fn, R=num_models, dtype="bfloat16", **common)
        if row:
            predicted = row["first_s"] + 2 * row["steady_s"]


# ============================================================================ margins


def section_margins(rows: Rows, budget: Budget) -> None:
    jax = setup_jax()
    import numpy as np

    from jmem import rng
    from jmem.bench.workloads import forward_macs, synthetic_images
    from jmem.engine.hparams import ModelConfig
    from jmem.engine.models import init_models
    from jmem.engine.predict import predict_margins

    all_rows = read_rows(rows.path)
    peak, _ = ceiling(all_rows, "matmul_float32")
    cases = [
        ("mlp", ModelConfig(kind="mlp", widths=MLP_WIDTHS), MARGIN_MLPS,
         synthetic_images(MARGIN_MLP_N, num_test=8, shape=(28, 28, 1))),
        ("resnet", _resnet_configs()[0], MARGIN_RESNETS, synthetic_images(MARGIN_RES_N, num_test=8)),
    ]
    for name, model_cfg, num_models, data in cases:
        def fn(model_cfg=model_cfg, num_models=num_models, data=data):
            keys = rng.model_keys(0, "init", np.arange(num_models))
            params, state = init_models(model_cfg, data.num_classes, data.example_shape, keys)
            macs = forward_macs(model_cfg, data.num_classes, data.example_shape)
            run = lambda: predict_margins(model_cfg, params, state, data.x_train, data.y_train)  # noqa: E731
            first, steady = timed(run)
            evals = num_models * data.num_train
            return {"steady_s": steady, "compile_s": max(0.0, first - steady),
                    "model_examples_per_s": evals / steady, "tflops": 2.0 * macs * evals / steady / 1e12,
                    "pct_peak_fp32": 100 * 2.0 * macs * evals / steady / peak,
                    "examples": data.num_train, "device_peak_bytes": device_peak()}
        measure(rows, budget, 0, f"margins_{name}", fn, R=num_models, dtype="float32")


# ============================================================================ table


SHORT_DTYPE = {"bfloat16": "bf16", "float32": "fp32"}


def _f(value, spec=".3g"):
    return "-" if value is None else format(value, spec)


def table(rows: list[dict]) -> str:
    """The summary (at most 40 lines): ceilings, MLP, ResNet, margins, then failures."""
    out = []
    by = lambda sec: [r for r in rows if r.get("section") == sec]  # noqa: E731
    ceil = {r["name"]: r for r in by("ceilings") if r.get("status") == "ok"}
    dev = ceil.get("device", {})
    out.append(f"device {dev.get('kind', '?')} ({dev.get('backend', '?')}, jax {dev.get('jax', '?')}); "
               f"bf16 matmul {_f(ceil.get('matmul_bfloat16', {}).get('tflops'), '.0f')} TFLOP/s, "
               f"fp32 {_f(ceil.get('matmul_float32', {}).get('tflops'), '.0f')} TFLOP/s, "
               f"copy {_f(ceil.get('copy', {}).get('gbps'), '.0f')} GB/s")
    mlp = [r for r in by("mlp") if r.get("status") == "ok"]
    if mlp:
        out.append("")
        out.append("F&Z MNIST MLP, 1 epoch   dtype  R     steady s  compile s  model-ep/s  TFLOP/s  %peak  %HBM  2000x10 proj")
        for r in mlp:
            out.append(f"  {r['name']:<22} {SHORT_DTYPE[r['dtype']]:<6} {r['R']:<5} {_f(r['steady_s']):>8}  "
                       f"{_f(r['compile_s']):>9}  {_f(r['models_per_s']):>10}  {_f(r['tflops']):>7}  "
                       f"{_f(r['pct_peak'], '.1f'):>5}  {_f(r['pct_hbm_model'], '.0f'):>4}  "
                       f"{_f(r['proj_fz_2000x10_s'], '.0f'):>6} s")
    res = [r for r in by("resnet") if r.get("status") == "ok"]
    if res:
        best = max([r["images_per_s"] for r in res if "ceiling" not in r["name"]] or [math.nan])
        out.append("")
        out.append("CIFAR ResNet (bf16)      R     steady s  compile s  images/s  TFLOP/s  %peak  /best  GB     4000-model proj")
        for r in res:
            mem = r.get("program_bytes") or r.get("device_peak_bytes")
            out.append(f"  {r['name']:<22} {r['R']:<5} {_f(r['steady_s']):>8}  {_f(r['compile_s']):>9}  "
                       f"{_f(r['images_per_s'], '.0f'):>8}  {_f(r['tflops']):>7}  {_f(r['pct_peak'], '.1f'):>5}  "
                       f"{_f(r['images_per_s'] / best, '.2f'):>5}  {_f(mem / 1e9 if mem else None, '.1f'):>5}  "
                       f"{_f(r['proj_preset_h'], '.1f'):>5} h")
    mar = [r for r in by("margins") if r.get("status") == "ok"]
    for r in mar:
        out.append(f"{r['name']}: R={r['R']} x {r['examples']} examples in {_f(r['steady_s'])} s "
                   f"(compile {_f(r['compile_s'])} s), {_f(r['model_examples_per_s'], '.3g')} model-examples/s, "
                   f"{_f(r['pct_peak_fp32'], '.1f')}% of fp32 peak")
    bad = [r for r in rows if r.get("status") not in ("ok", None)]
    if bad:
        out.append("")
        for r in bad[:8]:
            out.append(f"  {r.get('section')}/{r.get('name')} R={r.get('R', '-')}: {r['status']}: "
                       f"{str(r.get('reason', ''))[:110]}")
        if len(bad) > 8:
            out.append(f"  ... and {len(bad) - 8} more not-ok rows in rows.jsonl")
    return "\n".join(out[:40])


SECTIONS = {"ceilings": section_ceilings, "mlp": section_mlp, "resnet": section_resnet,
            "margins": section_margins}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("section", choices=list(SECTIONS) + ["table"])
    parser.add_argument("--rows", required=True, help="JSON-lines file to append to")
    parser.add_argument("--deadline", type=float, default=None, help="unix seconds: skip what would end later")
    args = parser.parse_args(argv)
    if args.section == "table":
        print(table(read_rows(args.rows)))
        return 0
    SECTIONS[args.section](Rows(args.rows, args.section), Budget(args.deadline))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    sys.exit(main())
