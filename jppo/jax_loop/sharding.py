"""The JAX loop over a mesh of devices (of one process or of every process of a
``jax.distributed`` run): which parts of the ``LoopState`` are split and which replicated.

- the environments (the env axis of the runner state) are split across the devices, so each
  device steps, acts for and scores its own environments;
- parameters, optimizer state, normalizer statistics and keys are replicated;
- the update keeps one device's semantics exactly: the normalizer statistics, GAE's returns and
  the advantage normalization are over the whole rollout (XLA reduces across devices), the
  minibatch order is the same global permutation, and every minibatch is split across the
  devices (``jppo.distributed.minibatch_splitter``), so each device takes the gradient of its
  share and XLA's SPMD partitioner sums the shares with an all-reduce before the one Adam step
  that every device applies to its copy of the parameters. Results equal one device's up to
  the order of floating-point sums.
"""
from __future__ import annotations

from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jppo import distributed
from jppo.core.config import PPOConfig
from jppo.core.networks import ActionSpec
from jppo.core.update import make_update


def state_specs(states: Any) -> Any:
    """PartitionSpecs for a ``LoopState`` with a leading member axis: the runner's arrays with an
    env axis (axis 1) are split over the mesh, everything else is replicated."""
    def spec(path, _):
        names = [getattr(k, "name", getattr(k, "key", None)) for k in path]
        return P(None, distributed.AXIS) if names[0] == "runner" and names[1] != "key" else P()
    return jax.tree_util.tree_map_with_path(spec, states)


def state_shardings(mesh: Mesh, states: Any) -> Any:
    return jax.tree_util.tree_map(lambda s: NamedSharding(mesh, s), state_specs(states),
                                  is_leaf=lambda x: isinstance(x, P))


def place(mesh: Mesh | None, host_states: Any) -> Any:
    """Host (numpy or single-device) loop states laid out on ``mesh`` (None: as they are)."""
    if mesh is None:
        return host_states
    return distributed.place(host_states, state_shardings(mesh, host_states))


def local_env_count(states: Any) -> int:
    """How many environments this process's devices step (the env axis of the runner's
    observations, counted over the process's own shards, each env once)."""
    obs = jax.tree_util.tree_leaves(states.runner.obs)[0]
    if not isinstance(obs, jax.Array) or obs.is_fully_addressable:
        return int(obs.shape[1])
    envs = set()
    for shard in obs.addressable_shards:
        envs.update(range(*shard.index[1].indices(obs.shape[1])))
    return len(envs)


def make_data_parallel_update(config: PPOConfig, action_spec: ActionSpec, total_adam_steps: int,
                              mesh: Mesh):
    """``update(train_state, rollout) -> (train_state, metrics)`` for a rollout whose env axis
    is split over ``mesh``: ``jppo.core.update.make_update``'s program (not jitted) with every
    minibatch split across the devices.

    The sharding constraint on the gathered minibatches makes each device differentiate its
    own share of every minibatch (the weight gradients, sums over the minibatch, become
    per-device partial sums that XLA all-reduces). Without it XLA would gather each minibatch
    onto every device and repeat the whole update everywhere. The scale-out tests check it
    against the one-device update.
    """
    return make_update(config, action_spec, total_adam_steps, jit=False,
                       place_minibatches=distributed.minibatch_splitter(mesh))


__all__ = ["local_env_count", "make_data_parallel_update", "place", "state_shardings",
           "state_specs"]
