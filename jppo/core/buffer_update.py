"""The update on a host buffer: experiences of many agents laid end to end, trajectory after
trajectory, as the host loop collects them (``jppo.host_loop.trajectories``).

``make_buffer_update`` is the learning step on a ``FlatBuffer``: normalizer update over the
buffer's observations, then values, GAE per trajectory (``jppo.gae`` with the trajectory ends
as dones or truncations), advantage normalization over the buffer, and the same
``make_train_on_batch`` epochs the JAX loop runs. One jitted program per run.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jppo.core import normalizer as obs_norm
from jppo.core import observations
from jppo.core.config import PPOConfig
from jppo.core.gae import gae
from jppo.core.networks import ActionSpec
from jppo.core.policy import make_policy
from jppo.core.update import TrainState, make_train_on_batch, normalized_batch


class FlatBuffer(NamedTuple):
    """``B`` experiences laid end to end, trajectory after trajectory.

    ``obs`` ``[B, D]`` (or a tuple, one array per sensor), ``actions`` in the array form of
    the action spec (``[B, A]`` or ``[B]``, ...), ``log_probs`` ``[B, Dl]``, ``rewards``
    ``[B]``; ``dones`` ``[B]`` 1 at the last step of a trajectory whose episode really ended;
    ``truncations`` ``[B]`` 1 at the last step of any other trajectory, which bootstraps from
    V(``final_obs``, shaped as ``obs``) (zeros elsewhere). Every trajectory's last step carries
    one of the two flags, so GAE never runs from one trajectory into the next.
    ``action_masks`` ``[B, sum(branches)]`` (1: allowed), or None: the masks each action was
    chosen under.
    """

    obs: Any
    actions: np.ndarray
    log_probs: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray
    truncations: np.ndarray
    final_obs: Any
    action_masks: Optional[np.ndarray] = None


def gae_targets(config: PPOConfig, buffer: FlatBuffer, values: jax.Array, final_values: jax.Array,
                segments: int = 1):
    """``(advantages [B], returns [B])`` of every trajectory in ``buffer``: ``jppo.gae`` with
    each trajectory's last step as a done (no bootstrap) or a truncation bootstrapping from
    ``final_values`` = V(``final_obs``); ``values`` ``[B]`` = V(``obs``). Rewards are scaled by
    the extrinsic ``strength``.

    ``segments`` > 1 (the data-parallel update: one segment per device) runs GAE on the buffer
    cut into that many equal runs side by side, each ending at a trajectory's end, so a device
    never needs another device's rows; the result is the same as one run through the whole
    buffer, since no advantage crosses a trajectory's end."""
    def side_by_side(x):  # [B] -> [B / segments, segments]: time-major, one column per segment
        return x.reshape(segments, -1).T

    def back(x):
        return x.T.reshape(-1)

    advantages, returns = gae(
        side_by_side(buffer.rewards * config.strength), side_by_side(values),
        side_by_side(buffer.dones), jnp.zeros((segments,)), gamma=config.gamma, lam=config.lambd,
        truncations=side_by_side(buffer.truncations), final_values=side_by_side(final_values))
    return back(advantages), back(returns)


def make_buffer_update(config: PPOConfig, action_spec: ActionSpec, total_adam_steps: int,
                       segments: int = 1, place_minibatches=None):
    """``(train_state, FlatBuffer) -> (train_state, metrics)``, not jitted.

    As ML-Agents' ``_process_trajectory``: the normalizer first takes in the observations,
    then values are computed with it (the stored acting-time values are not used), then GAE per
    trajectory; ``total_adam_steps`` is the schedules' horizon in Adam steps. ``segments`` and
    ``place_minibatches`` lay the update out over devices (``jppo.host_loop.sharded_update``):
    the buffer is made of ``segments`` equal runs that each end at a trajectory's end.
    """
    train_on_batch = make_train_on_batch(config, action_spec, total_adam_steps, place_minibatches)

    def update(state: TrainState, buffer: FlatBuffer):
        policy = make_policy(config, action_spec, observations.shapes_of(buffer.obs, 1))
        normalizer = state.normalizer
        if config.normalize:
            normalizer = obs_norm.update(normalizer, buffer.obs)
        values = policy.value(state.params, normalizer, buffer.obs)
        final_values = policy.value(state.params, normalizer, buffer.final_obs)
        advantages, returns = gae_targets(config, buffer, values, final_values, segments)
        batch = normalized_batch(config, buffer.obs, buffer.actions, buffer.log_probs, values,
                                 advantages, returns, buffer.action_masks)
        return train_on_batch(state.replace(normalizer=normalizer), batch)

    return update


__all__ = ["FlatBuffer", "gae_targets", "make_buffer_update"]
