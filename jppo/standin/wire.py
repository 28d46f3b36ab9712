"""Decision messages in protobuf's wire format, written directly.

The generated messages use protobuf's pure-Python implementation here (protobuf 3.20 has no
compiled module for Python 3.11): building and serializing a 12-agent message that way costs
more than the physics. Decision messages are therefore written directly in the protobuf wire
format (tests check them against the generated classes); the rare messages (initialization,
brain parameters) and Python's answers go through the generated classes.
"""
from __future__ import annotations

import struct
from typing import Sequence

import numpy as np

from jppo.standin.scenes import Sensor

DIMENSION_NONE = 1  # DimensionProperty.None: VectorSensor's one dimension


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
    """One sensor's ObservationProto around its float data (proto3 drops default values)."""

    def __init__(self, sensor: Sensor):
        size = int(np.prod(sensor.shape))
        self.size = size
        self._floats = struct.Struct(f"<{size}f")
        self._head = _field(1, b"".join(_varint(int(d)) for d in sensor.shape))  # shape, packed
        tail = _field(6, b"".join(_varint(int(p)) for p in sensor.dimension_properties))
        if sensor.observation_type:
            tail += b"\x38" + _varint(int(sensor.observation_type))  # field 7, enum
        self._tail = tail + _field(8, sensor.name.encode())

    def encode(self, values) -> bytes:
        return _field(13, self._head + _field(4, _field(1, self._floats.pack(*values)))
                      + self._tail)


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


__all__ = ["DIMENSION_NONE", "HEADER_200", "InfoEncoder", "encode_output"]
