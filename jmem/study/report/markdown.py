"""Markdown pieces of the report: numbers ("n/a" for undefined), intervals, tables, images."""

from __future__ import annotations

import numpy as np


def fmt(x, spec=".3f") -> str:
    if x is None:
        return "n/a"
    try:
        if not np.isfinite(x):
            return "n/a"
    except TypeError:
        return str(x)
    return format(x, spec)


def ci(mean, low, high, spec=".2f") -> str:
    return f"{fmt(mean, spec)} [{fmt(low, spec)}, {fmt(high, spec)}]"


def table(header: list, rows: list) -> list:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out + [""]


def img(rel: str, alt: str) -> str:
    return f"![{alt}]({rel})"
