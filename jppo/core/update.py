"""The train state, the rollout it learns from, and the one jitted PPO ``update``.

    update(train_state, rollout) -> (train_state, metrics)

normalizer update -> GAE (reverse scan) -> advantage normalization over the whole rollout ->
``num_epoch`` passes, each a fresh permutation cut into ``batch_size`` minibatches (remainder
dropped) and run with ``lax.scan``, one Adam step per minibatch. No host round-trip inside.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from jppo.core import normalizer as obs_norm
from jppo.core import observations
from jppo.core.config import PPOConfig
from jppo.core.gae import gae
from jppo.core.losses import LossMetrics, adapt_kl_coef, ppo_loss
from jppo.core.networks import ActionSpec
from jppo.core.optim import make_optimizer, make_schedules
from jppo.core.policy import Policy, make_policy


class Rollout(NamedTuple):
    """Time-major experience, ``[T, *B]`` with any batch shape B (envs, agents, ...).

    - ``obs``: ``[T, *B, obs_dim]`` raw observations the actions were chosen from, or a tuple
      of such arrays, one per sensor;
    - ``actions``: the array form of ``ActionSpec.action_shape``: ``[T, *B, A]`` float
      (continuous, the raw unclamped sample), ``[T, *B]`` int (one discrete branch), ...;
    - ``log_probs``: ``[T, *B, D]`` per-column log-probs at acting time (D =
      ``ActionSpec.log_prob_dims``: one per continuous dimension and one per branch);
    - ``values``: ``[T, *B]`` V(obs) at acting time;
    - ``rewards``: ``[T, *B]``;
    - ``dones``: ``[T, *B]`` 1 where the episode really ended at that step (no bootstrap);
    - ``last_value``: ``[*B]`` V of the observation after the last step;
    - ``truncations``: optional ``[T, *B]`` 1 where a time limit cut the episode at that step;
    - ``final_values``: optional ``[T, *B]`` V(final observation) where truncated (else ignored);
    - ``action_masks``: optional ``[T, *B, sum(branches)]`` (1: allowed) the masks the actions
      were chosen under; the update scores the stored actions under the same masks.
    """

    obs: Any
    actions: jax.Array
    log_probs: jax.Array
    values: jax.Array
    rewards: jax.Array
    dones: jax.Array
    last_value: jax.Array
    truncations: Optional[jax.Array] = None
    final_values: Optional[jax.Array] = None
    action_masks: Optional[jax.Array] = None


class Batch(NamedTuple):
    """Flat samples ``[N, ...]`` ready for minibatching; ``advantages`` already normalized."""

    obs: Any
    actions: jax.Array
    log_probs: jax.Array
    values: jax.Array
    advantages: jax.Array
    returns: jax.Array
    action_masks: Optional[jax.Array] = None


@flax.struct.dataclass
class TrainState:
    """Everything the update changes. ``opt_state`` belongs to the Optax chain applied to the
    parameters flattened into one vector (``jax.flatten_util.ravel_pytree``; see
    ``optimizer_step``), so its moments are flat vectors too."""

    params: dict
    opt_state: optax.OptState
    normalizer: Any  # a NormalizerState, or a tuple of them (one per sensor)
    key: jax.Array
    step: jax.Array  # int32: Adam steps taken, the clock of every schedule
    kl_coef: jax.Array  # float32: the adaptive KL penalty coefficient (loss "kl_penalty")


def init_train_state(key: jax.Array, config: PPOConfig, observation_size,
                     action_spec: ActionSpec, params=None) -> TrainState:
    """Fresh parameters (or the given ``params``, e.g. transferred from torch), Adam moments,
    empty normalizer statistics, step 0. ``observation_size``: an int for one observation
    array, or a sequence (one size or shape per sensor) for a tuple of them."""
    init_key, state_key = jax.random.split(key)
    if params is None:
        params = make_policy(config, action_spec, observation_size).init_params(init_key,
                                                                                observation_size)
    # The optimizer runs on the gradient flattened into one vector (see ``optimizer_step``);
    # its state's structure does not depend on the schedule's horizon.
    opt_state = make_optimizer(config, 1).init(ravel_pytree(params)[0])
    return TrainState(params, opt_state, obs_norm.init(observation_size), state_key,
                      jnp.zeros((), jnp.int32), jnp.asarray(config.kl_coef, jnp.float32))


def prepare_batch(config: PPOConfig, rollout: Rollout) -> Batch:
    """GAE on the rollout, flattened to ``[N, ...]``, advantages normalized over all N."""
    advantages, returns = gae(rollout.rewards * config.strength, rollout.values, rollout.dones,
                              rollout.last_value, gamma=config.gamma, lam=config.lambd,
                              truncations=rollout.truncations, final_values=rollout.final_values)
    lead = rollout.rewards.ndim
    flat = lambda tree: jax.tree_util.tree_map(lambda x: jnp.reshape(x, (-1,) + x.shape[lead:]),
                                               tree)
    return normalized_batch(config, flat(rollout.obs), flat(rollout.actions),
                            flat(rollout.log_probs), flat(rollout.values), flat(advantages),
                            flat(returns), flat(rollout.action_masks))


def normalized_batch(config: PPOConfig, obs, actions, log_probs, values, advantages,
                     returns, action_masks=None) -> Batch:
    """A ``Batch`` from flat arrays, advantages normalized as ``(A - mean) / (std + eps)``."""
    advantages = (advantages - jnp.mean(advantages)) / (jnp.std(advantages) + config.advantage_eps)
    return Batch(obs, actions, log_probs, values, advantages, returns, action_masks)


# Up to this size a permutation sorts one packed uint32 array (random bits above the index);
# past it too few random bits would remain, so jax.random.permutation takes over.
_PACKED_SORT_MAX = 1 << 16


def permutations(key: jax.Array, count: int, n: int) -> jax.Array:
    """``[count, n]``: independent random permutations of ``range(n)``.

    XLA:CPU sorts a single array faster than the (key, index) pairs
    ``jax.random.permutation`` sorts, so for ``n <= 2**16`` the index rides in the low bits of
    one random uint32. Two samples draw the same high bits with probability <= 2**-16, and
    such a pair keeps index order: a negligible departure from a uniform shuffle.
    """
    if n > _PACKED_SORT_MAX:
        return jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(key, count))
    shift = max(1, (n - 1).bit_length())
    low = jnp.uint32((1 << shift) - 1)
    bits = jax.random.bits(key, (count, n), jnp.uint32)
    packed = (bits & ~low) | jnp.arange(n, dtype=jnp.uint32)
    return (jnp.sort(packed, axis=-1) & low).astype(jnp.int32)


def optimizer_step(optimizer: optax.GradientTransformation, grads, opt_state, params):
    """One optimizer step with the Optax chain applied to the flattened gradient.

    Adam's moments and the global norm are elementwise and whole-vector operations: on one
    flat vector they are a few kernels, where per parameter array XLA:CPU runs several kernels
    for each of the network's arrays, and those small kernels dominated a minibatch step.
    ``opt_state`` is the state of ``optimizer.init(flat_params)``.
    """
    flat_grads, unravel = ravel_pytree(grads)
    updates, opt_state = optimizer.update(flat_grads, opt_state)
    return optax.apply_updates(params, unravel(updates)), opt_state


def minibatch_indices(key: jax.Array, n: int, batch_size: int, num_epoch: int) -> jax.Array:
    """``[num_epoch, n // batch_size, batch_size]`` sample indices: per epoch a fresh permutation
    of ``n`` cut into minibatches, the remainder dropped. The update's order, exposed so a
    reference implementation can replay it."""
    per_epoch = n // batch_size
    orders = permutations(key, num_epoch, n)[:, : per_epoch * batch_size]
    return orders.reshape(num_epoch, per_epoch, batch_size)


def make_train_on_batch(config: PPOConfig, action_spec: ActionSpec, total_adam_steps: int,
                        place_minibatches=None):
    """``(train_state, batch) -> (train_state, metrics)``: the epochs of minibatch Adam steps on
    a prepared ``Batch`` (not jitted). Drivers that compute GAE themselves (the Unity driver, per
    trajectory) call this after ``normalized_batch``.

    ``place_minibatches`` (an array -> array function, default none) is applied to each epoch's
    gathered ``[minibatches, batch_size, ...]`` arrays: the data-parallel driver uses it to lay
    every minibatch out across devices (``jppo.distributed``). The sensors' encoders follow the
    batch's observation shapes (read when the function is traced)."""
    optimizer = make_optimizer(config, total_adam_steps)
    schedules = make_schedules(config, total_adam_steps)

    def train_on_batch(state: TrainState, batch: Batch):
        policy = make_policy(config, action_spec, observations.shapes_of(batch.obs, 1))

        def minibatch_loss(params, normalizer, mb: Batch, epsilon, beta, kl_coef):
            log_probs, entropy, values = policy.evaluate(params, normalizer, mb.obs, mb.actions,
                                                         mb.action_masks)
            return ppo_loss(log_probs, mb.log_probs, mb.advantages, values, mb.values,
                            mb.returns, entropy, epsilon=epsilon, beta=beta,
                            value_coef=config.value_coef, kind=config.loss,
                            clip_value=config.clip_value, kl_coef=kl_coef)

        grad_fn = jax.value_and_grad(minibatch_loss, has_aux=True)
        n = batch.advantages.shape[0]
        if config.minibatches_per_epoch(n) == 0:
            raise ValueError(f"a rollout of {n} samples holds no minibatch of batch_size = "
                             f"{config.batch_size}; collect at least batch_size samples.")

        def adam_step(carry, mb):
            params, opt_state, step = carry
            epsilon, beta = schedules.epsilon(step), schedules.beta(step)
            (_, metrics), grads = grad_fn(params, state.normalizer, mb, epsilon, beta,
                                          state.kl_coef)
            params, opt_state = optimizer_step(optimizer, grads, opt_state, params)
            # One stacked vector per step: the scan stores each output array separately.
            return (params, opt_state, step + 1), jnp.stack(metrics)

        def epoch(carry, order):
            minibatches = jax.tree_util.tree_map(lambda x: x[order], batch)
            if place_minibatches is not None:
                minibatches = jax.tree_util.tree_map(place_minibatches, minibatches)
            return jax.lax.scan(adam_step, carry, minibatches)

        key, order_key = jax.random.split(state.key)
        orders = minibatch_indices(order_key, n, config.batch_size, config.num_epoch)
        carry = (state.params, state.opt_state, state.step)
        (params, opt_state, step), metrics = jax.lax.scan(epoch, carry, orders)
        metrics = dict(zip(LossMetrics._fields, jnp.mean(metrics, axis=(0, 1))))
        kl_coef = state.kl_coef
        if config.loss == "kl_penalty":
            # PPO1 measures the KL of the finished update on all the data, then adapts.
            log_probs, _, _ = policy.evaluate(params, state.normalizer, batch.obs, batch.actions,
                                              batch.action_masks)
            log_ratio = jnp.sum(log_probs - batch.log_probs, axis=-1)
            kl_coef = adapt_kl_coef(kl_coef, jnp.mean(jnp.expm1(log_ratio) - log_ratio),
                                    config.kl_target)
        last = step - 1
        metrics.update(learning_rate=schedules.learning_rate(last), epsilon=schedules.epsilon(last),
                       beta=schedules.beta(last), kl_coef=kl_coef,
                       value_estimate=jnp.mean(batch.values))
        return state.replace(params=params, opt_state=opt_state, key=key, step=step,
                             kl_coef=kl_coef), metrics

    return train_on_batch


def make_update(config: PPOConfig, action_spec: ActionSpec, total_adam_steps: int, *,
                jit: bool = True, place_minibatches=None):
    """The PPO update ``(train_state, rollout) -> (train_state, metrics)``.

    ``total_adam_steps`` is the number of Adam steps the schedules decay over (see
    ``PPOConfig.total_adam_steps``). ``metrics`` is a dict of float32 scalars: loss,
    policy_loss, value_loss, entropy, approx_kl, clip_fraction (means over the update's
    minibatches), learning_rate, epsilon, beta (at its last Adam step), kl_coef, value_estimate.
    With ``jit=False`` the plain function is returned, to compose inside a larger jitted program.
    ``place_minibatches``: see ``make_train_on_batch``.
    """
    train_on_batch = make_train_on_batch(config, action_spec, total_adam_steps, place_minibatches)

    def update(state: TrainState, rollout: Rollout):
        if config.normalize:
            state = state.replace(normalizer=obs_norm.update(state.normalizer, rollout.obs))
        return train_on_batch(state, prepare_batch(config, rollout))

    return jax.jit(update) if jit else update


__all__ = ["Batch", "Policy", "Rollout", "TrainState", "init_train_state", "make_train_on_batch",
           "make_update", "minibatch_indices", "normalized_batch", "prepare_batch"]
