"""Dense layers shared by the bodies and the image encoders.

``Dense`` is ``nn.Dense`` whose weight gradient takes XLA:CPU's fast matmul path (``matmul``);
``he_normal(gain)`` is ML-Agents' ``KaimingHeNormal`` initialisation with its ``kernel_gain``.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


@jax.custom_vjp
def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x[..., in] @ w[in, out]`` whose weight gradient XLA:CPU runs on its fast matmul path.

    The plain gradient ``x^T g`` contracts the batch axis of both operands, a form XLA:CPU's
    fast matmul library does not take; it falls back to a slower generic kernel, which
    dominated PPO's minibatch steps (benchmarks/README.md). Transposing ``x`` in memory first avoids that.
    """
    return x @ w


def _matmul_fwd(x, w):
    return x @ w, (x, w)


def _matmul_bwd(residuals, g):
    x, w = residuals
    x2 = jnp.reshape(x, (-1, x.shape[-1]))
    g2 = jnp.reshape(g, (-1, g.shape[-1]))
    x_t = jax.lax.optimization_barrier(jnp.transpose(x2))  # keep the transpose materialized
    return g @ w.T, x_t @ g2


matmul.defvjp(_matmul_fwd, _matmul_bwd)


def _dot_general(x, w, dimension_numbers, precision=None, preferred_element_type=None):
    """``nn.Dense``'s contraction (last axis of x with the first of w) through ``matmul``."""
    del precision, preferred_element_type
    assert dimension_numbers == (((x.ndim - 1,), (0,)), ((), ())), dimension_numbers
    return matmul(x, w)


def Dense(features: int, **kwargs) -> nn.Dense:
    return nn.Dense(features, dot_general=_dot_general, **kwargs)


def he_normal(gain: float) -> nn.initializers.Initializer:
    # torch.nn.init.kaiming_normal_ (fan_in, leaky_relu with a=0 -> gain sqrt(2)) then *= gain.
    return nn.initializers.variance_scaling(2.0 * gain * gain, "fan_in", "normal")


__all__ = ["Dense", "he_normal", "matmul"]
