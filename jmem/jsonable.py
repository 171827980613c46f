"""The one conversion of jmem's values to plain JSON values (every ``.json`` file goes through it).

Strict JSON has no NaN or Infinity: an undefined number (NaN, ±inf) becomes ``null``, which
is how every record of a run directory spells "undefined".
"""

from __future__ import annotations

import math
from pathlib import PurePath

import numpy as np


def to_jsonable(value):
    """``value`` with numpy scalars and arrays, tuples and paths turned into JSON values.

    dict -> dict with ``str`` keys; list, tuple, ndarray -> list; numpy bool / int / float ->
    Python bool / int / float (non-finite floats -> None); a path -> its string; anything else
    is returned as it is (``json`` then accepts it or names it).
    """
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, PurePath):
        return str(value)
    return value
