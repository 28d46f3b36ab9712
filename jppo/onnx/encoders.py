"""ML-Agents' image encoders (``jppo.core.encoders``) as opset-9 ONNX subgraphs.

    image_encoder(g, x, params, kind, shape, features, hint) -> name of [batch, features]

Layout: the input is NCHW, ``[batch, C, H, W]``, as ML-Agents' exporter declares visual
inputs (``ModelSerializer._get_onnx_shape`` turns an (H, W, C) sensor into (C, H, W), and the
encoders skip their NHWC -> NCHW permute while exporting), so Unity's inference engine feeds
it as it feeds ML-Agents' own models. ONNX's ``Conv`` and ``MaxPool`` are NCHW, so no
transpose is needed anywhere: the Flax kernels (HWIO) are stored transposed to OIHW, and the
feature map, already (N, C, H, W), is flattened by a ``Reshape`` to ``[-1, C*H*W]`` (ML-Agents'
``reshape(-1, final_flat)``), the channel-major order ``jppo.core.encoders.channel_major``
gives the JAX encoder's dense layer. Both sides cross-correlate (no kernel flip).

Ops: Conv, MaxPool (no padding, floor rounding: Flax's ``VALID`` pool; ``ceil_mode`` only
exists from opset 10), LeakyRelu (alpha 0.01, torch's and Flax's default), Sigmoid and Mul
(Swish), Relu, Add (the residual blocks), Reshape, Gemm: all in opset 9 and in the operator
lists of Unity's Barracuda and Sentis importers.
"""
from __future__ import annotations

import numpy as np

from jppo.core import encoders
from jppo.onnx.graph import GraphBuilder, check_shape, dense, swish

LEAKY_SLOPE = 0.01  # flax.linen.leaky_relu's default negative slope, as torch's nn.LeakyReLU


def nchw(shape) -> tuple:
    """The ONNX input shape (C, H, W) of an (H, W, C) image sensor, as ML-Agents' exporter."""
    h, w, c = shape
    return (c, h, w)


def conv(g: GraphBuilder, x: str, layer: dict, in_channels: int, features: int, kernel: int,
         stride: int, padding: int, hint: str) -> str:
    """One Flax ``nn.Conv`` (HWIO kernel, ``padding`` on every side) as an NCHW ``Conv``."""
    check_shape(hint + ".kernel", layer["kernel"], (kernel, kernel, in_channels, features))
    weight = np.transpose(layer["kernel"], (3, 2, 0, 1))  # HWIO -> OIHW
    return g.op("Conv", x, g.const(hint + ".kernel", weight), g.const(hint + ".bias", layer["bias"]),
                kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[padding] * 4)


def _flatten(g: GraphBuilder, x: str, size: int) -> str:
    """``[N, C, H, W] -> [N, C*H*W]`` (channel-major, as the JAX encoder flattens)."""
    return g.op("Reshape", x, g.const("flat_shape", [-1, size], np.int64))


def _leaky(g: GraphBuilder, x: str) -> str:
    return g.op("LeakyRelu", x, alpha=LEAKY_SLOPE)


def _resnet(g: GraphBuilder, x: str, p: dict, in_channels: int, hint: str) -> str:
    """The three stacks of ``ImageEncoder._resnet``: conv, max-pool, residual blocks; Swish."""
    index = 0
    for channels in encoders.RESNET_CHANNELS:
        x = conv(g, x, p[f"conv{index}"], in_channels, channels, 3, 1, 1, f"{hint}.conv{index}")
        x = g.op("MaxPool", x, kernel_shape=[3, 3], strides=[2, 2])
        index += 1
        for _ in range(encoders.RESNET_BLOCKS):
            h = conv(g, swish(g, x), p[f"conv{index}"], channels, channels, 3, 1, 1,
                     f"{hint}.conv{index}")
            h = conv(g, swish(g, h), p[f"conv{index + 1}"], channels, channels, 3, 1, 1,
                     f"{hint}.conv{index + 1}")
            x = g.op("Add", x, h)
            index += 2
        in_channels = channels
    return swish(g, x)


def image_encoder(g: GraphBuilder, x: str, params: dict, kind: str, shape, features: int,
                  hint: str) -> str:
    """``x [batch, C, H, W]`` through ``ImageEncoder(kind, features, shape)`` with ``params``
    (its numpy param dict: ``conv0``, ``conv1``, ..., ``Dense_0``) -> ``[batch, features]``."""
    channels = int(shape[2])
    if kind == "resnet":
        x = _resnet(g, x, params, channels, hint)
    else:
        for i, (out, kernel, stride) in enumerate(encoders.CONV_LAYERS[kind]):
            x = _leaky(g, conv(g, x, params[f"conv{i}"], channels, out, kernel, stride, 0,
                               f"{hint}.conv{i}"))
            channels = out
    flat = encoders.output_size(kind, shape)
    layer = params["Dense_0"]
    check_shape(hint + ".Dense_0.kernel", layer["kernel"], (flat, features))
    out = dense(g, _flatten(g, x, flat), layer["kernel"], layer["bias"], hint + ".Dense_0")
    return g.op("Relu", out) if kind == "resnet" else _leaky(g, out)


__all__ = ["LEAKY_SLOPE", "conv", "image_encoder", "nchw"]
