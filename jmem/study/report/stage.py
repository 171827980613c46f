"""``jmem report``: write report.md, its plots, reliability.json and fz_layout.npz."""

from __future__ import annotations

import datetime

import jmem
from jmem.errors import JmemError
from jmem.study import export, rundir
from jmem.study.report import sections
from jmem.study.report.examples import examples_section
from jmem.study.report.loo import loo_section
from jmem.study.report.reliability import compute_reliability, reliability_section
from jmem.study.report.view import read_run


def build_report(run_dir, *, export_fz: bool = True, half_width: float = 0.1) -> dict:
    """Write report.md, figures/, reliability.json (and fz_layout.npz); return their paths.

    Returns ``{"report": Path, "figures": [Path, ...], "reliability": Path, "fz_layout": Path
    or None, "verdict": str or None}``.
    """
    if not 0 < half_width <= 1:
        raise JmemError(f"--half-width={half_width} must be in (0, 1]")
    view = read_run(run_dir)
    d = view.path
    fig_dir = d / rundir.REPORT_FIGURES
    fig_dir.mkdir(exist_ok=True)
    for old in fig_dir.glob("*.png"):  # a re-render must not leave plots of absent sections
        old.unlink()
    rel = compute_reliability(view, half_width=half_width)
    exported = export.export_fz(d) if export_fz else None
    name = (view.config or {}).get("data", {}).get("name", "run")
    lines = [f"# Memorization report: {name}", "",
             f"Run directory `{d}`; written by `jmem report` (jmem {jmem.__version__}) on "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.", ""]
    lines += sections.verdict_section(view)
    lines += sections.summary_section(view)
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
    rundir.save_text(d / rundir.REPORT, "\n".join(lines))
    return {"report": d / rundir.REPORT, "figures": sorted(fig_dir.glob("*.png")),
            "reliability": d / rundir.RELIABILITY if rel is not None else None,
            "fz_layout": exported,
            "verdict": (view.retrain or {}).get("verdict")}
