"""One agent trained by several processes (or devices) on host-side environments.

Each process of a ``jax.distributed`` run steps its own Unity workers (or Gymnasium
environments), at its own pace, and fills its share of every update's buffer: ``buffer_size /
processes`` experiences. The processes meet once per update:

1. ``exchange``: every process says how it is (ready, failed, interrupted), its step count and
   the episodes it finished since the last meeting (one ``process_allgather`` of a fixed-size
   row). Everyone then knows the run's global step count, whether to summarize, checkpoint or
   stop, and why another process stopped: a Unity fault in one process ends every process with
   one sentence instead of leaving them blocked in the next collective.
2. the update, one jitted program over a mesh with one device per shard of the buffer: each
   process hands over its share as its shards of a global array
   (``jax.make_array_from_process_local_data``); parameters and optimizer state are
   replicated. By default the buffer is gathered onto every device once and each device runs
   the whole update; with ``split_minibatches`` every minibatch is split across the devices
   and the gradients all-reduced at each Adam step (``jppo.distributed``). Either way all
   processes end the update with the same parameters. Measured on 2 CPU processes (gloo), the
   3DBall update takes 0.29 s replicated and 5.3 s split (an all-reduce per Adam step, 561 of
   them), against 0.24 s in one process: ``benchmarks/bench_host_update.py``.

A process's share is made of one segment per local device, each cut at a trajectory's end, so
GAE runs on each device's rows alone (``jppo.host_loop.trajectories.gae_targets``). The acting policy in
each process is its own copy of the replicated parameters.
"""
from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jppo import distributed
from jppo.core.config import PPOConfig
from jppo.core.networks import ActionSpec
from jppo.runs.settings import UserError
from jppo.host_loop.trajectories import FlatBuffer, make_buffer_update

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
    from jax.experimental import multihost_utils

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


@dataclasses.dataclass(frozen=True)
class Layout:
    """How an update's ``buffer_size`` experiences are split: over ``mesh`` (None: one device,
    one process), ``local_segments`` per process of ``segment`` experiences each."""

    mesh: Mesh | None
    buffer_size: int
    local_segments: int
    segment: int

    @property
    def segments(self) -> int:
        return distributed.device_count(self.mesh)

    @property
    def share(self) -> int:
        """Experiences this process contributes to each update."""
        return self.local_segments * self.segment


def make_layout(mesh: Mesh | None, config: PPOConfig, split_minibatches: bool = False) -> Layout:
    """The split of ``config.buffer_size`` over ``mesh`` (and of ``batch_size`` with
    ``split_minibatches``); refuses sizes that do not divide."""
    count = distributed.device_count(mesh)
    local = 1 if mesh is None else sum(d.process_index == jax.process_index()
                                       for d in mesh.devices.flat)
    where = f"{count} devices" + (f" of {jax.process_count()} processes"
                                  if jax.process_count() > 1 else "")
    for name in ("buffer_size", "batch_size") if split_minibatches else ("buffer_size",):
        value = getattr(config, name)
        if value % count:
            raise UserError(f"{name} = {value} cannot be split evenly over {where}; give a "
                            f"{name} that is a multiple of {count}.")
    return Layout(mesh, config.buffer_size, local, config.buffer_size // count)


def global_buffer(layout: Layout, parts: list[FlatBuffer]) -> FlatBuffer:
    """This process's segments as its shards of the update's buffer (every process calls it
    with its own ``parts``, one per local device); a plain ``FlatBuffer`` without a mesh."""
    local = FlatBuffer(*(np.concatenate(fields) for fields in zip(*parts)))
    if layout.mesh is None:
        return local
    return FlatBuffer(*(jax.make_array_from_process_local_data(
        _rows(layout.mesh), x, (layout.buffer_size,) + x.shape[1:]) for x in local))


def _rows(mesh: Mesh) -> NamedSharding:
    """The buffer's layout: its rows (experiences) split over the mesh."""
    return NamedSharding(mesh, P(distributed.AXIS))


def make_update(layout: Layout, config: PPOConfig, action_spec: ActionSpec, total_updates: int,
                split_minibatches: bool = False):
    """The jitted ``(train_state, FlatBuffer) -> (train_state, metrics)`` for ``layout``.

    ``split_minibatches``: each device differentiates its share of every minibatch and the
    gradients are all-reduced (one collective per Adam step: compute split, for big batches on
    fast links); otherwise the buffer is gathered onto every device once and each device runs
    the whole update (one collective per update: for small networks on slow links, such as
    processes on CPUs talking through gloo)."""
    if layout.mesh is None:
        return jax.jit(make_buffer_update(config, action_spec, total_updates))
    rep = distributed.replicated(layout.mesh)
    if split_minibatches:
        update = make_buffer_update(config, action_spec, total_updates, segments=layout.segments,
                                    place_minibatches=distributed.minibatch_splitter(layout.mesh))
    else:
        whole = make_buffer_update(config, action_spec, total_updates, segments=layout.segments)

        def update(state, buffer):
            return whole(state, jax.lax.with_sharding_constraint(buffer, rep))
    return jax.jit(update, in_shardings=(rep, _rows(layout.mesh)), out_shardings=(rep, rep))


def abstract_buffer(layout: Layout, observation_size: int, action_spec: ActionSpec) -> FlatBuffer:
    """Shapes, types and shardings of the update's buffer, for compiling ahead of the data."""
    n, d = layout.buffer_size, observation_size
    sharding = None if layout.mesh is None else _rows(layout.mesh)
    spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
    actions = (spec((n, action_spec.size), np.float32) if action_spec.is_continuous
               else spec((n,), np.int32))
    return FlatBuffer(spec((n, d), np.float32), actions,
                      spec((n, action_spec.log_prob_dims), np.float32), spec((n,), np.float32),
                      spec((n,), np.float32), spec((n,), np.float32), spec((n, d), np.float32))


__all__ = ["FAULT", "INTERRUPTED", "READY", "EpisodeSums", "Layout", "Status", "abstract_buffer",
           "exchange", "first_stop", "global_buffer", "make_layout", "make_update"]
