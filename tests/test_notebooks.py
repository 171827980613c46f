"""The notebooks run top to bottom through a real Jupyter kernel, and are committed without outputs.

Each notebook is executed by nbclient in an ipykernel started from this interpreter, on the CPU,
with its tiny setting from environment variables (``JMEM_NB_TINY=1`` for the quickstart; the
explorer reads a small run directory of the default study built here, a results folder made from
it, an old-format one and the committed one). Any cell error fails the test; so does a kernel
that is not this interpreter (the kernel must import this checkout's jmem).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
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


def execute(name, then=None, cwd: Path = NOTEBOOKS, cells=None) -> nbformat.NotebookNode:
    """Run notebooks/<name> (or the notebook at an absolute path) top to bottom in a python3 kernel (cwd: ``cwd``); return it executed.

    cells: run only the code cells with these indices (default: every cell).
    ``then(nb, run_again, run_code)``, if given, runs in the same kernel afterwards:
    ``run_again(i)`` re-executes cell ``i`` and returns it; ``run_code(source)`` appends a code
    cell with ``source``, executes it and returns it.
    """
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    if cells is not None:
        nb.cells = [nb.cells[i] for i in cells]
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, startup_timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}})

    def run_code(source: str):
        nb.cells.append(nbformat.v4.new_code_cell(source))
        return client.execute_cell(nb.cells[-1], len(nb.cells) - 1)

    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):  # raises CellExecutionError on a failing cell
            client.execute_cell(cell, index)
        if then is not None:
            then(nb, lambda i: client.execute_cell(nb.cells[i], i), run_code)
        kernel_python = text_of(run_code(CHECK_KERNEL)).strip().removeprefix("KERNEL_PYTHON=")
    assert Path(kernel_python).resolve() == Path(sys.executable).resolve(), (
        f"the kernel runs {kernel_python}, not {sys.executable}: install ipykernel into this "
        f"environment (python -m ipykernel install --sys-prefix)")
    return nb


def cell_index(nb, needle: str) -> int:
    """The index of the one code cell whose source contains ``needle``."""
    found = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and needle in c.source]
    assert len(found) == 1, (needle, found)
    return found[0]


def cell_with(nb, needle: str):
    return nb.cells[cell_index(nb, needle)]


def text_of(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def markdown_of(cell) -> str:
    return "".join(o.get("data", {}).get("text/markdown", "") for o in cell.get("outputs", []))


def all_text(nb) -> str:
    return "\n".join(text_of(c) for c in nb.cells if c.cell_type == "code")


def images_of(cell) -> int:
    return sum("image/png" in o.get("data", {}) for o in cell.get("outputs", []))


def images(nb) -> int:
    return sum(images_of(c) for c in nb.cells if c.cell_type == "code")


# In the kernel: draw the headline family with forest_plot and count its lines (plt.show captured):
# thick = decision intervals, thin grey = seed-only intervals, dots = estimates.
COUNT_FOREST_LINES = """
import matplotlib.pyplot as plt
_captured, _show = [], plt.show
plt.show = lambda *a, **k: _captured.append(plt.gcf())
try:
    forest_plot(family_rows(HEAD), HEAD["level"], "test")
finally:
    plt.show = _show
_ax = _captured[0].axes[0]
_n = sum(e["status"] == "estimable" for _, e in family_rows(HEAD))
_thick = sum(l.get_linewidth() == 4 for l in _ax.lines)
_thin = sum(l.get_linewidth() == 1.2 and l.get_color() == "0.45" for l in _ax.lines)
print(f"FOREST estimable={_n} decision={_thick} seed_only={_thin}")
"""


def assert_forest(cell, head_expr: str, run_code) -> None:
    out = text_of(run_code(f"HEAD = {head_expr}\n" + COUNT_FOREST_LINES))
    n = int(out.split("estimable=")[1].split()[0])
    assert n >= 1 and f"decision={n} seed_only={n}" in out, out


EXPERIMENT = "experiments/digits.py"
# The default study's shape, small: both rates at equal held-out precision, canaries, the
# ablation (as defined and size-matched) in two estimation pools, the size-matched curve.
SMALL = ["--set", "train.num_models=70", "--set", "train.epochs=6", "--set", "retrain.seeds=2",
         "--set", "retrain.resamples=200"]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """A complete run directory of the default digits study, made small (every file)."""
    workdir = tmp_path_factory.mktemp("explore") / "run"
    assert main(["run", EXPERIMENT, "--workdir", str(workdir), "--no-progress", *SMALL]) == 0
    assert (workdir / "retrain" / rundir.RETRAIN).exists() and (workdir / rundir.REPORT).exists()
    return workdir


def results_folder(run: Path, dest: Path) -> Path:
    """What experiments/results/<study>/ commits of a run: the report, verdict and ablation.json."""
    dest.mkdir(parents=True)
    shutil.copytree(run / rundir.REPORT_FIGURES, dest / rundir.REPORT_FIGURES)
    for src in (run / rundir.REPORT, run / "retrain" / "verdict.txt", run / "retrain" / rundir.ABLATION):
        shutil.copy(src, dest / src.name)
    (dest / "RUN.md").write_text("# how these files were made\n")
    return dest


def test_quickstart_runs_the_study_and_shows_verdict_forest_gates_and_scores(kernel_env, tmp_path):
    kernel_env.setenv("JMEM_NB_TINY", "1")
    kernel_env.setenv("JMEM_NB_WORKDIR", str(tmp_path))
    checks = {}

    def forest_lines(nb, run_again, run_code):
        checks["forest"] = text_of(run_code('HEAD = retrain["headline"]\n' + COUNT_FOREST_LINES))

    nb = execute("quickstart.ipynb", then=forest_lines)
    text = all_text(nb)
    runs = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    run = runs[0]
    for name in (rundir.SCORES, rundir.THRESHOLDS, rundir.REPORT, f"retrain/{rundir.RETRAIN}"):
        assert (run / name).exists(), name
    assert "backend 'cpu'" in text
    assert "scored 1352 examples with 70 models" in text  # the CLI's own summary, streamed
    assert np.load(run / rundir.KEEP).shape == (70, 1352)
    assert sorted(np.unique(np.load(run / rundir.MODEL_RATES)).round(2)) == [0.7, 0.95]
    # The keep-masks in one block per rate.
    masks = cell_with(nb, 'keep = np.load(WORKDIR / "keep.npy")')
    assert "rate 0.7: 10 models" in text_of(masks) and "rate 0.95: 60 models" in text_of(masks)
    assert images_of(masks) == 1
    # Scores: every rule at both rates, with canaries caught, and one figure of per-rate histograms.
    scores_cell = cell_with(nb, "scores = read_scores(")
    table = text_of(scores_cell)
    for rule in ("fixed", "fractional", "calibrated", "calibrated_fractional", "fdr", "canary"):
        assert f"\n{rule} " in table, rule
    assert "rate 0.7" in table and "rate 0.95" in table and "AUROC mem" in table
    assert images_of(scores_cell) == 1
    # The removal experiment: the short verdict, the gates of both protocols, the forest plot.
    removal = text_of(cell_with(nb, "retrain = find_retrain(WORKDIR)"))
    verdict = json.loads((run / "retrain" / rundir.RETRAIN).read_text())["verdict"]
    assert "VERDICT: " + verdict.splitlines()[0] in removal
    for protocol in ("Feldman & Zhang", "corrected"):
        assert f"\n{protocol}: " in removal, protocol
    for gate in ("convergence", "reliability", "power"):
        assert f"    {gate} " in removal, gate
    assert images_of(cell_with(nb, "retrain = find_retrain(WORKDIR)")) == 1
    n = int(checks["forest"].split("estimable=")[1].split()[0])
    assert n >= 1 and f"decision={n} seed_only={n}" in checks["forest"], checks["forest"]
    # The report's verdict section and figures.
    report = cell_with(nb, 'report = WORKDIR / "report.md"')
    assert "figures" in text_of(report) and images_of(report) >= 1
    assert verdict.splitlines()[0][:60] in markdown_of(report)  # report.md's verdict section

    # The explorer opens the quickstart's run.
    kernel_env.setenv("JMEM_NB_RUN", str(run))
    explored = all_text(execute("explore.ipynb"))
    assert "matches scores.csv" in explored
    assert "reproduces scores.csv's selections: 12 of 12" in explored


def test_explore_shows_every_section_of_a_full_run_dir(kernel_env, full_run):
    kernel_env.setenv("JMEM_NB_RUN", str(full_run))
    extra = {}

    def reselect(nb, run_again, run_code):
        """Re-selection in the same kernel: any rule at any rate, options that move the cut."""
        extra["forest"] = text_of(run_code('HEAD = HEADLINE["headline"]\n' + COUNT_FOREST_LINES))
        extra["select"] = text_of(run_code(
            'a = select("calibrated", rate=0.95, show=False)\n'
            'print("SAME_AS_STAGE", np.array_equal(a.selected, scores["selected_calibrated_rate_0.95"] == 1))\n'
            'b = select("fixed", rate=0.7, show=False, fixed_threshold=0.9)\n'
            'c = select("fixed", rate=0.7, show=False, fixed_threshold=0.1)\n'
            'print("NESTED", bool(np.all(b.selected <= c.selected)), b.n_selected <= c.n_selected)\n'
            'print("NO_CANARY", not any(select(r, rate=q, show=False).selected[canary].any() '
            'for r in ALL_RULES for q in RATES))\n'))

    nb = execute("explore.ipynb", then=reselect)
    text = all_text(nb)
    assert "matches scores.csv" in text
    assert "loaded digits" in text  # images come from the dataset, not the run directory
    # Per-rate scores: histograms of three scores at both rates, and the two rates compared.
    assert images_of(cell_with(nb, "shown = [(\"mem\"")) == 2
    # The rules at each rate, with the canaries each cut would catch.
    rules = text_of(cell_with(nb, "RULES = list(by_rate[RATES[0]]"))
    for rate in ("rate 0.7 (", "rate 0.95 ("):
        assert rate in rules
    for rule in ("fixed", "fractional", "calibrated", "calibrated_fractional", "fdr", "canary"):
        assert rules.count(f"\n  {rule}: ") == 2, rule
    assert "canaries caught" in rules and "(Jaccard)" in rules
    # Canary ROC per rate; convergence and held-out per rate.
    assert images_of(cell_with(nb, "canary ROC (AUROC)")) == 1
    convergence = text_of(cell_with(nb, "held-out models per example per half"))
    assert "rate 0.7: fitted" in convergence and "rate 0.95: fitted" in convergence
    assert "pairs on the test set at rate 0.7" in text or "no high-influence pairs on the test set at rate 0.7" in text
    assert "near-duplicate in the training set" in text  # digits has 8 known duplicates
    # The headline family with its gates, drawn with decision and seed-only intervals.
    assert "VERDICT: " in text and "GATES:" in text
    assert text.count("    reliability  Jaccard") == 2
    n = int(extra["forest"].split("estimable=")[1].split()[0])
    assert f"decision={n} seed_only={n}" in extra["forest"], extra["forest"]
    # The size-matched removal curve and the factor effects.
    curve = cell_with(nb, "def curve_groups(")
    assert images_of(curve) == 1 and "Feldman & Zhang, test set: k=" in text_of(curve)
    effects = text_of(cell_with(nb, "Main effects of the four corrections"))
    for factor in ("rate", "definition", "threshold", "leakage"):
        assert f"effect of {factor} (as defined):" in effects, factor
    assert "effect of rate (size-matched):" in effects and "matched:fz" in effects
    # Re-selection: the stage's selections reproduced, any rule at any rate, canaries never selected.
    assert "reproduces scores.csv's selections: 12 of 12" in text
    assert "fixed at rate 0.7: " in text and "calibrated_fractional at rate 0.95: " in text
    assert "SAME_AS_STAGE True" in extra["select"]
    assert "NESTED True True" in extra["select"] and "NO_CANARY True" in extra["select"]
    assert "no removal experiment" not in text and "older jmem" not in text
    # histograms x2, rules, ROC, convergence, 2 galleries, pairs, duplicates, 2 forests, curve,
    # 3 selections, the sweep
    assert images(nb) >= 16


def test_explore_falls_back_to_a_committed_results_folder(kernel_env, tmp_path):
    """No run directory anywhere: the explorer opens experiments/results/digits/ and says what it
    holds; an old-format folder gets a clear message, not a traceback."""
    kernel_env.delenv("JMEM_NB_RUN", raising=False)
    kernel_env.setenv("JMEM_NB_RUNS", str(tmp_path))  # where runs would be: empty
    text = all_text(execute("explore.ipynb"))
    assert "opening the committed study" in text and str(ROOT / "experiments" / "results" / "digits") in text
    assert "GATES:" in text or "written by an older jmem" in text


def test_explore_reads_a_results_folder_of_this_jmem(kernel_env, full_run, tmp_path):
    kernel_env.setenv("JMEM_NB_RUN", str(results_folder(full_run, tmp_path / "digits")))
    nb = execute("explore.ipynb")
    text = all_text(nb)
    assert "VERDICT: " in text and "GATES:" in text and "effect of rate (as defined):" in text
    assert "older jmem" not in text
    assert "the report's figure instead" in text  # scores, ROC, galleries from the report
    assert images_of(cell_with(nb, "def curve_groups(")) == 1  # the report's removal curve


def test_explore_names_an_old_format_results_folder(kernel_env, tmp_path):
    old = tmp_path / "digits"
    old.mkdir()
    (old / rundir.ABLATION).write_text(json.dumps({"factors": ["rate"], "cells": [], "main_effects": []}))
    (old / "verdict.txt").write_text("an old verdict\n")
    kernel_env.setenv("JMEM_NB_RUN", str(old))
    nb = execute("explore.ipynb")
    text = all_text(nb)
    assert "ablation.json in" in text and "written by an older jmem" in text
    assert "an old verdict" not in text  # superseded words are not shown
    assert images(nb) == 0


@pytest.mark.parametrize("name", ["quickstart.ipynb", "explore.ipynb"])
def test_colab_link_and_clone_url_come_from_one_variable(kernel_env, tmp_path, name):
    """The first code cell names REPO; the badge (and the clone URL) are built from it, from the
    clone's GitHub remote when it is left empty; no placeholder links anywhere."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    lines = [ln for ln in nb.cells[first].source.splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == 'REPO = ""'
    assert 'f"https://github.com/{REPO}.git"' in nb.cells[first].source
    every = "\n".join(c.source for c in nb.cells)
    assert "OWNER" not in every and "github.com/owner" not in every.lower()
    # A clone whose remote is a fork: the badge points at the fork (cwd: its notebooks/).
    fork = tmp_path / "fork"
    (fork / "jmem").mkdir(parents=True)
    (fork / "notebooks").mkdir()
    (fork / "pyproject.toml").write_text("")
    (fork / "jmem" / "__init__.py").write_text("")
    subprocess.run(["git", "init", "-q", str(fork)], check=True)
    subprocess.run(["git", "-C", str(fork), "remote", "add", "origin", "git@github.com:someone/jmem-fork.git"],
                   check=True)
    ran = execute(name, cwd=fork / "notebooks", cells=[first])
    badge = markdown_of(ran.cells[0])
    assert f"https://colab.research.google.com/github/someone/jmem-fork/blob/main/notebooks/{name}" in badge
    # Set by hand, REPO wins.
    nb.cells[first].source = nb.cells[first].source.replace('REPO = ""', 'REPO = "another/jmem"', 1)
    nbformat.write(nb, tmp_path / name)
    ran = execute(tmp_path / name, cwd=fork / "notebooks", cells=[first])
    assert "colab.research.google.com/github/another/jmem/blob/main" in markdown_of(ran.cells[0])


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
