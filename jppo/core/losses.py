"""The PPO objective for one minibatch: written for one sample, batched with ``jax.vmap``.

``L = L_pi + value_coef * L_v - beta * H`` (seed 004), where ``L_pi`` is one of

- ``"clip"`` (PPO2, the default): ``-mean_d min(r_d A, clip(r_d, 1-eps, 1+eps) A)`` with the ratio
  ``r_d`` taken per action dimension and the advantage broadcast, as ML-Agents and the seeds do;
- ``"kl_penalty"`` (PPO1, seeds 002/003): ``-mean_d(r_d A) + kl_coef * KL(old || new)``, with
  ``kl_coef`` adapted between updates by ``adapt_kl_coef``;
- ``"a2c"`` (seed 004): ``-mean_d(log pi_d A)``, no ratio.

``L_v`` is ``(R - V)^2``, or with ``clip_value`` ML-Agents' clipped form
``max((R - V)^2, (R - (V_old + clip(V - V_old, -eps, eps)))^2)``. ``H`` is the entropy averaged
over action dimensions. KL(old || new) per sample uses the unbiased, non-negative estimator
``(r - 1) - log r`` on the joint ratio ``r = prod_d r_d``; it is also the reported approx KL.
"""
from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp


class LossMetrics(NamedTuple):
    loss: jax.Array
    policy_loss: jax.Array
    value_loss: jax.Array
    entropy: jax.Array
    approx_kl: jax.Array
    clip_fraction: jax.Array


def sample_terms(log_prob: jax.Array, old_log_prob: jax.Array, advantage: jax.Array,
                 value: jax.Array, old_value: jax.Array, ret: jax.Array, entropy: jax.Array, *,
                 epsilon, kind: str = "clip", clip_value: bool = True, kl_coef=0.0):
    """Loss terms of ONE sample: ``log_prob``, ``old_log_prob``, ``entropy`` are ``[D]`` (per
    action dimension; D = 1 for a Categorical), the rest scalars. Returns a ``LossMetrics`` of
    scalars whose ``loss`` field is left 0 (the total needs ``beta`` and ``value_coef``)."""
    log_ratio = log_prob - old_log_prob
    ratio = jnp.exp(log_ratio)
    joint_log_ratio = jnp.sum(log_ratio)
    kl = jnp.expm1(joint_log_ratio) - joint_log_ratio
    if kind == "clip":
        surrogate = jnp.minimum(ratio * advantage,
                                jnp.clip(ratio, 1.0 - epsilon, 1.0 + epsilon) * advantage)
        policy = -jnp.mean(surrogate)
    elif kind == "kl_penalty":
        policy = -jnp.mean(ratio * advantage) + kl_coef * kl
    elif kind == "a2c":
        policy = -jnp.mean(log_prob * advantage)
    else:
        raise ValueError(f"unknown loss kind {kind!r}; allowed: 'clip', 'kl_penalty', 'a2c'.")
    value_error = jnp.square(ret - value)
    if clip_value:
        clipped = old_value + jnp.clip(value - old_value, -epsilon, epsilon)
        value_error = jnp.maximum(value_error, jnp.square(ret - clipped))
    clipped_share = jnp.mean((jnp.abs(ratio - 1.0) > epsilon).astype(jnp.float32))
    return LossMetrics(jnp.zeros(()), policy, value_error, jnp.mean(entropy), kl, clipped_share)


def ppo_loss(log_probs: jax.Array, old_log_probs: jax.Array, advantages: jax.Array,
             values: jax.Array, old_values: jax.Array, returns: jax.Array, entropy: jax.Array, *,
             epsilon, beta, value_coef=0.5, kind: str = "clip", clip_value: bool = True,
             kl_coef=0.0) -> tuple[jax.Array, LossMetrics]:
    """The minibatch objective and its metrics.

    Shapes: ``log_probs``, ``old_log_probs``, ``entropy``: ``[N, D]`` (``[N]`` is read as D = 1);
    ``advantages``, ``values``, ``old_values``, ``returns``: ``[N]``. ``log_probs``,
    ``values`` and ``entropy`` come from the policy being trained (gradients flow through
    them); the ``old_*``, ``advantages`` and ``returns`` are data. Returns
    ``(loss, LossMetrics)`` with every metric a mean over the N samples.
    """
    as_2d = lambda x: x[:, None] if jnp.ndim(x) == 1 else x
    log_probs, old_log_probs, entropy = as_2d(log_probs), as_2d(old_log_probs), as_2d(entropy)
    chex.assert_rank([log_probs, old_log_probs, entropy], 2)
    chex.assert_rank([advantages, values, old_values, returns], 1)
    chex.assert_equal_shape([log_probs, old_log_probs])
    terms = jax.vmap(
        lambda lp, olp, a, v, ov, r, h: sample_terms(lp, olp, a, v, ov, r, h, epsilon=epsilon,
                                                     kind=kind, clip_value=clip_value,
                                                     kl_coef=kl_coef)
    )(log_probs, old_log_probs, advantages, values, old_values, returns, entropy)
    means = jax.tree_util.tree_map(jnp.mean, terms)
    loss = means.policy_loss + value_coef * means.value_loss - beta * means.entropy
    return loss, means._replace(loss=loss)


# The adaptive KL coefficient's range. Unbounded, it halves after every update whose KL stays
# under target / 1.5, which a small learning rate makes the rule (CartPole reached 6e-30): the
# penalty is then gone, and when the KL does jump, doubling back to 1 takes ~100 updates. The
# penalty on a KL at target (0.01) is negligible next to the surrogate (advantages of unit
# scale) below 1e-3 and freezes the policy above 1e3, so nothing is lost outside [1e-3, 1e3]
# and from either end 10 updates bring the coefficient back to 1.
KL_COEF_MIN = 1.0e-3
KL_COEF_MAX = 1.0e3


def adapt_kl_coef(kl_coef: jax.Array, kl: jax.Array, kl_target) -> jax.Array:
    """PPO1's adaptive penalty: double when ``kl >= 1.5 target``, halve when ``kl <= target / 1.5``,
    then clip to ``[KL_COEF_MIN, KL_COEF_MAX]`` (a starting ``kl_coef`` outside the range, 0
    included, is brought into it by the first adaptation)."""
    kl_coef = jnp.where(kl >= 1.5 * kl_target, kl_coef * 2.0, kl_coef)
    kl_coef = jnp.where(kl <= kl_target / 1.5, kl_coef * 0.5, kl_coef)
    return jnp.clip(kl_coef, KL_COEF_MIN, KL_COEF_MAX)
