"""Reach: a small scene of jppo's design with hybrid actions, two sensors and an action mask.

No ML-Agents example acts with continuous and discrete actions at once through vector sensors
alone, so this one exercises what ML-Agents' hybrid ``ActionSpec`` allows (the Unity stand-in
plays it over the real protocol; the JAX loop can train it: ``Reach()``, not registered):

- the agent moves in the square [-1, 1]^2 towards a target of one of three colours;
- sensors: ``where`` float32 [4] (the agent's position, and the offset to the target) and
  ``colour`` float32 [3] (the target's colour, one-hot);
- actions: 2 continuous (a velocity: the agent moves by ``speed`` x the action, clamped to the
  square), and two discrete branches: the colour the agent names (3 choices), and grab or not
  (2 choices); grabbing is masked out unless the target is within ``reach``;
- reward: -0.01 per step; a grab ends the episode with +1 when the named colour is the
  target's, else -1; an episode still running after ``max_steps`` decisions is interrupted.

The best return from a start at distance d is about 1 - 0.01 (ceil((d - reach) / speed) + 1).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jppo.envs.base import Box, Environment, Hybrid, MultiDiscrete

COLOURS = 3
GRAB = 1


class ReachParams(NamedTuple):
    speed: float = 0.25
    reach: float = 0.3
    max_steps: int = 50
    step_reward: float = -0.01


class ReachState(NamedTuple):
    position: jax.Array  # float32 [2]
    target: jax.Array  # float32 [2]
    colour: jax.Array  # int32
    steps: jax.Array  # int32


class Reach(Environment):
    """Reach (module docstring): observations ``(where [4], colour [3])``, actions
    ``(continuous [2], discrete [2])`` with branch sizes (3, 2), masked grabs."""

    name = "Reach"

    def __init__(self, **params):
        self._default_params = ReachParams()._replace(**params)

    @property
    def default_params(self) -> ReachParams:
        return self._default_params

    def reset(self, key: jax.Array, params: ReachParams | None = None):
        k1, k2, k3 = jax.random.split(key, 3)
        state = ReachState(jax.random.uniform(k1, (2,), jnp.float32, -1.0, 1.0),
                           jax.random.uniform(k2, (2,), jnp.float32, -1.0, 1.0),
                           jax.random.randint(k3, (), 0, COLOURS, jnp.int32), jnp.int32(0))
        return self._obs(state), state

    def step(self, key: jax.Array, state: ReachState, action, params: ReachParams | None = None):
        del key
        p = self.default_params if params is None else params
        velocity, (named, grab) = action[0], (action[1][0], action[1][1])
        # A grab is judged where the agent stands when it grabs (masked unless within reach).
        grabbed = grab == GRAB
        right = named == state.colour
        position = jnp.where(grabbed, state.position,
                             jnp.clip(state.position + p.speed * jnp.clip(velocity, -1.0, 1.0),
                                      -1.0, 1.0))
        reward = jnp.where(grabbed, jnp.where(right, 1.0, -1.0), p.step_reward).astype(jnp.float32)
        steps = state.steps + 1
        truncated = ~grabbed & (steps >= p.max_steps)
        state = state._replace(position=position, steps=steps)
        return self._obs(state), state, reward, grabbed, truncated, {}

    def action_mask(self, state: ReachState, params: ReachParams | None = None) -> jax.Array:
        """bool [3 + 2]: every colour; "no grab" always, "grab" only within reach."""
        p = self.default_params if params is None else params
        near = jnp.linalg.norm(state.target - state.position) <= p.reach
        return jnp.concatenate([jnp.ones(COLOURS + 1, bool), near[None]])

    @staticmethod
    def _obs(state: ReachState):
        where = jnp.concatenate([state.position, state.target - state.position])
        return where, jax.nn.one_hot(state.colour, COLOURS, dtype=jnp.float32)

    def observation_space(self, params=None) -> tuple[Box, Box]:
        return Box(-2.0, 2.0, (4,)), Box(0.0, 1.0, (COLOURS,))

    def action_space(self, params=None) -> Hybrid:
        return Hybrid(Box(-1.0, 1.0, (2,)), MultiDiscrete((COLOURS, 2)))


__all__ = ["Reach", "ReachParams", "ReachState"]
