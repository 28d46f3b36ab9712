"""What a policy observes, and the per-sensor encoders in front of its bodies.

An agent's observation is either one array (``observation_size`` an int: one vector sensor,
as jppo has always taken it) or a tuple of arrays, one per sensor in the scene's order
(``observation_size`` a sequence: an int or a shape per sensor). Every function here takes
either form; a tuple of one sensor stays a tuple. Batches keep the form, with leading axes:
``[..., D]`` or ``([..., D0], [..., D1], ...)``.

As ML-Agents' ``ObservationEncoder`` does, each sensor has its own encoder and the encodings
are concatenated before the body (the MLP). A vector sensor's encoder is the identity (its
normalizer, one per sensor, is applied before it: ``jppo.core.normalizer``), so a vector-only
policy has exactly the parameters of one that sees the concatenation, and a one-sensor policy
the parameters jppo always had. Other sensor kinds (images) get their encoder here, chosen by
the sensor's shape (``ENCODERS``, keyed by rank); until then they are refused by name.
"""
from __future__ import annotations

from typing import Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ObservationSize = Union[int, Sequence]


def is_single(observation_size: ObservationSize) -> bool:
    """One array (an int size), rather than a tuple of sensors."""
    return isinstance(observation_size, (int, np.integer))


def sensor_shapes(observation_size: ObservationSize) -> tuple:
    """One shape per sensor: ``8 -> ((8,),)``, ``[27, 18] -> ((27,), (18,))``."""
    if is_single(observation_size):
        return ((int(observation_size),),)
    return tuple((int(s),) if is_single(s) else tuple(int(d) for d in s) for s in observation_size)


def canonical(observation_size: ObservationSize):
    """A hashable form: the int, or a tuple of per-sensor shapes."""
    return int(observation_size) if is_single(observation_size) else sensor_shapes(observation_size)


def total_size(observation_size: ObservationSize) -> int:
    """Floats in one observation, over all sensors."""
    return int(sum(np.prod(s) for s in sensor_shapes(observation_size)))


def to_meta(observation_size: ObservationSize):
    """JSON: the int, or a list of shapes (lists)."""
    if is_single(observation_size):
        return int(observation_size)
    return [list(s) for s in sensor_shapes(observation_size)]


def from_meta(value) -> ObservationSize:
    return int(value) if is_single(value) else tuple(tuple(s) for s in value)


def describe(observation_size: ObservationSize) -> str:
    """For messages: "8 observations" or "sensors of shapes (27,), (18,)"."""
    if is_single(observation_size):
        return f"{int(observation_size)} observations"
    return "sensors of shapes " + ", ".join(str(s) for s in sensor_shapes(observation_size))


def zeros(observation_size: ObservationSize, lead: tuple = (1,), dtype=jnp.float32):
    """An all-zero observation batch of leading shape ``lead``."""
    if is_single(observation_size):
        return jnp.zeros(tuple(lead) + (int(observation_size),), dtype)
    return tuple(jnp.zeros(tuple(lead) + s, dtype) for s in sensor_shapes(observation_size))


def abstract(observation_size: ObservationSize, lead: tuple, sharding=None, dtype=np.float32):
    """``jax.ShapeDtypeStruct`` leaves of a batch of leading shape ``lead`` (for compiling)."""
    make = lambda shape: jax.ShapeDtypeStruct(tuple(lead) + shape, dtype, sharding=sharding)
    if is_single(observation_size):
        return make((int(observation_size),))
    return tuple(make(s) for s in sensor_shapes(observation_size))


def flat(obs) -> jax.Array:
    """Every sensor flattened and concatenated: ``[..., total_size]`` (leading axes as given by
    the first sensor's rank minus its own)."""
    if not isinstance(obs, tuple):
        return obs
    return jnp.concatenate(list(obs), axis=-1) if len(obs) > 1 else obs[0]


def unflat(packed: jax.Array, observation_size: ObservationSize):
    """``flat``'s inverse for vector sensors: ``[..., total_size]`` -> the observation form."""
    if is_single(observation_size):
        return packed
    sizes = [int(np.prod(s)) for s in sensor_shapes(observation_size)]
    parts = jnp.split(packed, list(np.cumsum(sizes)[:-1]), axis=-1)
    return tuple(p.reshape(p.shape[:-1] + s)
                 for p, s in zip(parts, sensor_shapes(observation_size)))


def batch_shape(obs, observation_size: ObservationSize) -> tuple:
    """The leading shape of an observation batch."""
    first = obs if not isinstance(obs, tuple) else obs[0]
    return tuple(first.shape[:first.ndim - len(sensor_shapes(observation_size)[0])])


class VectorEncoder(nn.Module):
    """A vector sensor's encoder: the identity (normalized upstream), as ML-Agents'
    ``VectorInput``; no parameters."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return x


# Encoder per sensor rank (the rank of one sample's observation).
ENCODERS = {1: VectorEncoder}


class ObservationEncoder(nn.Module):
    """``obs -> [..., features]``: each sensor through its encoder, concatenated in order.

    ``observation_shapes`` (one shape per sensor; empty: every sensor a vector) chooses each
    sensor's encoder; a single array is one vector sensor."""

    observation_shapes: tuple = ()

    @nn.compact
    def __call__(self, obs) -> jax.Array:
        if not isinstance(obs, tuple):
            return obs
        shapes = self.observation_shapes or tuple((x.shape[-1],) for x in obs)
        encoded = []
        for i, (x, shape) in enumerate(zip(obs, shapes)):
            if len(shape) not in ENCODERS:
                raise ValueError(f"sensor {i} has shape {tuple(shape)}; jppo encodes vector "
                                 "sensors only.")
            encoded.append(ENCODERS[len(shape)](name=f"sensor_{i}")(x))
        return jnp.concatenate(encoded, axis=-1) if len(encoded) > 1 else encoded[0]


__all__ = ["ENCODERS", "ObservationEncoder", "VectorEncoder", "abstract", "batch_shape",
           "canonical", "describe", "flat", "from_meta", "is_single", "sensor_shapes",
           "to_meta", "total_size", "unflat", "zeros"]
