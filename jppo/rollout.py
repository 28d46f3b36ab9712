"""Rollouts on JAX-native environments: ``lax.scan`` over steps, ``vmap`` over environments.

Each environment is one agent; a step is one agent decision, so a rollout of ``num_steps``
over ``num_envs`` environments is ``num_steps * num_envs`` ML-Agents steps. Episodes reset
inside the scan. A time limit (truncation) and a ``time_horizon`` cut both bootstrap from
V(next observation); only a real end (termination) zeroes it.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp

from jppo.envs.base import Box, Environment, auto_reset_step
from jppo.policy import Policy
from jppo.update import Rollout

ACTION_CLAMP = 3.0


def to_env_action(space, action: jax.Array) -> jax.Array:
    """The environment's action from the policy's raw sample.

    Continuous: ML-Agents' ``clamp(a, -3, 3) / 3``, then mapped affinely from [-1, 1] onto a
    bounded Box (3DBall's Box is [-1, 1], so nothing more). Discrete: the index as is.
    """
    if not isinstance(space, Box):
        return action
    scaled = jnp.clip(action, -ACTION_CLAMP, ACTION_CLAMP) / ACTION_CLAMP
    low = jnp.asarray(space.low, jnp.float32)
    high = jnp.asarray(space.high, jnp.float32)
    bounded = jnp.isfinite(low) & jnp.isfinite(high)
    mapped = low + (scaled + 1.0) * 0.5 * (high - low)
    return jnp.where(bounded, mapped, scaled)


@flax.struct.dataclass
class RunnerState:
    """Everything about the environments that persists between rollouts, batched over envs."""

    env_state: Any
    obs: jax.Array  # [E, obs_dim]
    since_cut: jax.Array  # [E] int32: steps since the episode began or time_horizon last cut it
    episode_return: jax.Array  # [E] return of the episode in progress
    episode_length: jax.Array  # [E] int32
    key: jax.Array


class EpisodeStats(NamedTuple):
    """Episodes completed during one rollout (scalars, summed over envs and steps)."""

    episodes: jax.Array
    return_sum: jax.Array
    return_sq_sum: jax.Array  # for the standard deviation ML-Agents prints
    length_sum: jax.Array


class _Transition(NamedTuple):
    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    terminated: jax.Array
    cut: jax.Array  # truncated by the environment's time limit or by time_horizon
    final_obs: jax.Array
    done: jax.Array
    episode_return: jax.Array
    episode_length: jax.Array


def init_runner(env: Environment, env_params, num_envs: int, key: jax.Array) -> RunnerState:
    reset_key, key = jax.random.split(key)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(reset_key, num_envs),
                                                           env_params)
    zeros = jnp.zeros(num_envs, jnp.float32)
    izeros = jnp.zeros(num_envs, jnp.int32)
    return RunnerState(env_state, obs, izeros, zeros, izeros, key)


def make_collect(env: Environment, env_params, policy: Policy, num_steps: int,
                 time_horizon: int):
    """``collect(params, normalizer, runner) -> (runner, Rollout [T=num_steps, E], EpisodeStats)``."""
    space = env.action_space(env_params)
    step_env = jax.vmap(auto_reset_step, in_axes=(None, 0, 0, 0, None))

    def one_step(params, normalizer, runner: RunnerState, _):
        key, act_key, env_key = jax.random.split(runner.key, 3)
        action, log_prob, value = policy.act(params, normalizer, runner.obs, act_key)
        num_envs = runner.obs.shape[0]
        out = step_env(env, jax.random.split(env_key, num_envs), runner.env_state,
                       to_env_action(space, action), env_params)
        done = out.terminated | out.truncated
        episode_return = runner.episode_return + out.reward
        episode_length = runner.episode_length + 1
        since_cut = runner.since_cut + 1
        cut = (out.truncated | (since_cut >= time_horizon)) & ~out.terminated
        transition = _Transition(runner.obs, action, log_prob, value, out.reward,
                                 out.terminated, cut, out.final_obs, done, episode_return,
                                 episode_length)
        runner = RunnerState(out.state, out.obs, jnp.where(done | cut, 0, since_cut),
                             jnp.where(done, 0.0, episode_return),
                             jnp.where(done, 0, episode_length), key)
        return runner, transition

    def collect(params, normalizer, runner: RunnerState):
        runner, tr = jax.lax.scan(lambda r, x: one_step(params, normalizer, r, x), runner, None,
                                  length=num_steps)
        # V(final obs) for every cut in one batched pass rather than once per step.
        final_values = jnp.where(tr.cut, policy.value(params, normalizer, tr.final_obs), 0.0)
        rollout = Rollout(tr.obs, tr.action, tr.log_prob, tr.value, tr.reward,
                          tr.terminated.astype(jnp.float32),
                          policy.value(params, normalizer, runner.obs),
                          tr.cut.astype(jnp.float32), final_values)
        finished = lambda x: jnp.sum(jnp.where(tr.done, x, 0))
        stats = EpisodeStats(jnp.sum(tr.done), finished(tr.episode_return),
                             finished(jnp.square(tr.episode_return)), finished(tr.episode_length))
        return runner, rollout, stats

    return collect
