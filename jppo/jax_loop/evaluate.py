"""Evaluate a policy on a JAX environment: whole episodes, vmapped, in one jitted program."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jppo.envs.base import Environment
from jppo.core.policy import Policy
from jppo.jax_loop.rollout import has_action_mask, to_env_action


def _play(env: Environment, env_params, policy: Policy, params, normalizer, key: jax.Array,
          max_steps: int, deterministic: bool):
    """One episode from reset, at most ``max_steps`` decisions: ``(states, rewards, length)``
    with ``states`` the ``max_steps + 1`` states from the reset one on (those after the end
    repeat the final one, which is the true one, never a reset) and ``rewards`` zero after the
    end. An unused output costs nothing: XLA drops what a caller does not read."""
    space = env.action_space(env_params)
    masked = has_action_mask(env, env_params)
    one_agent = lambda tree: jax.tree_util.tree_map(lambda x: x[None], tree)
    reset_key, key = jax.random.split(key)
    obs, state = env.reset(reset_key, env_params)

    def step(carry, _):
        obs, state, alive, length, key = carry
        key, act_key, env_key = jax.random.split(key, 3)
        mask = one_agent(env.action_mask(state, env_params)) if masked else None
        if deterministic:
            action = policy.mode(params, normalizer, one_agent(obs), mask)[0]
        else:
            action = policy.act(params, normalizer, one_agent(obs), act_key, mask)[0][0]
        next_obs, next_state, reward, terminated, truncated, _ = env.step(
            env_key, state, to_env_action(space, action), env_params)
        keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(alive, a, b),
                                                       new, old)
        state = keep(next_state, state)
        carry = (keep(next_obs, obs), state, alive & ~(terminated | truncated),
                 length + alive.astype(jnp.int32), key)
        return carry, (state, jnp.where(alive, reward, 0.0))

    init = (obs, state, jnp.bool_(True), jnp.int32(0), key)
    (_, _, _, length, _), (states, rewards) = jax.lax.scan(step, init, None, length=max_steps)
    states = jax.tree_util.tree_map(lambda first, rest: jnp.concatenate([first[None], rest]),
                                    state, states)
    return states, rewards, length


def episode_returns(env: Environment, env_params, policy: Policy, params, normalizer,
                    key: jax.Array, num_episodes: int, max_steps: int,
                    deterministic: bool = False) -> tuple[jax.Array, jax.Array]:
    """``(returns[num_episodes], lengths[num_episodes])`` of fresh episodes, each run until it
    terminates, is truncated, or reaches ``max_steps`` decisions. Stochastic by default, as the
    rewards ML-Agents reports are."""
    def one(key):
        _, rewards, length = _play(env, env_params, policy, params, normalizer, key, max_steps,
                                   deterministic)
        return jnp.sum(rewards), length

    return jax.jit(jax.vmap(one))(jax.random.split(key, num_episodes))


def episode_states(env: Environment, env_params, policy: Policy, params, normalizer,
                   key: jax.Array, max_steps: int, deterministic: bool = True):
    """One episode's environment states for pictures: ``(states, rewards, length)`` where
    ``states`` stacks ``max_steps + 1`` states (the reset state, then one after each decision;
    those past ``length`` repeat the last) and ``rewards`` is ``[max_steps]``. The final state
    is the true one (no reset). The mean action by default, as a deployed policy acts."""
    return jax.jit(lambda k: _play(env, env_params, policy, params, normalizer, k, max_steps,
                                   deterministic))(key)
