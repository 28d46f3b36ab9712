"""Processes, meshes and collectives with JAX's own machinery (``jax.distributed``,
``jax.sharding``). Generic: it knows pytrees of arrays, not PPO; the loops decide what is split
and what is replicated (``jppo.jax_loop.sharding``, ``jppo.host_loop.sharded_update``).

- Processes: ``initialize`` joins a ``jax.distributed`` run (gloo on CPUs, NCCL on GPUs,
  ICI/DCN on TPUs); process 0 alone writes the results folder (``is_main``, ``on_main``) and
  the others learn its decisions (``broadcast_flag``, ``broadcast_tree``).
- Devices: ``make_mesh`` builds a one-axis mesh (``AXIS``) over every process's devices, each
  process's devices a contiguous block.
- Data: ``place`` and ``place_replicated`` lay host arrays out over a mesh; ``fetch`` gathers
  them back (a collective with several processes), ``local_replica`` and ``fetch_replicated``
  read this process's own copy of replicated arrays without communication;
  ``minibatch_splitter`` splits every minibatch of an update over the mesh so XLA all-reduces
  the gradient before the one Adam step every device applies.
- Reports: ``params_digest`` and ``process_report`` show every process ends with the same
  parameters.
"""
from __future__ import annotations

import hashlib
import os
import socket
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jppo.errors import UserError

AXIS = "data"


# ---------------------------------------------------------------------------------------------
# Processes: jax.distributed


def initialize(coordinator: str | None, num_processes: int | None, process_id: int | None,
               auto: bool = False, bind: str | None = None) -> bool:
    """Join a multi-process run through ``jax.distributed.initialize``; False if none is asked.

    With ``coordinator``, ``num_processes`` and ``process_id`` all given, they are used as is.
    With some or none (``auto``), JAX fills the rest from the cluster: Slurm (``SLURM_*``),
    Open MPI, Kubernetes, Cloud TPU, or ``JAX_COORDINATOR_ADDRESS``. Must run before anything
    else touches JAX's devices. CPU devices talk through gloo.

    Where process 0's coordinator listens: JAX's default is every interface ("[::]:port"),
    which exposes an unauthenticated service to the network. Here it listens on ``bind`` if
    given, else on the host of ``coordinator`` (the address the other processes use, so
    ``127.0.0.1`` means this machine only). Found by the cluster (no ``coordinator``), the
    address is the cluster's and JAX listens everywhere unless ``bind`` says where, which then
    needs the port from ``JAX_COORDINATOR_ADDRESS``.
    """
    if coordinator is None and num_processes is None and process_id is None and not auto:
        return False
    if num_processes is not None and num_processes < 1:
        raise UserError(f"--num-processes {num_processes} is not allowed; give a number of "
                        "processes >= 1.")
    if process_id is not None and (process_id < 0 or (num_processes is not None
                                                      and process_id >= num_processes)):
        raise UserError(f"--process-id {process_id} is not allowed; give a number from 0 to "
                        f"--num-processes - 1.")
    if coordinator is not None and (":" not in coordinator
                                    or not coordinator.rsplit(":", 1)[1].isdigit()):
        raise UserError(f"--coordinator {coordinator!r} is not of the form host:port, e.g. "
                        "--coordinator 10.0.0.1:1234.")
    listen = _listen_address(coordinator, bind)
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except (AttributeError, KeyError, ValueError):  # older JAX: gloo is its only choice anyway
        pass
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id, coordinator_bind_address=listen)
    except (ValueError, TypeError) as err:
        raise UserError(f"cannot start a multi-process run: {str(err).rstrip('.')}; give "
                        "--coordinator host:port, --num-processes and --process-id, or run "
                        "under Slurm, Open MPI or on a TPU slice.") from None
    except RuntimeError as err:  # the coordinator is unreachable, a timeout, a refused port
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = ""
        if "Failed to start RPC server" in first:
            hint = (f"; process 0 cannot listen on {listen or 'the coordinator address'} (give "
                    "--bind with an address of this machine, or 0.0.0.0 for every interface)")
        raise UserError(f"cannot join the multi-process run at {coordinator or 'the cluster'}"
                        f"'s coordinator: {first.rstrip('.')}{hint}.") from None
    return True


def _listen_address(coordinator: str | None, bind: str | None) -> str | None:
    """``host:port`` for process 0's coordinator to listen on (see ``initialize``)."""
    if coordinator is not None:
        host, port = coordinator.rsplit(":", 1)
        return f"{_bracketed(bind) if bind else host}:{port}"
    if bind is None:
        return None
    known = os.environ.get("JAX_COORDINATOR_ADDRESS", "")
    if ":" not in known:
        raise UserError("--bind with a coordinator the cluster names needs its port: give "
                        "--coordinator host:port, or set JAX_COORDINATOR_ADDRESS.")
    return f"{_bracketed(bind)}:{known.rsplit(':', 1)[1]}"


def _bracketed(host: str) -> str:
    """An IPv6 address in brackets, as ``host:port`` needs it."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def check_bind(address: str) -> str:
    """``--bind ADDRESS``: an address of this machine that a socket can listen on (``0.0.0.0``
    or ``::`` for every interface); else a ``UserError``."""
    host = address.strip().strip("[]")
    if not host:
        raise UserError("--bind '' is empty; give an address of this machine, localhost, or "
                        "0.0.0.0 for every interface.")
    try:
        infos = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, where = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.bind(where)
    except (OSError, UnicodeError, IndexError) as err:
        why = getattr(err, "strerror", None) or type(err).__name__
        raise UserError(f"--bind {address!r} is not an address this machine can listen on "
                        f"({why}); give one of its addresses, localhost, or 0.0.0.0 for every "
                        "interface.") from None
    return host


def is_main() -> bool:
    """Process 0 writes the results folder; the others train silently."""
    return jax.process_index() == 0


# ---------------------------------------------------------------------------------------------
# Devices: the mesh


def parse_devices(text: str | None) -> int | None:
    """``--devices``: a number >= 1, or ``all`` (None); a mistake is a ``UserError``."""
    if text is None:
        return 1
    if text.strip().lower() == "all":
        return None
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"--devices {text} is not allowed; give a number of devices >= 1 or "
                        "'all'.")
    return value


def make_mesh(local_devices: int | None) -> Mesh | None:
    """A one-axis mesh over ``local_devices`` devices of every process (None: all of them), or
    None when that is a single device in a single process (the plain one-device program).

    Processes are laid out one after the other, so each holds a contiguous block of the
    environments.
    """
    available = jax.local_device_count()
    if local_devices is not None and local_devices > available:
        hint = (f"; on a CPU, XLA_FLAGS=--xla_force_host_platform_device_count={local_devices} "
                "splits it into that many devices" if jax.default_backend() == "cpu" else "")
        raise UserError(f"--devices {local_devices} is more than this process has: "
                        f"{available} {jax.default_backend().upper()} device(s) "
                        f"({', '.join(str(d) for d in jax.local_devices()[:4])}"
                        f"{', ...' if available > 4 else ''}); give at most {available} or "
                        f"'all'{hint}.")
    per_process = available if local_devices is None else local_devices
    if per_process == 1 and jax.process_count() == 1:
        return None
    devices = []
    for p in range(jax.process_count()):
        mine = sorted((d for d in jax.devices() if d.process_index == p), key=lambda d: d.id)
        devices.extend(mine[:per_process])
    axis_type = getattr(jax.sharding, "AxisType", None)
    if axis_type is None:  # JAX before 0.5: every mesh axis is what later versions call Auto
        return Mesh(np.array(devices), (AXIS,))
    # Auto: XLA's partitioner chooses the layouts between the constraints we give it.
    return Mesh(np.array(devices), (AXIS,), axis_types=(axis_type.Auto,))


def device_count(mesh: Mesh | None) -> int:
    return 1 if mesh is None else int(mesh.devices.size)


def check_divisible(num_envs: int, mesh: Mesh | None):
    count = device_count(mesh)
    if num_envs % count:
        where = f"{count} devices" + (f" ({jax.process_count()} processes)"
                                      if jax.process_count() > 1 else "")
        raise UserError(f"num_envs = {num_envs} cannot be split evenly over {where}; give "
                        f"--num-envs a multiple of {count}, or fewer --devices.")


# ---------------------------------------------------------------------------------------------
# Placing and fetching pytrees


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def place(host_tree: Any, shardings: Any) -> Any:
    """Host (numpy or single-device) arrays as global arrays laid out by ``shardings`` (a pytree
    of ``NamedSharding`` shaped like ``host_tree``); every process passes the same full tree and
    keeps the pieces on its own devices."""
    def put(x, sharding):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree_util.tree_map(put, host_tree, shardings)


def place_replicated(mesh: Mesh | None, tree: Any) -> Any:
    """Host arrays (the same on every process) as arrays replicated over ``mesh``."""
    if mesh is None:
        return jax.tree_util.tree_map(jnp.asarray, tree)
    rep = replicated(mesh)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, rep, lambda index: x[index])

    return jax.tree_util.tree_map(put, tree)


def fetch(tree: Any) -> Any:
    """A pytree of (possibly global, sharded) arrays as numpy on this host. With several
    processes this is a collective (``process_allgather``): every process must call it."""
    if jax.process_count() > 1:
        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


def local_replica(tree: Any) -> Any:
    """This process's own copy of replicated arrays, on its first device (no communication);
    other leaves as they are."""
    def mine(x):
        return (x.addressable_data(0) if isinstance(x, jax.Array) and len(x.sharding.device_set) > 1
                else x)
    return jax.tree_util.tree_map(mine, tree)


def fetch_replicated(tree: Any) -> Any:
    """Replicated arrays (metrics) as numpy: this process's own copy, no communication."""
    return jax.tree_util.tree_map(np.asarray, local_replica(tree))


def on_main(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on process 0 only (file-system work) and tell every process whether it
    succeeded. Returns the result on process 0, None elsewhere. A ``UserError`` on process 0 is
    raised there and turned into a one-sentence error on the others, so no process waits for a
    partner that has stopped."""
    if jax.process_count() == 1:
        return fn()
    result, error = None, None
    if is_main():
        try:
            result = fn()
        except UserError as err:
            error = err
    flags = multihost_utils.broadcast_one_to_all(np.array([error is None], np.int32))
    if error is not None:
        raise error
    if not int(np.asarray(flags)[0]):
        raise UserError("process 0 refused to start the run (see its message); this process "
                        "stops too.")
    return result


def broadcast_flag(value: bool) -> bool:
    """Process 0's ``value`` on every process."""
    if jax.process_count() == 1:
        return value
    return bool(np.asarray(multihost_utils.broadcast_one_to_all(np.array(int(value), np.int32))))


def broadcast_tree(tree: Any) -> Any:
    """Process 0's pytree of arrays on every process (numpy)."""
    if jax.process_count() == 1:
        return tree
    return jax.tree_util.tree_map(np.asarray, multihost_utils.broadcast_one_to_all(
        jax.tree_util.tree_map(np.asarray, tree)))


def max_over_processes(value: int) -> int:
    """The largest of every process's ``value`` (a collective: every process calls it)."""
    if jax.process_count() == 1:
        return value
    return int(np.asarray(multihost_utils.process_allgather(np.array(value, np.int64))).max())


def params_digest(params: Any) -> str:
    """SHA-256 of this process's own copy of the (replicated) parameters, leaf by leaf."""
    h = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(local_replica(params)):
        h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return h.hexdigest()


def process_report(params: Any, envs: int, steps: int) -> list[dict]:
    """One row per process (a collective): host, devices, ``envs`` it stepped (JAX
    environments or Unity workers), ``steps`` it took, and the digest of its copy of the
    ``params``. Identical digests mean every process ends with the same parameters."""
    digest = params_digest(params)
    row = np.concatenate([np.array([jax.process_index(), jax.local_device_count(), envs, steps],
                                   np.int64),
                          np.frombuffer(bytes.fromhex(digest), np.uint8).astype(np.int64)])
    host = socket.gethostname().encode()[:64].ljust(64, b"\0")
    row = np.concatenate([row, np.frombuffer(host, np.uint8).astype(np.int64)])
    if jax.process_count() > 1:
        rows = np.asarray(multihost_utils.process_allgather(row))
    else:
        rows = row[None]
    out = []
    for r in rows:
        r = [int(v) for v in r]
        out.append({"process_id": r[0], "host": bytes(r[36:]).rstrip(b"\0").decode(errors="replace"),
                    "local_devices": r[1], "envs": r[2], "steps": r[3],
                    "params_sha256": bytes(r[4:36]).hex()})
    return out


# ---------------------------------------------------------------------------------------------
# Splitting minibatches


def minibatch_splitter(mesh: Mesh) -> Callable:
    """``place_minibatches`` for ``make_train_on_batch``: every minibatch of an epoch's
    ``[minibatches, batch_size, ...]`` arrays split across the devices of ``mesh``."""
    split = NamedSharding(mesh, P(None, AXIS))
    return lambda x: jax.lax.with_sharding_constraint(x, split)
