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
the parameters jppo always had. The encoder is chosen by the sensor's rank (``ENCODERS``): an
image sensor is rank 3, HWC (height, width, channels), float32 in [0, 1] as mlagents_envs
delivers it, and gets ML-Agents' ``vis_encode_type`` encoder (``jppo.core.encoders``) ending in
``hidden_units`` features; e.g. ``observation_size`` ``((84, 84, 3), (6,))`` is a camera and a
vector, and ``((84, 84, 3),)`` (a tuple of one shape) a camera alone. Images are not
normalized (``jppo.core.normalizer``), as ML-Agents normalizes vector inputs only.
"""
from __future__ import annotations

from typing import Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jppo.core.encoders import ImageEncoder

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


def flat(obs, lead: int | None = None) -> jax.Array:
    """Every sensor flattened and concatenated: ``[*lead_axes, total_size]``, where the first
    ``lead`` axes of every array are batch axes (an image ``[E, H, W, C]`` becomes
    ``[E, H*W*C]``); ``lead`` None: vector sensors, concatenated along their last axis."""
    if not isinstance(obs, tuple):
        return obs
    parts = [x if lead is None else jnp.reshape(x, x.shape[:lead] + (-1,)) for x in obs]
    return jnp.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]


def shapes_of(obs, lead: int) -> tuple:
    """One shape per sensor of a batch whose first ``lead`` axes are batch axes; ``()`` for one
    array (a vector), as ``ObservationEncoder.observation_shapes`` takes it."""
    return tuple(tuple(x.shape[lead:]) for x in obs) if isinstance(obs, tuple) else ()


def encoder_shapes(observation_size) -> tuple:
    """``ObservationEncoder.observation_shapes`` for ``observation_size``: ``()`` for one array
    (an int size), else one shape per sensor."""
    return () if is_single(observation_size) else sensor_shapes(observation_size)


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


# Encoder per sensor rank (the rank of one sample's observation): a vector, an HWC image.
ENCODERS = {1: VectorEncoder, 3: ImageEncoder}


class ObservationEncoder(nn.Module):
    """``obs -> [..., features]``: each sensor through its encoder, concatenated in order.

    ``observation_shapes`` (one shape per sensor; empty: every sensor a vector) chooses each
    sensor's encoder; a single array is one vector sensor. An image sensor's encoder is
    ``vis_encode_type``'s with ``hidden_units`` outputs (ML-Agents' ``h_size``)."""

    observation_shapes: tuple = ()
    vis_encode_type: str = "simple"
    hidden_units: int = 128

    @nn.compact
    def __call__(self, obs) -> jax.Array:
        if not isinstance(obs, tuple):
            return obs
        shapes = self.observation_shapes or tuple((x.shape[-1],) for x in obs)
        encoded = []
        for i, (x, shape) in enumerate(zip(obs, shapes)):
            if len(shape) not in ENCODERS:
                raise ValueError(f"sensor {i} has shape {tuple(shape)}; jppo encodes vector "
                                 "sensors (rank 1) and HWC images (rank 3) only.")
            if len(shape) == 1:
                encoded.append(VectorEncoder(name=f"sensor_{i}")(x))
            else:
                encoded.append(ImageEncoder(self.vis_encode_type, self.hidden_units,
                                            tuple(shape), name=f"sensor_{i}")(x))
        return jnp.concatenate(encoded, axis=-1) if len(encoded) > 1 else encoded[0]


__all__ = ["ENCODERS", "ObservationEncoder", "VectorEncoder", "abstract", "batch_shape",
           "canonical", "describe", "encoder_shapes", "flat", "from_meta", "is_single",
           "sensor_shapes", "shapes_of", "to_meta", "total_size", "unflat", "zeros"]
