"""gymnax environments, and any environment with gymnax's method names, as jppo environments.

jppo's contract (``jppo.envs.base``) is ``step(key, state, action, params) -> (obs, state,
reward, terminated, truncated, info)`` with the *true* next observation (no reset), so that a
time limit can bootstrap from V(final observation). gymnax's ``step`` resets where an episode
ends, and its two generations say so differently:

- gymnax 1.x: ``(obs, state, reward, terminated, truncated, info)``, ``obs`` already the next
  episode's first where it ended, the true one in ``info["final_observation"]``: used. Where the
  env has 1.x's ``step_env`` and ``is_truncated``, the adapter calls them instead (``step`` is
  exactly those plus the reset), which keeps the true final state too.
- gymnax 0.0.x: ``(obs, state, reward, done, info)``, ``done`` covering the time limit too. The
  adapter calls the env's ``step_env`` (the same transition without the reset) when it has one,
  so the final observation is kept. Truncation is ``info["truncated"]`` (or ``"truncation"``)
  where the env reports it, else gymnax's own time limit, ``state.time >=
  params.max_steps_in_episode`` after the step; a natural end on the limit's very step is then
  counted as truncated (0.0.x's ``done`` cannot tell them apart).

A six-value ``step`` without ``final_observation`` is read as jppo's own contract (no reset), so
an environment written for jppo without subclassing ``jppo.envs.Environment`` fits too. Spaces
are duck-typed (``as_space``): anything with ``n`` is Discrete, anything with ``low``, ``high``
and ``shape`` a Box. Observations of any shape are flattened to float32 ``[size]`` (jppo's
networks take a vector, as PureJaxRL's FlattenObservationWrapper does for MinAtar).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from jppo.envs.base import Box, Discrete, Environment


class UnsupportedSpaceError(TypeError):
    """A space that is neither Discrete-like (``n``) nor Box-like (``low``, ``high``, ``shape``)."""


def as_space(space) -> Box | Discrete:
    """jppo's ``Box`` or ``Discrete`` for a gymnax-, gymnasium- or jppo-like space."""
    if isinstance(space, (Box, Discrete)):
        return space
    n = getattr(space, "n", None)
    if n is not None and tuple(getattr(space, "shape", ()) or ()) == ():
        return Discrete(int(n))
    if all(hasattr(space, name) for name in ("low", "high", "shape")):
        return Box(space.low, space.high, tuple(int(d) for d in space.shape))
    raise UnsupportedSpaceError(
        f"unsupported space {space!r}; jppo takes a Discrete-like space (with n) or a Box-like "
        "one (with low, high and shape).")


def replace_params(params: Any, overrides: dict) -> Any:
    """``params`` with fields replaced: a NamedTuple, a (flax struct) dataclass, or a dict."""
    if not overrides:
        return params
    names = param_names(params)
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise TypeError(f"environment parameter {unknown[0]!r} is not one of "
                        f"{', '.join(names) or 'none'}.")
    if hasattr(params, "_replace"):
        return params._replace(**overrides)
    if dataclasses.is_dataclass(params):
        return dataclasses.replace(params, **overrides)
    return {**params, **overrides}


def param_names(params: Any) -> tuple[str, ...]:
    """The field names of an environment's params (NamedTuple, dataclass or dict); () if none."""
    if hasattr(params, "_fields"):
        return tuple(params._fields)
    if dataclasses.is_dataclass(params):
        return tuple(f.name for f in dataclasses.fields(params))
    if isinstance(params, dict):
        return tuple(params)
    return ()


def _flag(value) -> jax.Array:
    return jnp.asarray(value).astype(bool)


class GymnaxEnv(Environment):
    """A gymnax (0.0.x or 1.x) or gymnax-like environment under jppo's contract.

    ``params`` (default: the env's ``default_params``) with ``overrides`` replacing its fields
    becomes this adapter's ``default_params``; every method also takes params explicitly.
    """

    def __init__(self, env, params: Any = None, **overrides):
        self.env = env
        params = env.default_params if params is None else params
        self._params = replace_params(params, overrides)
        self.name = str(getattr(env, "name", type(env).__name__))
        self._obs_space = as_space(env.observation_space(self._params))
        self._size = math.prod(self._obs_space.shape)

    @property
    def default_params(self) -> Any:
        return self._params

    def _p(self, params):
        return self._params if params is None else params

    def _flat(self, obs) -> jax.Array:
        return jnp.reshape(jnp.asarray(obs, jnp.float32), (self._size,))

    def reset(self, key: jax.Array, params: Any = None):
        obs, state = self.env.reset(key, self._p(params))
        return self._flat(obs), state

    def step(self, key: jax.Array, state: Any, action: jax.Array, params: Any = None):
        params = self._p(params)
        if callable(getattr(self.env, "step_env", None)) and callable(
                getattr(self.env, "is_truncated", None)):
            # gymnax 1.x's own step is exactly this plus the reset: skipping the reset keeps the
            # true final state (for pictures) and saves a reset per step.
            obs, next_state, reward, terminated, info = self.env.step_env(key, state, action,
                                                                          params)
            out = (obs, next_state, reward, terminated,
                   self.env.is_truncated(next_state, params), info)
        else:
            out = self.env.step(key, state, action, params)
        if len(out) == 6:
            obs, next_state, reward, terminated, truncated, info = out
            info = dict(info) if isinstance(info, dict) else {}
            obs = info.pop("final_observation", obs)
            terminated, truncated = _flag(terminated), _flag(truncated)
        elif len(out) == 5:
            if hasattr(self.env, "step_env"):  # the transition without the auto-reset
                out = self.env.step_env(key, state, action, params)
            obs, next_state, reward, done, info = out
            info = dict(info) if isinstance(info, dict) else {}
            done = _flag(done)
            truncated = self._truncated(done, next_state, params, info)
            terminated = done & ~truncated
        else:
            raise TypeError(f"{self.name}.step returned {len(out)} values; jppo reads gymnax's 5 "
                            "(obs, state, reward, done, info) or 6 (obs, state, reward, "
                            "terminated, truncated, info).")
        return (self._flat(obs), next_state, jnp.asarray(reward, jnp.float32).reshape(()),
                terminated.reshape(()), truncated.reshape(()), info)

    @staticmethod
    def _truncated(done, next_state, params, info) -> jax.Array:
        for name in ("truncated", "truncation", "TimeLimit.truncated"):
            if name in info:
                return done & _flag(info.pop(name))
        limit = getattr(params, "max_steps_in_episode", None)
        if limit is not None and hasattr(next_state, "time"):
            return done & (jnp.asarray(next_state.time) >= limit)
        return jnp.zeros((), bool)

    def observation_space(self, params: Any = None) -> Box:
        space = self._obs_space if params is None else as_space(self.env.observation_space(params))
        return Box(jnp.reshape(jnp.broadcast_to(jnp.asarray(space.low, jnp.float32), space.shape), (-1,)),
                   jnp.reshape(jnp.broadcast_to(jnp.asarray(space.high, jnp.float32), space.shape), (-1,)),
                   (math.prod(space.shape),))

    def action_space(self, params: Any = None) -> Box | Discrete:
        return as_space(self.env.action_space(self._p(params)))


__all__ = ["GymnaxEnv", "UnsupportedSpaceError", "as_space", "param_names", "replace_params"]
