"""A running observation normalizer as pure functions.

Statistics are merged batch by batch with Chan et al.'s parallel update, which stays exact
and stable where a naive sum of squares loses precision in float32. Applied as
``clip((x - mean) / sqrt(var), -5, 5)`` like ML-Agents (``var`` is the population variance of
everything seen). Before any data, mean is 0 and var is 1, so ``apply`` is the identity (then clipped).

Several sensors (a tuple of observation arrays, ``jppo.core.observations``) have one running
normalizer each, as ML-Agents' ``VectorInput`` per sensor: the state is then a tuple of
``NormalizerState`` and ``update`` / ``apply`` work sensor by sensor. An image sensor (a shape of
rank 3, HWC) is not normalized, as ML-Agents normalizes vector inputs only: its place in the
tuple holds an empty state (``mean`` and ``m2`` of size 0, ``count`` 0), which ``update`` leaves
as it is and ``apply`` passes the images through unchanged (no H*W*C statistics are carried).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# Keeps a constant feature (zero variance) finite instead of 0/0.
_VAR_FLOOR = 1e-8


class NormalizerState(NamedTuple):
    count: jax.Array  # float32 scalar: samples seen
    mean: jax.Array  # [obs_dim]
    m2: jax.Array  # [obs_dim]: sum of squared deviations from the mean


def _per_sensor(state) -> bool:
    return isinstance(state, tuple) and not isinstance(state, NormalizerState)


def _is_image(state: NormalizerState) -> bool:
    return state.mean.shape[-1] == 0


def init(size):
    """Empty statistics for observations of width ``size``; for a sequence of sizes (or
    per-sensor shapes ``(D,)``), a tuple with one state per sensor, an image's (rank 3) empty."""
    if not isinstance(size, (int, np.integer)):
        return tuple(init(0 if np.ndim(s) == 1 and len(s) == 3 else int(np.prod(s)))
                     for s in size)
    return NormalizerState(jnp.zeros((), jnp.float32), jnp.zeros(size, jnp.float32),
                           jnp.zeros(size, jnp.float32))


def update(state, batch):
    """Merge ``batch[..., obs_dim]`` (any leading shape) into the running statistics; per
    sensor for a tuple of states and a tuple of batches."""
    if _per_sensor(state):
        return tuple(update(s, b) for s, b in zip(state, batch))
    if _is_image(state):
        return state
    x = jnp.reshape(batch, (-1, state.mean.shape[-1])).astype(jnp.float32)
    n_b = jnp.asarray(x.shape[0], jnp.float32)
    mean_b = jnp.mean(x, axis=0)
    m2_b = jnp.sum(jnp.square(x - mean_b), axis=0)
    total = state.count + n_b
    delta = mean_b - state.mean
    mean = state.mean + delta * (n_b / total)
    m2 = state.m2 + m2_b + jnp.square(delta) * (state.count * n_b / total)
    return NormalizerState(total, mean, m2)


def variance(state: NormalizerState) -> jax.Array:
    """Population variance of all samples seen; 1 before any."""
    return jnp.where(state.count > 0, state.m2 / jnp.maximum(state.count, 1.0), 1.0)


def apply(state, obs, clip: float = 5.0):
    """``clip((obs - mean) / sqrt(var), -clip, clip)`` for ``obs[..., obs_dim]``; per sensor
    for a tuple of states and a tuple of observations."""
    if _per_sensor(state):
        return tuple(apply(s, o, clip) for s, o in zip(state, obs))
    if _is_image(state):
        return obs
    std = jnp.sqrt(jnp.maximum(variance(state), _VAR_FLOOR))
    return jnp.clip((obs - state.mean) / std, -clip, clip)
