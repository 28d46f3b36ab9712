"""The host loop's update over a mesh of devices, of one process or of every process of a
``jax.distributed`` run: the buffer's rows are split over the devices, parameters and optimizer
state replicated.

Each process hands over its share (``buffer_size / processes`` experiences, one segment per
local device, each cut at a trajectory's end, so GAE runs on each device's rows alone:
``jppo.core.buffer_update.gae_targets``) as its shards of a global array
(``jax.make_array_from_process_local_data``). By default the buffer is gathered onto every
device once and each device runs the whole update (one collective per update); with
``split_minibatches`` every minibatch is split across the devices and the gradients
all-reduced at each Adam step (``jppo.distributed.minibatch_splitter``). Either way all
processes end the update with the same parameters; the measured cost of each layout is in
benchmarks/README.md (``bench_host_update.py``). The acting policy in each process is its own
copy of the replicated parameters.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jppo import distributed
from jppo.core import observations
from jppo.core.buffer_update import FlatBuffer, make_buffer_update
from jppo.core.config import PPOConfig
from jppo.core.networks import ActionSpec
from jppo.errors import UserError


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

    def describe(self, split_minibatches: bool, local_workers: int) -> str:
        """How the update is laid out, for the start-up message ("" on one device)."""
        if self.mesh is None:
            return ""
        how = "every minibatch split over" if split_minibatches else "replicated on"
        processes = jax.process_count()
        return (f"; the update is {how} {self.segments} devices"
                + (f" of {processes} processes ({local_workers} worker(s) and {self.share} "
                   "steps of each update per process)" if processes > 1 else ""))


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
    local = jax.tree_util.tree_map(lambda *fields: np.concatenate(fields), *parts)
    if layout.mesh is None:
        return local
    return jax.tree_util.tree_map(lambda x: jax.make_array_from_process_local_data(
        _rows(layout.mesh), x, (layout.buffer_size,) + x.shape[1:]), local)


def _rows(mesh: Mesh) -> NamedSharding:
    """The buffer's layout: its rows (experiences) split over the mesh."""
    return NamedSharding(mesh, P(distributed.AXIS))


def make_update(layout: Layout, config: PPOConfig, action_spec: ActionSpec, total_adam_steps: int,
                split_minibatches: bool = False):
    """The jitted ``(train_state, FlatBuffer) -> (train_state, metrics)`` for ``layout``.

    ``split_minibatches``: each device differentiates its share of every minibatch and the
    gradients are all-reduced (one collective per Adam step: compute split, for big batches on
    fast links); otherwise the buffer is gathered onto every device once and each device runs
    the whole update (one collective per update: for small networks on slow links, such as
    processes on CPUs talking through gloo)."""
    if layout.mesh is None:
        return jax.jit(make_buffer_update(config, action_spec, total_adam_steps))
    rep = distributed.replicated(layout.mesh)
    if split_minibatches:
        update = make_buffer_update(config, action_spec, total_adam_steps, segments=layout.segments,
                                    place_minibatches=distributed.minibatch_splitter(layout.mesh))
    else:
        whole = make_buffer_update(config, action_spec, total_adam_steps, segments=layout.segments)

        def update(state, buffer):
            return whole(state, jax.lax.with_sharding_constraint(buffer, rep))
    return jax.jit(update, in_shardings=(rep, _rows(layout.mesh)), out_shardings=(rep, rep))


def abstract_buffer(layout: Layout, observation_size, action_spec: ActionSpec) -> FlatBuffer:
    """Shapes, types and shardings of the update's buffer, for compiling ahead of the data
    (``observation_size``: an int, or one shape per sensor)."""
    n = layout.buffer_size
    sharding = None if layout.mesh is None else _rows(layout.mesh)
    spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
    obs = lambda: observations.abstract(observation_size, (n,), sharding)
    actions = spec((n,) + action_spec.action_shape,
                   np.float32 if action_spec.continuous_size else np.int32)
    masks = spec((n, action_spec.mask_size), bool) if action_spec.mask_size else None
    return FlatBuffer(obs(), actions, spec((n, action_spec.log_prob_dims), np.float32),
                      spec((n,), np.float32), spec((n,), np.float32), spec((n,), np.float32),
                      obs(), masks)


__all__ = ["Layout", "abstract_buffer", "global_buffer", "make_layout", "make_update"]
