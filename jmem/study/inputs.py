"""What the stages after training read, verified: nothing stale reused, nothing foreign mixed in.

Training records what a run depends on in ``manifest.json`` (:mod:`jmem.study.integrity`).
The later stages check, before they read or reuse anything, that their inputs are the ones
recorded, and every mismatch is one line naming what changed and the command that recomputes:

* **the dataset** (``jmem retrain``, ``jmem report``'s images, ``jmem leakage RUN``): loaded
  from the run's config (name, ``data_dir``, ``idx_dir``: :func:`load_dataset`) and
  fingerprinted as the models saw it (:func:`trained_dataset`: canary labels re-drawn, the
  leakage-free test set attached), against the manifest's fingerprint (:func:`verify_dataset`);
* **the scores** (``jmem retrain``, ``jmem report``, ``jmem run``'s reuse): the scoring stage
  records its options, the training it read (a digest of the manifest), the diverged models it
  left out and the sha256 of ``scores.csv``, ``thresholds.json`` and ``pairs.csv`` in the
  manifest's ``stages.score`` (:func:`jmem.study.integrity.record_scores`, after the files are
  written; the record is dropped before, so an interrupted scoring is never taken for a
  finished one);
  :func:`scores_problem` says why they cannot be used;
* **the removal experiment** (``retrain/``): its own manifest records (``depends``) the score
  record and the sha256 of the ``retrain.remove`` file it was computed from
  (:func:`retrain_depends`); a resume or reuse with other ones is refused
  (:func:`check_retrain_dir`), and so is a report that would show its verdict beside other
  scores (:func:`verify_report_inputs`).

A run directory without a manifest (built by hand, or by an older jmem) is read as it is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jmem import config as config_lib
from jmem.errors import JmemError
from jmem.study import integrity, rundir

SCORE_FILES = integrity.SCORE_FILES
RETRAIN_DIR = "retrain"  # jmem.study.retrain.stage.RETRAIN_DIR (this module may not import it)


# ----------------------------------------------------------------------------- the dataset


def load_dataset(config):
    """The dataset a config's ``data`` section names (``name``, ``data_dir``, ``idx_dir``):
    the one loader of every command, so no stage ignores a field of the section."""
    from jmem.data.loaders import load_dataset as load

    data = config.data
    return load(data.name, data_dir=data.data_dir or None, idx_dir=data.idx_dir or None)


def trained_dataset(run_dir, config, dataset):
    """``dataset`` (as loaded, :func:`load_dataset`) as the run's models saw it: canary labels
    re-drawn from the config and, with ``leakage.clean_test``, the leakage-free test set the
    run's ``duplicates.csv`` defines. Its fingerprint is the one training recorded."""
    import dataclasses

    from jmem.study.leakage import attach_clean_test, leaked_in_run
    from jmem.study.training import canary_labels

    labels, _ = canary_labels(config, dataset)
    dataset = dataclasses.replace(dataset, y_train=np.asarray(labels, np.int32))
    return attach_clean_test(config, dataset, lambda: leaked_in_run(run_dir, dataset.num_test))


def verify_dataset(run_dir, config, dataset) -> None:
    """:class:`jmem.study.integrity.DatasetChanged` unless ``dataset`` (as loaded) is the one
    the run in ``run_dir`` was trained on (call before the stage reads anything else)."""
    manifest = integrity.load_manifest(run_dir)
    if manifest is None or not manifest["dataset"].get("arrays"):
        return
    integrity.check_files(run_dir, manifest, "inputs")  # duplicates.csv, labels, config.json
    change = integrity.dataset_change(manifest, trained_dataset(run_dir, config, dataset))
    if change is not None:
        raise integrity.DatasetChanged(
            f"run directory {str(run_dir)!r} was trained on a different dataset than "
            f"{dataset.name!r} is now: {change}; restore the data it was trained on, or train a "
            "new run on this data (`jmem run CONFIG --workdir NEW_DIR`)")


def require_run_dir(path: Path) -> None:
    """JmemError unless ``path`` is a run directory (``jmem leakage RUN``): the removal
    experiment's folder also holds a ``config.json``, but it is not a run."""
    path = Path(path)
    recorded = rundir.load_json(path / rundir.CONFIG, expect=dict)
    if "data" not in recorded and "retrain" in recorded:
        parent = path.resolve().parent
        raise JmemError(f"{str(path)!r} is the removal experiment's folder of the run "
                        f"{str(parent)!r}, not a run directory; give {str(parent)!r}")


# ----------------------------------------------------------------------------- the scores


def _score_record(run_dir: Path) -> tuple[dict | None, dict | None]:
    """(manifest, its ``stages.score`` record), either None where absent."""
    manifest = integrity.load_manifest(run_dir)
    return manifest, (manifest["stages"].get("score") if manifest is not None else None)


def scores_problem(run_dir, options=None) -> str | None:
    """Why the scoring stage's files of ``run_dir`` cannot be used (or, with ``options``, a
    :class:`jmem.config.ScoreConfig`, reused for them), in a few words; None if they can."""
    run_dir = Path(run_dir)
    missing = [name for name in SCORE_FILES if not (run_dir / name).exists()]
    if missing:
        return f"not scored (no {missing[0]})"
    manifest, record = _score_record(run_dir)
    if manifest is None:  # built by hand: the options thresholds.json records are all there is
        recorded = rundir.load_json(run_dir / rundir.THRESHOLDS, expect=dict).get("options") or {}
    elif record is None:
        return (f"its {rundir.SCORES} is not recorded in {integrity.MANIFEST} (scoring was "
                "interrupted, or ran under an older jmem)")
    elif record.get("training") != integrity.training_digest(manifest):
        return "scored before its training outputs changed"
    elif (changed := integrity.changed_files(run_dir, record.get("files", {}))) is not None:
        return changed
    else:
        recorded = record.get("options", {})
    if options is not None:
        difference = config_lib.first_difference({"score": recorded},
                                                 {"score": config_lib.to_dict(options)},
                                                 ignore=(), ignore_sections=())
        if difference:
            return f"scored with other options ({difference})"
    return None


def verify_scores(run_dir) -> None:
    """JmemError (one line, with the command that recomputes) unless the scores are usable."""
    problem = scores_problem(run_dir)
    if problem is not None and problem.startswith("not scored"):
        raise JmemError(f"run directory {str(run_dir)!r} is {problem}; run `jmem score {run_dir}` first")
    if problem is not None:
        raise JmemError(f"run directory {str(run_dir)!r}: {problem}; `jmem score {run_dir}` "
                        "recomputes its scores")


def check_diverged(run_dir, diverged) -> None:
    """JmemError unless the diverged models ``diverged`` (bool[R], the one definition of
    :mod:`jmem.study.diverged`) are those the scores left out."""
    _, record = _score_record(Path(run_dir))
    if record is None or "diverged" not in record:
        return
    now = np.flatnonzero(np.asarray(diverged, bool)).tolist() if diverged is not None else []
    if now != record["diverged"]:
        raise JmemError(f"run directory {str(run_dir)!r}: its scores left out the diverged models "
                        f"{record['diverged']}, but the diverged models are {now}; "
                        f"`jmem score {run_dir}` recomputes its scores")


# ----------------------------------------------------------------------------- the removal experiment


def retrain_depends(run_dir, remove: str) -> dict:
    """What a removal experiment on ``run_dir`` is computed from besides its own config: the
    scoring stage's record and the ``retrain.remove`` file's sha256 (``remove``: its path or
    "")."""
    _, record = _score_record(Path(run_dir))
    depends = {"score": record, "remove": None}
    if remove:
        path = Path(remove).expanduser()
        depends["remove"] = {"path": remove,
                             "sha256": integrity.file_sha256(path) if path.is_file() else None}
    return depends


def depends_change(recorded: dict, current: dict) -> str | None:
    """What differs between two :func:`retrain_depends` records, in a few words."""
    old, new = recorded.get("score"), current.get("score")
    if (old is None) != (new is None):
        return "the run's scores are " + ("no longer recorded" if new is None else "newly recorded")
    if old is not None:
        difference = config_lib.first_difference({"score": old.get("options", {})},
                                                 {"score": new.get("options", {})},
                                                 ignore=(), ignore_sections=())
        if difference:
            return difference
        if old.get("diverged") != new.get("diverged"):
            return f"diverged models {old.get('diverged')} vs {new.get('diverged')}"
        for name in SCORE_FILES:
            if old.get("files", {}).get(name) != new.get("files", {}).get(name):
                return f"{name} changed (the run was re-scored since)"
    old, new = recorded.get("remove"), current.get("remove")
    if old != new:
        if old is None or new is None or old.get("path") != new.get("path"):
            return f"retrain.remove: {(old or {}).get('path', '')!r} vs {(new or {}).get('path', '')!r}"
        return (f"the file retrain.remove={new['path']!r} changed (sha256 now "
                f"{str(new['sha256'])[:12]}, then {str(old['sha256'])[:12]})")
    return None


def record_retrain_inputs(out, remove: str, names: list[str], config_text: str) -> None:
    """Start ``retrain/manifest.json``: the input files ``names`` (on disk), the config text
    (written next) and what the experiment depends on (:func:`retrain_depends`)."""
    out = Path(out)
    integrity.record_inputs(out, None, names, config_text, depends=retrain_depends(out.parent, remove))


def check_retrain_dir(out, remove: str) -> None:
    """Refuse to resume or reuse ``retrain/`` computed from other inputs, or with a missing or
    damaged input or output file: one line naming what changed and how to recompute."""
    out = Path(out)
    manifest = integrity.load_manifest(out)
    if manifest is None:  # an older jmem's experiment: nothing to compare with
        return
    redo = f"delete it (`rm -r {out}`) and re-run to recompute it"
    change = depends_change(manifest["depends"], retrain_depends(out.parent, remove))
    if change is not None:
        raise JmemError(f"{str(out)!r} holds a removal experiment computed from other inputs "
                        f"({change}); {redo}")
    # Deleting retrain.json asks for a re-analysis of the stored margins (retrain/stage.py
    # finish): the analysis files may then be missing; every other listed file must be intact.
    analysis = {rundir.RETRAIN, "verdict.txt", rundir.ABLATION}
    for section in ("inputs", "outputs"):
        listed = manifest[section]
        if section == "outputs" and not (out / rundir.RETRAIN).exists():
            listed = {k: v for k, v in listed.items() if k not in analysis}
        problem = integrity.changed_files(out, listed)
        if problem is not None:
            raise JmemError(f"{str(out)!r}: {problem}; {redo}")


def record_retrain_outputs(out, names: list[str], texts: dict[str, str]) -> None:
    """List the removal experiment's final files (``names`` on disk, ``texts`` about to be
    written) in ``retrain/manifest.json``; waves are dropped (they go next)."""
    integrity.record_outputs(Path(out), names, texts)


# ----------------------------------------------------------------------------- the report


def verify_report_inputs(run_dir) -> None:
    """Before a report reads anything: the run's files, its scores and, if the removal
    experiment ran, that it was computed from these scores and its files are intact."""
    run_dir = Path(run_dir)
    integrity.verify_run(run_dir)
    verify_scores(run_dir)
    out = run_dir / RETRAIN_DIR
    manifest = integrity.load_manifest(out) if (out / rundir.RETRAIN).exists() else None
    if manifest is None:
        return
    _, record = _score_record(run_dir)
    change = depends_change({"score": manifest["depends"].get("score")}, {"score": record})
    redo = f"`rm -r {out}` and `jmem retrain {run_dir}` recompute it"
    if change is not None:
        raise JmemError(f"{str(out)!r} was computed from other scores than the run's ({change}); "
                        f"{redo}")
    problem = integrity.changed_files(out, manifest["outputs"])
    if problem is not None:
        raise JmemError(f"{str(out)!r}: {problem}; {redo}")


def report_dataset(run_dir, config_dict: dict | None):
    """(dataset, "") for the report's example images, verified to be the run's, or (None,
    why) when the dataset cannot be loaded. A changed dataset is an error, not a note."""
    if not config_dict or not (config_dict.get("data") or {}).get("name"):
        return None, "config.json names no dataset"
    try:
        config = config_lib.from_dict(config_dict)
        dataset = load_dataset(config)
    except JmemError as err:
        return None, f"the dataset could not be loaded ({err})"
    verify_dataset(run_dir, config, dataset)
    return dataset, ""
