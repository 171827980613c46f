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
     "outputs": {"margins_train.npy": "<sha256>", ..., "models.csv": "<sha256>"}}

The dataset fingerprint is over the arrays the models train on (after normalisation, with the
run's canary labels and the leakage-free test set), so it changes iff the data changes.

What a mismatch does:

* a changed dataset, or a missing or damaged input file (``keep.npy``, labels, canaries,
  ``config.json``), or a damaged output of a finished run: a one-line :class:`JmemError`
  naming the file and what differs; nothing is deleted.
* a damaged or unreadable wave file (a derived file): a one-line warning, the file is deleted
  and the models it held are trained again. Checkpoints carry their own CRC-32
  (``jmem.engine.checkpoint``) and fall back to an older step or a fresh start.

Run directories without a manifest (written by hand, or by an older jmem) are accepted as
they are; a resume of an old run records its current files as the reference, with a warning.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from jmem.errors import JmemError, one_line
from jmem.study import rundir

FORMAT = 1
MANIFEST = rundir.MANIFEST
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
    for section in ("dataset", "inputs", "waves", "outputs"):
        if not isinstance(manifest.get(section), dict):
            raise JmemError(f"{path} is damaged: its {section!r} section is missing or not an "
                            f"object; {hint}")
    return manifest


def _save(run_dir: Path, manifest: dict) -> None:
    rundir.save_json(Path(run_dir) / MANIFEST, manifest)


def record_inputs(run_dir: Path, dataset, names: list[str], config_text: str) -> dict:
    """Write a new manifest for a run whose input files ``names`` are on disk and whose
    ``config.json`` will hold ``config_text`` (written next, last)."""
    run_dir = Path(run_dir)
    inputs = {name: file_sha256(run_dir / name) for name in names}
    inputs[rundir.CONFIG] = text_sha256(config_text)
    manifest = {"format": FORMAT, "dataset": dataset_fingerprint(dataset), "inputs": inputs,
                "waves": {}, "outputs": {}}
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


# ----------------------------------------------------------------------------- verification


def check_dataset(run_dir: Path, manifest: dict, dataset) -> None:
    """JmemError if ``dataset`` is not the one the run was started on, naming the array."""
    recorded = manifest["dataset"].get("arrays", {})
    current = dataset_fingerprint(dataset)["arrays"]
    for key in list(recorded) + [k for k in current if k not in recorded]:  # x_train first
        old, new = recorded.get(key), current.get(key)
        if old == new:
            continue
        where = (f"--workdir {str(run_dir)!r} was trained on a different dataset than "
                 f"{dataset.name!r} is now")
        if old is None or new is None:
            raise JmemError(f"{where}: {key} is {'new' if old is None else 'gone'}; use the "
                            "original dataset or a new workdir")
        if old["shape"] != new["shape"] or old["dtype"] != new["dtype"]:
            raise JmemError(f"{where}: {key} is {new['dtype']}{tuple(new['shape'])}, the run's was "
                            f"{old['dtype']}{tuple(old['shape'])}; use the original dataset or a new workdir")
        raise JmemError(f"{where}: the values of {key} differ (sha256 now {new['sha256'][:12]}, "
                        f"the run's {old['sha256'][:12]}); use the original dataset or a new workdir")


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


def verify_resume(run_dir: Path, dataset, complete: bool, wave_shapes, warn) -> None:
    """Verify a run directory about to be resumed (call under the workdir lock).

    dataset: the dataset as the models would train on it now (see :func:`dataset_fingerprint`).
    complete: the run has finished (its outputs are verified too).
    wave_shapes: ``(start, stop) -> {array name: shape}`` of an intact wave file.
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
                 if p.is_file() and (p.name in (rundir.KEEP, rundir.MODEL_RATES, rundir.CANARIES)
                                     or (p.name.startswith("labels_") and p.suffix == ".npy"))]
        config_text = (run_dir / rundir.CONFIG).read_text()
        record_inputs(run_dir, dataset, names, config_text)
        if complete:
            finals = [p.name for p in sorted(run_dir.glob("margins_*.npy"))]
            record_outputs(run_dir, finals + [rundir.MODEL_METRICS], {})
        return
    check_dataset(run_dir, manifest, dataset)
    check_files(run_dir, manifest, "inputs")
    if complete:
        check_files(run_dir, manifest, "outputs")
        return
    _verify_waves(run_dir, manifest, wave_shapes, warn)


def _verify_waves(run_dir: Path, manifest: dict, wave_shapes, warn) -> None:
    """Delete every wave file that fails its checksum or cannot be read in full."""
    recorded = manifest["waves"]
    changed = False
    for path in sorted((run_dir / "waves").glob("models_*.npz")):
        key = _rel(run_dir, path)
        problem = _wave_problem(path, recorded.get(key), wave_shapes)
        if problem is None:
            continue
        warn(f"{path} is damaged ({problem}); deleting it, its models will be trained again")
        path.unlink()
        changed |= recorded.pop(key, None) is not None
    for key in [k for k in recorded if not (run_dir / k).is_file()]:  # deleted by hand
        del recorded[key]
        changed = True
    if changed:
        _save(run_dir, manifest)


def _wave_problem(path: Path, digest: str | None, wave_shapes) -> str | None:
    """Why a wave file is unusable, or None. Without a recorded checksum (a wave written by
    another process of a multi-process job) the file is read in full: the zip format's
    CRC-32 of every member and the expected shapes catch truncation and damage."""
    match = _WAVE_NAME.search(path.name)
    if match is None:
        return "not a wave file name"
    if digest is not None:
        return None if file_sha256(path) == digest else f"sha256 differs from {MANIFEST}"
    expected = wave_shapes(int(match.group(1)), int(match.group(2)))
    try:
        with np.load(path, allow_pickle=False) as wave:
            shapes = {key: wave[key].shape for key in wave.files}
    except Exception as err:  # noqa: BLE001 - any read failure means "damaged"
        return f"{type(err).__name__}: {one_line(err)}"
    for key, shape in expected.items():
        if shapes.get(key) != tuple(shape):
            return f"{key} has shape {shapes.get(key)}, expected {tuple(shape)}"
    return None
