"""Rollouts on JAX-native environments: ``lax.scan`` over steps, ``vmap`` over environments.

Each environment is one agent; a step is one agent decision, so a rollout of ``num_steps``
over ``num_envs`` environments is ``num_steps * num_envs`` ML-Agents steps. Episodes reset
inside the scan. A time limit (truncation) and a ``time_horizon`` cut both bootstrap from
V(next observation); only a real end (termination) zeroes it.

Observations may be a tuple (one array per sensor); an environment with masked discrete
actions (``Environment.action_mask``) has its mask read at every step, used when acting and
stored in the rollout, so the update scores each action under the mask it was chosen with.

Sampled environment parameters (``sampled`` names, ``jppo.jax_loop.env_sampling``): each
environment copy carries its episode's values (``RunnerState.sampled`` [E, P]); the values of
every reset of a rollout are drawn before the scan with the resets themselves, from the
``SamplerTable`` given to ``collect``.
"""
from __future__ import annotations

import itertools
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jppo.core import observations
from jppo.envs.base import Box, Environment, Hybrid, step_or_reset
from jppo.core.policy import ACTION_CLAMP, Policy
from jppo.core.update import Rollout
from jppo.jax_loop.env_sampling import draw, with_values


def to_env_action(space, action: jax.Array):
    """The environment's action from the policy's raw sample (its array form).

    Continuous: ML-Agents' ``clamp(a, -3, 3) / 3``, then mapped affinely from [-1, 1] onto a
    bounded Box (3DBall's Box is [-1, 1], so nothing more). Discrete and MultiDiscrete: the
    indices as they are. Hybrid: the pair ``(continuous as a Box's, discrete int32)``.
    """
    if isinstance(space, Hybrid):
        size = space.continuous.shape[0]
        return (to_env_action(space.continuous, action[..., :size]),
                action[..., size:].astype(jnp.int32))
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
    obs: Any  # [E, obs_dim], or a tuple of them (one per sensor)
    since_cut: jax.Array  # [E] int32: steps since the episode began or time_horizon last cut it
    episode_return: jax.Array  # [E] return of the episode in progress
    episode_length: jax.Array  # [E] int32
    key: jax.Array
    sampled: Any = None  # [E, P] float32: each copy's sampled parameters this episode, or None


class EpisodeStats(NamedTuple):
    """Episodes completed during one rollout (scalars, summed over envs and steps)."""

    episodes: jax.Array
    return_sum: jax.Array
    return_sq_sum: jax.Array  # for the standard deviation ML-Agents prints
    length_sum: jax.Array


def init_runner(env: Environment, env_params, num_envs: int, key: jax.Array,
                sampled: tuple[str, ...] = (), table=None) -> RunnerState:
    reset_key, key = jax.random.split(key)
    reset_keys = jax.random.split(reset_key, num_envs)
    values = None
    if sampled:
        key, draw_key = jax.random.split(key)
        values = jax.vmap(draw, in_axes=(None, 0))(table, jax.random.split(draw_key, num_envs))
        obs, env_state = jax.vmap(lambda k, v: env.reset(k, with_values(env_params, sampled, v)))(
            reset_keys, values)
    else:
        obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(reset_keys, env_params)
    zeros = jnp.zeros(num_envs, jnp.float32)
    izeros = jnp.zeros(num_envs, jnp.int32)
    return RunnerState(env_state, obs, izeros, zeros, izeros, key, values)


def make_collect(env: Environment, env_params, policy: Policy, num_steps: int,
                 time_horizon: int, sampled: tuple[str, ...] = ()):
    """``collect(params, normalizer, runner, table=None) -> (runner, Rollout [T=num_steps, E],
    EpisodeStats)``; ``table`` (a ``SamplerTable``) when ``sampled`` names parameters.

    Only the actor and the environment run step by step. The rollout's random draws (action
    noise, reset states, step keys) are made before the scan in a few batched calls, and the
    critic runs once over all observations after it: on CPU a PRNG call inside the loop is a
    loop of dozens of small kernels, and T small critic passes cost far more than one big one.
    """
    space = env.action_space(env_params)
    step_env = jax.vmap(step_or_reset, in_axes=(None, 0, 0, 0, 0, None))
    reset_all = jax.vmap(jax.vmap(env.reset, in_axes=(0, None)), in_axes=(0, None))
    if sampled:
        # Only the sampled fields are per-copy arrays; the others stay static.
        params_of = lambda v: with_values(env_params, sampled, v)
        step_env = jax.vmap(lambda env_, k, s, a, r, v: step_or_reset(env_, k, s, a, r, params_of(v)),
                            in_axes=(None, 0, 0, 0, 0, 0))
        reset_sampled = jax.vmap(jax.vmap(lambda k, v: env.reset(k, params_of(v))))
        draw_all = jax.vmap(jax.vmap(draw, in_axes=(None, 0)), in_axes=(None, 0))

    obs_spec = observation_spec(env, env_params)
    obs_size = observations.total_size(obs_spec)
    spec = policy.action_spec
    act_size = max(1, int(np.prod(spec.action_shape)))
    lp_size = spec.log_prob_dims
    masked = has_action_mask(env, env_params)
    mask_size = spec.mask_size if masked else 0
    masks_of = jax.vmap(env.action_mask, in_axes=(0, None))
    if sampled:
        masks_of = jax.vmap(lambda s, v: env.action_mask(s, params_of(v)))

    def one_step(params, normalizer, carry, draws):
        runner, stats = carry
        noise, step_keys, reset, fresh = draws
        current = runner.sampled if sampled else env_params
        mask = masks_of(runner.env_state, current) if masked else None
        action, log_prob = policy.act_with_noise(params, normalizer, runner.obs, noise, mask)
        out = step_env(env, step_keys, runner.env_state, to_env_action(space, action), reset,
                       current)
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
        parts = [observations.flat(runner.obs, 1), observations.flat(out.final_obs, 1), action,
                 log_prob, out.reward, out.terminated, cut] + ([mask] if masked else [])
        packed = jnp.concatenate([f32(x) for x in parts], axis=-1)
        runner = RunnerState(out.state, out.obs, jnp.where(done | cut, 0, since_cut),
                             jnp.where(done, 0.0, episode_return),
                             jnp.where(done, 0, episode_length), runner.key,
                             jnp.where(done[:, None], fresh, runner.sampled) if sampled else None)
        return (runner, stats), packed

    def unpack(packed):
        """The packed rows ``[T, E, width]`` as (obs, final_obs, action, log_prob, reward,
        terminated, cut, mask or None)."""
        sizes = [obs_size, obs_size, act_size, lp_size, 1, 1, 1, mask_size]
        parts = jnp.split(packed, list(itertools.accumulate(sizes))[:-1], axis=-1)
        obs, final_obs, action, log_prob, reward, terminated, cut, mask = parts
        # Choices are small ints: exact in float32.
        action = jnp.reshape(action, action.shape[:-1] + spec.action_shape).astype(spec.action_dtype)
        return (observations.unflat(obs, obs_spec), observations.unflat(final_obs, obs_spec),
                action, log_prob, reward[..., 0], terminated[..., 0], cut[..., 0],
                mask if masked else None)

    def collect(params, normalizer, runner: RunnerState, table=None):
        num_envs = runner.episode_return.shape[0]
        key, noise_key, step_key, reset_key = jax.random.split(runner.key, 4)
        reset_keys = jax.random.split(reset_key, (num_steps, num_envs))
        if sampled:
            # The next episode's values, drawn with its reset state (which may depend on them).
            fresh = draw_all(table, jax.random.split(jax.random.fold_in(reset_key, 1),
                                                     (num_steps, num_envs)))
            resets = reset_sampled(reset_keys, fresh)
        else:
            fresh, resets = jnp.zeros((num_steps, 0)), reset_all(reset_keys, env_params)
        draws = (policy.sample_noise(noise_key, (num_steps, num_envs)),
                 jax.random.split(step_key, (num_steps, num_envs)), resets, fresh)
        zero, izero = jnp.zeros(num_envs, jnp.float32), jnp.zeros(num_envs, jnp.int32)
        (runner, stats), packed = jax.lax.scan(lambda c, x: one_step(params, normalizer, c, x),
                                               (runner.replace(key=key),
                                                EpisodeStats(izero, zero, zero, izero)), draws)
        stats = EpisodeStats(*(jnp.sum(x) for x in stats))
        obs, final_obs, action, log_prob, reward, terminated, cut, mask = unpack(packed)
        final_values = jnp.where(cut > 0, policy.value(params, normalizer, final_obs), 0.0)
        rollout = Rollout(obs, action, log_prob, policy.value(params, normalizer, obs), reward,
                          terminated, policy.value(params, normalizer, runner.obs), cut,
                          final_values, mask)
        return runner, rollout, stats

    return collect


def observation_spec(env: Environment, env_params):
    """``observation_size`` in ``jppo.core.observations``' form: an int for one Box, one shape
    per sensor for a tuple of Boxes (an image sensor a rank-3 HWC Box)."""
    space = env.observation_space(env_params)
    if isinstance(space, Box):
        if len(space.shape) != 1:
            raise ValueError(f"the observation space is one Box of shape {tuple(space.shape)}; "
                             "one array observation must be a vector, so give an image (HWC) "
                             "as a tuple of one Box and observations as a tuple of one array.")
        return int(space.shape[0])
    return tuple(tuple(int(d) for d in box.shape) for box in space)


def has_action_mask(env: Environment, env_params) -> bool:
    """Whether ``env`` masks its discrete actions (its ``action_mask`` returns an array)."""
    def mask_of_reset(key):
        return env.action_mask(env.reset(key, env_params)[1], env_params)
    return jax.eval_shape(mask_of_reset, jax.random.PRNGKey(0)) is not None
