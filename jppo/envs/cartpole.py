"""CartPole-v1 as pure JAX functions, matching Gymnasium 1.x ``CartPoleEnv`` under ``TimeLimit(500)``."""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jppo.envs.base import Box, Discrete, Environment


class EnvParams(NamedTuple):
    """Physical constants (SI units) and the episode's time limit; every field may be traced."""

    gravity: float = 9.8
    masscart: float = 1.0
    masspole: float = 0.1
    length: float = 0.5  # half the pole's length, as in Gymnasium
    force_mag: float = 10.0
    tau: float = 0.02  # seconds per step
    theta_threshold_radians: float = 12 * 2 * math.pi / 360
    x_threshold: float = 2.4
    max_steps_in_episode: int = 500


class EnvState(NamedTuple):
    """Float32 scalars ``x, x_dot, theta, theta_dot`` and the int32 scalar ``time`` (steps taken)."""

    x: jax.Array
    x_dot: jax.Array
    theta: jax.Array
    theta_dot: jax.Array
    time: jax.Array


def _obs(state: EnvState) -> jax.Array:
    """float32 [4]: (x, x_dot, theta, theta_dot)."""
    return jnp.stack([state.x, state.x_dot, state.theta, state.theta_dot]).astype(jnp.float32)


class CartPole(Environment):
    """Discrete(2) actions (0 pushes left, 1 right); float32 [4] observations; reward 1 every step.

    Keyword arguments override fields of ``EnvParams`` in ``default_params``.
    """

    name = "CartPole-v1"

    def __init__(self, **params):
        self._default_params = EnvParams()._replace(**params)

    @property
    def default_params(self) -> EnvParams:
        return self._default_params

    def reset(self, key: jax.Array, params: EnvParams | None = None) -> tuple[jax.Array, EnvState]:
        """Returns (obs float32 [4], state) with all four variables ~ U[-0.05, 0.05)."""
        x, x_dot, theta, theta_dot = jax.random.uniform(key, (4,), jnp.float32, -0.05, 0.05)
        state = EnvState(x, x_dot, theta, theta_dot, jnp.zeros((), jnp.int32))
        return _obs(state), state

    def step(self, key: jax.Array, state: EnvState, action: jax.Array, params: EnvParams | None = None):
        """One Euler step; returns (obs [4], state, reward (), terminated (), truncated (), {}).

        ``truncated`` is ``time >= max_steps_in_episode`` whatever ``terminated`` is, as Gymnasium's
        ``TimeLimit`` reports it, so both are true when the pole falls on the last step.
        """
        del key  # deterministic dynamics
        p = self.default_params if params is None else params
        f32 = lambda v: jnp.asarray(v, jnp.float32)
        total_mass = f32(p.masspole) + f32(p.masscart)
        polemass_length = f32(p.masspole) * f32(p.length)
        force = jnp.where(action == 1, f32(p.force_mag), -f32(p.force_mag))
        cos, sin = jnp.cos(state.theta), jnp.sin(state.theta)

        # Barto, Sutton & Anderson's equations of motion, in Gymnasium's order of operations.
        temp = (force + polemass_length * state.theta_dot ** 2 * sin) / total_mass
        theta_acc = (f32(p.gravity) * sin - cos * temp) / (
            f32(p.length) * (4.0 / 3.0 - f32(p.masspole) * cos ** 2 / total_mass))
        x_acc = temp - polemass_length * theta_acc * cos / total_mass

        # Explicit Euler: positions advance with the old velocities.
        tau = f32(p.tau)
        new = EnvState(
            x=state.x + tau * state.x_dot,
            x_dot=state.x_dot + tau * x_acc,
            theta=state.theta + tau * state.theta_dot,
            theta_dot=state.theta_dot + tau * theta_acc,
            time=state.time + 1,
        )
        terminated = ((new.x < -p.x_threshold) | (new.x > p.x_threshold)
                      | (new.theta < -p.theta_threshold_radians) | (new.theta > p.theta_threshold_radians))
        truncated = new.time >= p.max_steps_in_episode
        # Gymnasium rewards the terminating step too; stepping past termination is undefined there.
        reward = jnp.ones((), jnp.float32)
        return _obs(new), new, reward, terminated, truncated, {}

    def observation_space(self, params: EnvParams | None = None) -> Box:
        p = self.default_params if params is None else params
        high = jnp.array([2 * p.x_threshold, jnp.inf, 2 * p.theta_threshold_radians, jnp.inf], jnp.float32)
        return Box(-high, high, (4,))

    def action_space(self, params: EnvParams | None = None) -> Discrete:
        return Discrete(2)
