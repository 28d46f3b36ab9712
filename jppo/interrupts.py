"""Ctrl-C (SIGINT) and SIGTERM (Slurm's time limit and preemption, ``kill``): a request to stop
that a run honours at its next safe point, with a checkpoint if it progressed.

    with interrupts.stopping():      # the CLI and both drivers
        ...
        interrupts.check()           # where stopping is safe: raises Interrupted if asked to

Why a flag and not Python's own KeyboardInterrupt: Python raises it wherever the main thread is
when the signal arrives: inside JAX's tracing or XLA's compile (with JAX 0.10.2 a Ctrl-C there
made the process segfault on its way out, 6 times in 17 tries), or inside a function JAX calls
from C++ (its garbage-collector callback), where the exception is printed, swallowed, and
training goes on. While ``stopping()`` is in force the handler only records the signal; the
loops ``check()`` between chunks, between host steps and within every wait for Unity, where a
``KeyboardInterrupt`` is safe, so compilation is never interrupted.

A second signal while the first waits (a long compile, a hung collective) ends the process at
once with the signal's exit code and no checkpoint; checkpoints are written atomically, so none
is ever left half-written, and the next start removes the temporary file of a write it cut.

May import: the standard library only (every layer but core/ and envs/ may use it).
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The run was asked to stop by ``signum``; raised by ``check`` at a safe point.
    ``everywhere``: every process of a multi-process run raised it at the same point."""

    def __init__(self, signum: int, everywhere: bool = False):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.everywhere = signum, everywhere

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process the signal ended: 130, 143."""
        return 128 + self.signum

    @property
    def what(self) -> str:
        """``interrupted`` (Ctrl-C) or ``terminated (SIGTERM)``: the start of the run's note."""
        return "interrupted" if self.signum == signal.SIGINT else "terminated (SIGTERM)"


_pending: int | None = None
_depth = 0


def _handle(signum, frame) -> None:
    global _pending
    if _pending is not None:  # the second: stop now (os._exit runs no finalizer XLA could crash in)
        os.write(2, b"jppo: stopped at once, without a checkpoint.\n")
        os._exit(128 + signum)
    _pending = signum
    name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    # os.write: a signal handler must not re-enter the buffered sys.stderr the console may hold.
    os.write(2, f"jppo: {name}: stopping at the next safe point (Ctrl-C again stops at once, "
                "without saving).\n".encode())


@contextlib.contextmanager
def stopping():
    """Within: SIGINT and SIGTERM set the flag ``check`` reads instead of raising. The previous
    handlers come back on the way out. Outside the main thread (where Python cannot set
    handlers) this does nothing and Python's KeyboardInterrupt stands."""
    global _depth, _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    if _depth == 0:
        _pending = None
    _depth += 1
    try:
        for s in SIGNALS:
            signal.signal(s, _handle)
        yield
    finally:
        _depth -= 1
        for s, handler in previous.items():
            signal.signal(s, handler)
        if _depth == 0:
            _pending = None


def pending() -> int | None:
    """The signal that asked the run to stop, or None."""
    return _pending


def check() -> None:
    """Raise ``Interrupted`` if a signal asked the run to stop."""
    if _pending is not None:
        raise Interrupted(_pending)


__all__ = ["Interrupted", "SIGNALS", "check", "pending", "stopping"]
