"""What each command prints at its end: a short summary, what it wrote, what to run next.

Pure functions from a stage's summary (the dict it returns) to lines of text; the command
line prints them. Paths are printed as the user gave them, so the suggested commands can be
pasted as they are. The run-directory format each line points to is docs/run-directory.md.
"""

from __future__ import annotations

from pathlib import Path

FORMAT_DOC = "docs/run-directory.md"
MAX_NAMES = 6  # file names listed on a "wrote" line before "and N more"


def _trained_now(summary: dict) -> str:
    """``", 352 trained now at 10.7 models/s"``, ``", all trained before"`` (a resume that
    found every model done), or nothing when the summary does not say."""
    now, speed = summary.get("trained_now"), summary.get("models_per_second")
    if now == 0:
        return ", all trained before"
    return f", {now} trained now at {speed:.1f} models/s" if now and speed else ""


def training_line(summary: dict) -> str:
    """One line about the estimation models: count, speed, test accuracy, divergences."""
    acc, sd = summary.get("test_accuracy_mean"), summary.get("test_accuracy_std")
    accuracy = f"; test accuracy {100 * acc:.1f}% (sd {100 * sd:.1f})" if acc is not None else ""
    return (f"estimation: {summary.get('models')} models{_trained_now(summary)}{accuracy}; "
            f"{summary.get('diverged', 0)} diverged")


def models_line(what: str, summary: dict) -> str:
    """``"removal experiment: 1050 models, 1050 trained now at 9.2 models/s, 131 s"``."""
    seconds = f", {summary['seconds']:.0f} s" if summary.get("seconds") is not None else ""
    return f"{what}: {summary.get('models')} models{_trained_now(summary)}{seconds}"


def wrote_line(directory, names: list[str], total: int | None = None) -> str:
    """``"wrote runs/digits/: a, b, c and 9 more (format: docs/run-directory.md)"``.

    names: the files worth naming, most important first; total: how many files the
    directory holds (None: just ``names``)."""
    shown = names[:MAX_NAMES]
    more = (total if total is not None else len(names)) - len(shown)
    listed = ", ".join(shown) + (f" and {more} more" if more > 0 else "")
    return f"wrote {Path(directory)}/: {listed} (format: {FORMAT_DOC})"


def next_line(*steps: tuple[str, str]) -> str:
    """What to run next: one ``(command, why)`` per line, the first after ``next:``, the
    alternatives after ``or:``, the reason as a shell comment (the line pastes as it is)::

        next: jmem retrain runs/digits   # does removing the selected examples cost accuracy?
          or: jmem report runs/digits    # report.md with plots
    """
    width = max([len(command) for command, why in steps if why] or [0])
    return "\n".join((f"{'next' if n == 0 else '  or'}: {command:<{width}}"
                      + (f"   # {why}" if why else "")).rstrip()
                     for n, (command, why) in enumerate(steps))


def files_in(directory) -> list[str]:
    """The names of the plain files directly in ``directory`` (hidden ones left out), sorted."""
    d = Path(directory)
    return sorted(p.name for p in d.iterdir() if p.is_file() and not p.name.startswith(".")) \
        if d.is_dir() else []


def wrote_in(directory, key: list[str]) -> str:
    """:func:`wrote_line` for a directory on disk: the ``key`` files it holds, then the count
    of the others."""
    present = files_in(directory)
    return wrote_line(directory, [n for n in key if n in present], len(present))


def train_ending(summary: dict, workdir) -> list[str]:
    """``jmem train``: the models in one line, the run directory, then scoring. A process
    other than 0 of a multi-process job says what it trained (process 0 wrote the rest)."""
    if summary.get("process"):
        return [f"process {summary['process']}: trained {summary.get('trained_now', 0)} models in "
                f"{summary.get('seconds', 0):.0f} s; process 0 assembled {workdir}"]
    key = ["margins_train.npy", "margins_test.npy", "keep.npy", "loss_history.npy", "models.csv",
           "duplicates.csv"]
    return [training_line(summary), wrote_in(workdir, key),
            next_line((f"jmem score {workdir}", "per-example scores, thresholds and selections"))]


def score_ending(run_dir) -> list[str]:
    """``jmem score``: its three files, then the removal experiment or the report."""
    return [wrote_line(run_dir, ["scores.csv", "thresholds.json", "pairs.csv"]),
            next_line((f"jmem retrain {run_dir}", "does removing the selected examples cost accuracy?"),
                      (f"jmem report {run_dir}", "report.md with its plots"))]


def _stage_ending(what: str, summary: dict, out: Path, key: list[str], run_dir, why: str) -> list[str]:
    """A training stage after its own text: its models, its folder, then the report."""
    return [models_line(what, summary), wrote_in(out, key),
            next_line((f"jmem report {run_dir}", why))]


def retrain_ending(summary: dict, run_dir) -> list[str]:
    """``jmem retrain``: the verdict comes first (printed by the command), then these lines."""
    out = Path(summary.get("retrain_dir") or Path(run_dir) / "retrain")
    return _stage_ending("removal experiment", summary, out,
                         ["retrain.json", "verdict.txt", "ablation.json", "retrain_models.csv"],
                         run_dir, "the verdict with its tables and plots")


def loo_ending(summary: dict, run_dir) -> list[str]:
    """``jmem loo``: after the validation text, the models, the files and the report."""
    out = Path(summary.get("loo_dir") or Path(run_dir) / "loo")
    return _stage_ending("leave-one-out", summary, out,
                         ["loo.json", "examples.csv", "influence.csv", "models.csv"],
                         run_dir, "its section: how good are these scores?")


def leakage_ending(written: list, target: str, details: bool, run_dir: bool) -> list[str]:
    """``jmem leakage``: the files (duplicates.csv and its figures), then the per-class table
    (unless it was printed), and another cut (a run directory's own duplicates.csv stays what
    the run trained with: the other cut goes to another file)."""
    steps = [] if details else [(f"jmem leakage {target} --details", "per detector and per class")]
    out = " --out duplicates_T.csv" if run_dir else ""
    steps.append((f"jmem leakage {target} --set leakage.threshold=T{out}",
                  "another cut, if the figures show look-alikes rather than copies"))
    return ["wrote " + ", ".join(str(p) for p in written), next_line(*steps)]


def report_ending(out: dict, run_dir, has_retrain: bool, has_loo: bool) -> list[str]:
    """``jmem report``: what it wrote, then what the report still lacks or where to read it."""
    written = [Path(out["report"]).name, f"figures/ ({len(out['figures'])} plots)"]
    written += [Path(out[k]).name for k in ("reliability", "fz_layout") if out.get(k) is not None]
    steps = [(f"read {out['report']}", "")]
    if not has_retrain:
        steps.append((f"jmem retrain {run_dir}", "the removal experiment; then jmem report again"))
    elif not has_loo:
        steps.append((f"jmem loo {run_dir}", "check the scores against exact leave-one-out"))
    return [wrote_line(run_dir, written), next_line(*steps)]


def seconds_line(seconds: dict) -> str:
    """``"time per stage: train 34 s, score 0.3 s, retrain 110 s, report 3.7 s"``."""
    return "time per stage: " + ", ".join(f"{stage} {value:.2g} s" if value < 10 else f"{stage} {value:.0f} s"
                                          for stage, value in seconds.items())


def run_ending(out: dict, workdir, has_loo: bool) -> list[str]:
    """``jmem run``: after the verdict, the report, the time per stage and the next step."""
    report = out["report"]
    steps = [(f"read {report['report']}", "")]
    if not has_loo:
        steps.append((f"jmem loo {workdir}", "check the scores against exact leave-one-out"))
    key = [f"report.md ({len(report['figures'])} plots)", "scores.csv", "retrain/", "loo/",
           "margins_train.npy", "keep.npy"]
    present = {*files_in(workdir), *(f"{p.name}/" for p in Path(workdir).iterdir() if p.is_dir())}
    named = [n for n in key if n.split(" ")[0] in present]
    return [wrote_line(workdir, named, len(present)), seconds_line(out["seconds"]), next_line(*steps)]
