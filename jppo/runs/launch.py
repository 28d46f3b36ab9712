"""What the command line hands a loop: a typed, documented object instead of an argparse
namespace, so a loop can be started from Python (tests, notebooks) with the same meaning."""
from __future__ import annotations

import dataclasses
from typing import Optional

from jppo.runs.settings import RunSettings
from jppo.runs.sweep import Sweep


@dataclasses.dataclass(frozen=True)
class Launch:
    """One training run as asked for: the resolved settings plus the choices of this command."""

    settings: RunSettings
    """The YAML's settings with --set, --seed, --num-envs, ... applied."""
    env: str
    """A JAX environment's name, a Unity build's path, 'editor', or 'gymnasium:<id>'."""
    resume: bool = False
    """Continue the run folder's newest checkpoint (--resume)."""
    force: bool = False
    """Delete an existing run folder of the same run id first (--force)."""
    quiet: bool = False
    """No progress bar and no log lines (--quiet)."""
    stop_after_steps: Optional[int] = None
    """Stop with a checkpoint once this many more steps are done (--stop-after-steps): at the
    first update past them (JAX loop), or the first step (host loop)."""
    sweep: Optional[Sweep] = None
    """JAX environments: hyperparameter values trained side by side (--sweep)."""
    split_minibatches: bool = False
    """Host environments on several devices: all-reduce every minibatch's gradient instead of
    running the whole update on every device (--split-minibatches)."""


__all__ = ["Launch"]
