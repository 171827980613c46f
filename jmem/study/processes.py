"""Who does what in a multi-process job (``jax.distributed``): process 0 decides and writes.

Every stage that trains (estimation, removal experiment, leave-one-out) runs on every
process in three steps:

1. **decide**: process 0 alone checks and locks the stage's directory, writes its inputs and
   decides what is left to train (the models done, the wave size); every process receives the
   decision (:func:`on_primary` with a ``template``), so all of them cut the same waves;
2. **train**: every process trains its round-robin share of the waves into the shared
   directory, then a barrier (:func:`train_everywhere`);
3. **write**: process 0 alone assembles the waves and writes the stage's outputs while the
   others wait (:func:`on_primary` without a template).

The cheap stages (scoring, the report) are step 3 alone. Every other process computes what it
needs (the selection, the design, the keep matrix) from the shared run directory itself: it is
a deterministic function of files process 0 wrote before the last broadcast.

No process may wait for a process that gave up: each step on process 0 ends with a broadcast
of its outcome. An error there is re-raised on process 0 and becomes a one-line error on the
others; a stop (SIGTERM, SIGINT: :class:`jmem.study.workdir.Preempted`) stops them with the
same exit status. With one process :func:`on_primary` calls its function and nothing else.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np

from jmem.errors import JmemError
from jmem.study.workdir import Preempted

_OK, _FAILED = 0, 1  # any other status: 128 + the signal that stopped process 0


def on_primary(work: Callable, what: str, template: dict | None = None):
    """Run ``work()`` on process 0 only; every process returns once it has finished.

    template: None: returns ``work()``'s value on process 0 and None on the others. A dict of
      fixed-shape numpy arrays (the values every other process passes in): ``work()`` must
      return a dict with the same keys, shapes and dtypes, and every process returns process
      0's (bool arrays included).
    what: the step, in the others' error: "process 0 failed to <what>; see its error".
    Raises on process 0 what ``work`` raised; on the others :class:`JmemError` or, when
    process 0 was stopped, :class:`Preempted` with its signal.
    """
    from jmem.engine import parallel

    result, status, error = None, _OK, None
    if parallel.process_index() == 0:
        try:
            result = work()
        except Preempted as err:
            status, error = err.exit_code, err
        except BaseException as err:  # noqa: BLE001 - re-raised below, after telling the others
            status, error = _FAILED, err
    shared = {} if template is None else (template if result is None else result)
    decision = parallel.broadcast_from_primary({"status": np.int32(status), **shared})
    if error is not None:
        raise error
    status = int(decision.pop("status"))
    if status == _FAILED:
        raise JmemError(f"process 0 failed to {what}; see its error, then re-run the same "
                        "command on every process")
    if status != _OK:
        raise Preempted(f"process 0 was stopped while trying to {what}", signum=status - 128)
    return result if template is None else decision


def decide(prepare: Callable[[], tuple], num_models: int, what: str) -> tuple[bool, int, np.ndarray]:
    """A training stage's start-up decision, made by process 0, known to every process.

    prepare: run on process 0 alone (under the stage directory's lock, which it takes):
      returns (complete: bool, wave_size: int, done: bool[M]) with M = ``num_models``: the
      positions of the wave order already in a wave file (:func:`jmem.study.waves.resume_state`).
    Returns the same triple on every process (see :func:`on_primary` for failures).
    """
    def work() -> dict:
        complete, wave_size, done = prepare()
        return {"complete": np.bool_(complete), "wave_size": np.int32(wave_size),
                "done": np.asarray(done, bool)}

    template = {"complete": np.bool_(False), "wave_size": np.int32(0),
                "done": np.zeros(num_models, bool)}
    decision = on_primary(work, what, template)
    return bool(decision["complete"]), int(decision["wave_size"]), decision["done"].astype(bool)


def check_stop(stop_request, where: str) -> None:
    """Between stages: :class:`Preempted` on every process if any was asked to stop
    (SIGTERM, SIGINT: ``stop_request``, a :class:`jmem.study.workdir.StopRequest`), so that
    none goes on to wait for one that left. The signal is this process's, else the first
    stopped process's."""
    from jmem.engine import parallel

    # Every process takes part in the gather, a stopped one too: then all of them stop.
    signums = [int(s) for s in parallel.gather_int(stop_request.signum or 0) if s]
    stop_request.check(where)
    if signums:
        raise Preempted(f"{where} (another process was stopped)", signum=signums[0])


@contextlib.contextmanager
def primary_lock(directory):
    """Hold ``directory``'s lock (:func:`jmem.study.workdir.workdir_lock`) on process 0 for
    the block; the others take none (they write only the files of their own waves). Every
    process learns whether process 0 got it."""
    from jmem.study.workdir import workdir_lock

    with contextlib.ExitStack() as stack:
        on_primary(lambda: stack.enter_context(workdir_lock(directory)), f"lock {str(directory)!r}")
        yield


def train_everywhere(job, workdir, wave_size: int, done: np.ndarray, barrier: str,
                     **train_options) -> tuple[int, float]:
    """Step 2 of a training stage: this process trains its share of the pending waves
    (:func:`jmem.study.waves.train_pending` with ``train_options``), then waits at the barrier
    ``barrier`` for every other process. Returns (rows this process trained, its training
    seconds)."""
    import time

    from jmem.engine import parallel
    from jmem.study import waves

    began = time.perf_counter()
    trained = waves.train_pending(job, workdir, wave_size, done, **train_options)
    seconds = time.perf_counter() - began
    parallel.barrier(barrier)
    return trained, seconds
