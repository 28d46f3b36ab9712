"""A Gymnasium vector environment as a ``VecEnv``: ``--env gymnasium:<id>``.

One worker holding ``num_envs`` agents (agent id = the sub-environment's index), stepped in
this process by ``gymnasium.vector.SyncVectorEnv`` with same-step autoreset: when a
sub-environment's episode ends, its final observation is reported as a *terminal* agent
(``terminated`` -> a real end, ``truncated`` alone -> interrupted: bootstrap) and the first
observation of its next episode as a *deciding* agent with the same id, in one report, as a
Unity agent that falls and is reset.

Actions: Discrete(n) takes the sampled index; a Box takes ML-Agents' ``clamp(a, -3, 3) / 3``
mapped affinely onto its bounds (as the JAX driver's ``to_env_action``), or unmapped where a
bound is infinite. ``environment_parameters`` are passed to ``gymnasium.make`` as keyword
arguments (e.g. Pendulum-v1's ``g``).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from jppo.host_loop.vec_env import Actions, AgentSteps, BehaviorSpec, EnvFault, VecEnv, order_actions, to_unit_range

PREFIX = "gymnasium:"


def _import_gymnasium():
    try:
        import gymnasium
        from gymnasium.vector import AutoresetMode
    except ImportError:
        raise EnvFault("config", "--env gymnasium:<id> needs the gymnasium package (>= 1.1); "
                                 "install it with pip install -e \".[gymnasium]\".") from None
    return gymnasium, AutoresetMode


class GymVecEnv(VecEnv):
    """``num_envs`` copies of Gymnasium environment ``env_id`` as one worker of one behavior."""

    num_workers = 1

    def __init__(self, env_id: str, num_envs: int, behavior: str, *, seed: int = 0,
                 environment_parameters: dict | None = None):
        gymnasium, autoreset = _import_gymnasium()
        self.env_id, self.behavior, self.seed = env_id, behavior, seed
        self.description = f"Gymnasium {env_id}"
        try:
            self._env = gymnasium.make_vec(
                env_id, num_envs=num_envs, vectorization_mode="sync",
                vector_kwargs={"autoreset_mode": autoreset.SAME_STEP},
                **(environment_parameters or {}))
        except gymnasium.error.Error as err:
            raise EnvFault("config", f"Gymnasium cannot make {env_id!r}: {str(err).rstrip('.')}.") from None
        except TypeError as err:
            raise EnvFault("config", f"Gymnasium's {env_id!r} does not take these environment "
                                     f"parameters ({err}).") from None
        self.num_envs = num_envs
        obs_space, act_space = self._env.single_observation_space, self._env.single_action_space
        if not isinstance(obs_space, gymnasium.spaces.Box) or len(obs_space.shape) != 1:
            self._env.close()
            raise EnvFault("shape", f"Gymnasium {env_id!r} observes {obs_space}; jppo trains on "
                                    "one-dimensional Box observations.")
        if isinstance(act_space, gymnasium.spaces.Discrete):
            spec = BehaviorSpec(behavior, (obs_space.shape,), 0, (int(act_space.n),))
            self._low = self._high = None
        elif isinstance(act_space, gymnasium.spaces.Box) and len(act_space.shape) == 1:
            spec = BehaviorSpec(behavior, (obs_space.shape,), int(act_space.shape[0]))
            self._low = np.asarray(act_space.low, np.float32)
            self._high = np.asarray(act_space.high, np.float32)
        else:
            self._env.close()
            raise EnvFault("shape", f"Gymnasium {env_id!r} acts in {act_space}; jppo trains "
                                    "Discrete or one-dimensional Box actions.")
        self.specs = {behavior: spec}
        self._ids = np.arange(num_envs)
        self._actions: np.ndarray | None = None
        self._closed = False

    def to_env_action(self, raw: np.ndarray) -> np.ndarray:
        """The sub-environments' actions ``[N, ...]`` from the policy's raw ones."""
        if self._low is None:
            return np.asarray(raw, np.int64)
        scaled = to_unit_range(raw)
        bounded = np.isfinite(self._low) & np.isfinite(self._high)
        mapped = self._low + (scaled + 1.0) * 0.5 * (self._high - self._low)
        return np.where(bounded, mapped, scaled).astype(np.float32)

    def reset(self) -> list[dict[str, AgentSteps]]:
        obs, _ = self._env.reset(seed=self.seed)
        obs = self._checked(np.asarray(obs, np.float32), "observations")
        empty = AgentSteps.empty(obs.shape[1])
        return [{self.behavior: empty._replace(decision_ids=self._ids, decision_obs=obs,
                                               decision_rewards=np.zeros(self.num_envs, np.float32))}]

    def send(self, actions: Mapping[int, dict[str, Actions]]) -> None:
        self._actions = order_actions(actions[0][self.behavior], self._ids, 0, self.behavior)

    def receive(self) -> dict[int, dict[str, AgentSteps]]:
        """Steps the vector (this adapter has no background workers)."""
        obs, rewards, terminated, truncated, info = self._env.step(self.to_env_action(self._actions))
        obs = self._checked(np.asarray(obs, np.float32), "observations")
        rewards = self._checked(np.asarray(rewards, np.float32), "rewards")
        terminated, truncated = np.asarray(terminated), np.asarray(truncated)
        ended = terminated | truncated
        ids = self._ids[ended]
        final = np.zeros((len(ids), obs.shape[1]), np.float32)
        if len(ids):
            final = self._checked(np.stack([np.asarray(info["final_obs"][i], np.float32) for i in ids]),
                                  "observations")
        steps = AgentSteps(self._ids, obs, np.where(ended, 0.0, rewards).astype(np.float32),
                           ids, final, rewards[ended], truncated[ended] & ~terminated[ended])
        return {0: {self.behavior: steps}}

    def _checked(self, values: np.ndarray, what: str) -> np.ndarray:
        if not np.isfinite(values).all():
            kind = "NaN" if np.isnan(values).any() else "Inf"
            raise EnvFault("nan", f"Gymnasium {self.env_id!r} returned {kind} {what}.", 0)
        return values

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._env.close()
