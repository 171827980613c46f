"""Plain-text summaries of a :class:`LeakageResult`: one line (:func:`leakage_line`, what
every command prints), or the table of leaked shares per detector and per class
(:func:`format_leakage_summary`, ``jmem leakage --details``)."""

from __future__ import annotations


from jmem.data.dataset import Dataset
from jmem.data.loaders import CLASS_NAMES
from jmem.errors import JmemError
from jmem.data.leakage.detect import LeakageResult

def leakage_line(result: LeakageResult, dataset: Dataset) -> str:
    """One line: the leaked share of the test set, each detector's count and cut, and the
    within-test pairs."""
    _check_sizes(result, dataset)
    t, leaked = dataset.num_test, result.leaked
    detectors = "; ".join(f"{d}: {int(result.leaked_by(d).sum()):,} within {result.metric} "
                          f"distance {result.thresholds[d]:g}" for d in result.nearest)
    line = (f"Leakage in {dataset.name}: {int(leaked.sum()):,} of {t:,} test examples "
            f"({_pct(leaked.sum(), t)}) have a near-duplicate among {dataset.num_train:,} training "
            "examples" + (f" ({detectors})" if detectors else ""))
    if result.within_test is not None:
        n = len(result.within_test_pairs)
        line += f"; {n:,} within-test pair{'' if n == 1 else 's'}"
    return line + "."


def _check_sizes(result: LeakageResult, dataset: Dataset) -> None:
    if result.num_test != dataset.num_test:
        raise JmemError(f"leakage result has {result.num_test} test examples but dataset {dataset.name!r} has {dataset.num_test}")


def format_leakage_summary(result: LeakageResult, dataset: Dataset) -> str:
    """A plain-text summary: leaked share of the test set per detector and per class, and
    within-test duplicates."""
    _check_sizes(result, dataset)
    t = dataset.num_test
    leaked = result.leaked
    lines = [
        f"Leakage in {dataset.name}: {int(leaked.sum()):,} of {t:,} test examples ({_pct(leaked.sum(), t)}) "
        f"have a near-duplicate among {dataset.num_train:,} training examples.",
    ]
    for detector in result.nearest:
        mask = result.leaked_by(detector)
        lines.append(
            f"  {detector:<8} ({result.metric}, threshold {result.thresholds[detector]:g}): "
            f"{int(mask.sum()):,} ({_pct(mask.sum(), t)})"
        )
    if result.within_test is not None:
        wp = result.within_test_pairs
        noun = "pair" if len(wp) == 1 else "pairs"
        lines.append(f"Within the test set: {len(wp):,} {noun} of near-duplicate test examples (pixel detector).")
    names = CLASS_NAMES.get(dataset.name)
    within = result.within_test is not None
    lines.append("Per class (test examples with a training near-duplicate"
                 + (", and in a within-test pair" if within else "") + "):")
    header = f"  {'class':>5} {'leaked':>7} {'test':>7} {'share':>7}" + (f" {'within':>7}" if within else "")
    lines.append(header + ("  name" if names else ""))
    within_counts = result.within_test_per_class() if within else None
    for c, (n_leak, n_test) in enumerate(zip(result.leaked_per_class(), result.test_per_class())):
        row = f"  {c:>5} {int(n_leak):>7,} {int(n_test):>7,} {_pct(n_leak, n_test):>7}"
        row += f" {int(within_counts[c]):>7,}" if within else ""
        lines.append(row + (f"  {names[c]}" if names else ""))
    return "\n".join(lines) + "\n"


def _pct(num, den) -> str:
    return f"{100.0 * float(num) / float(den):.2f}%" if den else "n/a"
