"""What guards a workdir: one writer at a time, and stopping at safe points.

* :func:`workdir_lock`: an exclusive ``flock`` on ``<workdir>/.lock`` (re-entrant within a
  process: ``jmem run`` holds its run directory's lock while its stages take it again).
* :class:`StopRequest`: SIGTERM (a preemption notice) and SIGINT (Ctrl-C) set a flag that the
  stages check at their safe points; :class:`Preempted` carries the signal out to the
  command, which exits 143 (SIGTERM) or 130 (SIGINT). A re-run resumes.
* :func:`remove_stale_tmp`: temporary files of atomic writes a killed process left behind.

The wave runner (:mod:`jmem.study.waves`) re-exports these names.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import sys
import threading
from pathlib import Path

from jmem.errors import JmemError, warn

WAVES_DIR = "waves"
LOCK = ".lock"
EXIT_PREEMPTED = 128 + signal.SIGTERM   # 143: "stopped, not finished" for schedulers that requeue
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130: the shell's code for Ctrl-C
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """A stage stopped at a safe point on SIGTERM or SIGINT (``signum``), after checkpointing;
    re-running the command resumes. ``exit_code``: 143 for SIGTERM, 130 for SIGINT."""

    def __init__(self, message: str, signum: int = signal.SIGTERM):
        super().__init__(message)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


def is_tmp(name: str) -> bool:
    """Temporary files of atomic writes (``.<name>.<random>.tmp``), left by a killed process."""
    return name.startswith(".") and name.endswith(".tmp")


def remove_stale_tmp(workdir: Path) -> None:
    """Delete temporary files a killed process left behind (call while holding the lock)."""
    for directory in (Path(workdir), Path(workdir) / WAVES_DIR):
        if directory.is_dir():
            for path in directory.iterdir():
                if is_tmp(path.name) and path.is_file():
                    path.unlink()


_HELD: dict[str, int] = {}  # real path of a lock file this process holds -> nesting depth


@contextlib.contextmanager
def workdir_lock(workdir: Path):
    """Hold an exclusive ``flock`` on ``<workdir>/.lock`` for the duration of the block.

    The lock dies with its process (SIGKILL included), so a stale lock cannot block a resume.
    The file stays (deleting it would let two processes lock two different files); it
    records the holder as ``pid@host`` for the error message. Network filesystems that do
    not implement ``flock`` (e.g. gcsfuse) give no protection: keep to one launch per workdir.
    Re-entrant within a process (``jmem run`` holds the run directory's lock while its
    stages take it again); another process is refused.
    """
    path = Path(workdir) / LOCK
    key = os.path.realpath(path)
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise JmemError(f"--workdir {str(workdir)!r} is in use by another jmem process "
                        f"(pid {holder}); wait for it to finish or stop it") from None
    except OSError as err:  # a filesystem without locks: run, but say so
        warn(f"cannot lock {path} ({err.strerror}); make sure no other jmem process "
             "writes this workdir")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}@{socket.gethostname()}\n".encode(), 0)
        _HELD[key] = 1
        yield
    finally:
        _HELD.pop(key, None)
        os.close(fd)  # releases the lock


class StopRequest:
    """Set by SIGTERM (a preemption notice) or SIGINT (Ctrl-C); the stages check it at their
    safe points (between training segments and waves, between the stages of ``jmem run``)
    and stop there with :class:`Preempted`. A second SIGINT stops at once
    (``KeyboardInterrupt``).

    Installed only in the main thread (Python's rule for signal handlers); the previous
    handlers are restored on exit. Nested requests share the outermost one, so a signal that
    arrives while a stage runs inside ``jmem run`` is seen by the pipeline too.
    """

    _active: "StopRequest | None" = None

    def __init__(self):
        self._signum = None
        self._previous = {}
        self._outer = None

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self._signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now
        if self._signum is None:
            name = signal.Signals(signum).name
            print(f"jmem: {name} received: stopping at the next safe point"
                  + (" (Ctrl-C again to stop at once)" if signum == signal.SIGINT else ""),
                  file=sys.stderr, flush=True)
        self._signum = signum

    @property
    def signum(self) -> int | None:
        return self._outer.signum if self._outer is not None else self._signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def check(self, where: str) -> None:
        """Raise :class:`Preempted` if a stop was requested (call at a safe point)."""
        if self.requested:
            raise Preempted(where, self.signum)

    def __enter__(self):
        if StopRequest._active is not None:
            self._outer = StopRequest._active
            return self
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        StopRequest._active = self
        return self

    def __exit__(self, *exc):
        if self._outer is not None:
            return False
        StopRequest._active = None
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        return False
