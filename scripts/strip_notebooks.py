"""Clear outputs and execution counts of notebooks in place (they are committed stripped).

Usage: python scripts/strip_notebooks.py [NOTEBOOK.ipynb ...]   (default: notebooks/*.ipynb)
tests/test_notebooks.py fails on a committed notebook with outputs.
"""

import sys
from pathlib import Path

import nbformat


def strip(path: Path) -> bool:
    """Strip one notebook; True if it changed."""
    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            cell.outputs, cell.execution_count, changed = [], None, True
        if cell.metadata.pop("execution", None) is not None:  # per-cell timings of some front ends
            changed = True
    if changed:
        nbformat.write(nb, path)
    return changed


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
    for path in paths:
        print(f"{path}: {'stripped' if strip(path) else 'already clean'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
