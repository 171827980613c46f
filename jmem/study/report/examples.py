"""The report's example images: the most memorized training examples and their test partners."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jmem.data.loaders import label_text
from jmem.errors import JmemError
from jmem.scores import estimators
from jmem.study import export, figures, rundir
from jmem.study.report.markdown import img
from jmem.study.report.view import RunView
from jmem.study.scoring import load_run

NUM_TOP_EXAMPLES = 12
NUM_TOP_PAIRS = 9


def _load_images(view: RunView):
    """The dataset's training and test inputs, or (None, reason) when they cannot be loaded."""
    if view.images is not None:  # loaded and verified by the report stage
        return view.images
    from jmem.data.loaders import load_dataset

    data = (view.config or {}).get("data", {})
    if not data.get("name"):
        return None, "config.json names no dataset"
    try:
        ds = load_dataset(data["name"], data_dir=data.get("data_dir") or None)
    except JmemError as err:
        return None, f"the dataset could not be loaded ({err})"
    if ds.num_train != view.num_examples:
        return None, f"the dataset has {ds.num_train} training examples, the run {view.num_examples}"
    return ds, ""


def best_partners(view: RunView, train_idx) -> list:
    """For each training index, its most influenced same-class test example and the influence.

    From ``keep.npy`` and ``margins_test.npy`` of the models behind scores.csv (one chunked
    pass over these columns only): pairs.csv holds only the pairs above the influence
    threshold, and an example's best partner may be below it. Returns [(test_index or None,
    infl)] in input order.
    """
    train_idx = np.asarray(train_idx, np.int64)
    if not train_idx.size:
        return []
    run = load_run(view.path)
    rows = export.scored_rows(view.path, run.keep.shape[0], run.model_rates, run.diverged)
    take = (lambda a: a) if rows is None else (lambda a: a[rows])
    margins_test, labels_test = run.test_sets["test"]
    correct = estimators.correct_matrix(take(margins_test), take(run.keep).shape[0])
    keep = np.asarray(take(run.keep))[:, train_idx]
    infl = next(estimators.iter_influence(keep, correct, chunk_size=train_idx.size))[1]  # [T, n]
    same = labels_test[:, None] == run.labels_train[train_idx][None, :]
    infl = np.where(same & np.isfinite(infl), infl, -np.inf)
    best = np.argmax(infl, axis=0)
    return [(int(j), float(infl[j, c])) if np.isfinite(infl[j, c]) else (None, float("nan"))
            for c, j in enumerate(best)]


def examples_section(view: RunView, fig_dir: Path) -> list:
    lines = ["## The most memorized examples", ""]
    ds, why = _load_images(view)
    if ds is None:
        return lines + [f"Images not shown: {why}.", ""]
    s = view.scores
    canary = view.canary
    mem = np.where(np.isfinite(s["mem"]), s["mem"], -np.inf)
    lira = np.where(np.isfinite(s["lira"]), s["lira"], -np.inf)
    if canary is not None:  # canaries are memorized by construction: show the natural ones
        mem = np.where(canary, -np.inf, mem)
    top = np.lexsort((-lira, -mem))[:NUM_TOP_EXAMPLES]
    top = top[np.isfinite(mem[top])]
    infl_thr = view.thresholds.get("options", {}).get("influence_threshold", 0.15)
    dups = view.duplicates or set()
    kw = dict(channel_mean=ds.channel_mean, channel_std=ds.channel_std)

    def row(i, j, v):
        i = int(i)
        tag = ", canary" if canary is not None and canary[i] else ""
        r = {"train_x": ds.x_train[i],
             "train_title": f"train #{i}\nlabel {label_text(ds.name, s['label'][i])}\nmem {s['mem'][i]:.2f}{tag}"}
        if j is None:
            r["test_title"] = "no same-class\ntest example"
            return r
        dup = (j, i) in dups
        r.update(test_x=ds.x_test[j], duplicate=dup,
                 test_title=f"test #{j}\nlabel {label_text(ds.name, ds.y_test[j])}\ninfl {v:.2f}"
                            + (" DUPLICATE" if dup else ""))
        return r

    partners = best_partners(view, top)
    figures.example_pairs([row(i, j, v) for i, (j, v) in zip(top, partners)],
                          fig_dir / "top_memorized.png",
                          title="Most memorized training examples (left of each pair) and the "
                                "test example they influence most (right)", **kw)
    n_dup = sum(j is not None and (j, int(i)) in dups for i, (j, _) in zip(top, partners))
    lines += [f"The {len(top)} training examples with the highest `mem`"
              + (" that are not canaries" if canary is not None else "")
              + " (label as trained on), each beside the same-class test example whose "
              "accuracy it raises most (`infl`: accuracy on that test example of models "
              "trained on it minus models not; Feldman & Zhang's high-influence pairs have "
              f"infl ≥ {infl_thr:g}). A partner that is a detected near-duplicate of its training "
              "example (`duplicates.csv`) is framed in red: its benefit is leakage, not "
              f"generalization ({n_dup} here).", "",
              img(f"{rundir.REPORT_FIGURES}/top_memorized.png", "most memorized examples"), ""]
    pairs = view.pairs
    on_test = (np.flatnonzero(pairs["test_set"] == "test") if pairs is not None
               and pairs["train_index"].size else np.empty(0, np.int64))
    if on_test.size:
        best = on_test[np.argsort(-pairs["infl"][on_test], kind="stable")][:NUM_TOP_PAIRS]
        rows = [row(pairs["train_index"][p], int(pairs["test_index"][p]), pairs["infl"][p])
                for p in best]
        n_dup = sum((int(pairs["test_index"][p]), int(pairs["train_index"][p])) in dups
                    for p in on_test)
        figures.example_pairs(rows, fig_dir / "top_pairs.png",
                              title="Strongest high-influence pairs: training example (left) "
                                    "and the test example it helps (right)", **kw)
        lines += [f"The {len(rows)} strongest high-influence pairs on the test set (`pairs.csv`: "
                  f"mem and infl above their thresholds, same class; {on_test.size} pairs in "
                  f"all, {n_dup} of them detected near-duplicates):", "",
                  img(f"{rundir.REPORT_FIGURES}/top_pairs.png", "high-influence pairs"), ""]
    else:
        lines += [f"No high-influence pairs (infl ≥ {infl_thr:g}) were found on the test set.", ""]
    return lines
