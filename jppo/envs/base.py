"""The gymnax-style environment API every JAX-native environment implements.

An environment is a stateless object whose methods are pure functions of
explicit state, so a driver can ``jit``, ``vmap`` and ``lax.scan`` them:

    obs, state = env.reset(key, params)
    obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)

``step`` does *not* reset: it returns the true next observation, so that a
driver can bootstrap a truncated (time-limit) episode from V(final obs).
``auto_reset_step`` adds the reset for drivers that want it inside a scan.

Observations are one array, or a tuple of arrays (one per sensor, as a Unity agent with several
sensors; ``observation_space`` is then a tuple of ``Box``). Actions are ``Discrete``,
``MultiDiscrete`` (one choice per branch), ``Box``, or ``Hybrid`` (a ``(continuous, discrete)``
pair). An environment whose discrete actions are masked implements ``action_mask(state,
params)``: bool ``[sum of branch sizes]``, True where the choice is allowed in ``state``.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class Discrete(NamedTuple):
    """``n`` actions, encoded as an int32 scalar in [0, n)."""

    n: int

    @property
    def shape(self) -> tuple[int, ...]:
        return ()

    def sample(self, key: jax.Array) -> jax.Array:
        return jax.random.randint(key, (), 0, self.n, dtype=jnp.int32)


class MultiDiscrete(NamedTuple):
    """One choice per branch: int32 ``[len(nvec)]``, choice i in [0, nvec[i])."""

    nvec: tuple

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.nvec),)

    def sample(self, key: jax.Array) -> jax.Array:
        keys = jax.random.split(key, len(self.nvec))
        return jnp.stack([jax.random.randint(k, (), 0, n, dtype=jnp.int32)
                          for k, n in zip(keys, self.nvec)])


class Hybrid(NamedTuple):
    """Continuous and discrete at once, as ML-Agents' hybrid ActionSpec: actions are a
    ``(continuous, discrete)`` pair, float32 ``continuous.shape`` and int32 ``[branches]``."""

    continuous: "Box"
    discrete: MultiDiscrete

    def sample(self, key: jax.Array):
        k1, k2 = jax.random.split(key)
        return self.continuous.sample(k1), self.discrete.sample(k2)


class Box(NamedTuple):
    """A float32 array of ``shape`` with bounds ``low`` and ``high`` (may be infinite)."""

    low: Any
    high: Any
    shape: tuple[int, ...]

    def sample(self, key: jax.Array) -> jax.Array:
        low = jnp.broadcast_to(jnp.asarray(self.low, jnp.float32), self.shape)
        high = jnp.broadcast_to(jnp.asarray(self.high, jnp.float32), self.shape)
        # Unbounded boxes sample from [-1, 1], the range policies are usually scaled to.
        low = jnp.where(jnp.isfinite(low), low, -1.0)
        high = jnp.where(jnp.isfinite(high), high, 1.0)
        return jax.random.uniform(key, self.shape, jnp.float32, low, high)


class Environment:
    """Base class: subclasses implement ``default_params``, ``reset``, ``step`` and the spaces."""

    name: str = "Environment"

    @property
    def default_params(self) -> Any:
        raise NotImplementedError

    def reset(self, key: jax.Array, params: Any = None) -> tuple[jax.Array, Any]:
        raise NotImplementedError

    def step(self, key: jax.Array, state: Any, action: jax.Array, params: Any = None):
        """Returns ``(obs, state, reward, terminated, truncated, info)`` without resetting."""
        raise NotImplementedError

    def observation_space(self, params: Any = None) -> Box:
        raise NotImplementedError

    def action_space(self, params: Any = None) -> Box | Discrete | MultiDiscrete | Hybrid:
        raise NotImplementedError

    def action_mask(self, state: Any, params: Any = None) -> jax.Array | None:
        """Allowed discrete choices in ``state`` (bool ``[sum of branch sizes]``), or None:
        every choice allowed (the default)."""
        return None


class AutoResetStep(NamedTuple):
    obs: Any  # the first observation of the next episode where done, else the next obs
    state: Any
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    final_obs: Any  # the true next observation (before any reset)
    info: Any


def auto_reset_step(env: Environment, key: jax.Array, state: Any, action: jax.Array,
                    params: Any = None) -> AutoResetStep:
    """One ``step``, then a ``reset`` where the episode ended (terminated or truncated).

    Both branches are computed and selected with ``where`` so the function stays
    branch-free under ``vmap``; the reset costs little next to a policy forward pass.
    """
    key_step, key_reset = jax.random.split(key)
    return step_or_reset(env, key_step, state, action, env.reset(key_reset, params), params)


def step_or_reset(env: Environment, key: jax.Array, state: Any, action: jax.Array,
                  reset: tuple, params: Any = None) -> AutoResetStep:
    """``auto_reset_step`` with the reset ``(obs, state)`` computed beforehand, so a driver can
    draw a whole rollout's resets in one batched call outside its loop."""
    obs, next_state, reward, terminated, truncated, info = env.step(key, state, action, params)
    reset_obs, reset_state = reset
    done = jnp.logical_or(terminated, truncated)
    pick = lambda a, b: jnp.where(jnp.reshape(done, done.shape + (1,) * (jnp.ndim(a) - jnp.ndim(done))), a, b)
    new_state = jax.tree_util.tree_map(pick, reset_state, next_state)
    return AutoResetStep(jax.tree_util.tree_map(pick, reset_obs, obs), new_state, reward,
                         terminated, truncated, obs, info)
