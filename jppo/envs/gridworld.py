"""Unity ML-Agents' GridWorld example (release 19) with vector observations, as a JAX
environment, one agent (one area).

Rules from ``Project/Assets/ML-Agents/Examples/GridWorld/Scripts`` (``GridAgent.cs``,
``GridArea.cs``) and the ``Area`` prefab (``MaxStep`` 100, ``maskActions`` on, one green plus
and one red ex, ``gridSize`` 5):

- ``AreaReset``: the goals and the agent take distinct cells drawn uniformly from the
  ``gridSize`` x ``gridSize`` grid (a cell n is x = n / gridSize, z = n % gridSize); the episode's
  goal is the green plus or the red ex with probability 1/2 each (``OnEpisodeBegin``);
- actions: one discrete branch of 5: 0 nothing, 1 up (z + 1), 2 down (z - 1), 3 left (x - 1),
  4 right (x + 1); the walls surround the grid, and with ``maskActions`` the action mask
  forbids every move into a wall (``WriteDiscreteActionMask``), so the agent never bumps;
- reward: -0.01 every step (``AddReward``); stepping onto a goal ends the episode and *sets*
  the step's reward (``SetReward``, overwriting the -0.01) to +1 if it is the episode's goal,
  else -1;
- a decision every physics step; after the 100th step an episode still running is
  interrupted (``MaxStep``: a time limit, bootstrapped).

Unity's agent sees the grid through a camera (a visual observation) and the episode's goal
through a ``VectorSensorComponent`` of size 2 (observation type GoalSignal). This port replaces
the camera by a vector sensor of what it shows, float32 [6]: the agent's cell (x, z) and the
offsets from it to the green plus and to the red ex, each divided by gridSize - 1; the second
sensor is the goal's one-hot [2] as in Unity. The observation is the tuple of the two.
(A one-hot board of the cells, [gridSize * gridSize * 3], was tried first: with
configs/GridWorld.yaml it learns far slower, 0.1 mean reward at 500k steps against 0.9 for
the offsets; benchmarks/README.md.)

An episode's best return is 1 - 0.01 (d - 1) for an episode whose goal is d moves away;
``optimal_returns`` gives the exact optimum per start (a breadth-first search that walks
around the other goal).
"""
from __future__ import annotations

from collections import deque
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jppo.envs.base import Box, Discrete, Environment

NOTHING, UP, DOWN, LEFT, RIGHT = range(5)
# (dx, dz) per action, as GridAgent.OnActionReceived moves the agent.
MOVES = np.array([[0, 0], [0, 1], [0, -1], [-1, 0], [1, 0]], np.int32)
PLUS, EX = 0, 1  # GridAgent.GridGoal.GreenPlus, RedEx


class GridWorldParams(NamedTuple):
    grid_size: int = 5  # environment parameter gridSize
    max_steps: int = 100  # Agent.MaxStep of the Area prefab
    step_reward: float = -0.01


class GridWorldState(NamedTuple):
    agent: jax.Array  # int32 [2]: (x, z)
    goals: jax.Array  # int32 [2, 2]: the green plus's cell, then the red ex's
    goal: jax.Array  # int32: the episode's goal, PLUS or EX
    steps: jax.Array  # int32


class GridWorld(Environment):
    """GridWorld: observations (where float32 [6], goal one-hot [2]), Discrete(5) actions with
    masks (module docstring). Keyword arguments override ``GridWorldParams``' fields; the
    grid size fixes the observation's shape."""

    name = "GridWorld"

    def __init__(self, **params):
        self._default_params = GridWorldParams()._replace(**params)

    @property
    def default_params(self) -> GridWorldParams:
        return self._default_params

    def reset(self, key: jax.Array, params: GridWorldParams | None = None):
        g = self.default_params.grid_size  # shapes follow the default grid
        cell_key, goal_key = jax.random.split(key)
        cells = jax.random.choice(cell_key, g * g, (3,), replace=False)
        xz = jnp.stack([cells // g, cells % g], axis=-1).astype(jnp.int32)
        state = GridWorldState(xz[2], xz[:2], jax.random.randint(goal_key, (), 0, 2, jnp.int32),
                               jnp.int32(0))
        return self._obs(state), state

    def step(self, key: jax.Array, state: GridWorldState, action: jax.Array,
             params: GridWorldParams | None = None):
        del key
        p = self.default_params if params is None else params
        g = self.default_params.grid_size
        target = state.agent + jnp.asarray(MOVES)[action]
        wall = jnp.any((target < 0) | (target >= g))
        agent = jnp.where(wall, state.agent, target)
        on_goal = jnp.all(agent[None] == state.goals, axis=-1) & ~wall  # [2]: plus, ex
        terminated = jnp.any(on_goal)
        right = on_goal[state.goal]
        reward = jnp.where(terminated, jnp.where(right, 1.0, -1.0), p.step_reward)
        steps = state.steps + 1
        truncated = ~terminated & (steps >= p.max_steps)
        state = state._replace(agent=agent, steps=steps)
        return self._obs(state), state, reward.astype(jnp.float32), terminated, truncated, {}

    def action_mask(self, state: GridWorldState, params=None) -> jax.Array:
        """bool [5]: moves into a wall are forbidden, as GridAgent.WriteDiscreteActionMask."""
        top = self.default_params.grid_size - 1
        x, z = state.agent[0], state.agent[1]
        return jnp.stack([jnp.bool_(True), z != top, z != 0, x != 0, x != top])

    def _obs(self, state: GridWorldState):
        scale = 1.0 / (self.default_params.grid_size - 1)
        offsets = (state.goals - state.agent[None]).reshape(-1)
        where = jnp.concatenate([state.agent, offsets]).astype(jnp.float32) * scale
        return where, jax.nn.one_hot(state.goal, 2, dtype=jnp.float32)

    def observation_space(self, params=None) -> tuple[Box, Box]:
        return Box(-1.0, 1.0, (6,)), Box(0.0, 1.0, (2,))

    def action_space(self, params=None) -> Discrete:
        return Discrete(5)


def optimal_return(grid_size: int, agent, plus, ex, goal: int, max_steps: int = 100,
                   step_reward: float = -0.01) -> float:
    """The best return from one start: the shortest path onto the episode's goal that avoids
    the other goal (breadth-first search), ``1 + step_reward * (moves - 1)``."""
    target, avoid = (tuple(plus), tuple(ex)) if goal == PLUS else (tuple(ex), tuple(plus))
    start = tuple(agent)
    seen, queue = {start: 0}, deque([start])
    while queue:
        cell = queue.popleft()
        if cell == target:
            moves = seen[cell]
            return 1.0 + step_reward * (moves - 1) if moves <= max_steps else 0.0
        for dx, dz in MOVES[1:]:
            nxt = (cell[0] + int(dx), cell[1] + int(dz))
            if (0 <= nxt[0] < grid_size and 0 <= nxt[1] < grid_size and nxt != avoid
                    and nxt not in seen):
                seen[nxt] = seen[cell] + 1
                queue.append(nxt)
    raise ValueError("the goal cannot be reached")


def expected_optimal_return(grid_size: int = 5) -> float:
    """The mean of ``optimal_return`` over every start ``reset`` draws (distinct cells for the
    plus, the ex and the agent, the goal either with probability 1/2): the best mean reward."""
    cells = [(n // grid_size, n % grid_size) for n in range(grid_size * grid_size)]
    total, count = 0.0, 0
    for plus in cells:
        for ex in cells:
            for agent in cells:
                if len({plus, ex, agent}) < 3:
                    continue
                for goal in (PLUS, EX):
                    total += optimal_return(grid_size, agent, plus, ex, goal)
                    count += 1
    return total / count


__all__ = ["GridWorld", "GridWorldParams", "GridWorldState", "expected_optimal_return",
           "optimal_return"]
