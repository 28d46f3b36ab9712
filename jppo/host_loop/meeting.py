"""One agent trained by several processes (or devices) on host-side environments.

Each process of a ``jax.distributed`` run steps its own Unity workers (or Gymnasium
environments), at its own pace, and fills its share of every update's buffer: ``buffer_size /
processes`` experiences. The processes meet once per update:

1. ``exchange``: every process says how it is (ready, failed, interrupted), its step count and
   the episodes it finished since the last meeting (one ``process_allgather`` of a fixed-size
   row). Everyone then knows the run's global step count, whether to summarize, checkpoint or
   stop, and why another process stopped: a Unity fault in one process ends every process with
   one sentence instead of leaving them blocked in the next collective.
2. the update, one jitted program over a mesh (``jppo.host_loop.sharded_update``).
"""
from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
from jax.experimental import multihost_utils

READY, FAULT, INTERRUPTED = 0, 1, 2
_ROW_BYTES = 1024  # room for a status and one sentence of up to about 900 characters


@dataclasses.dataclass
class EpisodeSums:
    """Finished episodes summed: enough for a summary's mean and std, and to add up over
    processes."""

    episodes: int = 0
    reward_sum: float = 0.0
    reward_sq_sum: float = 0.0
    length_sum: float = 0.0

    def add(self, episodes: list) -> None:
        """``jppo.host_loop.trajectories.Episode`` s."""
        rewards = np.array([e.reward for e in episodes], np.float64)
        self.episodes += len(episodes)
        self.reward_sum += float(rewards.sum())
        self.reward_sq_sum += float((rewards ** 2).sum())
        self.length_sum += float(sum(e.length for e in episodes))

    def merge(self, other: "EpisodeSums") -> None:
        self.episodes += other.episodes
        self.reward_sum += other.reward_sum
        self.reward_sq_sum += other.reward_sq_sum
        self.length_sum += other.length_sum


@dataclasses.dataclass
class Status:
    """What one process tells the others at a meeting."""

    code: int = READY
    exit_code: int = 0
    message: str = ""
    diverged: bool = False  # the train state went bad: not to be saved
    steps: int = 0  # agent decisions this process completed since the run (re)started
    sums: EpisodeSums = dataclasses.field(default_factory=EpisodeSums)  # since the last meeting


def exchange(status: Status) -> list[Status]:
    """Every process's ``Status``, in process order (a collective: every process calls it once
    per meeting). A single process gets its own back."""
    if jax.process_count() == 1:
        return [status]
    text = json.dumps(dataclasses.asdict(status)).encode()
    while len(text) > _ROW_BYTES:  # shorten the sentence, keep the numbers
        cut = len(text) - _ROW_BYTES + 3
        status = dataclasses.replace(status, message=status.message[:-cut] + "...")
        text = json.dumps(dataclasses.asdict(status)).encode()
    row = np.frombuffer(text.ljust(_ROW_BYTES, b" "), np.uint8).view(np.int32)
    rows = np.asarray(multihost_utils.process_allgather(row)).astype(np.int32)
    fields = [json.loads(r.view(np.uint8).tobytes()) for r in rows]
    return [Status(**{**f, "sums": EpisodeSums(**f["sums"])}) for f in fields]


def first_stop(statuses: list[Status]) -> tuple[int, Status, str] | None:
    """The lowest-numbered process that did not report READY: ``(process, status, cause)``,
    the cause naming the process unless it is this one; None if all are well."""
    for i, s in enumerate(statuses):
        if s.code != READY:
            cause = (s.message if i == jax.process_index()
                     else f"process {i} of {len(statuses)}: {s.message}")
            return i, s, cause
    return None


__all__ = ["FAULT", "INTERRUPTED", "READY", "EpisodeSums", "Status", "exchange", "first_stop"]
