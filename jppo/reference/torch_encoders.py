"""ML-Agents' image encoders in torch, as the reference for ``jppo.core.encoders``.

Written after ML-Agents' release-19 ``trainers/torch/encoders.py``: images arrive HWC
(``[N, H, W, C]``, float32 in [0, 1]) and are permuted to NCHW for ``Conv2d``, as ML-Agents'
encoders do outside ONNX export; the feature map is flattened from (N, C, H, W). Layers are
named ``conv0``, ``conv1``, ... and ``dense0`` so that ``jppo.reference.transfer`` maps them to
the Flax encoder's ``conv{i}`` and ``Dense_0``. Initialisation as ML-Agents: torch's default for
the convolutions, ``kaiming_normal_`` times 1.41 and a zero bias for the dense layer.
"""
from __future__ import annotations

import torch
from torch import nn

from jppo.core.encoders import CONV_LAYERS, DENSE_GAIN, RESNET_BLOCKS, RESNET_CHANNELS, output_size


class ImageEncoder(nn.Module):
    """``[..., H, W, C] -> [..., features]``: ML-Agents' ``kind`` encoder for images of
    ``shape`` (H, W, C)."""

    def __init__(self, kind: str, features: int, shape):
        super().__init__()
        self.kind, self.shape = kind, tuple(int(d) for d in shape)
        channels = self.shape[2]
        convs = []
        if kind == "resnet":
            for width in RESNET_CHANNELS:
                convs.append(nn.Conv2d(channels, width, 3, 1, padding=1))
                convs += [nn.Conv2d(width, width, 3, 1, padding=1)
                          for _ in range(2 * RESNET_BLOCKS)]
                channels = width
        else:
            for width, kernel, stride in CONV_LAYERS[kind]:
                convs.append(nn.Conv2d(channels, width, kernel, stride))
                channels = width
        for i, layer in enumerate(convs):
            self.add_module(f"conv{i}", layer)
        self.convs = convs
        self.dense0 = nn.Linear(output_size(kind, self.shape), features)
        with torch.no_grad():
            nn.init.kaiming_normal_(self.dense0.weight)
            self.dense0.weight.mul_(DENSE_GAIN)
            nn.init.zeros_(self.dense0.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        lead = images.shape[:-3]
        x = images.reshape((-1,) + self.shape).permute(0, 3, 1, 2)  # NHWC -> NCHW, as ML-Agents
        if self.kind == "resnet":
            x = self._resnet(x)
            out = torch.relu(self.dense0(x.reshape(x.shape[0], -1)))
        else:
            for layer in self.convs:
                x = nn.functional.leaky_relu(layer(x))
            out = nn.functional.leaky_relu(self.dense0(x.reshape(x.shape[0], -1)))
        return out.reshape(lead + (out.shape[-1],))

    def _resnet(self, x: torch.Tensor) -> torch.Tensor:
        swish = nn.functional.silu
        convs = iter(self.convs)
        for _ in RESNET_CHANNELS:
            x = nn.functional.max_pool2d(next(convs)(x), 3, 2)
            for _ in range(RESNET_BLOCKS):
                first, second = next(convs), next(convs)
                x = x + second(swish(first(swish(x))))
        return swish(x)


class ObservationEncoder(nn.Module):
    """Each sensor through its encoder (vectors: the identity), concatenated in order:
    ``sensor_{i}`` modules for the image sensors of ``shapes``."""

    def __init__(self, shapes, kind: str, features: int):
        super().__init__()
        self.shapes = tuple(tuple(s) for s in shapes)
        for i, shape in enumerate(self.shapes):
            if len(shape) == 3:
                self.add_module(f"sensor_{i}", ImageEncoder(kind, features, shape))

    def width(self, features: int) -> int:
        """Floats the encoder hands the body."""
        return sum(features if len(s) == 3 else s[0] for s in self.shapes)

    def forward(self, obs) -> torch.Tensor:
        if isinstance(obs, torch.Tensor):
            return obs
        parts = [getattr(self, f"sensor_{i}")(x) if len(s) == 3 else x
                 for i, (x, s) in enumerate(zip(obs, self.shapes))]
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]


__all__ = ["ImageEncoder", "ObservationEncoder"]
