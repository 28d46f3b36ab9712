"""Unity ML-Agents' Basic example (release 19) as a JAX environment, one agent.

Follows ``Project/Assets/ML-Agents/Examples/Basic/Scripts``: ``BasicController`` (the rules),
``BasicSensorComponent`` (the observation), ``BasicActuatorComponent`` (the action):

- positions 0..20 on a line; the agent starts at 10, the small goal is at 7, the large at 17;
- observation: float32 [20], the one-hot encoding of the position (``BasicSensor``; size
  ``k_Extents`` = 20);
- action: one discrete branch of 3: 0 stay, 1 left (-1), 2 right (+1); the position is clamped
  to [0, 20];
- reward: -0.01 every step (``AddReward``), plus 0.1 on reaching the small goal or 1 on
  reaching the large one, which ends the episode (``EndEpisode``; the controller reloads the
  scene, so the next episode starts at 10 again);
- a decision every physics step (the controller calls ``RequestDecision`` in each
  ``FixedUpdate``) and no step limit (``MaxStep`` 0).

The best return is 0.93: seven steps right, 7 x -0.01 + 1 (the small goal gives at most
3 x -0.01 + 0.1 = 0.07). Since every episode ends at 7 or 17, the agent never leaves [7, 17].
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jppo.envs.base import Box, Discrete, Environment

SIZE = 20  # BasicController.k_Extents
START, SMALL_GOAL, LARGE_GOAL, MAX_POSITION = 10, 7, 17, 20
BEST_RETURN = 1.0 - 0.01 * (LARGE_GOAL - START)  # 0.93


class BasicParams(NamedTuple):
    step_reward: float = -0.01
    small_reward: float = 0.1
    large_reward: float = 1.0
    max_steps: int = 0  # Agent.MaxStep: 0, no limit (as the scene)


class BasicState(NamedTuple):
    position: jax.Array  # int32
    steps: jax.Array  # int32: decisions taken this episode


class Basic(Environment):
    """Basic: float32 [20] one-hot observations, Discrete(3) actions (module docstring)."""

    name = "Basic"

    def __init__(self, **params):
        self._default_params = BasicParams()._replace(**params)

    @property
    def default_params(self) -> BasicParams:
        return self._default_params

    def reset(self, key: jax.Array, params: BasicParams | None = None):
        del key, params  # the scene reloads into the same state
        state = BasicState(jnp.int32(START), jnp.int32(0))
        return self._obs(state), state

    def step(self, key: jax.Array, state: BasicState, action: jax.Array,
             params: BasicParams | None = None):
        del key
        p = self.default_params if params is None else params
        direction = jnp.where(action == 1, -1, jnp.where(action == 2, 1, 0)).astype(jnp.int32)
        position = jnp.clip(state.position + direction, 0, MAX_POSITION)
        small, large = position == SMALL_GOAL, position == LARGE_GOAL
        reward = (p.step_reward + jnp.where(small, p.small_reward, 0.0)
                  + jnp.where(large, p.large_reward, 0.0)).astype(jnp.float32)
        terminated = small | large
        steps = state.steps + 1
        truncated = ~terminated & (p.max_steps > 0) & (steps >= p.max_steps)
        state = BasicState(position, steps)
        return self._obs(state), state, reward, terminated, truncated, {}

    @staticmethod
    def _obs(state: BasicState) -> jax.Array:
        # BasicSensor writes output[position] = 1 into an array of k_Extents floats.
        return jax.nn.one_hot(state.position, SIZE, dtype=jnp.float32)

    def observation_space(self, params=None) -> Box:
        return Box(0.0, 1.0, (SIZE,))

    def action_space(self, params=None) -> Discrete:
        return Discrete(3)


__all__ = ["BEST_RETURN", "Basic", "BasicParams", "BasicState"]
