"""JAX-native environments with a gymnax-style API, made by name: base (the API, spaces,
auto-reset), cartpole, pendulum, ball3d with ball3d_physics (Unity's 3DBall and 3DBallHard).

May import: nothing of jppo (jax and numpy only); the loops and the stand-in import it.
"""
from __future__ import annotations

import importlib

from jppo.envs.base import (AutoResetStep, Box, Discrete, Environment, auto_reset_step,
                            step_or_reset)

# Name -> (module, class). Modules import lazily so one environment's cost is paid only when used.
_REGISTRY = {
    "CartPole-v1": ("jppo.envs.cartpole", "CartPole"),
    "Pendulum-v1": ("jppo.envs.pendulum", "Pendulum"),
    "3DBall": ("jppo.envs.ball3d", "Ball3D"),
    "3DBallHard": ("jppo.envs.ball3d", "Ball3DHard"),
    "Basic": ("jppo.envs.basic", "Basic"),
    "GridWorld": ("jppo.envs.gridworld", "GridWorld"),
}


class UnknownEnvironmentError(ValueError):
    """Raised by ``make`` for a name that is not registered."""


def names() -> list[str]:
    """The names ``make`` accepts."""
    return list(_REGISTRY)


def make(name: str, **kwargs) -> Environment:
    """The environment registered as ``name``; keyword arguments go to its constructor."""
    if name not in _REGISTRY:
        raise UnknownEnvironmentError(
            f"unknown environment {name!r}; known environments are: {', '.join(_REGISTRY)}")
    module, cls = _REGISTRY[name]
    return getattr(importlib.import_module(module), cls)(**kwargs)


__all__ = ["AutoResetStep", "Box", "Discrete", "Environment", "UnknownEnvironmentError",
           "auto_reset_step", "make", "names", "step_or_reset"]
