"""A stand-in scene made of a JAX environment: ``n`` copies of one agent that request a decision
every FixedUpdate (Basic, GridWorld, Reach), playing the environment's own rules
(``jppo.envs``), so the stand-in and the JAX port cannot disagree.

Unity's order within a FixedUpdate: every agent acts (``OnActionReceived``); an agent whose
episode ends sends its terminal info with the next message and starts its next episode at
once (``EndEpisode``, ``OnEpisodeBegin``), so the next message holds its terminal info and the
new episode's first decision request. ``MaxStep`` ends an episode as interrupted. One jitted
call per frame steps every agent, resets the ones that ended and computes the next
observations and action masks.

``new_agent_per_episode``: Basic's controller reloads the scene when an episode ends, which
destroys the agent and makes a new one, so the next episode's decisions come from a new agent
id; here each copy of the area does that on its own (the real scene holds one).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jppo.envs.base import Environment, Hybrid, MultiDiscrete
from jppo.standin.scenes import (ENGINE_CONFIG_CHANNEL, ENV_PARAMS_CHANNEL, Decisions,
                                 EnvironmentParameters, Sensor, Terminals, parse_engine_config,
                                 split_side_channels)


def _env_action(space, continuous, discrete):
    """The environment's action from what Unity hands the agent (continuous already in [-1, 1])."""
    if isinstance(space, Hybrid):
        return continuous, discrete
    if isinstance(space, MultiDiscrete):
        return discrete
    if continuous is not None and continuous.shape[-1]:
        return continuous
    return discrete[..., 0]


class EnvScene:
    """``n`` agents of ``env`` (module docstring); the protocol reads ``sensors``,
    ``continuous_size``, ``discrete_branches`` and the per-message ``terminals``/``decisions``."""

    decision_period = 1

    def __init__(self, env: Environment, n: int, sensors: list[Sensor], continuous_size: int,
                 discrete_branches: tuple, seed: int = 0, new_agent_per_episode: bool = False):
        self.env, self.n, self.sensors = env, n, sensors
        self.continuous_size, self.discrete_branches = continuous_size, tuple(discrete_branches)
        self.new_agent_per_episode = new_agent_per_episode
        self.params = EnvironmentParameters()
        self.engine_config: dict[str, float] = {}
        space = env.action_space(env.default_params)
        masked = env.action_mask(env.reset(jax.random.PRNGKey(0))[1]) is not None

        def mask_of(states):
            return jax.vmap(env.action_mask)(states) if masked else jnp.ones((n, 0), bool)

        def reset(keys):
            obs, states = jax.vmap(env.reset)(keys)
            return states, obs, mask_of(states)

        def frame(states, continuous, discrete, keys):
            action = _env_action(space, continuous, discrete)
            obs, stepped, reward, terminated, truncated, _ = jax.vmap(env.step)(
                keys[:, 0], states, action)
            ended = terminated | truncated
            fresh_obs, fresh = jax.vmap(env.reset)(keys[:, 1])
            pick = lambda a, b: jnp.where(ended.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
            states = jax.tree_util.tree_map(pick, fresh, stepped)
            next_obs = jax.tree_util.tree_map(pick, fresh_obs, obs)
            return states, obs, reward, terminated, truncated, next_obs, mask_of(states)

        self._reset = jax.jit(reset)
        self._frame = jax.jit(frame)
        self._masked = masked
        self.seed(seed)
        self._skip = False
        self.ids = np.arange(n)
        self._next_id = n
        self.state = None
        self.obs: list[np.ndarray] = []
        self.reward = np.zeros(n, np.float32)
        self.masks: np.ndarray | None = None
        self._continuous = np.zeros((n, continuous_size), np.float32)
        self._discrete = np.zeros((n, len(self.discrete_branches)), np.int32)

    # ------------------------------------------------------------------ set-up

    def seed(self, seed: int) -> None:
        self._key = jax.random.PRNGKey(seed)
        self._draws = 0

    def _keys(self, *shape):
        self._draws += 1
        return jax.random.split(jax.random.fold_in(self._key, self._draws), (self.n,) + shape)

    def on_side_channels(self, data: bytes) -> None:
        """Engine configuration is recorded; environment parameters are accepted and kept (these
        scenes read none)."""
        for channel, payload in split_side_channels(data):
            if channel == ENV_PARAMS_CHANNEL:
                self.params.on_message(payload)
            elif channel == ENGINE_CONFIG_CHANNEL:
                self.engine_config.update(parse_engine_config(payload))

    def warm_up(self) -> None:
        self.reset_all(mid_step=False)
        self.advance(1)
        self.state = None

    # ------------------------------------------------------------------ the frames

    def reset_all(self, mid_step: bool) -> None:
        """Academy.ForcedFullReset: every agent starts an episode (no terminal info). Inside a
        step (a RESET answer), the frame that follows acts for no one: the agents wait for
        their first decision."""
        self.state, obs, masks = self._reset(self._keys())
        self._set_view(obs, masks, np.zeros(self.n, np.float32))
        self._skip = mid_step

    def set_actions(self, continuous, discrete=None) -> None:
        """The actions of this decision: continuous [n, c] in [-1, 1], discrete [n, branches]."""
        if continuous is not None:
            self._continuous = np.asarray(continuous, np.float32).reshape(self.n, -1)
        if discrete is not None:
            self._discrete = np.asarray(discrete, np.int32).reshape(self.n, -1)

    def clear_actions(self) -> None:
        self._continuous = np.zeros_like(self._continuous)
        self._discrete = np.zeros_like(self._discrete)

    def advance(self, horizon: int = 1) -> Terminals | None:
        """One FixedUpdate (every agent acts); the frame's terminal infos, or None."""
        del horizon  # a decision every frame
        if self._skip:
            self._skip = False
            return None
        self.state, final, reward, terminated, truncated, obs, masks = self._frame(
            self.state, jnp.asarray(self._continuous), jnp.asarray(self._discrete),
            self._keys(2))
        reward, terminated, truncated = map(np.asarray, (reward, terminated, truncated))
        ended = terminated | truncated
        frame = None
        if ended.any():
            rows = np.flatnonzero(ended)
            final = [np.asarray(o)[rows] for o in _sensors(final)]
            frame = Terminals(rows, self.ids[rows].copy(), final, reward[rows], truncated[rows])
            if self.new_agent_per_episode:
                self.ids[rows] = self._next_id + np.arange(len(rows))
                self._next_id += len(rows)
        # The next request's reward: this frame's, unless the terminal info carried it.
        self._set_view(obs, masks, np.where(ended, 0.0, reward).astype(np.float32))
        return frame

    def discard_lookahead(self) -> None:
        """Nothing is computed ahead: every frame is a decision."""

    def _set_view(self, obs, masks, reward) -> None:
        self.obs = [np.asarray(o) for o in _sensors(obs)]
        self.masks = np.asarray(masks) if self._masked else None
        self.reward = reward

    # ------------------------------------------------------------------ the messages

    def terminals(self, ended: Terminals) -> Terminals:
        """The terminal infos of a message, from what ``advance`` returned."""
        return ended

    def decisions(self) -> Decisions:
        return Decisions(np.arange(self.n), self.ids.copy(), self.obs, self.reward, self.masks)


def _sensors(obs) -> list:
    return list(obs) if isinstance(obs, tuple) else [obs]


__all__ = ["EnvScene"]
