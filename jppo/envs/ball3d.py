"""Unity ML-Agents 3DBall and 3DBallHard (release 19) as JAX environments, one agent each.

Unity's scene holds 12 independent copies of the agent; here one environment is one agent, and
drivers ``vmap`` over agents. A ``step`` is one *decision*: ``decision_period`` (5) physics steps
with the same action (``DecisionRequester`` with ``TakeActionsBetweenDecisions``). The physics-step
API lives in ``jppo.envs.ball3d_physics`` and is re-exported here.

Differences from Unity that a driver may notice (see ``ball3d_physics`` for the physics model):

- Unity's academy requests decisions every 5 *global* physics steps, so after a fall the new
  episode runs 1-5 physics steps with a zero action before its first observation (and its
  MaxStep count includes them). Here every episode starts with a decision at its reset state.
- The ball's angular velocity is reset to zero (Unity keeps the previous episode's spin).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jppo.envs.ball3d_physics import (Ball3DParams, Ball3DState, axis_angle, fell_off, integrate,
                                      observe, physics_step, quat_mul, reset_state, rotation_matrix)
from jppo.envs.base import Box, Environment

STACK = 9  # Ball3DHardAgent's [Observable(numStackedObservations: 9)]


def decision_step(state: Ball3DState, action: jax.Array, params: Ball3DParams):
    """``decision_period`` physics steps with one action; none after the episode ends.

    Returns ``(state, reward, terminated, truncated)``: reward float32 [] is -1 on a fall, else 0.1
    (Unity's SetReward overwrites, so the decision's reward is its last physics step's);
    ``truncated`` means ``step_count`` reached ``max_physics_steps`` without a fall, which Unity
    checks after the action of that physics step (``Agent.AgentStep``), a fall taking precedence.
    """

    def body(_, carry):
        s, fell, truncated = carry
        live = ~(fell | truncated)
        s_next, _, f = physics_step(s, action, params)
        s = jax.tree_util.tree_map(lambda a, b: jnp.where(live, a, b), s_next, s)
        fell = fell | (live & f)
        truncated = truncated | (live & ~f & (s.step_count >= params.max_physics_steps))
        return s, fell, truncated

    no = jnp.zeros((), bool)
    state, fell, truncated = jax.lax.fori_loop(0, params.decision_period, body, (state, no, no))
    reward = jnp.where(fell, -1.0, 0.1).astype(jnp.float32)
    return state, reward, fell, truncated


class Ball3D(Environment):
    """3DBall: float32 [8] observations (``observe``), actions float32 [2] in [-1, 1] (clamped inside):
    a[0] tilts about the platform's z axis, a[1] about its x axis, up to 2 degrees per physics step.

    Keyword arguments override fields of ``Ball3DParams`` in ``default_params``.
    """

    name = "3DBall"

    def __init__(self, **params):
        self._default_params = Ball3DParams()._replace(**params)

    @property
    def default_params(self) -> Ball3DParams:
        return self._default_params

    def reset(self, key: jax.Array, params: Ball3DParams | None = None):
        """Returns (obs float32 [8], Ball3DState)."""
        state = reset_state(key, self.default_params if params is None else params)
        return observe(state), state

    def step(self, key: jax.Array, state: Ball3DState, action: jax.Array,
             params: Ball3DParams | None = None):
        """One decision: (obs [8], state, reward [], terminated [], truncated [], {})."""
        del key  # deterministic dynamics
        params = self.default_params if params is None else params
        state, reward, terminated, truncated = decision_step(state, action, params)
        return observe(state), state, reward, terminated, truncated, {}

    def observation_space(self, params=None) -> Box:
        return Box(-jnp.inf, jnp.inf, (8,))

    def action_space(self, params=None) -> Box:
        return Box(-1.0, 1.0, (2,))


class Ball3DHardState(NamedTuple):
    """``physics``: the Ball3DState; ``frames`` float32 [9, 5], oldest first, each
    [ball - agent (3), q.z, q.x]; frames not yet observed this episode are zero."""

    physics: Ball3DState
    frames: jax.Array


def _frame(state: Ball3DState) -> jax.Array:
    return jnp.concatenate([state.pos, state.rot[2:3], state.rot[0:1]]).astype(jnp.float32)


def _hard_obs(frames: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Two sensors, as Unity sends them (sorted by sensor name): the PositionDelta stack float32
    [27] (9 x 3, oldest first), ``StackingSensor_size9_ObservableAttribute:Ball3DHardAgent.
    PositionDelta``, then the Rotation stack [18] (9 x 2), ``..._Ball3DHardAgent.Rotation``."""
    return frames[:, :3].reshape(-1), frames[:, 3:].reshape(-1)


def _push(frames: jax.Array, state: Ball3DState) -> jax.Array:
    # StackingSensor.Update then Write: drop the oldest frame, append the newest.
    return jnp.concatenate([frames[1:], _frame(state)[None]], axis=0)


class Ball3DHard(Ball3D):
    """3DBallHard: 3DBall's physics and rewards without velocities; two observations (sensors),
    float32 [27] and [18], the last 9 decisions' ball position and platform rotation
    (``_hard_obs``), so a policy trained here exports the two inputs Unity's 3DBallHard agent
    feeds. Unity zeroes the stacks when an episode ends, so a reset observation is 8 zero frames
    and the current one.
    """

    name = "3DBallHard"

    def reset(self, key: jax.Array, params: Ball3DParams | None = None):
        """Returns ((obs float32 [27], [18]), Ball3DHardState)."""
        physics = reset_state(key, self.default_params if params is None else params)
        frames = _push(jnp.zeros((STACK, 5), jnp.float32), physics)
        return _hard_obs(frames), Ball3DHardState(physics, frames)

    def step(self, key: jax.Array, state: Ball3DHardState, action: jax.Array,
             params: Ball3DParams | None = None):
        """One decision: ((obs [27], [18]), state, reward [], terminated [], truncated [], {}).

        The terminal observation is stacked like any other (Unity's NotifyAgentDone updates the
        sensors before writing them)."""
        del key
        params = self.default_params if params is None else params
        physics, reward, terminated, truncated = decision_step(state.physics, action, params)
        frames = _push(state.frames, physics)
        return _hard_obs(frames), Ball3DHardState(physics, frames), reward, terminated, truncated, {}

    def observation_space(self, params=None) -> tuple[Box, Box]:
        return Box(-jnp.inf, jnp.inf, (STACK * 3,)), Box(-jnp.inf, jnp.inf, (STACK * 2,))


__all__ = ["Ball3D", "Ball3DHard", "Ball3DHardState", "Ball3DParams", "Ball3DState", "axis_angle",
           "decision_step", "fell_off", "integrate", "observe", "physics_step", "quat_mul",
           "reset_state", "rotation_matrix"]
