"""Pendulum-v1 as pure JAX functions, matching Gymnasium 1.x ``PendulumEnv`` under ``TimeLimit(200)``."""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jppo.envs.base import Box, Environment


class EnvParams(NamedTuple):
    """Physical constants (SI units) and the episode's time limit; every field may be traced."""

    max_speed: float = 8.0
    max_torque: float = 2.0
    dt: float = 0.05
    g: float = 10.0
    m: float = 1.0
    l: float = 1.0
    max_steps_in_episode: int = 200


class EnvState(NamedTuple):
    """Float32 scalars ``theta`` (rad, 0 = upright, not wrapped) and ``theta_dot``; int32 scalar ``time``."""

    theta: jax.Array
    theta_dot: jax.Array
    time: jax.Array


# 2 pi split into a head with 8 significant bits, so k * head is exact in float32 for |k| < 2**16,
# and the float32 rest (Cody & Waite's argument reduction).
_TWO_PI_HEAD = 6.28125
_TWO_PI_TAIL = 2 * math.pi - _TWO_PI_HEAD


def angle_normalize(x: jax.Array) -> jax.Array:
    """``x`` minus the nearest multiple of 2 pi, in [-pi, pi]; same shape as ``x``.

    Gymnasium's ``((x + pi) % (2 pi)) - pi`` in float32 loses half an ulp of ``x + pi`` (4e-6 at
    |x| = 80, where an unwrapped theta can drift in 200 steps); this keeps ~1 ulp of the result.
    It may return +pi where Gymnasium returns -pi, which the squared cost does not see.
    """
    k = jnp.round(x / (2 * math.pi))
    return (x - k * _TWO_PI_HEAD) - k * _TWO_PI_TAIL


def _obs(state: EnvState) -> jax.Array:
    """float32 [3]: (cos theta, sin theta, theta_dot)."""
    return jnp.stack([jnp.cos(state.theta), jnp.sin(state.theta), state.theta_dot]).astype(jnp.float32)


class Pendulum(Environment):
    """Box(-2, 2, (1,)) torque actions; float32 [3] observations; never terminates, truncates at 200 steps.

    Keyword arguments override fields of ``EnvParams`` in ``default_params``.
    """

    name = "Pendulum-v1"

    def __init__(self, **params):
        self._default_params = EnvParams()._replace(**params)

    @property
    def default_params(self) -> EnvParams:
        return self._default_params

    def reset(self, key: jax.Array, params: EnvParams | None = None) -> tuple[jax.Array, EnvState]:
        """Returns (obs float32 [3], state) with theta ~ U[-pi, pi), theta_dot ~ U[-1, 1)."""
        high = jnp.array([math.pi, 1.0], jnp.float32)
        theta, theta_dot = jax.random.uniform(key, (2,), jnp.float32, -high, high)
        state = EnvState(theta, theta_dot, jnp.zeros((), jnp.int32))
        return _obs(state), state

    def step(self, key: jax.Array, state: EnvState, action: jax.Array, params: EnvParams | None = None):
        """``action`` float [1] (or a scalar); returns (obs [3], state, reward (), False, truncated (), {}).

        The torque is clipped to [-max_torque, max_torque] here, so any action is valid.
        """
        del key  # deterministic dynamics
        p = self.default_params if params is None else params
        f32 = lambda v: jnp.asarray(v, jnp.float32)
        u = jnp.clip(jnp.reshape(jnp.asarray(action, jnp.float32), ()), -f32(p.max_torque), f32(p.max_torque))
        th, thdot = state.theta, state.theta_dot
        # The cost is of the state *before* the step, as in Gymnasium.
        cost = angle_normalize(th) ** 2 + 0.1 * thdot ** 2 + 0.001 * u ** 2

        g, m, l, dt = f32(p.g), f32(p.m), f32(p.l), f32(p.dt)
        # Semi-implicit Euler: the angle advances with the new, speed-clipped velocity.
        new_thdot = thdot + (3 * g / (2 * l) * jnp.sin(th) + 3.0 / (m * l ** 2) * u) * dt
        new_thdot = jnp.clip(new_thdot, -f32(p.max_speed), f32(p.max_speed))
        new = EnvState(th + new_thdot * dt, new_thdot, state.time + 1)

        terminated = jnp.zeros((), jnp.bool_)
        truncated = new.time >= p.max_steps_in_episode
        return _obs(new), new, (-cost).astype(jnp.float32), terminated, truncated, {}

    def observation_space(self, params: EnvParams | None = None) -> Box:
        p = self.default_params if params is None else params
        high = jnp.array([1.0, 1.0, p.max_speed], jnp.float32)
        return Box(-high, high, (3,))

    def action_space(self, params: EnvParams | None = None) -> Box:
        p = self.default_params if params is None else params
        return Box(-p.max_torque, p.max_torque, (1,))
