"""``jmem train``: draw keep-masks, train R models wave by wave, write the run directory.

The run directory (see ``jmem.artifacts`` and the README) is written so that nothing already
computed is lost: every finished wave's outputs land atomically under ``waves/`` before the
next wave starts, a re-run of the same command skips finished waves, and the final arrays
are assembled only when every model is done.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from jmem import artifacts, config as config_lib
from jmem.config import Config
from jmem.dataset import Dataset
from jmem.errors import JmemError

WAVES_DIR = "waves"


@dataclasses.dataclass(frozen=True)
class RunInputs:
    """Everything a run trains on, derived deterministically from the config.

    keep: bool[R, N]; model_rates: float32[R]; labels_train: int32[N] (canaries re-drawn);
    canaries: bool[N]; dataset: the dataset with ``y_train = labels_train``.
    """

    dataset: Dataset
    keep: np.ndarray
    model_rates: np.ndarray
    labels_train: np.ndarray
    canaries: np.ndarray


def prepare_inputs(config: Config, dataset: Dataset) -> RunInputs:
    """Canaries and keep-masks for ``config`` on ``dataset`` (no training, no files)."""
    from jmem.canaries import make_canaries
    from jmem.subsets import make_keep

    labels, canaries = make_canaries(config.seed, dataset.y_train, dataset.num_classes,
                                     config.subsets.canary_fraction)
    keep, model_rates = make_keep(config.seed, config.train.num_models, dataset.num_train,
                                  config.subsets.design, config.subsets.rates)
    dataset = dataclasses.replace(dataset, y_train=np.asarray(labels, np.int32))
    return RunInputs(dataset, keep, np.asarray(model_rates, np.float32),
                     np.asarray(labels, np.int32), np.asarray(canaries, bool))


def measure_leakage(config: Config, dataset: Dataset):
    """Near-duplicates of ``dataset`` and, if ``config.leakage.clean_test``, the dataset with a
    leakage-free extra test set attached. Returns (dataset, LeakageResult)."""
    from jmem import leakage

    threshold = config.leakage.threshold or None
    result = leakage.find_leakage(dataset, metric=config.leakage.metric, threshold=threshold)
    if config.leakage.clean_test:
        # Published lists (CIFAR) beat detection where they exist; detection elsewhere.
        known = None if dataset.name in leakage.KNOWN_LIST_ROWS else result
        dataset = leakage.leakage_free_test(dataset, known)
    return dataset, result


def check_workdir(workdir: Path, config: Config) -> bool:
    """Refuse a workdir holding a different run; return True if it holds this run already."""
    workdir = Path(workdir)
    if not workdir.exists():
        return False
    recorded_path = workdir / artifacts.CONFIG
    if not recorded_path.exists():
        if any(workdir.iterdir()):
            raise JmemError(f"--workdir {str(workdir)!r} is not empty and holds no {artifacts.CONFIG}; "
                            "choose a new or empty directory")
        return False
    recorded = artifacts.load_json(recorded_path)
    difference = config_lib.first_difference(recorded, config_lib.to_dict(config))
    if difference:
        raise JmemError(f"--workdir {str(workdir)!r} holds a different run ({difference}); "
                        "use another workdir or the same config")
    return True


def wave_path(workdir: Path, start: int, stop: int) -> Path:
    return Path(workdir) / WAVES_DIR / f"models_{start:07d}_{stop:07d}.npz"


def finished_models(workdir: Path, num_models: int) -> np.ndarray:
    """bool[R]: models whose outputs are already in a wave file."""
    done = np.zeros(num_models, bool)
    for path in sorted((Path(workdir) / WAVES_DIR).glob("models_*.npz")):
        start, stop = (int(p) for p in path.stem.split("_")[1:3])
        done[start:stop] = True
    return done


def pending_waves(done: np.ndarray, wave_size: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) ranges of unfinished models, each at most ``wave_size`` long."""
    waves, r = [], 0
    while r < done.size:
        if done[r]:
            r += 1
            continue
        stop = r
        while stop < done.size and not done[stop] and stop - r < wave_size:
            stop += 1
        waves.append((r, stop))
        r = stop
    return waves


def train_wave(inputs: RunInputs, config: Config, start: int, stop: int) -> dict:
    """Train models ``start..stop-1`` and predict their margins everywhere.

    Returns arrays keyed by name: margins_train float32[W, N], margins_test float32[W, T],
    margins_<extra> float32[W, T_k], diverged bool[W], final_loss float32[W].
    """
    from jmem.predict import predict_margins
    from jmem.train import train_models

    ids = np.arange(start, stop)
    result = train_models(inputs.keep[start:stop], inputs.dataset, config.model, config.train,
                          config.seed, model_ids=ids)
    data = inputs.dataset
    out = {
        "margins_train": predict_margins(config.model, result.params, result.model_state,
                                         data.x_train, data.y_train),
        "margins_test": predict_margins(config.model, result.params, result.model_state,
                                        data.x_test, data.y_test),
        "diverged": np.asarray(result.diverged, bool),
        "final_loss": np.asarray(result.final_loss, np.float32),
    }
    for name, (x, y) in data.extra_tests.items():
        out[f"margins_{name}"] = predict_margins(config.model, result.params,
                                                 result.model_state, x, y)
    return {k: np.asarray(v) for k, v in out.items()}


def save_wave(workdir: Path, start: int, stop: int, arrays: dict) -> None:
    path = wave_path(workdir, start, stop)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    tmp.replace(path)


def assemble(workdir: Path, inputs: RunInputs) -> dict:
    """Concatenate every wave file into the final run-directory arrays and ``models.csv``."""
    workdir = Path(workdir)
    waves = sorted((workdir / WAVES_DIR).glob("models_*.npz"))
    parts: dict[str, list] = {}
    for path in waves:
        with np.load(path) as wave:
            for key in wave.files:
                parts.setdefault(key, []).append(wave[key])
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    for key, value in arrays.items():
        if key.startswith("margins_"):
            artifacts.save_array(workdir / f"{key}.npy", value.astype(np.float32))
    metrics = model_metrics(inputs, arrays)
    artifacts.save_text(workdir / artifacts.MODEL_METRICS, metrics_csv(metrics))
    for path in waves:
        path.unlink()
    (workdir / WAVES_DIR).rmdir()
    return metrics


def model_metrics(inputs: RunInputs, arrays: dict) -> dict:
    """Per-model columns: id, rate, subset size, diverged, final loss, test accuracies."""
    metrics = {
        "model": np.arange(inputs.keep.shape[0]),
        "rate": inputs.model_rates,
        "subset_size": inputs.keep.sum(axis=1),
        "diverged": arrays["diverged"].astype(int),
        "final_loss": arrays["final_loss"],
        "test_accuracy": (arrays["margins_test"] > 0).mean(axis=1),
    }
    for name in inputs.dataset.extra_tests:
        metrics[f"{name}_accuracy"] = (arrays[f"margins_{name}"] > 0).mean(axis=1)
    return metrics


def metrics_csv(metrics: dict) -> str:
    names = list(metrics)
    lines = [",".join(names)]
    for row in zip(*(metrics[n] for n in names)):
        lines.append(",".join(_fmt(v) for v in row))
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    return str(int(value)) if isinstance(value, (bool, np.bool_, np.integer)) else str(value)


def write_inputs(workdir: Path, config: Config, inputs: RunInputs) -> None:
    """The run's inputs: config, masks, labels, canaries (written once, before training)."""
    workdir = Path(workdir)
    data = inputs.dataset
    artifacts.save_array(workdir / artifacts.KEEP, inputs.keep)
    artifacts.save_array(workdir / artifacts.MODEL_RATES, inputs.model_rates)
    artifacts.save_array(workdir / artifacts.LABELS_TRAIN, inputs.labels_train)
    artifacts.save_array(workdir / artifacts.LABELS_TEST, data.y_test)
    if inputs.canaries.any():
        artifacts.save_array(workdir / artifacts.CANARIES, inputs.canaries)
    for name, (_, y) in data.extra_tests.items():
        artifacts.save_array(workdir / artifacts.labels_extra_name(name), y)
    # config.json last: its presence marks a run directory whose inputs are complete.
    artifacts.save_json(workdir / artifacts.CONFIG, config_lib.to_dict(config))


def run_training(config: Config, workdir: Path, dataset: Dataset, progress: bool = True,
                 log=print) -> dict:
    """Train every model of ``config`` into ``workdir``; resumes finished waves.

    Returns a summary: models, models/s, diverged count, mean test accuracy.
    """
    from jmem.train import choose_wave_size

    workdir = Path(workdir)
    resuming = check_workdir(workdir, config)
    dataset, leaks = measure_leakage(config, dataset)
    inputs = prepare_inputs(config, dataset)
    if (workdir / artifacts.MARGINS_TRAIN).exists() and not (workdir / WAVES_DIR).exists():
        log(f"{workdir}: training already complete; nothing to do")
        return summarize(workdir, inputs, seconds=0.0, trained=0)
    if not resuming:
        workdir.mkdir(parents=True, exist_ok=True)
        from jmem.leakage import format_leakage_summary, write_duplicates_csv

        write_duplicates_csv(workdir / artifacts.DUPLICATES, leaks)
        log(format_leakage_summary(leaks, dataset))
        write_inputs(workdir, config, inputs)
    num_models = config.train.num_models
    wave_size = config.train.wave_size or choose_wave_size(config.model, config.train, inputs.dataset)
    wave_size = max(1, min(wave_size, num_models))
    done = finished_models(workdir, num_models)
    waves = pending_waves(done, wave_size)
    if done.any():
        log(f"{workdir}: resuming, {int(done.sum())} of {num_models} models already trained")
    log(f"training {num_models - int(done.sum())} models in {len(waves)} wave(s) of up to {wave_size} "
        f"({config.model.kind}, strategy={config.train.strategy})")
    bar = _progress_bar(num_models, int(done.sum()), progress)
    started = time.perf_counter()
    for start, stop in waves:
        save_wave(workdir, start, stop, train_wave(inputs, config, start, stop))
        bar.update(stop - start)
    bar.close()
    seconds = time.perf_counter() - started
    assemble(workdir, inputs)
    return summarize(workdir, inputs, seconds, trained=sum(b - a for a, b in waves))


def summarize(workdir: Path, inputs: RunInputs, seconds: float, trained: int) -> dict:
    margins_test = artifacts.load_array(Path(workdir) / artifacts.MARGINS_TEST, mmap=True)
    with open(Path(workdir) / artifacts.MODEL_METRICS) as f:
        header = f.readline().strip().split(",")
        diverged = sum(int(line.split(",")[header.index("diverged")]) for line in f)
    accuracy = (np.asarray(margins_test) > 0).mean(axis=1)
    return {
        "workdir": str(workdir),
        "models": int(inputs.keep.shape[0]),
        "trained_now": int(trained),
        "seconds": round(seconds, 2),
        "models_per_second": round(trained / seconds, 2) if seconds > 0 else None,
        "diverged": int(diverged),
        "test_accuracy_mean": float(accuracy.mean()),
        "test_accuracy_std": float(accuracy.std()),
    }


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="model", desc="train", disable=not enabled,
                dynamic_ncols=True, smoothing=0.1)
