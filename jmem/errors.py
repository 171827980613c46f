"""The one exception type jmem raises for bad input, and the one-line warning.

The CLI turns a :class:`JmemError` into a single line on stderr and exit status 2, so every
message must name the offending field and value on one line. :func:`warn` prints a legal
but suspicious setting as one line, ``jmem: warning: ...``, and carries on.
"""

import sys


class JmemError(ValueError):
    """Bad user input: a config field, a dataset, a run directory. One line, names the field."""


def warn(message: str) -> None:
    """One line on stderr: ``jmem: warning: <message>``."""
    print(f"jmem: warning: {one_line(message)}", file=sys.stderr, flush=True)


def one_line(text) -> str:
    """``text`` with newlines folded into spaces (messages of libraries can span lines)."""
    return " ".join(str(text).split("\n")).strip()


def os_error(err: OSError, path=None, action: str = "access") -> JmemError:
    """A :class:`JmemError` naming the path and the reason of a failed file operation
    (read-only or full filesystem, a file where a directory should be, no permission)."""
    where = path if path is not None else (err.filename or "?")
    reason = err.strerror or type(err).__name__
    return JmemError(f"cannot {action} {str(where)!r}: {reason}"
                     + (f" (errno {err.errno})" if err.errno else ""))
