"""Generalized Advantage Estimation by a reverse ``lax.scan``."""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp


def gae(rewards: jax.Array, values: jax.Array, dones: jax.Array, last_value: jax.Array, *,
        gamma: float, lam: float, truncations: Optional[jax.Array] = None,
        final_values: Optional[jax.Array] = None) -> tuple[jax.Array, jax.Array]:
    """Advantages and returns for a time-major rollout.

    Shapes: ``rewards``, ``values``, ``dones`` (and ``truncations``, ``final_values``) are
    ``[T, *B]`` for any trailing batch shape ``B`` (``[T]``, ``[T, agents]``,
    ``[T, envs, agents]``); ``last_value`` is ``[*B]``, V of the observation after step T-1.

    ``dones[t] = 1`` means the episode really ended at step t (a fall, a goal): nothing is
    bootstrapped across it. With ``masks = 1 - dones`` this is the seeds' ``compute_gae``::

        delta_t = r_t + gamma * V_{t+1} * mask_t - V_t
        A_t     = delta_t + gamma * lam * mask_t * A_{t+1}

    Truncation (a time limit; ML-Agents' "interrupted") is not a real end: the episode was cut,
    so step t bootstraps from V(final observation) instead of from the next episode's first
    value. Pass ``truncations[t] = 1`` with ``final_values[t] = V(final obs of step t)``. It is
    equivalent to folding ``gamma * final_values[t]`` into ``rewards[t]`` and setting
    ``dones[t] = 1``, which is what this function does. Where both flags are set, the real
    end wins. Returns ``(advantages, returns)`` with ``returns = advantages + values``,
    both ``[T, *B]`` float32.
    """
    rewards = jnp.asarray(rewards, jnp.float32)
    values = jnp.asarray(values, jnp.float32)
    masks = 1.0 - jnp.asarray(dones, jnp.float32)
    if truncations is not None:
        if final_values is None:
            raise ValueError("gae: truncations given without final_values (V of the final "
                             "observations to bootstrap from).")
        cut = jnp.asarray(truncations, jnp.float32) * masks
        rewards = rewards + gamma * cut * jnp.asarray(final_values, jnp.float32)
        masks = masks * (1.0 - cut)
    next_values = jnp.concatenate([values[1:], jnp.asarray(last_value, jnp.float32)[None]], axis=0)
    deltas = rewards + gamma * next_values * masks - values
    discounts = gamma * lam * masks

    def backward(carry, step):
        delta, discount = step
        advantage = delta + discount * carry
        return advantage, advantage

    _, advantages = jax.lax.scan(backward, jnp.zeros_like(deltas[0]), (deltas, discounts),
                                 reverse=True)
    return advantages, advantages + values
