"""JAX-native environments with a gymnax-style API, made by name: base (the API, spaces,
auto-reset), cartpole, pendulum, ball3d with ball3d_physics (Unity's 3DBall and 3DBallHard), basic,
gridworld and visual_gridworld (GridWorld through its camera), and
adapters that bring in other JAX environments as they are: gymnax_adapter (gymnax 0.0.x and 1.x,
and any env with gymnax's method names), brax_adapter (Brax, MuJoCo Playground).

    make("CartPole-v1")                 a built-in or ``register``-ed name
    make("gymnax:Acrobot-v1")           a gymnax environment (pip install 'jppo[gymnax]')
    make("mypkg.envs:make_maze")        ``module:factory``: the factory's environment, adapted
    register("Maze", make_maze)         then make("Maze"), and --env Maze where it was registered
    adapt(env, params)                  any supported environment object as a jppo Environment

May import: nothing of jppo (jax and numpy only); the loops and the stand-in import it.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from jppo.envs.base import (AutoResetStep, Box, Discrete, Environment, Hybrid, MultiDiscrete,
                            auto_reset_step, step_or_reset)
from jppo.envs.brax_adapter import BraxEnv, is_brax_like
from jppo.envs.gymnax_adapter import (GymnaxEnv, UnsupportedSpaceError, as_space, param_names,
                                      replace_params)

# Name -> (module, class), imported lazily so one environment's cost is paid only when used; or
# a factory given to ``register``.
_BUILT_IN = {
    "CartPole-v1": ("jppo.envs.cartpole", "CartPole"),
    "Pendulum-v1": ("jppo.envs.pendulum", "Pendulum"),
    "3DBall": ("jppo.envs.ball3d", "Ball3D"),
    "3DBallHard": ("jppo.envs.ball3d", "Ball3DHard"),
    "Basic": ("jppo.envs.basic", "Basic"),
    "GridWorld": ("jppo.envs.gridworld", "GridWorld"),
    "VisualGridWorld": ("jppo.envs.visual_gridworld", "VisualGridWorld"),
}
_REGISTRY: dict[str, Any] = dict(_BUILT_IN)
GYMNAX_PREFIX = "gymnax:"


class UnknownEnvironmentError(ValueError):
    """Raised by ``make`` for a name it cannot resolve; the message is one sentence."""


def names() -> list[str]:
    """The names ``make`` accepts besides ``gymnax:<id>`` and ``module:factory``."""
    return list(_REGISTRY)


def register(name: str, factory: Callable[..., Any], *, overwrite: bool = False) -> None:
    """Make ``factory()`` available as ``make(name)`` (and ``--env name`` in a process that
    registered it). The factory returns any environment ``adapt`` takes, or gymnax's ``(env,
    params)``. A name taken by a built-in, or already registered without ``overwrite``, is
    refused."""
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"environment name {name!r} is not allowed; give a non-empty name "
                         "without ':' (that separates module and factory).")
    if not callable(factory):
        raise TypeError(f"the factory for {name!r} must be callable, not {factory!r}.")
    if name in _BUILT_IN or (name in _REGISTRY and not overwrite):
        raise ValueError(f"environment name {name!r} is already registered; pick another name"
                         + ("" if name in _BUILT_IN else " or pass overwrite=True") + ".")
    _REGISTRY[name] = factory


def unregister(name: str) -> None:
    """Forget a name given to ``register`` (built-ins stay)."""
    if name not in _BUILT_IN:
        _REGISTRY.pop(name, None)


def make(name: str, **params) -> Environment:
    """The environment called ``name``, with ``params`` replacing fields of its default params.

    ``name`` is a built-in or registered name, ``gymnax:<id>`` (gymnax's registry), or
    ``package.module:factory`` (the factory, or class, is called without arguments; an
    environment object found there is used as is)."""
    if name in _BUILT_IN:
        module, cls = _BUILT_IN[name]
        return getattr(importlib.import_module(module), cls)(**params)
    if name in _REGISTRY:
        return _with_params(adapt(_REGISTRY[name]()), params)
    if name.startswith(GYMNAX_PREFIX):
        return _gymnax(name[len(GYMNAX_PREFIX):], params)
    module, sep, attr = name.partition(":")
    if sep and module and attr and all(p.isidentifier() for p in module.split(".") + attr.split(".")):
        return _with_params(adapt(_call(_resolve(module, attr, name))), params)
    raise UnknownEnvironmentError(
        f"unknown environment {name!r}; known environments are: {', '.join(_REGISTRY)} (and "
        "gymnax:<id>, package.module:factory)")


def adapt(env: Any, params: Any = None) -> Environment:
    """A jppo ``Environment`` for ``env``: a jppo environment (as is, unless its spaces are
    gymnax-like), a gymnax or gymnax-like one (``GymnaxEnv``), a Brax or Playground one
    (``BraxEnv``), or gymnax's ``(env, params)`` pair. ``params`` replaces the default params
    of a gymnax-like environment."""
    if isinstance(env, tuple) and len(env) == 2:  # gymnax.make's (env, params)
        env, params = env[0], env[1] if params is None else params
    if isinstance(env, Environment) and params is None and _jppo_spaces(env):
        return env
    if all(callable(getattr(env, m, None)) for m in ("reset", "step", "observation_space",
                                                      "action_space")) and hasattr(env, "default_params"):
        return GymnaxEnv(env, params)
    if is_brax_like(env):
        return BraxEnv(env)
    raise TypeError(f"{env!r} is not an environment jppo can drive; give one with gymnax's "
                    "methods (reset(key, params), step(key, state, action, params), "
                    "observation_space, action_space, default_params) or Brax's (reset(rng), "
                    "step(state, action), observation_size, action_size).")


def _jppo_spaces(env: Environment) -> bool:
    try:
        params = env.default_params
        observation = env.observation_space(params)
        sensors = observation if isinstance(observation, tuple) and not isinstance(
            observation, Box) else (observation,)
        return (isinstance(env.action_space(params), (Box, Discrete, MultiDiscrete, Hybrid))
                and all(isinstance(sensor, Box) for sensor in sensors))
    except NotImplementedError:
        return True


def _with_params(env: Environment, params: dict) -> Environment:
    if not params:
        return env
    if isinstance(env, GymnaxEnv):
        return GymnaxEnv(env.env, replace_params(env.default_params, params))
    return GymnaxEnv(env, replace_params(env.default_params, params))


def _resolve(module: str, attr: str, name: str):
    try:
        found = importlib.import_module(module)
    except ImportError as err:
        raise UnknownEnvironmentError(f"environment {name!r}: cannot import module {module!r} "
                                      f"({err})") from None
    for part in attr.split("."):
        if not hasattr(found, part):
            raise UnknownEnvironmentError(f"environment {name!r}: module {module!r} has no "
                                          f"{attr!r}")
        found = getattr(found, part)
    return found


def _call(found):
    """A factory's environment: call a function or class; an environment object as is."""
    looks_like_env = hasattr(found, "step") and hasattr(found, "reset") and not isinstance(found, type)
    return found if looks_like_env else found()


def _gymnax(env_id: str, params: dict) -> Environment:
    try:
        # Imported here: gymnax is an optional extra.
        import gymnax
    except ImportError:
        raise UnknownEnvironmentError(f"environment 'gymnax:{env_id}' needs gymnax; install it "
                                      "with pip install 'jppo[gymnax]'") from None
    if env_id not in gymnax.registered_envs:
        raise UnknownEnvironmentError(f"gymnax has no environment {env_id!r}; its environments "
                                      f"are: {', '.join(gymnax.registered_envs)}")
    env, defaults = gymnax.make(env_id)
    return GymnaxEnv(env, replace_params(defaults, params))


__all__ = ["AutoResetStep", "Box", "BraxEnv", "Discrete", "Environment", "GYMNAX_PREFIX",
           "GymnaxEnv", "UnknownEnvironmentError", "UnsupportedSpaceError", "adapt", "as_space",
           "auto_reset_step", "make", "names", "param_names", "register", "replace_params",
           "step_or_reset", "unregister"]
