"""Run-directory integrity: ``manifest.json`` records what a run depends on; commands verify it.

A run directory is trusted across processes and days: a resume continues it, ``jmem score``
(and the later stages) read it. Between those moments the dataset file may be replaced and
files may be truncated, edited or deleted. The manifest makes every such change visible:

``manifest.json`` (written by process 0, atomically, before ``config.json``)::

    {"format": 1,
     "dataset": {"name": "digits", "arrays": {"x_train": {"shape": [...], "dtype": "float32",
                 "sha256": "..."}, "y_train": ..., "x_test": ..., "y_test": ..., "<extra>_x": ...}},
     "inputs":  {"keep.npy": "<sha256>", "model_rates.npy": ..., "labels_train.npy": ...,
                 "labels_test.npy": ..., "canaries.npy": ..., "config.json": ...},
     "waves":   {"waves/models_0000000_0000032.npz": "<sha256>", ...},   # while training
     "outputs": {"margins_train.npy": "<sha256>", ..., "models.csv": "<sha256>"},
     "stages":  {"score": {"options": {...}, "training": "<sha256>", "diverged": [...],
                           "files": {"scores.csv": "<sha256>", ...}}}}

The removal experiment's folder ``retrain/`` has a manifest of its own (no dataset section:
the run's covers it; its ``depends`` section records the scores and removal file it was
computed from, :mod:`jmem.study.inputs`).

The dataset fingerprint is over the arrays the models train on (after normalisation, with the
run's canary labels and the leakage-free test set), so it changes iff the data changes.

What a mismatch does:

* a changed dataset, or a missing or damaged input file (``keep.npy``, labels, canaries,
  ``config.json``), or a damaged output of a finished run: a one-line :class:`JmemError`
  naming the file and what differs; nothing is deleted.
* a damaged or unreadable wave file (a derived file): a one-line warning, the file is deleted
  and the models it held are trained again. Only wave files the manifest lists are read; an
  unlisted one (a wave another process of a multi-process job wrote, or a stray copy) is read
  in full first and kept only if it holds the rows its name says (its ``rows`` array), then
  listed. Checkpoints carry their own CRC-32 (``jmem.engine.checkpoint``) and fall back to an
  older step or a fresh start.
* a manifest of a newer format than this jmem reads: a one-line error (upgrade jmem).

Run directories without a manifest (written by hand, or by an older jmem) are accepted as
they are; a resume of an old run records its current files as the reference, with a warning.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from jmem.errors import JmemError, one_line
from jmem.jsonable import to_jsonable
from jmem.study import rundir

FORMAT = 1  # the newest manifest format this jmem reads and writes
MANIFEST = rundir.MANIFEST
OPTIONAL_SECTIONS = ("stages", "depends")  # absent in manifests of older jmem
_CHUNK = 1 << 22  # bytes hashed per read
_WAVE_NAME = re.compile(r"models_(\d+)_(\d+)\.npz$")


# ----------------------------------------------------------------------------- fingerprints


def array_fingerprint(array: np.ndarray) -> dict:
    """``{"shape", "dtype", "sha256"}`` of an array's C-order bytes."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256()
    flat = array.reshape(-1).view(np.uint8) if array.size else np.empty(0, np.uint8)
    for start in range(0, flat.size, _CHUNK):
        digest.update(memoryview(flat[start:start + _CHUNK]))
    return {"shape": list(array.shape), "dtype": str(array.dtype), "sha256": digest.hexdigest()}


def dataset_fingerprint(dataset) -> dict:
    """Fingerprints of the arrays of a :class:`jmem.data.dataset.Dataset` the models use:
    x/y of train and test and of every extra test set."""
    arrays = {"x_train": dataset.x_train, "y_train": dataset.y_train,
              "x_test": dataset.x_test, "y_test": dataset.y_test}
    for name, (x, y) in sorted(dataset.extra_tests.items()):
        arrays[f"{name}_x"], arrays[f"{name}_y"] = x, y
    return {"name": dataset.name, "arrays": {k: array_fingerprint(v) for k, v in arrays.items()}}


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def text_sha256(text: str) -> str:
    """sha256 of the UTF-8 bytes a text file holding ``text`` has."""
    return hashlib.sha256(text.encode()).hexdigest()


# ----------------------------------------------------------------------------- the manifest


def load_manifest(run_dir: Path) -> dict | None:
    """The run's manifest, or None if it has none; a malformed one is a JmemError."""
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        return None
    hint = "delete it to accept the run's files as they are now, unverified"
    try:
        manifest = rundir.load_json(path, expect=dict)
    except JmemError as err:
        raise JmemError(f"{err}; {hint}") from err
    version = manifest.get("format")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise JmemError(f"{path} is damaged: its format={version!r} is not a version number; {hint}")
    if version > FORMAT:
        import jmem

        raise JmemError(f"{path} has format {version}, newer than this jmem "
                        f"({jmem.__version__}) reads (format {FORMAT}); upgrade jmem to read this run")
    for section in ("dataset", "inputs", "waves", "outputs"):
        if not isinstance(manifest.get(section), dict):
            raise JmemError(f"{path} is damaged: its {section!r} section is missing or not an "
                            f"object; {hint}")
    for section in OPTIONAL_SECTIONS:
        if not isinstance(manifest.setdefault(section, {}), dict):
            raise JmemError(f"{path} is damaged: its {section!r} section is not an object; {hint}")
    return manifest


def _save(run_dir: Path, manifest: dict) -> None:
    rundir.save_json(Path(run_dir) / MANIFEST, manifest)


def record_inputs(run_dir: Path, dataset, names: list[str], config_text: str,
                  depends: dict | None = None) -> dict:
    """Write a new manifest for a run whose input files ``names`` are on disk and whose
    ``config.json`` will hold ``config_text`` (written next, last).

    dataset: what the models train on (None for ``retrain/``: the run's manifest holds it);
    depends: what else the output is computed from (``retrain/``: the scores, the removal
    file; see :mod:`jmem.study.inputs`).
    """
    run_dir = Path(run_dir)
    inputs = {name: file_sha256(run_dir / name) for name in names}
    inputs[rundir.CONFIG] = text_sha256(config_text)
    manifest = {"format": FORMAT, "dataset": dataset_fingerprint(dataset) if dataset is not None else {},
                "inputs": inputs, "waves": {}, "outputs": {}, "stages": {}, "depends": depends or {}}
    _save(run_dir, manifest)
    return manifest


def record_wave(run_dir: Path, wave_file: Path) -> None:
    """Add the checksum of a wave file just written (process 0 only: one writer)."""
    run_dir = Path(run_dir)
    manifest = load_manifest(run_dir)
    if manifest is None:
        return
    manifest["waves"][_rel(run_dir, wave_file)] = file_sha256(wave_file)
    _save(run_dir, manifest)


def record_outputs(run_dir: Path, names: list[str], texts: dict[str, str]) -> None:
    """Record the final arrays ``names`` (on disk) and the files about to be written with
    ``texts`` (name -> content); the wave entries are dropped (the waves go next)."""
    run_dir = Path(run_dir)
    manifest = load_manifest(run_dir)
    if manifest is None:
        return
    outputs = {name: file_sha256(run_dir / name) for name in names}
    outputs.update({name: text_sha256(text) for name, text in texts.items()})
    manifest["outputs"], manifest["waves"] = outputs, {}
    _save(run_dir, manifest)


def _rel(run_dir: Path, path: Path) -> str:
    return Path(path).relative_to(run_dir).as_posix()


def training_digest(manifest: dict) -> str:
    """sha256 of what a run's training recorded (dataset, inputs, outputs): a later stage's
    record names the training it was computed from by this digest."""
    import json

    core = {k: manifest[k] for k in ("dataset", "inputs", "outputs")}
    return text_sha256(json.dumps(core, sort_keys=True))


def record_stage(run_dir: Path, stage: str, record: dict | None) -> None:
    """Set (or with None, drop) the record of a later stage (``score``) in the manifest;
    a run directory without a manifest records nothing."""
    manifest = load_manifest(run_dir)
    if manifest is None:
        return
    if record is None:
        if manifest["stages"].pop(stage, None) is None:
            return
    else:
        manifest["stages"][stage] = record
    _save(run_dir, manifest)


SCORE_FILES = (rundir.SCORES, rundir.THRESHOLDS, rundir.PAIRS)  # the scoring stage's files


def forget_scores(run_dir: Path) -> None:
    """Drop the scoring stage's record (before its files are rewritten)."""
    record_stage(run_dir, "score", None)


def record_scores(run_dir: Path, options, diverged_ids) -> None:
    """Record, after the scoring stage wrote its files, what they were computed from:
    ``options`` (its :class:`jmem.config.ScoreConfig`), the training (its digest), the
    ``diverged_ids`` it left out, and the files' sha256 (``stages.score``)."""
    import dataclasses

    run_dir = Path(run_dir)
    manifest = load_manifest(run_dir)
    if manifest is None:
        return
    manifest["stages"]["score"] = {
        "options": to_jsonable(dataclasses.asdict(options)), "training": training_digest(manifest),
        "diverged": [int(i) for i in diverged_ids],
        "files": {name: file_sha256(run_dir / name) for name in SCORE_FILES}}
    _save(run_dir, manifest)


def changed_files(run_dir: Path, digests: dict) -> str | None:
    """The first of ``digests`` (name -> sha256) that is missing or whose bytes differ, as
    ``"<name> is missing"`` / ``"<name> is damaged or was changed"``; None if all match."""
    for name, digest in digests.items():
        path = Path(run_dir) / name
        if not path.is_file():
            return f"{name} is missing"
        if file_sha256(path) != digest:
            return f"{name} is damaged or was changed (its sha256 differs from {MANIFEST})"
    return None


# ----------------------------------------------------------------------------- verification


class DatasetChanged(JmemError):
    """The dataset is not the one a run was trained on."""


def dataset_change(manifest: dict, dataset) -> str | None:
    """How ``dataset`` differs from the one the manifest records (the first array that does,
    x_train first), e.g. ``"the values of x_train differ (sha256 now ..., the run's ...)"``;
    None if it is the same (or the manifest records no dataset)."""
    recorded = manifest["dataset"].get("arrays", {})
    if not recorded:
        return None
    current = dataset_fingerprint(dataset)["arrays"]
    for key in list(recorded) + [k for k in current if k not in recorded]:  # x_train first
        old, new = recorded.get(key), current.get(key)
        if old == new:
            continue
        if old is None or new is None:
            return f"{key} is {'new' if old is None else 'gone'}"
        if old["shape"] != new["shape"] or old["dtype"] != new["dtype"]:
            return (f"{key} is {new['dtype']}{tuple(new['shape'])}, the run's was "
                    f"{old['dtype']}{tuple(old['shape'])}")
        return (f"the values of {key} differ (sha256 now {new['sha256'][:12]}, "
                f"the run's {old['sha256'][:12]})")
    return None


def check_dataset(run_dir: Path, manifest: dict, dataset) -> None:
    """DatasetChanged if ``dataset`` is not the one the run was started on, naming the array."""
    change = dataset_change(manifest, dataset)
    if change is not None:
        raise DatasetChanged(f"--workdir {str(run_dir)!r} was trained on a different dataset than "
                             f"{dataset.name!r} is now: {change}; use the original dataset or a new workdir")


def check_files(run_dir: Path, manifest: dict, section: str, names=None) -> None:
    """JmemError naming the first file of ``section`` (or of its ``names``) that is missing
    or whose bytes differ."""
    run_dir = Path(run_dir)
    for name, digest in manifest[section].items():
        if names is not None and name not in names:
            continue
        path = run_dir / name
        if not path.is_file():
            raise JmemError(f"run directory {str(run_dir)!r}: {name} is missing ({MANIFEST} "
                            "records it); restore it or re-run into a new workdir")
        if file_sha256(path) != digest:
            raise JmemError(f"run directory {str(run_dir)!r}: {name} is damaged or was changed "
                            f"(its sha256 differs from {MANIFEST}); restore it or re-run into a "
                            "new workdir")


def verify_run(run_dir) -> dict | None:
    """Verify a run directory before reading it (``jmem score``, retrain, report).

    Checks that every input and output file the manifest records is present and intact.
    Returns the manifest, or None for a run directory without one (nothing to verify).
    Raises JmemError naming the first missing or damaged file, or an unfinished run.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise JmemError(f"run directory {str(run_dir)!r} does not exist")
    manifest = load_manifest(run_dir)
    if manifest is None:
        return None
    check_files(run_dir, manifest, "inputs")
    if not manifest["outputs"]:
        raise JmemError(f"run directory {str(run_dir)!r} is not finished training (no final "
                        f"arrays recorded in {MANIFEST}); re-run `jmem train` to finish it")
    check_files(run_dir, manifest, "outputs")
    return manifest


def verify_resume(run_dir: Path, dataset, complete: bool, wave_shapes, warn, wave_rows=None) -> None:
    """Verify a run directory about to be resumed (call under the workdir lock).

    dataset: the dataset as the models would train on it now (see :func:`dataset_fingerprint`).
    complete: the run has finished (its outputs are verified too).
    wave_shapes: ``(start, stop) -> {array name: shape}`` of an intact wave file;
    wave_rows: ``(start, stop) -> int64[W]``, the rows it holds (None: ``arange(start, stop)``).
    Damaged wave files are deleted (with a warning) so that their models train again; a
    changed dataset or damaged input is a JmemError. A run without a manifest (older jmem)
    gets one recording its current files, with a warning.
    """
    run_dir = Path(run_dir)
    manifest = load_manifest(run_dir)
    if manifest is None:
        warn(f"run directory {str(run_dir)!r} has no {MANIFEST} (written by an older jmem): "
             "its files cannot be verified; recording them as they are now")
        names = [p.name for p in sorted(run_dir.iterdir())
                 if p.is_file() and (p.name in (rundir.KEEP, rundir.MODEL_RATES, rundir.CANARIES,
                                                   rundir.DUPLICATES)
                                     or (p.name.startswith("labels_") and p.suffix == ".npy"))]
        config_text = (run_dir / rundir.CONFIG).read_text()
        manifest = record_inputs(run_dir, dataset, names, config_text)
        if complete:
            finals = [p.name for p in sorted(run_dir.glob("margins_*.npy"))]
            record_outputs(run_dir, finals + [rundir.MODEL_METRICS], {})
        else:
            verify_waves(run_dir, wave_shapes, warn, manifest, wave_rows)
        return
    check_dataset(run_dir, manifest, dataset)
    check_files(run_dir, manifest, "inputs")
    if complete:
        check_files(run_dir, manifest, "outputs")
        return
    verify_waves(run_dir, wave_shapes, warn, manifest, wave_rows)


def verify_waves(run_dir: Path, wave_shapes, warn, manifest: dict | None = None,
                 wave_rows=None) -> None:
    """Make ``run_dir/waves/`` hold only wave files that may be read (call under the lock).

    A listed wave must match its checksum; an unlisted one (written by another process of a
    multi-process job, or copied in by hand) is read in full and must hold the arrays of
    ``wave_shapes(start, stop)``: then it is listed. Either must hold, in its ``rows`` array,
    the rows ``wave_rows(start, stop)`` (int64[W]; None: ``arange(start, stop)``) gives its
    name (a wave file of another wave order holds others). Any other wave file is deleted
    with a one-line warning, and its models are trained again. Without a manifest (a
    directory built by hand) only damaged files go.
    """
    wave_rows = wave_rows or (lambda start, stop: np.arange(start, stop))
    run_dir = Path(run_dir)
    manifest = load_manifest(run_dir) if manifest is None else manifest
    recorded = manifest["waves"] if manifest is not None else {}
    changed = False
    for path in sorted((run_dir / "waves").glob("models_*.npz")):
        key = _rel(run_dir, path)
        digest = recorded.get(key)
        problem = _wave_problem(path, digest, wave_shapes, wave_rows)
        if problem is None:
            if digest is None and manifest is not None:  # read in full and intact: list it
                recorded[key] = file_sha256(path)
                changed = True
            continue
        unlisted = " and is not listed in " + MANIFEST if digest is None and manifest is not None else ""
        warn(f"{path} is damaged ({problem}){unlisted}; deleting it, its models will be trained again")
        path.unlink()
        changed |= recorded.pop(key, None) is not None
    for key in [k for k in recorded if not (run_dir / k).is_file()]:  # deleted by hand
        del recorded[key]
        changed = True
    if changed and manifest is not None:
        _save(run_dir, manifest)


def _wave_problem(path: Path, digest: str | None, wave_shapes, wave_rows) -> str | None:
    """Why a wave file is unusable, or None. Without a recorded checksum the file is read in
    full: the zip format's CRC-32 of every member and the expected shapes catch truncation
    and damage. Its ``rows`` array (all that is read of a listed file) catches a copy of
    another wave under this name, or a wave of another wave order."""
    match = _WAVE_NAME.search(path.name)
    if match is None:
        return "not a wave file name"
    start, stop = int(match.group(1)), int(match.group(2))
    rows = np.asarray(wave_rows(start, stop))
    if digest is not None:
        if file_sha256(path) != digest:
            return f"sha256 differs from {MANIFEST}"
        with np.load(path, allow_pickle=False) as wave:  # intact: read its rows alone
            # a wave file of an older jmem holds no rows: those of its name, in row order
            held = wave["rows"] if "rows" in wave.files else np.arange(start, stop)
        return _rows_problem(held, rows)
    expected = wave_shapes(start, stop)
    try:
        with np.load(path, allow_pickle=False) as wave:
            arrays = {key: wave[key] for key in wave.files}
    except Exception as err:  # noqa: BLE001 - any read failure means "damaged"
        return f"{type(err).__name__}: {one_line(err)}"
    for key, shape in expected.items():
        if key not in arrays or arrays[key].shape != tuple(shape):
            return f"{key} has shape {arrays[key].shape if key in arrays else None}, expected {tuple(shape)}"
    return _rows_problem(arrays["rows"], rows) if "rows" in expected else None


def _rows_problem(held: np.ndarray, rows: np.ndarray) -> str | None:
    """Why a wave file holding the models ``held`` (int[W]) is not the one of ``rows``."""
    if np.array_equal(held, rows):
        return None
    return f"it holds models {rundir.row_span(held)}, not {rundir.row_span(rows)}"
