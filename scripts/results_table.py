"""Print the README's results table from the committed studies' verdicts.

    .venv/bin/python scripts/results_table.py

One row per study and protocol, read from ``experiments/results/<study>/verdict.txt`` (the
file ``jmem retrain`` writes), so the README's numbers are the reports' numbers;
``tests/test_docs.py`` checks that the README holds exactly these rows.
"""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "results"

# The studies in the table, in its order (the sweeps answer no removal question).
# digits_loo is the digits study plus leave-one-out: the same removal experiment, bitwise.
STUDIES = {"digits": "digits (`bash run.sh`)", "mnist1d": "MNIST-1D", "mnist1d_2x": "MNIST-1D, 2,100 models",
           "fashion_mnist": "Fashion-MNIST"}

PROTOCOL_LINE = re.compile(
    r"^\s+(?P<protocol>Feldman & Zhang|corrected) \((?P<what>[^;)]*)(?:; (?P<removed>[\d /]+) removed)?\): "
    r"(?:(?P<estimate>[−\-+\d.]+) pp \[(?P<low>[−\-+\d.]+), (?P<high>[−\-+\d.]+)\] \(.*?\): )?"
    r"(?P<answer>.*)$")


def short_answer(answer: str) -> str:
    """The verdict's word without its explanation: "no change detected", "a cost",
    "inconclusive: reliability", ..."""
    word = answer.split(" (")[0]
    if word.startswith("inconclusive:"):
        return ": ".join(part.strip() for part in word.split(":")[:2])
    return word


def rows() -> list[str]:
    """The table's Markdown rows (without its header)."""
    out = []
    for study, label in STUDIES.items():
        verdict = RESULTS / study / "verdict.txt"
        if not verdict.exists():
            continue
        for line in verdict.read_text().splitlines():
            match = PROTOCOL_LINE.match(line)
            if not match:
                continue
            m = match.groupdict()
            difference = (f"{m['estimate']} [{m['low']}, {m['high']}]" if m["estimate"] else "–")
            out.append(f"| {label} | {m['protocol']} | {m['removed'] or '–'} | {difference} | "
                       f"{short_answer(m['answer'])} | [report](experiments/results/{study}/report.md) |")
    return out


if __name__ == "__main__":
    print("\n".join(rows()))
