"""``jmem report``: write report.md, its plots, reliability.json and fz_layout.npz.

Before it reads anything the report verifies its inputs (:func:`jmem.study.inputs.verify_report_inputs`:
the run's files, its scores, and that the removal experiment was computed from these scores),
and the dataset it draws example images from. It holds the run directory's lock, draws every
plot into a new folder and swaps it in for ``figures/`` only once the whole report is
rendered: a failed or killed re-render leaves the previous report and its plots as they were.
The files it wrote are listed in the manifest (``stages.report``).
"""

from __future__ import annotations

import datetime
import os
import secrets
import shutil
from pathlib import Path

import jmem
from jmem.errors import JmemError
from jmem.study import export, faults, inputs, integrity, rundir, workdir
from jmem.study.report import sections
from jmem.study.report.examples import examples_section
from jmem.study.report.loo import loo_section
from jmem.study.report.reliability import compute_reliability, reliability_section
from jmem.study.report.view import read_run

_NEW, _OLD = ".new.tmp", ".old.tmp"  # suffixes of the figure folders of a swap in progress


def build_report(run_dir, *, export_fz: bool = True, half_width: float = 0.1) -> dict:
    """Write report.md, figures/, reliability.json (and fz_layout.npz); return their paths.

    Returns ``{"report": Path, "figures": [Path, ...], "reliability": Path, "fz_layout": Path
    or None, "verdict": str or None}``.
    """
    if not 0 < half_width <= 1:
        raise JmemError(f"--half-width={half_width} must be in (0, 1]")
    d = Path(run_dir)
    if not d.is_dir():
        raise JmemError(f"run directory {str(d)!r} does not exist")
    with workdir.workdir_lock(d):
        restore_figures(d)
        inputs.verify_report_inputs(d)
        view = read_run(d)
        view.images = inputs.report_dataset(d, view.config)
        new = d / f".{rundir.REPORT_FIGURES}.{secrets.token_hex(4)}{_NEW}"
        new.mkdir()
        try:
            out = _render(view, new, export_fz, half_width)
            faults.point("report")
            swap_figures(d, new)
            rundir.save_text(d / rundir.REPORT, out.pop("text"))
        finally:
            shutil.rmtree(new, ignore_errors=True)
        _record(d, out)
    fig_dir = d / rundir.REPORT_FIGURES
    return {"report": d / rundir.REPORT, "figures": sorted(fig_dir.glob("*.png")), **out}


def _render(view, fig_dir: Path, export_fz: bool, half_width: float) -> dict:
    """Every section, plots into ``fig_dir``; reliability.json and fz_layout.npz written."""
    d = view.path
    rel = compute_reliability(view, half_width=half_width)
    exported = export.export_fz(d) if export_fz else None
    name = (view.config or {}).get("data", {}).get("name", "run")
    lines = [f"# Memorization report: {name}", "",
             f"Run directory `{d}`; written by `jmem report` (jmem {jmem.__version__}) on "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.", ""]
    lines += sections.verdict_section(view)
    lines += sections.summary_section(view)
    lines += sections.training_curves_section(view, fig_dir)
    lines += sections.selections_section(view)
    lines += sections.histogram_section(view, fig_dir)
    lines += sections.scatter_section(view, fig_dir)
    lines += sections.rate_section(view, fig_dir)
    lines += sections.canary_section(view, fig_dir)
    lines += loo_section(d, fig_dir)  # "How good are these scores?" leads with leave-one-out
    lines += reliability_section(view, rel, fig_dir)
    lines += sections.removal_section(view, fig_dir)
    lines += sections.ablation_section(view, fig_dir)
    lines += examples_section(view, fig_dir)
    lines += sections.files_section(view, exported, rel is not None)
    if rel is not None:
        rel_json = {"num_models": rel["num_models"], "split_half": rel["split_half"].to_dict(),
                    "stability": rel["stability"], "models_needed": rel["models_needed"],
                    "variance_check": rel["variance_check"],
                    "half_width": rel["half_width"], "confidence": rel["confidence"]}
        rundir.save_json(d / rundir.RELIABILITY, rel_json)
    return {"text": "\n".join(lines), "reliability": d / rundir.RELIABILITY if rel is not None else None,
            "fz_layout": exported, "verdict": (view.retrain or {}).get("verdict")}


def swap_figures(run_dir: Path, new: Path) -> None:
    """Make the folder ``new`` the run's ``figures/``; the old one goes only after the swap.

    Two renames: a kill between them leaves the old folder under a hidden name, which
    :func:`restore_figures` puts back.
    """
    fig_dir = Path(run_dir) / rundir.REPORT_FIGURES
    old = fig_dir.with_name(new.name[:-len(_NEW)] + _OLD)
    if fig_dir.exists():
        os.rename(fig_dir, old)
    os.rename(new, fig_dir)
    shutil.rmtree(old, ignore_errors=True)


def restore_figures(run_dir: Path) -> None:
    """Undo what a killed re-render left: put back a ``figures/`` renamed away by an
    unfinished :func:`swap_figures`, and delete unfinished folders (call under the lock)."""
    d = Path(run_dir)
    fig_dir = d / rundir.REPORT_FIGURES
    prefix = f".{rundir.REPORT_FIGURES}."
    for path in sorted(d.glob(prefix + "*")):
        if not path.is_dir():
            continue
        if path.name.endswith(_OLD) and not fig_dir.exists():
            os.rename(path, fig_dir)
        elif path.name.endswith((_OLD, _NEW)):
            shutil.rmtree(path, ignore_errors=True)


def _record(run_dir: Path, out: dict) -> None:
    """List report.md, its plots, reliability.json and fz_layout.npz in the manifest."""
    files = [rundir.REPORT] + [f"{rundir.REPORT_FIGURES}/{p.name}"
                               for p in sorted((run_dir / rundir.REPORT_FIGURES).glob("*.png"))]
    files += [Path(out[k]).name for k in ("reliability", "fz_layout") if out.get(k) is not None]
    integrity.record_stage(run_dir, "report",
                           {"files": {f: integrity.file_sha256(run_dir / f) for f in files}})
