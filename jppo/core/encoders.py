"""ML-Agents' image encoders in Flax: one per image sensor, chosen by ``vis_encode_type``.

The contract: an image sensor is a rank-3 observation, HWC (height, width, channels), that
reaches the network as float32 in [0, 1], as mlagents_envs delivers both PNG-decoded and raw
observations; a batch keeps its leading axes, ``[..., H, W, C] -> [..., hidden_units]``. Images
are not normalized (ML-Agents normalizes vector inputs only; ``jppo.core.normalizer`` keeps an
empty, no-op state for an image sensor). Each encoder ends in a dense layer to
``hidden_units`` (ML-Agents' ``h_size``), and ``jppo.core.observations.ObservationEncoder``
concatenates the encodings with the vector sensors in the scene's sensor order.

The layers are ML-Agents' (release 19, ``trainers/torch/encoders.py`` and
``ModelUtils.MIN_RESOLUTION_FOR_ENCODER``), written (out_channels, kernel, stride):

==================  ======================================================  ===============  ====
``vis_encode_type``  layers                                                  activation        min
==================  ======================================================  ===============  ====
simple              conv(16, 8, 4), conv(32, 4, 2), dense                   LeakyReLU(0.01)  20
nature_cnn          conv(32, 8, 4), conv(64, 4, 2), conv(64, 3, 1), dense   LeakyReLU(0.01)  36
resnet              3 stacks of 16, 32, 32 channels: conv(c, 3, 1, pad 1),  Swish in blocks, 15
                    max-pool 3 stride 2, 2 residual blocks x + conv(swish(  Swish, dense,
                    conv(swish(x)))); then Swish, dense                     ReLU
match3              conv(35, 3, 1), conv(144, 3, 1), dense                  LeakyReLU(0.01)  5
fully_connected     dense                                                   LeakyReLU(0.01)  1
==================  ======================================================  ===============  ====

(no padding unless said; "min" is the smallest height and width accepted: a smaller sensor is a
``ConfigError`` naming the sensor, its size and the minimum, as ML-Agents refuses it.)

Initialisation as ML-Agents: convolutions keep torch's ``Conv2d`` default (kernel and bias
uniform in +-1/sqrt(fan_in), fan_in = kernel * kernel * in_channels); the dense layer is
``KaimingHeNormal`` times ``kernel_gain`` 1.41 with zero bias (``jppo.core.layers.he_normal``).

Layout: the convolutions run channels-last, NHWC images with HWIO kernels (Flax's ``nn.Conv``
over ``lax.conv_general_dilated``). Images arrive HWC, so NHWC needs no transpose, and XLA:CPU's
convolutions are fastest channels-last: on this project's CPU every encoder's convolution stack,
forward and backward, ran faster NHWC than NCHW, most of all the default ``simple``
(``benchmarks/bench_conv_layout.py``; the figures are in benchmarks/README.md); on a GPU, XLA
may assign convolutions another layout itself (not measured here).
Before the dense layer the feature map is flattened channel-major, as ML-Agents' reshape of its
(N, C, H, W) tensor is, so the dense kernel is ML-Agents' weight transposed and weights move
between the two (``jppo.reference.transfer``) without reordering.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jppo.core.config import VIS_ENCODE_TYPES, ConfigError
from jppo.core.layers import Dense, he_normal

# (out_channels, kernel, stride) of each convolution before the dense layer (no padding).
CONV_LAYERS = {
    "simple": ((16, 8, 4), (32, 4, 2)),
    "nature_cnn": ((32, 8, 4), (64, 4, 2), (64, 3, 1)),
    "match3": ((35, 3, 1), (144, 3, 1)),
    "fully_connected": (),
}
RESNET_CHANNELS = (16, 32, 32)  # one stack each: conv, max-pool, RESNET_BLOCKS residual blocks
RESNET_BLOCKS = 2
# ML-Agents' ModelUtils.MIN_RESOLUTION_FOR_ENCODER: the smallest height and width accepted.
MIN_RESOLUTION = {"fully_connected": 1, "match3": 5, "simple": 20, "nature_cnn": 36, "resnet": 15}
DENSE_GAIN = 1.41  # ML-Agents' kernel_gain of the encoders' dense layer ("ReLU gain")
assert set(MIN_RESOLUTION) == set(VIS_ENCODE_TYPES) == set(CONV_LAYERS) | {"resnet"}


def is_image(shape) -> bool:
    """A sensor of rank 3 (HWC) is an image."""
    return len(tuple(shape)) == 3


def check_resolution(shapes, vis_encode_type: str) -> None:
    """A ``ConfigError`` (one sentence) for the first image sensor of ``shapes`` (one shape per
    sensor) smaller than ``vis_encode_type``'s minimum height and width."""
    minimum = MIN_RESOLUTION[vis_encode_type]
    for i, shape in enumerate(shapes):
        if is_image(shape) and min(shape[0], shape[1]) < minimum:
            raise ConfigError(
                f"sensor {i} of shape {tuple(int(d) for d in shape)} is an image of "
                f"{shape[0]}x{shape[1]} pixels, smaller than the {vis_encode_type!r} encoder's "
                f"minimum of {minimum}x{minimum}; give a larger image or a vis_encode_type whose "
                f"minimum it meets ({_fitting(shape)}).")


def _fitting(shape) -> str:
    fits = [f"{k} (min {m})" for k, m in MIN_RESOLUTION.items() if min(shape[0], shape[1]) >= m]
    return ", ".join(fits) or "none does"


def _torch_uniform(fan_in: int):
    """torch's default ``Conv2d`` bias (and, in effect, kernel) draw: U(-1/sqrt(fan_in), ...)."""
    bound = 1.0 / np.sqrt(fan_in)
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


# torch's kaiming_uniform_(a=sqrt(5)) on a Conv2d kernel: U(+-1/sqrt(fan_in)), fan_in = k*k*in.
_TORCH_CONV_KERNEL = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def conv(x: jax.Array, features: int, kernel: int, stride: int, padding: int, name: str):
    """One ``Conv2d`` as torch builds it, channels-last: ``[N, H, W, C] -> [N, H', W', F]``."""
    return nn.Conv(features, (kernel, kernel), (stride, stride),
                   padding=[(padding, padding)] * 2, kernel_init=_TORCH_CONV_KERNEL,
                   bias_init=_torch_uniform(kernel * kernel * x.shape[-1]), name=name)(x)


def channel_major(x: jax.Array) -> jax.Array:
    """``[N, H, W, C] -> [N, C*H*W]`` in ML-Agents' (N, C, H, W) flattening order."""
    return jnp.reshape(jnp.transpose(x, (0, 3, 1, 2)), (x.shape[0], -1))


class ImageEncoder(nn.Module):
    """``[..., H, W, C] -> [..., features]``: ML-Agents' ``kind`` encoder for images of
    ``shape`` (module docstring). Convolutions are named ``conv0``, ``conv1``, ... in order,
    the dense layer ``Dense_0``."""

    kind: str
    features: int
    shape: tuple

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.shape[x.ndim - 3:] != tuple(self.shape):
            raise ValueError(f"an image batch of shape {x.shape} does not end in the sensor's "
                             f"shape {tuple(self.shape)}.")
        lead = x.shape[:x.ndim - 3]
        x = jnp.reshape(x, (-1,) + tuple(self.shape))
        if self.kind == "resnet":
            x = self._resnet(x)
            out = nn.relu(Dense(self.features, kernel_init=he_normal(DENSE_GAIN))(channel_major(x)))
        else:
            for i, (features, kernel, stride) in enumerate(CONV_LAYERS[self.kind]):
                x = nn.leaky_relu(conv(x, features, kernel, stride, 0, f"conv{i}"))
            out = Dense(self.features, kernel_init=he_normal(DENSE_GAIN))(channel_major(x))
            out = nn.leaky_relu(out)
        return jnp.reshape(out, lead + (self.features,))

    def _resnet(self, x: jax.Array) -> jax.Array:
        index = 0
        for channels in RESNET_CHANNELS:
            x = conv(x, channels, 3, 1, 1, f"conv{index}")
            x = nn.max_pool(x, (3, 3), (2, 2), padding="VALID")
            index += 1
            for _ in range(RESNET_BLOCKS):
                h = conv(nn.swish(x), channels, 3, 1, 1, f"conv{index}")
                x = x + conv(nn.swish(h), channels, 3, 1, 1, f"conv{index + 1}")
                index += 2
        return nn.swish(x)


def output_size(kind: str, shape) -> int:
    """Floats the convolutions hand the dense layer for an image of ``shape`` (ML-Agents'
    ``final_flat``), from ML-Agents' output-shape arithmetic."""
    h, w, c = (int(d) for d in shape)
    if kind == "resnet":
        for _ in RESNET_CHANNELS:
            h, w = (h - 3) // 2 + 1, (w - 3) // 2 + 1
        return RESNET_CHANNELS[-1] * h * w
    for features, kernel, stride in CONV_LAYERS[kind]:
        h, w, c = (h - kernel) // stride + 1, (w - kernel) // stride + 1, features
    return h * w * c


__all__ = ["CONV_LAYERS", "DENSE_GAIN", "MIN_RESOLUTION", "RESNET_BLOCKS", "RESNET_CHANNELS",
           "ImageEncoder", "channel_major", "check_resolution", "conv", "is_image", "output_size"]
