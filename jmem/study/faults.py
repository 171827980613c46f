"""Fault injection for the kill-and-resume tests: a no-op unless ``JMEM_TEST_KILL_AT`` is set.

``JMEM_TEST_KILL_AT=<point>[:<n>[:TERM|INT]]`` makes this process send itself SIGKILL (or
SIGTERM, SIGINT) the n-th time (default: the first) it reaches :func:`point` ``<point>``. The stages call
:func:`point` at the moments a kill is most likely to leave something half done:

=====================  ======================================================================
``inputs``             some input files written, not yet ``config.json`` (training, retrain)
``segment``            after a training segment
``checkpoint_started`` a checkpoint save in flight (asynchronous)
``checkpoint_saved``   a checkpoint save on disk
``wave_written``       a wave file written, its checkpoints not yet deleted
``assembly``           the final arrays half written
``cleanup``            the completion marker written, ``waves/`` not yet removed
``stage``              ``jmem run``: after the score and after the retrain stage
``report``             ``jmem report``: every plot drawn into the new folder, not yet swapped in
=====================  ======================================================================

Production code never waits for anything on the hook's account: where a point names a state
that an asynchronous operation reaches later (a checkpoint "on disk"), the caller passes
``settle``, which runs only when the kill is about to happen.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from typing import Callable

KILL_ENV = "JMEM_TEST_KILL_AT"

_counts: Counter = Counter()


def point(name: str, settle: Callable[[], object] | None = None) -> None:
    """Kill this process here if ``$JMEM_TEST_KILL_AT`` names ``name`` and this is its n-th
    visit; first call ``settle`` (e.g. wait for a save) so the point means what it says."""
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    target, _, rest = spec.partition(":")
    if target != name:
        return
    count, _, sig = rest.partition(":")
    _counts[name] += 1
    if _counts[name] == int(count or 1):
        if settle is not None:
            settle()
        signals = {"TERM": signal.SIGTERM, "INT": signal.SIGINT}
        os.kill(os.getpid(), signals.get(sig, signal.SIGKILL))
