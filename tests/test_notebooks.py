"""The notebooks run top to bottom through a real Jupyter kernel, and are committed without outputs.

Each notebook is executed by nbclient in an ipykernel started from this interpreter, on the CPU,
with its tiny setting from environment variables (``JMEM_NB_TINY=1`` for the quickstart; the
explorer reads a small run directory built here). Any cell error fails the test; so does a
kernel that is not this interpreter (the kernel must import this checkout's jmem).
"""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from jmem.cli import main
from jmem.study import rundir

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
CELL_TIMEOUT_S = 300  # per cell; generous for a loaded CI machine (the tiny settings take seconds)

CHECK_KERNEL = "import sys; print('KERNEL_PYTHON=' + sys.executable)"


@pytest.fixture
def kernel_env(monkeypatch, tmp_path):
    """Environment the kernel inherits: this checkout first on the path, CPU, the tests' JAX cache."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    cache = os.environ.get("JMEM_TEST_CACHE", str(Path.home() / ".cache" / "jmem-tests" / "jax"))
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", cache)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # This environment's kernel spec first (a user-level "python3" spec may name another Python).
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, [
        str(Path(sys.prefix) / "share" / "jupyter"), os.environ.get("JUPYTER_PATH")])))
    return monkeypatch


def execute(name: str, then=None) -> nbformat.NotebookNode:
    """Run notebooks/<name> top to bottom in a python3 kernel (cwd: notebooks/); return it executed.

    ``then(nb, run_again)``, if given, runs in the same kernel afterwards; ``run_again(i)``
    re-executes cell ``i`` and returns it.
    """
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, startup_timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):  # raises CellExecutionError on a failing cell
            client.execute_cell(cell, index)
        if then is not None:
            then(nb, lambda i: client.execute_cell(nb.cells[i], i))
        nb.cells.append(nbformat.v4.new_code_cell(CHECK_KERNEL))
        client.execute_cell(nb.cells[-1], len(nb.cells) - 1)
    kernel_python = text_of(nb.cells[-1]).strip().removeprefix("KERNEL_PYTHON=")
    assert Path(kernel_python).resolve() == Path(sys.executable).resolve(), (
        f"the kernel runs {kernel_python}, not {sys.executable}: install ipykernel into this "
        f"environment (python -m ipykernel install --sys-prefix)")
    return nb


def cell_index(nb, needle: str) -> int:
    """The index of the one code cell whose source contains ``needle``."""
    found = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and needle in c.source]
    assert len(found) == 1, (needle, found)
    return found[0]


def text_of(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def all_text(nb) -> str:
    return "\n".join(text_of(c) for c in nb.cells if c.cell_type == "code")


def images_of(cell) -> int:
    return sum("image/png" in o.get("data", {}) for o in cell.get("outputs", []))


def images(nb) -> int:
    return sum(images_of(c) for c in nb.cells if c.cell_type == "code")


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory):
    """A small scored digits run with two inclusion rates and canaries, plus a removal result."""
    workdir = tmp_path_factory.mktemp("explore") / "run"
    argv = ["run", "experiments/digits.py:small", "--workdir", str(workdir), "--no-progress",
            "--set", "subsets.rates=0.5,0.9", "--set", "subsets.canary_fraction=0.03"]
    assert main(argv) == 0
    if not (workdir / "retrain" / rundir.RETRAIN).exists():
        write_removal_result(workdir / "retrain" / rundir.RETRAIN)
    return workdir


def write_removal_result(path: Path) -> None:
    """A retrain.json in the documented schema (README): two arms, two test sets, comparisons."""
    acc = lambda m: {"mean": m, "ci_low": m - 0.4, "ci_high": m + 0.4}  # noqa: E731
    comparison = lambda test_set, diff: {  # noqa: E731
        "name": "selected vs matched random", "a": "remove_fixed", "b": "random_fixed",
        "test_set": test_set, "mean_diff": diff, "ci_low": diff - 0.3, "ci_high": diff + 0.3,
        "p_perm": 0.02 if abs(diff) > 0.3 else 0.6, "mde": 0.35}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "arms": ["remove_fixed", "random_fixed"], "test_sets": ["test", "test_clean"],
        "accuracy": {"remove_fixed": {"test": acc(96.1), "test_clean": acc(96.5)},
                     "random_fixed": {"test": acc(96.6), "test_clean": acc(96.6)}},
        "comparisons": [comparison("test", -0.5), comparison("test_clean", -0.1)],
        "verdict": "test: -0.5 pp [-0.8, -0.2]; test_clean: -0.1 pp [-0.4, 0.2], not detectable.",
    }))


def test_quickstart_runs_a_study_through_the_cli_in_a_kernel(kernel_env, tmp_path):
    kernel_env.setenv("JMEM_NB_TINY", "1")
    kernel_env.setenv("JMEM_NB_WORKDIR", str(tmp_path))
    later = {}

    def with_later_stages(nb, run_again):
        """Re-run the removal and report cells on a run directory that has both stages' files."""
        run = next(p for p in tmp_path.iterdir() if p.is_dir())
        if not (run / "retrain" / rundir.RETRAIN).exists():  # a jmem without the removal stage
            write_removal_result(run / "retrain" / rundir.RETRAIN)
        if not (run / "report.md").exists():  # a jmem without the report stage
            (run / "figures").mkdir()
            png = next(o["data"]["image/png"] for c in nb.cells for o in c.get("outputs", [])
                       if "image/png" in o.get("data", {}))
            (run / "figures" / "scores.png").write_bytes(base64.b64decode(png))
            (run / "report.md").write_text("# Report\n\nVerdict: see below.\n\n## Scores\n\n![](figures/scores.png)\n")
        later["removal"] = run_again(cell_index(nb, "retrain = find_retrain(WORKDIR)"))
        later["report"] = run_again(cell_index(nb, 'report = WORKDIR / "report.md"'))

    nb = execute("quickstart.ipynb", then=with_later_stages)
    text = all_text(nb)
    runs = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    run = runs[0]
    assert (run / rundir.SCORES).exists() and (run / rundir.THRESHOLDS).exists()
    assert "backend 'cpu'" in text
    assert "scored 1352 examples with 16 models" in text  # the CLI's own summary, streamed
    assert np.load(run / rundir.KEEP).shape == (16, 1352)
    # keep-masks, score histogram + acc_in/acc_out, then the report's figures (`jmem report`,
    # run by the notebook when `jmem run` did not) or, with a jmem without it, the inline ones.
    assert images(nb) >= 4
    # The removal and report cells with those stages' files: the verdict, the forest plot, the figures.
    assert "VERDICT:" in text_of(later["removal"]) and images_of(later["removal"]) == 1
    assert "figures" in text_of(later["report"]) and images_of(later["report"]) >= 1

    # The explorer opens the quickstart's run: one rate, no pairs needed, its removal result.
    kernel_env.setenv("JMEM_NB_RUN", str(run))
    explored = all_text(execute("explore.ipynb"))
    assert "matches scores.csv" in explored
    assert "no score-versus-rate curves" in explored


def test_explore_shows_every_section_of_a_full_run_dir(kernel_env, scored_run):
    kernel_env.setenv("JMEM_NB_RUN", str(scored_run))
    nb = execute("explore.ipynb")
    text = all_text(nb)
    assert "matches scores.csv" in text
    assert "loaded digits" in text  # images come from the dataset, not the run directory
    assert "pairs on the test set" in text or "no high-influence pairs" in text
    assert "near-duplicate in the training set" in text  # digits has 8 known duplicates
    # The threshold cells: one line per call, with the canary precision of each selection.
    for method in ("fixed", "fdr", "top_k", "null"):
        assert f"\n{method}: " in "\n" + text, method
    assert "canary precision" in text
    assert "no score-versus-rate curves" not in text
    assert "no removal experiment" not in text
    # Galleries, pairs, duplicates, rate curves, removal plot, five selections, the sweep.
    assert images(nb) >= 11


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for i, cell in enumerate(code):
        assert cell.outputs == [], f"{path.name}: code cell {i} has outputs (python scripts/strip_notebooks.py)"
        assert cell.execution_count is None, f"{path.name}: code cell {i} has an execution count"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


def test_both_notebooks_exist():
    assert {"quickstart.ipynb", "explore.ipynb"} <= {p.name for p in NOTEBOOKS.glob("*.ipynb")}
