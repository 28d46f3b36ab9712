"""How a host run stops: what a fault means for the exit code (the sentence that says what
became of the checkpoints is ``jppo.runs.report.stop_note``, shared with the JAX loop).

Exit code 2 where the user has to change something before training can start (nothing
listening, port in use, several behaviors, wrong shapes, a checkpoint that does not fit), 1
where a running environment failed (it died, froze, or sent NaN or Inf) or training diverged.
"""
from __future__ import annotations

from jppo.host_loop.vec_env import EnvFault

# EnvFault kinds that need the user to change the command, the config or the scene.
SETUP_KINDS = {"in_use", "config", "shape", "behaviors"}


class Stop(Exception):
    """This process cannot go on: ``cause`` (one sentence), exit ``code``, and whether the
    train state itself went bad (then it is not saved)."""

    def __init__(self, cause: str, code: int, diverged: bool = False):
        super().__init__(cause)
        self.cause, self.code, self.diverged = cause, code, diverged

    @classmethod
    def of(cls, fault: EnvFault, starting: bool = False) -> "Stop":
        """An environment's fault; while starting, everything but NaN data is the setup's."""
        if starting:
            code = 1 if fault.kind == "nan" else 2
        else:
            code = 2 if fault.kind in SETUP_KINDS else 1
        return cls(str(fault).rstrip("."), code)


class Interrupted(KeyboardInterrupt):
    """A process of the run was interrupted; every process has been told and the checkpoint
    saved."""


__all__ = ["Interrupted", "SETUP_KINDS", "Stop"]
