"""Decision messages in protobuf's wire format, written directly.

The generated messages use protobuf's pure-Python implementation here (protobuf 3.20 has no
compiled module for Python 3.11): building and serializing a 12-agent message that way costs
more than the physics. Decision messages are therefore written directly in the protobuf wire
format (tests check them against the generated classes); the rare messages (initialization,
brain parameters) and Python's answers go through the generated classes. Images go as PNG
(Pillow, a dependency of mlagents-envs, which decodes them with it) or as raw floats.
"""
from __future__ import annotations

import io
import struct
from typing import Sequence

import numpy as np
from PIL import Image

from jppo.standin.scenes import Sensor

DIMENSION_NONE = 1  # DimensionProperty.None: VectorSensor's one dimension
COMPRESSION_PNG = 1  # CompressionTypeProto.PNG


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (sub-message, string, bytes, packed repeated)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


HEADER_200 = _field(1, b"\x08" + _varint(200))  # UnityMessageProto.header{status: 200}


class _SensorEncoder:
    """One sensor's ObservationProto around its float data (proto3 drops default values), or,
    for an image sensor with PNG compression, around its PNG bytes (``compression_type`` PNG,
    ``compressed_data``): CameraSensor.GetCompressedObservation's ``Texture2D.EncodeToPNG`` of
    an RGB24 texture, 8 bits per channel; its CompressionSpec has no channel mapping (one PNG
    holds the 3 channels), so ``compressed_channel_mapping`` stays empty, as Unity sends it."""

    def __init__(self, sensor: Sensor):
        size = int(np.prod(sensor.shape))
        self.size, self.shape = size, tuple(int(d) for d in sensor.shape)
        self._floats = struct.Struct(f"<{size}f")
        self._png = sensor.compression == COMPRESSION_PNG
        if self._png and (len(self.shape) != 3 or self.shape[2] not in (1, 3)):
            raise ValueError(f"sensor {sensor.name!r} of shape {self.shape}: PNG compression "
                             "is for images of 1 or 3 channels")
        self._head = _field(1, b"".join(_varint(d) for d in self.shape))  # shape, packed
        if self._png:
            self._head += b"\x10" + _varint(COMPRESSION_PNG)  # field 2, enum
        tail = _field(6, b"".join(_varint(int(p)) for p in sensor.dimension_properties))
        if sensor.observation_type:
            tail += b"\x38" + _varint(int(sensor.observation_type))  # field 7, enum
        self._tail = tail + _field(8, sensor.name.encode())

    def encode(self, values) -> bytes:
        """``values``: the sensor's floats, a list or a numpy array (any shape of ``size``)."""
        if self._png:
            data = _field(3, png(np.asarray(values, np.float32).reshape(self.shape)))
        elif isinstance(values, np.ndarray):
            data = _field(4, _field(1, np.ascontiguousarray(values, "<f4").tobytes()))
        else:
            data = _field(4, _field(1, self._floats.pack(*values)))
        return _field(13, self._head + data + self._tail)


def png(image: np.ndarray) -> bytes:
    """An image float [H, W, C] in [0, 1] as Unity's camera writes it: 8-bit RGB PNG (a
    grayscale sensor's texture is RGB too; Python averages the channels back)."""
    pixels = np.rint(np.clip(np.nan_to_num(image), 0.0, 1.0) * 255.0).astype(np.uint8)
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    out = io.BytesIO()
    # compress_level 1: Pillow's default (6) costs several times longer for little here.
    Image.fromarray(pixels, "RGB").save(out, format="PNG", compress_level=1)
    return out.getvalue()


class InfoEncoder:
    """AgentInfoProto bytes with one ObservationProto per sensor. ``sensors``: the scene's
    ``Sensor`` list, or an int for one vector sensor of that size (``VectorSensor_size<N>``)."""

    def __init__(self, sensors: int | Sequence[Sensor]):
        if isinstance(sensors, (int, np.integer)):
            sensors = [Sensor(f"VectorSensor_size{int(sensors)}", (int(sensors),))]
        self._sensors = [_SensorEncoder(s) for s in sensors]

    def encode(self, agent_id: int, reward: float, done: bool, maxed: bool, obs,
               masked=None) -> bytes:
        """``obs``: one sensor's flat values, or a list with one per sensor; ``masked``: the
        agent's action mask (True: masked, as C#'s discreteActionMasks), or None."""
        if len(self._sensors) == 1 and not isinstance(obs, list):
            obs = [obs]
        out = bytearray()
        if reward != 0.0:
            out += b"\x3d" + struct.pack("<f", reward)  # field 7, 32-bit
        if done:
            out += b"\x40\x01"  # field 8
        if maxed:
            out += b"\x48\x01"  # field 9
        if agent_id:
            out += b"\x50" + _varint(agent_id)  # field 10
        if masked is not None:
            out += _field(11, bytes(bytearray(int(bool(m)) for m in masked)))  # packed bools
        for encoder, values in zip(self._sensors, obs):
            out += encoder.encode(values)
        return bytes(out)


def encode_output(agent_infos: dict[str, list[bytes]], brains: list[bytes] = ()) -> bytes:
    """UnityMessageProto{header 200, unity_output{rl_output{agentInfos}, rl_initialization_output
    {brain_parameters}}} from encoded AgentInfoProtos and BrainParametersProtos."""
    entries = b"".join(
        _field(2, _field(1, name.encode()) + _field(2, b"".join(_field(1, i) for i in infos)))
        for name, infos in agent_infos.items())
    output = _field(1, entries)
    if brains:
        output += _field(2, b"".join(_field(5, b) for b in brains))
    return HEADER_200 + _field(2, output)


__all__ = ["COMPRESSION_PNG", "DIMENSION_NONE", "HEADER_200", "InfoEncoder", "encode_output", "png"]
