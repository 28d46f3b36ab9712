"""Rollouts on JAX-native environments: ``lax.scan`` over steps, ``vmap`` over environments.

Each environment is one agent; a step is one agent decision, so a rollout of ``num_steps``
over ``num_envs`` environments is ``num_steps * num_envs`` ML-Agents steps. Episodes reset
inside the scan. A time limit (truncation) and a ``time_horizon`` cut both bootstrap from
V(next observation); only a real end (termination) zeroes it.
"""
from __future__ import annotations

import itertools
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp

from jppo.envs.base import Box, Environment, step_or_reset
from jppo.core.policy import ACTION_CLAMP, Policy
from jppo.core.update import Rollout


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


def init_runner(env: Environment, env_params, num_envs: int, key: jax.Array) -> RunnerState:
    reset_key, key = jax.random.split(key)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(reset_key, num_envs),
                                                           env_params)
    zeros = jnp.zeros(num_envs, jnp.float32)
    izeros = jnp.zeros(num_envs, jnp.int32)
    return RunnerState(env_state, obs, izeros, zeros, izeros, key)


def make_collect(env: Environment, env_params, policy: Policy, num_steps: int,
                 time_horizon: int):
    """``collect(params, normalizer, runner) -> (runner, Rollout [T=num_steps, E], EpisodeStats)``.

    Only the actor and the environment run step by step. The rollout's random draws (action
    noise, reset states, step keys) are made before the scan in a few batched calls, and the
    critic runs once over all observations after it: on CPU a PRNG call inside the loop is a
    loop of dozens of small kernels, and T small critic passes cost far more than one big one.
    """
    space = env.action_space(env_params)
    step_env = jax.vmap(step_or_reset, in_axes=(None, 0, 0, 0, 0, None))
    reset_all = jax.vmap(jax.vmap(env.reset, in_axes=(0, None)), in_axes=(0, None))

    obs_size = env.observation_space(env_params).shape[0]
    act_size = policy.action_spec.size if policy.action_spec.is_continuous else 1
    lp_size = policy.action_spec.log_prob_dims

    def one_step(params, normalizer, carry, draws):
        runner, stats = carry
        noise, step_keys, reset = draws
        action, log_prob = policy.act_with_noise(params, normalizer, runner.obs, noise)
        out = step_env(env, step_keys, runner.env_state, to_env_action(space, action), reset,
                       env_params)
        done = out.terminated | out.truncated
        episode_return = runner.episode_return + out.reward
        episode_length = runner.episode_length + 1
        since_cut = runner.since_cut + 1
        cut = (out.truncated | (since_cut >= time_horizon)) & ~out.terminated
        # Per-env sums, reduced once after the scan rather than at every step.
        finished = lambda x: jnp.where(done, x, 0)
        stats = EpisodeStats(stats.episodes + done, stats.return_sum + finished(episode_return),
                             stats.return_sq_sum + finished(jnp.square(episode_return)),
                             stats.length_sum + finished(episode_length))
        # One packed row per env: a scan writes each output array once per step, and on CPU
        # every such write is a kernel of its own.
        f32 = lambda x: jnp.reshape(x, (x.shape[0], -1)).astype(jnp.float32)
        packed = jnp.concatenate([f32(runner.obs), f32(out.final_obs), f32(action), f32(log_prob),
                                  f32(out.reward), f32(out.terminated), f32(cut)], axis=-1)
        runner = RunnerState(out.state, out.obs, jnp.where(done | cut, 0, since_cut),
                             jnp.where(done, 0.0, episode_return),
                             jnp.where(done, 0, episode_length), runner.key)
        return (runner, stats), packed

    def unpack(packed):
        """The packed rows ``[T, E, width]`` as (obs, final_obs, action, log_prob, reward,
        terminated, cut)."""
        sizes = [obs_size, obs_size, act_size, lp_size, 1, 1, 1]
        parts = jnp.split(packed, list(itertools.accumulate(sizes))[:-1], axis=-1)
        obs, final_obs, action, log_prob, reward, terminated, cut = parts
        if not policy.action_spec.is_continuous:
            action = action[..., 0].astype(jnp.int32)  # choices are small ints: exact in float32
        return obs, final_obs, action, log_prob, reward[..., 0], terminated[..., 0], cut[..., 0]

    def collect(params, normalizer, runner: RunnerState):
        num_envs = runner.obs.shape[0]
        key, noise_key, step_key, reset_key = jax.random.split(runner.key, 4)
        draws = (policy.sample_noise(noise_key, (num_steps, num_envs)),
                 jax.random.split(step_key, (num_steps, num_envs)),
                 reset_all(jax.random.split(reset_key, (num_steps, num_envs)), env_params))
        zero, izero = jnp.zeros(num_envs, jnp.float32), jnp.zeros(num_envs, jnp.int32)
        (runner, stats), packed = jax.lax.scan(lambda c, x: one_step(params, normalizer, c, x),
                                               (runner.replace(key=key),
                                                EpisodeStats(izero, zero, zero, izero)), draws)
        stats = EpisodeStats(*(jnp.sum(x) for x in stats))
        obs, final_obs, action, log_prob, reward, terminated, cut = unpack(packed)
        final_values = jnp.where(cut > 0, policy.value(params, normalizer, final_obs), 0.0)
        rollout = Rollout(obs, action, log_prob, policy.value(params, normalizer, obs), reward,
                          terminated, policy.value(params, normalizer, runner.obs), cut,
                          final_values)
        return runner, rollout, stats

    return collect
