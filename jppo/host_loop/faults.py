"""How a host run stops: what a fault means for the exit code, and the one sentence that says
what happened and what became of the checkpoints.

Exit code 2 where the user has to change something before training can start (nothing
listening, port in use, several behaviors, wrong shapes, a checkpoint that does not fit), 1
where a running environment failed (it died, froze, or sent NaN or Inf) or training diverged.
"""
from __future__ import annotations

import jax
import numpy as np

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


def finite(tree) -> bool:
    """Whether every array of ``tree`` is finite: only a finite train state is saved."""
    return all(bool(np.isfinite(np.asarray(x)).all()) for x in jax.tree_util.tree_leaves(tree))


def stop_note(cause: str, run_id: str, step: int, saved_at: int, saved_now: bool) -> str:
    """``cause`` and what became of the checkpoints, in one sentence: saved at ``step`` just
    now, or the last one (``saved_at``; -1: none yet) intact."""
    run = f"run {run_id!r}"
    if saved_now:
        return (f"{cause}; {run} stopped at step {step}, saved there: continue with --resume "
                "once the environment works again.")
    if saved_at >= 0:
        return (f"{cause}; {run} stopped at step {step}, its last checkpoint (step {saved_at}) "
                "is intact: continue with --resume.")
    return f"{cause}; {run} stopped before its first checkpoint: start it again with --force."


__all__ = ["Interrupted", "SETUP_KINDS", "Stop", "finite", "stop_note"]
