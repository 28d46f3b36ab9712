"""TensorBoard event files read back with tensorboardX's protos (tensorboardX is a dependency
of jppo; TensorBoard itself is only an optional extra)."""
from __future__ import annotations

import pathlib
import struct

from tensorboardX.proto import event_pb2


def events(folder: pathlib.Path):
    """Every event of the folder's event files, file by file in the order they were written
    (their names carry the creation time)."""
    for path in sorted(pathlib.Path(folder).glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):  # TFRecord: length, its CRC, the record, the record's CRC
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            yield event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4


def scalars(folder: pathlib.Path) -> dict:
    """``{tag: [(step, value), ...]}`` in step order, as TensorBoard shows the event files: a
    SessionLog START at step S (a resumed run writes one) hides what came before it from S on,
    and a step written again keeps its last value."""
    by_tag: dict = {}
    for event in events(folder):
        if event.HasField("session_log") and event.session_log.status == event.session_log.START:
            by_tag = {tag: {s: v for s, v in steps.items() if s < event.step}
                      for tag, steps in by_tag.items()}
        for value in event.summary.value:
            by_tag.setdefault(value.tag, {})[event.step] = value.simple_value
    return {tag: sorted(steps.items()) for tag, steps in by_tag.items()}
