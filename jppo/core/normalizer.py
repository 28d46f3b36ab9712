"""A running observation normalizer as pure functions.

Statistics are merged batch by batch with Chan et al.'s parallel update, which stays exact
and stable where a naive sum of squares loses precision in float32. Applied as
``clip((x - mean) / sqrt(var), -5, 5)`` like ML-Agents (``var`` is the population variance of
everything seen). Before any data, mean is 0 and var is 1, so ``apply`` is the identity (then clipped).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

# Keeps a constant feature (zero variance) finite instead of 0/0.
_VAR_FLOOR = 1e-8


class NormalizerState(NamedTuple):
    count: jax.Array  # float32 scalar: samples seen
    mean: jax.Array  # [obs_dim]
    m2: jax.Array  # [obs_dim]: sum of squared deviations from the mean


def init(size: int) -> NormalizerState:
    """Empty statistics for observations of width ``size``."""
    return NormalizerState(jnp.zeros((), jnp.float32), jnp.zeros(size, jnp.float32),
                           jnp.zeros(size, jnp.float32))


def update(state: NormalizerState, batch: jax.Array) -> NormalizerState:
    """Merge ``batch[..., obs_dim]`` (any leading shape) into the running statistics."""
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


def apply(state: NormalizerState, obs: jax.Array, clip: float = 5.0) -> jax.Array:
    """``clip((obs - mean) / sqrt(var), -clip, clip)`` for ``obs[..., obs_dim]``."""
    std = jnp.sqrt(jnp.maximum(variance(state), _VAR_FLOOR))
    return jnp.clip((obs - state.mean) / std, -clip, clip)
