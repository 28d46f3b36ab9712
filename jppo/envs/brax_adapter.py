"""Brax and MuJoCo Playground environments as jppo environments.

Their API: ``state = env.reset(rng)``, ``state = env.step(state, action)``, with ``state.obs``,
``state.reward``, ``state.done`` (float 0/1) and ``state.info`` (a dict); ``env.observation_size``
and ``env.action_size``; actions in [-1, 1]. A bare Brax environment has no time limit: the
adapter counts steps and truncates at ``episode_length`` (1000, Brax's training default; None:
never). Brax's ``EpisodeWrapper`` (and Playground's training wrapper) report their own limit as
``info["truncation"]``: where it is set, the end is a truncation, not a termination. Pass the
environment *without* an auto-reset wrapper: jppo resets it itself and needs the final
observation of an episode (to bootstrap a truncation), which an auto-reset throws away.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jppo.envs.base import Box, Environment

# Keys Brax's and Playground's AutoResetWrapper keep in ``info``.
_AUTO_RESET_KEYS = ("first_obs", "first_pipeline_state", "first_state")


class BraxState(NamedTuple):
    inner: Any  # the Brax / Playground state
    steps: jax.Array  # int32: steps since the episode began


class BraxEnv(Environment):
    """A Brax-style environment under jppo's contract (see the module docstring).

    ``obs_key`` picks the observation where ``state.obs`` is a dict (Playground's
    ``{"state": ..., "privileged_state": ...}``); default ``"state"``.
    """

    def __init__(self, env, episode_length: int | None = 1000, obs_key: str = "state"):
        self.env = env
        self.episode_length = episode_length
        self.obs_key = obs_key
        self.name = str(getattr(env, "name", None) or type(env).__name__)

    @property
    def default_params(self) -> None:
        return None

    def _obs(self, obs) -> jax.Array:
        if isinstance(obs, dict):
            if self.obs_key not in obs:
                raise KeyError(f"{self.name}'s observation is a dict of {sorted(obs)}; give "
                               "BraxEnv(env, obs_key=...) one of them.")
            obs = obs[self.obs_key]
        return jnp.reshape(jnp.asarray(obs, jnp.float32), (-1,))

    def reset(self, key: jax.Array, params: Any = None):
        del params
        inner = self.env.reset(key)
        info = getattr(inner, "info", {}) or {}
        if any(k in info for k in _AUTO_RESET_KEYS):
            raise ValueError(f"{self.name} resets itself (an AutoResetWrapper); pass the "
                             "environment without it: jppo resets episodes and needs their final "
                             "observations.")
        return self._obs(inner.obs), BraxState(inner, jnp.zeros((), jnp.int32))

    def step(self, key: jax.Array, state: BraxState, action: jax.Array, params: Any = None):
        del key, params  # Brax steps are deterministic given the state
        inner = self.env.step(state.inner, action)
        steps = state.steps + 1
        done = jnp.asarray(inner.done) > 0.5
        reported = jnp.asarray((getattr(inner, "info", {}) or {}).get("truncation", 0.0)) > 0.5
        terminated = done & ~reported
        truncated = reported & done
        if self.episode_length is not None:
            truncated = truncated | (steps >= self.episode_length)
        truncated = truncated & ~terminated
        return (self._obs(inner.obs), BraxState(inner, steps),
                jnp.asarray(inner.reward, jnp.float32).reshape(()), terminated.reshape(()),
                truncated.reshape(()), {})

    def observation_space(self, params: Any = None) -> Box:
        size = self.env.observation_size
        if isinstance(size, dict):
            size = size[self.obs_key]
        size = int(jnp.prod(jnp.asarray(size))) if not isinstance(size, int) else size
        return Box(-jnp.inf, jnp.inf, (size,))

    def action_space(self, params: Any = None) -> Box:
        return Box(-1.0, 1.0, (int(self.env.action_size),))


def is_brax_like(env) -> bool:
    """Brax's shape of API: ``reset(rng)`` of one argument, ``step(state, action)``,
    ``action_size``."""
    return (hasattr(env, "action_size") and hasattr(env, "observation_size")
            and callable(getattr(env, "reset", None)) and callable(getattr(env, "step", None)))


__all__ = ["BraxEnv", "BraxState", "is_brax_like"]
