"""``jmem retrain``: the stage that runs the removal experiment on a scored run directory.

1. reads the scored run (diverged estimation models left out) and selects the removal sets
   of every pool (:mod:`.selection`);
2. builds the arms (:mod:`.design`): never a canary removed, never a canary drawn;
3. trains every arm x seed as one row of a keep matrix with the wave runner
   (:mod:`jmem.study.waves`: waves, checkpoints, SIGTERM, resume, the lock) into
   ``RUN_DIR/retrain/``, on the dataset's **true labels** (the canaries' re-drawn labels were
   the estimation run's instrument) with the coupled data order (``retrain.data_order``);
4. measures every model on every test set (:mod:`.measurement`) and computes the headline
   family, the factor effects and the exploratory comparisons (:mod:`.statistics`);
5. writes ``retrain_models.csv``, ``verdict.txt`` (:mod:`.verdict`: gates, then words),
   ``ablation.json`` and ``retrain.json`` (last: it marks a complete experiment).

Provenance: ``retrain/keep.npy`` (bool[M, N], which examples each retrained model saw),
``retrain/labels_train.npy`` (int32[N], the labels they saw: the dataset's own) and
``retrain/model_ids.npy`` (int64[M]).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path

import numpy as np

from jmem import config as config_lib
from jmem.config import Config, RetrainConfig, ScoreConfig
from jmem.data.dataset import Dataset
from jmem.errors import JmemError
from jmem.jsonable import to_jsonable
from jmem.data import removal
from jmem.study import faults, inputs, integrity, processes, rundir, scoring, training, waves
from jmem.study.retrain import measurement, selection, statistics, verdict
from jmem.study.retrain.design import MODEL_ID_OFFSET, Design, build_design
from jmem.study.retrain.measurement import Outcomes

RETRAIN_DIR = "retrain"
CONFIG = "config.json"            # the resolved retrain section (written last of the inputs)
KEEP = "keep.npy"                 # bool[M, N], row = arm x seed
MODEL_IDS = "model_ids.npy"       # int64[M]
LABELS = "labels_train.npy"       # int32[N], the labels the retrained models saw (true ones)
MODELS_CSV = "retrain_models.csv"
VERDICT = "verdict.txt"


def load_scored_run(run_dir) -> tuple[Config, scoring.RunArrays, ScoreConfig]:
    """The run's config, arrays and scoring options; refuses an unfinished or unscored run."""
    d = Path(run_dir)
    if not (d / rundir.CONFIG).exists():
        raise JmemError(f"run directory {str(d)!r} holds no {rundir.CONFIG}; give a directory "
                        "written by `jmem run` or `jmem train`")
    if not training.is_complete(d):
        raise JmemError(f"run directory {str(d)!r} is not fully trained (no {rundir.MODEL_METRICS}); "
                        "finish `jmem train` first")
    integrity.verify_run(d)  # a damaged or changed input or output: refuse, naming it
    if not (d / rundir.THRESHOLDS).exists():
        raise JmemError(f"run directory {str(d)!r} is not scored (no {rundir.THRESHOLDS}); "
                        f"run `jmem score {d}` first")
    inputs.verify_scores(d)  # damaged, interrupted or stale scores: refuse, naming them
    config = config_lib.from_dict(rundir.load_json(d / rundir.CONFIG))
    run = scoring.load_run(d)
    inputs.check_diverged(d, run.diverged)
    return config, run, scoring.recorded_options(d)


def retrain_dataset(run_dir, config: Config, run: scoring.RunArrays, dataset: Dataset | None) -> tuple[Dataset, np.ndarray]:
    """(the dataset the retrained models see, clean bool[T]): the dataset's own labels, never
    the canaries' re-drawn ones; the same extra test sets as the estimation run (test_clean
    attached as ``jmem train`` does); ``clean`` marks the leakage-free examples of the main
    test set (all True without a leakage-free test set)."""
    from jmem.data import leakage as leak
    from jmem.data.leakage.clean import clean_test_mask
    from jmem.study.leakage import attach_clean_test, leaked_in_run

    if dataset is None:
        dataset = inputs.load_dataset(config)
    inputs.verify_dataset(run_dir, config, dataset)  # the data the run was trained on, or refuse
    # The leakage-free test set drops the test examples the training stage found leaked
    # (duplicates.csv): detecting them again would repeat its work (with leakage.features,
    # training a model).
    known = (lambda: leaked_in_run(run_dir, dataset.num_test))
    dataset = attach_clean_test(config, dataset, known)
    clean = np.ones(dataset.num_test, bool)
    if config.leakage.clean_test:
        clean = clean_test_mask(dataset, None if dataset.name in leak.KNOWN_LIST_ROWS else known())
    if dataset.num_train != run.labels_train.size:
        raise JmemError(f"dataset {dataset.name!r} has {dataset.num_train} training examples; the "
                        f"run has {run.labels_train.size}")
    canary = run.canaries if run.canaries is not None else np.zeros(dataset.num_train, bool)
    changed = np.flatnonzero((dataset.y_train != run.labels_train) & ~canary)
    if changed.size:
        raise JmemError(f"dataset {dataset.name!r}: training label {int(changed[0])} differs from the "
                        f"run's labels_train.npy (and it is no canary): the data changed since training")
    if not np.array_equal(dataset.y_test, run.test_sets["test"][1]):
        raise JmemError(f"dataset {dataset.name!r}: test labels differ from the run's labels_test.npy")
    if sorted(dataset.extra_tests) != sorted(k for k in run.test_sets if k != "test"):
        raise JmemError(f"dataset {dataset.name!r} has extra test sets {sorted(dataset.extra_tests)}; "
                        f"the run has {sorted(k for k in run.test_sets if k != 'test')}")
    for name, (_, labels) in dataset.extra_tests.items():
        if not np.array_equal(labels, run.test_sets[name][1]):
            raise JmemError(f"dataset {dataset.name!r}: test set {name!r} differs from the run's "
                            f"{rundir.labels_extra_name(name)}")
    if "test_clean" in run.test_sets and int(clean.sum()) != run.test_sets["test_clean"][1].size:
        raise JmemError(f"the leakage-free test set has {int(clean.sum())} examples now; the run's has "
                        f"{run.test_sets['test_clean'][1].size}")
    return dataclasses.replace(dataset, y_train=np.asarray(dataset.y_train, np.int32)), clean


def _recorded(cfg: RetrainConfig, seed: int) -> dict:
    return {"seed": seed, "retrain": config_lib.to_dict(cfg)}


def _check_retrain_dir(out: Path, cfg: RetrainConfig, seed: int, keep: np.ndarray) -> bool:
    """Refuse a retrain/ holding another experiment (other settings, scores, removal file or
    selections) or damaged files; True if it holds this one."""
    return waves.check_stage_dir(out, _recorded(cfg, seed), keep,
                                 {KEEP, MODEL_IDS, LABELS, rundir.MANIFEST}, "removal experiment",
                                 config_name=CONFIG,
                                 check_inputs=lambda: inputs.check_retrain_dir(out, cfg.remove))


def run_retrain(run_dir, overrides: list[str] = (), dataset: Dataset | None = None,
                execution: waves.Execution = waves.Execution(), progress: bool = True,
                log=print, retrain_config: RetrainConfig | None = None) -> dict:
    """The removal experiment on the scored run ``run_dir``; resumable (see module docstring).

    overrides: ``retrain.FIELD=VALUE`` strings (or give ``retrain_config``). dataset: the
    run's dataset (default: loaded from its config). Returns a summary with the verdict.
    Writes ``RUN_DIR/retrain/`` (nothing before every input is validated).
    """
    from jmem.engine import parallel

    began = time.perf_counter()
    run_dir = Path(run_dir)
    config, run, opt = load_scored_run(run_dir)
    cfg = retrain_config if retrain_config is not None else config_lib.apply_overrides(
        config, list(overrides), sections=("retrain",), command="jmem retrain").retrain
    run = scoring.without_diverged(run)
    labels_test = run.test_sets["test"][1]
    num_classes = int(max(run.labels_train.max(), labels_test.max())) + 1
    # Bad input fails here, cheaply, before any file is written.
    user = removal.load_removal(cfg.remove, run.labels_train.size) if cfg.remove else None
    chosen = selection.select(run, cfg, opt, user)
    dataset, clean = retrain_dataset(run_dir, config, run, dataset)
    design = build_design(chosen.candidates, dataset.y_train, num_classes,
                          eligible=scoring.eligible_examples(run), score=chosen.mem,
                          seeds=cfg.seeds, seed=config.seed, lowest=cfg.lowest)
    # The proxies are an estimation-run measurement: retrained models need not carry them.
    train_cfg = dataclasses.replace(config.train, data_order=cfg.data_order, record_proxies=False)
    job = waves.Job(dataset, design.keep, config.model, train_cfg, config.seed, design.model_ids)
    out = run_dir / RETRAIN_DIR
    devices = parallel.local_devices(execution.devices)
    with waves.StopRequest() as stop_request, contextlib.ExitStack() as lock:
        complete, wave_size, done = processes.decide(
            lambda: _prepare_out(out, job, cfg, config.seed, dataset, len(devices), lock, log),
            job.num_models, f"start the removal experiment in {str(out)!r}")
        trained, train_seconds, text = 0, 0.0, None
        if complete:
            if parallel.process_index() == 0:
                text = rundir.load_json(out / rundir.RETRAIN)["verdict"]
        else:
            trained, train_seconds = processes.train_everywhere(
                job, out, wave_size, done, "jmem-retrain-waves-written", execution=execution,
                stop_request=stop_request, progress=progress, log=log, label="retrain")
            canaries = int(run.canaries.sum()) if run.canaries is not None else 0
            text = processes.on_primary(
                lambda: finish(out, design, chosen, job.keep, cfg, config, clean,
                               rundir.load_json(run_dir / rundir.THRESHOLDS), canaries),
                f"finish the removal experiment in {str(out)!r}")
    summary = {"retrain_dir": str(out), "models": job.num_models, "trained_now": trained,
               "train_seconds": round(train_seconds, 2),
               "models_per_second": round(trained / train_seconds, 2) if train_seconds > 0 and trained else None,
               "seconds": round(time.perf_counter() - began, 2)}
    if parallel.process_index() != 0:  # the verdict is process 0's: the others only trained
        return {**summary, "process": parallel.process_index()}
    return {**summary, "verdict": text}


def _prepare_out(out: Path, job: waves.Job, cfg: RetrainConfig, seed: int, dataset: Dataset,
                 num_devices: int, lock: contextlib.ExitStack, log) -> tuple[bool, int, np.ndarray]:
    """Process 0, before any training: check and lock ``retrain/``, write its inputs or find
    what an earlier run finished. Returns (complete, wave_size, done bool[M])."""
    from jmem.engine import parallel

    resuming = waves.open_stage_dir(out, lambda: _check_retrain_dir(out, cfg, seed, job.keep), lock)
    if resuming and (out / rundir.RETRAIN).exists():
        waves.cleanup(out)
        log(f"{out}: removal experiment already complete")
        return True, 0, np.zeros(job.num_models, bool)
    if not resuming:
        rundir.save_array(out / KEEP, job.keep)
        rundir.save_array(out / MODEL_IDS, job.model_ids)
        rundir.save_array(out / LABELS, np.asarray(dataset.y_train, np.int32))
        faults.point("inputs")
        config_text = rundir.json_text(_recorded(cfg, seed))
        inputs.record_retrain_inputs(out, cfg.remove, [KEEP, MODEL_IDS, LABELS], config_text)
        rundir.save_text(out / CONFIG, config_text)
    done = waves.resume_state(out, job)  # damaged or unlisted wave files are trained again
    if (out / MODELS_CSV).exists() and (out / rundir.MARGINS_TEST).exists():
        done[:] = True  # assembled: retrain.json was deleted to re-analyse (see finish)
    if done.any():
        log(f"{out}: resuming, {int(done.sum())} of {done.size} models already trained")
    return False, waves.auto_wave_size(job, num_devices, parallel.process_count()), done


def finish(out: Path, design: Design, chosen: selection.Selections, keep: np.ndarray, cfg: RetrainConfig,
           config: Config, clean: np.ndarray, thresholds: dict, canaries: int) -> str:
    """Margins arrays, then retrain_models.csv, verdict.txt, ablation.json and retrain.json
    (last: it marks a complete experiment), then the waves and checkpoints go. Returns the
    verdict. With every model trained and assembled but no retrain.json (deleted to re-analyse
    with new statistics), the stored margins and retrain_models.csv are read instead."""
    assembled = (waves.assemble(out, keep.shape[0]) if any((out / waves.WAVES_DIR).glob("models_*.npz"))
                 or not (out / MODELS_CSV).exists() else stored_outcomes(out))
    margins_train = rundir.load_array(out / rundir.MARGINS_TRAIN, mmap=True)
    outcomes = measurement.outcomes_from_arrays(assembled.arrays, margins_train, keep, clean)
    num_examples = keep.shape[1]
    seed = config.seed
    pooled = statistics.pooled_selection(design, outcomes)
    comparisons = statistics.compare_all(design, outcomes, seed, cfg.resamples, cfg.alpha, pooled)
    accuracy = statistics.arm_accuracies(design, outcomes, seed, cfg.resamples)
    share = statistics.shares(design, outcomes, seed, cfg.resamples)
    head, gate_results, words = None, {}, {}
    if cfg.ablation:
        head = statistics.headline(design, outcomes, cfg.alpha, seed, cfg.resamples)
        gate_results = verdict.gates(design, head, thresholds.get("by_rate") or {}, chosen.ablation_rates, cfg)
        text, words = verdict.verdict_text(design, head, gate_results, chosen.ablation_rates,
                                           config.data.name, num_examples, canaries)
        rundir.save_json(out / rundir.ABLATION, to_jsonable({
            "rates": chosen.ablation_rates, "matched_k": chosen.matched_k, "headline": head,
            "gates": gate_results, "words": words}))
    else:
        text = ("Removal comparisons (selected vs class-matched random, pp, interval for new seeds, test "
                "data" + (" and selections" if design.pools == 2 else "") + "):\n"
                + verdict.methods_text(comparisons) + "\n")
    rundir.save_text(out / MODELS_CSV, models_csv(design, outcomes))
    rundir.save_text(out / VERDICT, text)
    summary = rundir.json_text(record(design, outcomes, comparisons, accuracy, share, chosen, cfg, num_examples,
                                      text, head, gate_results, words))
    written = [*assembled.files, MODELS_CSV, VERDICT] + [rundir.ABLATION] * (head is not None)
    inputs.record_retrain_outputs(out, written, {rundir.RETRAIN: summary})
    rundir.save_text(out / rundir.RETRAIN, summary)
    faults.point("cleanup")
    waves.cleanup(out)
    return text


def stored_outcomes(out: Path) -> waves.Assembled:
    """What :func:`jmem.study.waves.assemble` returned, read back from a finished experiment:
    the ``margins_<set>.npy`` files (all but the training margins loaded) and ``diverged`` /
    ``final_loss`` from ``retrain_models.csv``."""
    files = sorted(p.name for p in out.glob("margins_*.npy"))
    arrays = {Path(f).stem: rundir.load_array(out / f) for f in files if f != rundir.MARGINS_TRAIN}
    rows = rundir.read_csv_columns(out / MODELS_CSV)
    arrays["diverged"] = rows["diverged"].astype(bool)
    arrays["final_loss"] = rows["final_loss"].astype(np.float32)
    return waves.Assembled(files, arrays)


def models_csv(design: Design, outcomes: Outcomes) -> str:
    """One row per retrained model: arm, pool, seed, model id, removed count, diverged, final
    loss, training accuracy (kept examples), and the accuracy on the test set, the leakage-free
    test set and every extra test set."""
    names = [t for t in measurement.test_set_names(outcomes) if t not in ("influenced", "rest")]
    header = ["row", "arm", "kind", "pool", "seed", "model_id", "removed", "diverged", "final_loss",
              "train_accuracy", *[f"{t}_accuracy" for t in names]]
    lines = [",".join(header)]
    ids = design.model_ids
    for arm in design.arms:
        for s, r in enumerate(design.rows(arm.name)):
            cells = [str(r), arm.name, arm.kind, str(arm.pool), str(s), str(int(ids[r])),
                     str(int(arm.removed[s].sum())), str(int(outcomes.diverged[r])),
                     f"{float(outcomes.final_loss[r]):.6g}", f"{float(outcomes.train_accuracy[r]):.6g}"]
            for t in names:
                if t in ("test", "test_clean"):
                    row = outcomes.correct["test"][r][measurement.subset_mask(design, outcomes, t, None, 0)]
                else:
                    row = outcomes.correct[t][r]
                cells.append(f"{float(row.mean()):.6g}" if row.size else "")
            lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def record(design: Design, outcomes: Outcomes, comparisons: list[dict], accuracy: dict, share: dict,
           chosen: selection.Selections, cfg: RetrainConfig, num_examples: int, text: str,
           head: dict | None, gate_results: dict, words: dict) -> dict:
    """The content of retrain.json (schema in docs/run-directory.md)."""
    arms = []
    for arm in design.arms:
        rows = design.rows(arm.name)
        arms.append({"name": arm.name, "kind": arm.kind, "group": arm.group, "pool": arm.pool,
                     "removed": arm.count, "removed_fraction": arm.count / num_examples,
                     "rows": [int(rows[0]), int(rows[-1]) + 1],
                     "diverged": int(outcomes.diverged[rows].sum())})
    return to_jsonable({
        "seeds": design.seeds, "pools": design.pools,
        "methods": list(cfg.method_list), "sweep": list(cfg.sweep), "remove": cfg.remove or None,
        "num_examples": num_examples, "model_id_offset": MODEL_ID_OFFSET,
        "data_order": cfg.data_order, "labels": "the dataset's own (canaries never used)",
        "selection": chosen.record, "matched_k": chosen.matched_k, "ablation_rates": chosen.ablation_rates,
        "groups": {name: {**g.info, "kind": g.kind, "key": g.key} for name, g in design.groups.items()},
        "skipped": design.skipped,
        "arms": arms,
        "test_sets": measurement.test_set_names(outcomes),
        "test_set_sizes": {"test": int(outcomes.clean.size), "test_clean": int(outcomes.clean.sum()),
                           **{k: int(v.shape[1]) for k, v in outcomes.correct.items()
                              if k not in ("test", "test_clean")}},
        "accuracy": accuracy,
        "headline": head, "gates": gate_results, "words": words,
        "comparisons": comparisons,
        "share_of_change": share,
        "excluded_diverged": int(outcomes.diverged.sum()),
        "resamples": cfg.resamples,
        "verdict": text.strip(),
    })
