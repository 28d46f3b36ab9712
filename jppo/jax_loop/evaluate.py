"""Evaluate a policy on a JAX environment: whole episodes, vmapped, in one jitted program."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jppo.envs.base import Environment
from jppo.core.policy import Policy
from jppo.jax_loop.rollout import has_action_mask, to_env_action


def episode_returns(env: Environment, env_params, policy: Policy, params, normalizer,
                    key: jax.Array, num_episodes: int, max_steps: int,
                    deterministic: bool = False) -> tuple[jax.Array, jax.Array]:
    """``(returns[num_episodes], lengths[num_episodes])`` of fresh episodes, each run until it
    terminates, is truncated, or reaches ``max_steps`` decisions. Stochastic by default, as the
    rewards ML-Agents reports are."""
    space = env.action_space(env_params)
    masked = has_action_mask(env, env_params)
    one_agent = lambda tree: jax.tree_util.tree_map(lambda x: x[None], tree)

    def one(key):
        reset_key, key = jax.random.split(key)
        obs, state = env.reset(reset_key, env_params)

        def step(carry, _):
            obs, state, alive, total, length, key = carry
            key, act_key, env_key = jax.random.split(key, 3)
            mask = one_agent(env.action_mask(state, env_params)) if masked else None
            if deterministic:
                action = policy.mode(params, normalizer, one_agent(obs), mask)[0]
            else:
                action = policy.act(params, normalizer, one_agent(obs), act_key, mask)[0][0]
            obs, state, reward, terminated, truncated, _ = env.step(
                env_key, state, to_env_action(space, action), env_params)
            total = total + jnp.where(alive, reward, 0.0)
            length = length + alive.astype(jnp.int32)
            return (obs, state, alive & ~(terminated | truncated), total, length, key), None

        init = (obs, state, jnp.bool_(True), jnp.float32(0.0), jnp.int32(0), key)
        (_, _, _, total, length, _), _ = jax.lax.scan(step, init, None, length=max_steps)
        return total, length

    return jax.jit(jax.vmap(one))(jax.random.split(key, num_episodes))
