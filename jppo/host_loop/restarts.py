"""When a failed Unity worker is restarted: ML-Agents' rules, per worker, with a clock to test.

ML-Agents release 19 (mlagents 0.28.0, ``trainers/subprocess_env_manager.py``) restarts a
worker whose environment raised ``UnityCommunicationException``, ``UnityTimeOutException``,
``UnityEnvironmentException`` (a build that exited is one: "Environment shut down with return
code ...") or ``UnityCommunicatorStoppedException``; any other failure (NaN observations,
``UnityWorkerInUseException``, an action or observation error, a Python error) ends the run.
Before each restart, ``_worker_has_restart_quota`` drops the worker's restart times older than
``restarts_rate_limit_period_s`` (a time ``t`` is kept while ``t > now - period``), then allows
the restart if ``restart_count < max_lifetime_restarts`` and ``len(recent) <
restarts_rate_limit_n``, -1 turning either check off (``EnvironmentSettings``; defaults 10, 1
and 60 from ``cli_utils.py``). The restart is then recorded (time and count). Counts are per
worker: with ``num_envs: 4`` each of the four may be restarted ten times.

Where jppo differs, and why:

- Time is ``time.monotonic`` (ML-Agents: ``datetime.now``), so a clock change does not open or
  close the window.
- The trainer's own failures are named with ML-Agents' equivalent: a worker process that ended
  without a word is ML-Agents' ``UnityCommunicationException`` ("recv failed"), one that hung
  beyond Unity's own timeout a ``UnityTimeOutException``.
- What a restart does is ``jppo.host_loop.unity_env``'s: jppo restarts only the failed worker
  and forgets only that worker's unfinished trajectories, where ML-Agents pauses every worker,
  resets them all and drops every agent's unfinished trajectory: jppo's workers step
  independently, so the others' experience is sound. A worker that fails again before its first
  report after a restart ends the run, as ML-Agents' reset after the restart raises. Only builds
  are restarted, never the editor (``--env editor``): see ``unity_env``.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

# mlagents_envs.exception classes after which ML-Agents restarts a worker.
RESTARTABLE = ("UnityCommunicationException", "UnityTimeOutException",
               "UnityEnvironmentException", "UnityCommunicatorStoppedException")
UNLIMITED = -1


def restartable(exceptions) -> bool:
    """Whether a failure is one ML-Agents restarts a worker after; ``exceptions``: the class
    names of the exception and its bases (``isinstance`` as names)."""
    return any(name in RESTARTABLE for name in exceptions)


@dataclasses.dataclass(frozen=True)
class Limits:
    """``env_settings``' three keys (ML-Agents' defaults)."""

    max_lifetime_restarts: int = 10
    restarts_rate_limit_n: int = 1
    restarts_rate_limit_period_s: float = 60

    @property
    def any(self) -> bool:
        """Whether any restart can ever happen."""
        return self.max_lifetime_restarts != 0 and self.restarts_rate_limit_n != 0


class Restarts:
    """Each worker's restarts so far: its count and its recent restart times."""

    def __init__(self, limits: Limits, workers: int, clock: Callable[[], float] = time.monotonic):
        self.limits, self.clock = limits, clock
        self.counts = [0] * workers
        self.recent: list[list[float]] = [[] for _ in range(workers)]

    def _drop_old(self, worker: int) -> None:
        since = self.clock() - self.limits.restarts_rate_limit_period_s
        self.recent[worker] = [t for t in self.recent[worker] if t > since]

    def allowed(self, worker: int) -> bool:
        """Whether ``worker`` may be restarted now (ML-Agents' ``_worker_has_restart_quota``)."""
        self._drop_old(worker)
        most, n = self.limits.max_lifetime_restarts, self.limits.restarts_rate_limit_n
        return ((most == UNLIMITED or self.counts[worker] < most)
                and (n == UNLIMITED or len(self.recent[worker]) < n))

    def record(self, worker: int) -> None:
        """``worker`` is being restarted now."""
        self.recent[worker].append(self.clock())
        self.counts[worker] += 1

    def left(self, worker: int) -> str:
        """"9 restarts left" (over the run's lifetime), "no restart left", or "no limit on restarts"."""
        most = self.limits.max_lifetime_restarts
        if most == UNLIMITED:
            return "no limit on restarts"
        n = most - self.counts[worker]
        return f"{n} restart{'s' if n != 1 else ''} left" if n > 0 else "no restart left"

    def refusal(self, worker: int) -> str:
        """Why ``worker`` may not be restarted now (after ``allowed`` said no)."""
        limits = self.limits
        count = self.counts[worker]
        if limits.max_lifetime_restarts != UNLIMITED and count >= limits.max_lifetime_restarts:
            return (f"it was restarted {_times(count)} already, max_lifetime_restarts = "
                    f"{limits.max_lifetime_restarts}")
        return (f"it was restarted {_times(len(self.recent[worker]))} in the last "
                f"{limits.restarts_rate_limit_period_s:g} s, restarts_rate_limit_n = "
                f"{limits.restarts_rate_limit_n} per restarts_rate_limit_period_s = "
                f"{limits.restarts_rate_limit_period_s:g}")


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


__all__ = ["Limits", "RESTARTABLE", "Restarts", "UNLIMITED", "restartable"]
