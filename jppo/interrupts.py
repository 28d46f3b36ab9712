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
once with the signal's exit code and no checkpoint, from a thread that sees every signal as it
arrives (the main thread may be inside XLA for seconds); checkpoints are written atomically,
so none is ever left half-written, and the next start removes the temporary file of a write it
cut.

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
    ``everywhere``: every process of a multi-process run raised it at the same point.
    ``noted``: a loop has told the user what became of the run (else the CLI says it)."""

    def __init__(self, signum: int, everywhere: bool = False):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.everywhere, self.noted = signum, everywhere, False

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
    """Python's handler, run in the main thread between bytecodes (so only once a compile has
    returned): record the request for ``check``."""
    global _pending
    if _pending is None:
        _pending = signum


def _watch(read_fd: int) -> None:
    """A thread that sees each signal at once (``signal.set_wakeup_fd`` writes its number to
    a pipe from the C handler, and XLA's compile releases the GIL): it says the run is
    stopping, and ends the process on the second signal. ``os._exit`` runs no finalizer XLA
    could crash in; a write it cuts short leaves a temporary file the next start removes."""
    seen = 0
    while data := os.read(read_fd, 64):
        for signum in data:
            if signum not in SIGNALS:
                continue
            seen += 1
            if seen > 1:
                os.write(2, b"jppo: stopped at once, without a checkpoint.\n")
                os._exit(128 + signum)
            name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            os.write(2, f"jppo: {name}: stopping at the next safe point (press Ctrl-C again to "
                        "stop at once, without saving).\n".encode())


def _install():
    """Our handlers and the watcher thread; returns the function that puts things back."""
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    watcher = threading.Thread(target=_watch, args=(read_fd,), name="jppo-signals", daemon=True)
    watcher.start()
    for s in SIGNALS:
        signal.signal(s, _handle)

    def restore():
        for s, handler in previous.items():
            signal.signal(s, handler)
        signal.set_wakeup_fd(previous_fd)
        os.close(write_fd)  # the watcher reads the end of the pipe and returns
        watcher.join()
        os.close(read_fd)

    return restore


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def hold() -> None:
    """For the rest of the process, as within ``stopping()``: what ``python -m jppo.train`` does
    before it imports JAX (a signal then is kept for the run's first ``check``)."""
    global _depth
    if _main_thread() and not _depth:
        _install()
        _depth = 1  # never undone: every later stopping() is inside this one


@contextlib.contextmanager
def stopping():
    """Within: SIGINT and SIGTERM set the flag ``check`` reads instead of raising; a second one
    ends the process at once. The previous handlers come back on the way out. Outside the main
    thread (where Python cannot set handlers) this does nothing and Python's KeyboardInterrupt
    stands; nested (or after ``hold``), the outermost one rules."""
    global _depth, _pending
    if not _main_thread() or _depth:
        yield
        return
    _pending, _depth = None, 1
    restore = _install()
    try:
        yield
    finally:
        restore()
        _pending, _depth = None, 0


def pending() -> int | None:
    """The signal that asked the run to stop, or None."""
    return _pending


def check() -> None:
    """Raise ``Interrupted`` if a signal asked the run to stop."""
    if _pending is not None:
        raise Interrupted(_pending)


__all__ = ["Interrupted", "SIGNALS", "check", "hold", "pending", "stopping"]
