"""The one exception type jmem raises for bad input.

The CLI turns a :class:`JmemError` into a single line on stderr and exit status 2, so every
message must name the offending field and value on one line.
"""


class JmemError(ValueError):
    """Bad user input: a config field, a dataset, a run directory. One line, names the field."""
