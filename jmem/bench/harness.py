"""The sweep: every strategy and baseline for every workload and R, timed side by side."""

from __future__ import annotations

import dataclasses
import os
import statistics

import jax
import numpy as np

from jmem.engine.host_devices import default_cpu_devices
from jmem.data.subsets import make_keep
from jmem.engine.memory import choose_wave_size
from jmem.engine.strategy import resolve_chunk, resolve_strategy
from jmem.engine.trainer import train_models
from jmem.bench.baselines import BASELINE_RUNNERS, ONE_AT_A_TIME, torch_label, torch_skip_reason, with_torch_threads
from jmem.bench.measure import HostMemoryProbe, Timing, matmul_peak, time_configs
from jmem.bench.tables import machine_info
from jmem.bench.workloads import RATE, SEED, Workload, forward_macs, make_workload, training_flops, xla_forward_flops

STRATEGIES = ("auto", "vmap", "patches", "sequential", "sharded")

def jmem_runner(work: Workload, keep: np.ndarray, strategy: str, devices: list, chunk: int | None = None):
    """A callable training ``keep``'s models with ``train_models``, ``strategy`` and ``devices``
    (several devices: the model axis is sharded over them, as jmem does by default)."""
    cfg = dataclasses.replace(work.train_cfg, strategy=strategy, num_models=keep.shape[0],
                              wave_size=keep.shape[0])

    def run():
        result = train_models(keep, work.dataset, work.model_cfg, cfg, seed=SEED, devices=devices,
                              chunk=chunk)
        jax.block_until_ready(result.params)

    return run


# ============================================================================ rows

def auto_speedups(rows: list[dict]) -> list[dict]:
    """Rows with ``auto_speedup`` = models/s of jmem's ``auto`` row of the same workload and R
    divided by this row's models/s (> 1: auto is faster). None where either is missing."""
    auto = {(r["workload"], r["R"]): r["models_per_s"] for r in rows if r.get("auto") and r.get("models_per_s")}
    out = []
    for row in rows:
        ref = auto.get((row["workload"], row["R"]))
        mine = row.get("models_per_s")
        out.append({**row, "auto_speedup": ref / mine if ref and mine else None})
    return out

def auto_vs_best(rows: list[dict]) -> list[dict]:
    """For each (workload, R): jmem's ``auto`` row against the fastest jmem configuration and
    the fastest row overall (baselines included); ``auto_of_best`` = auto / best jmem."""
    out = []
    keys = sorted({(r["workload"], r["R"]) for r in rows}, key=lambda k: (k[0], k[1]))
    for key in keys:
        mine = [r for r in rows if (r["workload"], r["R"]) == key and r.get("models_per_s")]
        auto = next((r for r in mine if r.get("auto")), None)
        jmem = [r for r in mine if r.get("kind") == "strategy"]
        if auto is None or not jmem:
            continue
        best = max(jmem, key=lambda r: r["models_per_s"])
        overall = max(mine, key=lambda r: r["models_per_s"])
        out.append({"workload": key[0], "R": key[1], "auto": auto["config"],
                    "auto_models_per_s": auto["models_per_s"], "best": best["config"],
                    "best_models_per_s": best["models_per_s"],
                    "auto_of_best": auto["models_per_s"] / best["models_per_s"],
                    "best_overall": overall["config"],
                    "auto_of_best_overall": auto["models_per_s"] / overall["models_per_s"]})
    return out

def with_peak_fractions(rows: list[dict], peaks: dict) -> list[dict]:
    """Rows with ``fraction_of_<dtype>_peak`` for every measured peak (FLOP/s by dtype)."""
    out = []
    for row in rows:
        extra = {f"fraction_of_{d}_peak": (row["flops_per_s"] / p if row.get("flops_per_s") and p else None)
                 for d, p in peaks.items()}
        out.append({**row, **extra})
    return out

def measured_row(work: Workload, size: int, label: str, kind: str, models: int, timing: Timing,
                 train_flops_per_model: float, peak: float) -> dict:
    """One table row from a configuration's timing (``models`` trained per call)."""
    median = timing.median_s
    models_per_s = models / median
    flops = models_per_s * train_flops_per_model
    return {
        "workload": work.name, "R": size, "config": label, "kind": kind, "status": "ok",
        "models_timed": models, "median_s": median, "times_s": timing.times_s,
        "first_call_s": timing.first_s, "compile_s": max(0.0, timing.first_s - median),
        "models_per_s": models_per_s,
        "examples_per_s": models_per_s * work.train_cfg.epochs * work.subset_size,
        "flops_per_s": flops, "fraction_of_peak": flops / peak if peak else None,
        "host_peak_bytes": timing.host_peak_bytes, "host_peak_rss_bytes": timing.host_peak_rss_bytes,
        "device_peak_bytes": timing.device_peak_bytes,
    }

def skipped_row(work: Workload, size: int, label: str, kind: str, reason: str) -> dict:
    return {"workload": work.name, "R": size, "config": label, "kind": kind,
            "status": "skipped", "reason": reason, "models_per_s": None}


# ============================================================================ the sweep


@dataclasses.dataclass
class Options:
    """Everything ``run`` needs, parsed from the command line."""

    models: list
    sizes: list | None
    strategies: list
    baselines: list
    epochs: int | None
    repeats: int
    seq_models: int
    num_train: int | None
    dtype: str
    devices: int
    scaling: bool
    scaling_sizes: list
    scaling_r: int
    scaling_epochs: int
    max_seconds: float
    out: str | None
    quick: bool
    chunks: list = dataclasses.field(default_factory=list)
    peak_size: int | None = None  # side of the peak matmul (None: measure's default)
    torch_threads: list = dataclasses.field(default_factory=lambda: [default_cpu_devices()])


@dataclasses.dataclass(frozen=True)
class StrategyRow:
    """One jmem configuration: a row label, the strategy passed to the trainer, its devices."""

    label: str
    strategy: str
    devices: tuple
    is_auto: bool
    chunk: int | None = None  # models vectorised together per device (None: the trainer's rule)

def plan_strategies(work: Workload, wanted: list, devices: list, chunks: tuple = ()) -> tuple[list, list]:
    """(the jmem configurations to run, notes).

    ``vmap``, ``patches`` and ``sequential`` run on one device. ``sharded`` is ``auto``'s
    strategy with the model axis sharded over all ``devices``; with several devices that is
    what jmem does by default, so it is the ``auto`` row; with one device, ``auto`` is the row
    of the strategy it resolves to. Nothing is run twice, and ``patches`` is dropped for an
    MLP (the same program as ``vmap``). Each of ``chunks`` adds, for every batched row, a row
    ``<label>/c<chunk>`` with that layout (``jmem.engine.strategy.resolve_chunk``; 0 = one
    vmap over a device's whole block) unless it is the layout the rule picks anyway.
    """
    resolved = resolve_strategy(work.model_cfg, work.train_cfg)
    one = (devices[0],)
    sharded = len(devices) > 1
    auto_label = "sharded" if sharded else resolved
    notes, rows = [], {}
    for name in wanted:
        label = auto_label if name == "auto" else name
        if label == "patches" and work.model_cfg.kind == "mlp":
            notes.append("patches: the same program as vmap for an MLP (not run)")
        elif label == "sharded" and not sharded:
            notes.append("sharded: needs >= 2 devices (on CPU: --devices 2 at start-up)")
        elif label == "sharded":
            rows[label] = StrategyRow(label, resolved, tuple(devices), True)
        elif label not in rows:
            rows[label] = StrategyRow(label, label, one, label == auto_label)
    if auto_label not in rows:  # every ratio is stated against auto
        rows = {auto_label: StrategyRow(auto_label, resolved, tuple(devices) if sharded else one, True), **rows}
    if sharded:
        notes.append(f"sharded (auto): {resolved} with the model axis over {len(devices)} devices; "
                     "the other jmem rows use one device")
    rule = resolve_chunk(work.model_cfg, work.train_cfg, devices[0].platform)
    out = []
    for row in rows.values():
        out.append(row)
        if row.strategy == "sequential":
            continue
        out += [StrategyRow(f"{row.label}/c{c}", row.strategy, row.devices, False, c)
                for c in chunks if c != rule]
    if chunks:
        notes.append(f"/c<k>: k models vectorised together per device, the rest of a device's block "
                     f"run one chunk after another in the same program (c0: one vmap over the block); "
                     f"the rule here picks chunk {rule}")
    return out, notes

def fits_in_memory(work: Workload, size: int) -> bool:
    """Whether a wave of ``size`` models fits, by the trainer's own memory estimate."""
    cfg = dataclasses.replace(work.train_cfg, num_models=size, wave_size=0)
    return choose_wave_size(work.model_cfg, cfg, work.dataset, max_wave=size) >= size

def _predicted_seconds(history: dict, label: str, models: int) -> float | None:
    if label not in history:
        return None
    prev_models, prev_seconds = history[label]
    return prev_seconds * models / prev_models

def bench_workload(work: Workload, opts: Options, peak_samples: list, peak_fn, backend: str,
                   log=print) -> tuple[list, list]:
    """All rows of one workload: (rows, notes). Configurations of one R alternate."""
    devices = jax.local_devices()[:opts.devices] if opts.devices else jax.local_devices()
    strategies, notes = plan_strategies(work, opts.strategies, devices, tuple(opts.chunks))
    auto = next(s.label for s in strategies if s.is_auto)
    macs = forward_macs(work.model_cfg, work.dataset.num_classes, work.dataset.example_shape)
    per_model = training_flops(macs, work.train_cfg.epochs * work.subset_size)
    rows, history = [], {}  # history: label -> (models, median s) of the previous R
    for size in (opts.sizes or work.sizes):
        keep, _ = make_keep(SEED, size, work.dataset.num_train, "fixed", RATE)
        if not fits_in_memory(work, size):
            for label in [s.label for s in strategies] + opts.baselines:
                rows.append(skipped_row(work, size, label, "-", "does not fit in memory"))
            continue
        configs, models, skipped = {}, {}, []
        candidates = [(s.label, "strategy", s, None) for s in strategies]
        for name in opts.baselines:
            threads = opts.torch_threads if name.startswith("torch") else [None]
            candidates += [(torch_label(name, t, default_cpu_devices()) if t else name, "baseline", None, t)
                           for t in threads]
        for label, kind, strategy, threads in candidates:
            base = label.split("/")[0]
            count = min(size, opts.seq_models) if base in ONE_AT_A_TIME else size
            reason = torch_skip_reason(base, work, backend) if base.startswith("torch") else None
            guess = _predicted_seconds(history, label, count)
            if reason is None and guess is not None and guess > opts.max_seconds and label != auto:
                reason = f"predicted {guess:.0f} s per call > --max-seconds {opts.max_seconds:.0f}"
            if reason:
                skipped.append(skipped_row(work, size, label, kind, reason))
                continue
            sub = keep[:count]
            if strategy:
                configs[label] = jmem_runner(work, sub, strategy.strategy, list(strategy.devices),
                                             strategy.chunk)
            else:
                fn = BASELINE_RUNNERS[base](work, sub)
                configs[label] = with_torch_threads(fn, threads) if threads else fn
            models[label] = (count, kind)
        log(f"[bench] {work.name} R={size}: warming up and timing {', '.join(configs)}")
        timings = time_configs(configs, opts.repeats, between=lambda: peak_samples.append(peak_fn()))
        for label, timing in timings.items():
            count, kind = models[label]
            row = measured_row(work, size, label, kind, count, timing, per_model,
                               statistics.median(peak_samples))
            row["auto"] = label == auto
            rows.append(row)
            history[label] = (count, timing.median_s)
            log(f"[bench]   {label:13s} {row['models_per_s']:9.2f} models/s  "
                f"(median {row['median_s']:.2f} s, first call {row['first_call_s']:.1f} s)")
        rows += skipped
    return auto_speedups(rows), notes

def bench_scaling_n(opts: Options, peak_samples: list, peak_fn, log=print) -> list:
    """Seconds of ``auto`` for R = ``scaling_r`` digits MLPs vs the training-set size N."""
    rows, configs, works = [], {}, {}
    for n in opts.scaling_sizes:
        work = make_workload("mlp", "cpu", opts.scaling_epochs, n, opts.dtype)
        keep, _ = make_keep(SEED, opts.scaling_r, n, "fixed", RATE)
        configs[f"N={n}"] = jmem_runner(work, keep, "auto", None)
        works[f"N={n}"] = work
    log(f"[bench] scaling in N at R={opts.scaling_r}: {', '.join(configs)}")
    timings = time_configs(configs, opts.repeats, between=lambda: peak_samples.append(peak_fn()))
    base = None
    for label, timing in timings.items():
        work = works[label]
        per_example = timing.median_s / work.dataset.num_train
        base = base or per_example
        rows.append({"N": work.dataset.num_train, "R": opts.scaling_r, "epochs": opts.scaling_epochs,
                     "median_s": timing.median_s, "first_call_s": timing.first_s,
                     "s_per_example": per_example, "relative_cost_per_example": per_example / base,
                     "host_peak_bytes": timing.host_peak_bytes})
    return rows

def scaling_in_r(rows: list, workload: str) -> list:
    """Seconds per model of ``auto`` vs R (from the main rows), relative to the smallest R."""
    autos = sorted((r for r in rows if r["workload"] == workload and r.get("auto")
                    and r.get("models_per_s")), key=lambda r: r["R"])
    out, base = [], None
    for r in autos:
        per_model = 1.0 / r["models_per_s"]
        base = base or per_model
        out.append({"R": r["R"], "median_s": r["median_s"], "s_per_model": per_model,
                    "relative_cost_per_model": per_model / base})
    return out

def benchmark(opts: Options, log=print) -> dict:
    """Run every requested workload and return the JSON-ready result."""
    backend = jax.default_backend()
    load_before = os.getloadavg()
    peak_fn = lambda: matmul_peak(opts.dtype, size=opts.peak_size)  # noqa: E731
    samples = [peak_fn()]
    log(f"[bench] peak {opts.dtype} matmul: {samples[0] / 1e9:.1f} GFLOP/s")
    rows, workloads, scaling_r = [], [], {}
    for name in opts.models:
        work = make_workload(name, backend, opts.epochs, opts.num_train, opts.dtype)
        work_rows, notes = bench_workload(work, opts, samples, peak_fn, backend, log)
        rows += work_rows
        macs = forward_macs(work.model_cfg, work.dataset.num_classes, work.dataset.example_shape)
        workloads.append({
            "name": name, "dataset": work.dataset.name, "N": work.dataset.num_train,
            "example_shape": list(work.dataset.example_shape), "model": dataclasses.asdict(work.model_cfg),
            "train": dataclasses.asdict(work.train_cfg), "rate": RATE, "subset_size": work.subset_size,
            "epochs": work.train_cfg.epochs, "forward_macs": macs,
            "xla_forward_flops": xla_forward_flops(work.model_cfg, work.dataset.num_classes,
                                                   work.dataset.example_shape),
            "train_flops_per_model": training_flops(macs, work.train_cfg.epochs * work.subset_size),
            "note": work.note, "notes": notes + (["baselines train without BatchNorm (norm=none)"]
                                                 if work.model_cfg.norm != "none" else []),
        })
        scaling_r[name] = scaling_in_r(rows, name)
    scaling_n = bench_scaling_n(opts, samples, peak_fn, log) if opts.scaling else []
    meta = {**machine_info(), "load_average_before": load_before, "load_average_after": os.getloadavg()}
    peaks = {opts.dtype: statistics.median(samples)}
    for other in ("float32", "bfloat16"):
        if other not in peaks:  # the other dtype's peak, once (for "% of bf16 / fp32 peak")
            peaks[other] = matmul_peak(other, size=opts.peak_size, repeats=3)
    rows = with_peak_fractions(rows, peaks)
    return {"meta": meta, "peak_dtype": opts.dtype, "peak_flops": statistics.median(samples),
            "peak_samples": samples, "peaks": peaks, "host_memory_method": HostMemoryProbe().method,
            "workloads": workloads, "rows": rows, "auto_vs_best": auto_vs_best(rows),
            "scaling_r": scaling_r, "scaling_n": scaling_n}
