"""One persistent JAX compilation cache for the whole test session (started by conftest.py).

Many tests compile the same small programs: the in-process tests on each pytest-xdist worker,
and the ``python -m jppo.train`` / stand-in processes they start (each a fresh Python whose
in-memory jit cache is empty). With the persistent cache on, a program compiled once anywhere
in the session is loaded from disk everywhere else (a load takes milliseconds, a compile
seconds on 2 cores).

The cache is a fresh folder per session, made by the first pytest process (the xdist
controller, or plain pytest) and handed to its workers and to every subprocess through the
environment (``JAX_COMPILATION_CACHE_DIR``, which JAX reads at import); removed at the end.
Every program is cached, however quick to compile (minimum compile time 0, no minimum size).
A ``JAX_COMPILATION_CACHE_DIR`` set before pytest starts is used as it is (not removed);
``JPPO_TEST_JAX_CACHE=0`` turns the cache off, to measure or debug without it.

Processes share the folder without a lock (JAX locks only when an eviction limit is set, and
then rescans the whole folder at every write). A process that reads an entry another one is
still writing gets a truncated stream, which zlib refuses: JAX warns and compiles instead. The
warning is silenced (``PYTHONWARNINGS``, inherited by subprocesses) because tests compare
stderr exactly; the program it then compiles is the same.

Tests that must see a real XLA compile (a Ctrl-C during the compile) start their processes
with ``without_compilation_cache(env)``.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile

CACHE_DIR = "JAX_COMPILATION_CACHE_DIR"
SETTINGS = {
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
}
TORN_ENTRY = "ignore:Error reading persistent compilation cache entry"
_OWNED = "_JPPO_TEST_JAX_CACHE_OWNER"


def without_compilation_cache(env: dict | None = None) -> dict:
    """``env`` (default: this process's environment) without the persistent cache's variables,
    for a subprocess that must compile for real."""
    env = dict(os.environ if env is None else env)
    for name in (CACHE_DIR, *SETTINGS):
        env.pop(name, None)
    return env


def start() -> None:
    """Turn the cache on for this process and, through the environment, its children."""
    if os.environ.get("JPPO_TEST_JAX_CACHE", "1") == "0":
        return
    if not os.environ.get(CACHE_DIR):
        # The first pytest process of the session; xdist workers inherit the variable.
        os.environ[CACHE_DIR] = tempfile.mkdtemp(prefix="jppo-tests-jax-cache-")
        os.environ[_OWNED] = str(os.getpid())
    for name, value in SETTINGS.items():
        os.environ.setdefault(name, value)
    warnings = os.environ.get("PYTHONWARNINGS", "")
    if TORN_ENTRY not in warnings:
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [warnings, TORN_ENTRY]))
    if "jax" in sys.modules:  # a plugin imported JAX first: it read the environment already
        import jax  # only then: importing it here would cost every process a second

        jax.config.update("jax_compilation_cache_dir", os.environ[CACHE_DIR])
        jax.config.update("jax_persistent_cache_min_compile_time_secs",
                          float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
        jax.config.update("jax_persistent_cache_min_entry_size_bytes",
                          int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]))


def finish() -> None:
    """Remove the session's folder, in the process that made it."""
    if os.environ.get(_OWNED) == str(os.getpid()):
        shutil.rmtree(os.environ.pop(CACHE_DIR), ignore_errors=True)
        del os.environ[_OWNED]
