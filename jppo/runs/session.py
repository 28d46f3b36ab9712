"""The beginning of a run that both loops share: the run folder (process 0 alone writes it),
resuming from its newest checkpoint with the checkpoint's meta checked against this run, and the
cadence of summaries and checkpoints."""
from __future__ import annotations

import pathlib
from typing import Any, Callable

import jax

from jppo import distributed
from jppo.core import observations
from jppo.core.networks import ActionSpec
from jppo.errors import UserError
from jppo.runs import checkpoint, folder
from jppo.runs.folder import RunFolder
from jppo.runs.launch import Launch

# ``meta["driver"]`` of a host-loop checkpoint; JAX-loop checkpoints have none.
HOST_DRIVER = "host"


class Cadence:
    """Something done every ``every`` steps (a summary, a checkpoint): ``due(step)`` once
    ``step`` reaches the first multiple of ``every`` after the step last ``mark``-ed."""

    def __init__(self, every: int, step: int):
        self.every = every
        self.mark(step)

    def mark(self, step: int) -> None:
        self.next = (step // self.every + 1) * self.every

    def due(self, step: int) -> bool:
        return step >= self.next


def open_folder(launch: Launch) -> RunFolder | None:
    """results/<run-id>/ checked against --resume / --force (``jppo.runs.folder.prepare``) on
    process 0; None on the other processes, which never write."""
    return distributed.on_main(lambda: folder.prepare(launch.settings, launch.resume, launch.force))


def restore(source: RunFolder | pathlib.Path | None, template: Any,
            check: Callable[[dict], None]) -> tuple[Any, bool]:
    """``(state, resumed)``: on every process, the state of the checkpoint ``source`` (a
    checkpoint file, or a run folder's ``resume_from``) shaped like ``template`` (process 0
    reads it, ``check``-s its meta, and broadcasts it), or ``template`` itself when the run does
    not resume."""
    main = distributed.is_main()
    path = source.resume_from if isinstance(source, RunFolder) else source
    resuming = distributed.broadcast_flag(path is not None)
    if not resuming:
        return template, False
    restored = distributed.on_main(lambda: checkpoint.restore(path, template, check)[1])
    return distributed.broadcast_tree(restored if main else jax.device_get(template)), True


def check_jax_resume(saved: dict, meta: dict) -> None:
    """A JAX-loop checkpoint continues only the same environment, number of environments,
    seeds and sweep."""
    for key in ("env", "num_envs", "num_seeds"):
        if saved.get(key) != meta[key]:
            raise UserError(f"cannot resume: the checkpoint was made with {key} = "
                            f"{saved.get(key)!r}, this command asks for {meta[key]!r}.")
    trained, now = (observations.from_meta(m["observation_size"]) for m in (saved, meta))
    if observations.canonical(trained) != observations.canonical(now):
        raise UserError(f"cannot resume: the checkpoint was trained on "
                        f"{observations.describe(trained)}, but {meta['env']} sends "
                        f"{observations.describe(now)}; start it again with --force.")
    if saved.get("sweep") != meta.get("sweep"):
        raise UserError(f"cannot resume: the checkpoint was made with sweep = "
                        f"{saved.get('sweep')!r}, this command asks for {meta.get('sweep')!r}; "
                        "give the same --sweep flags.")


def check_host_resume(saved: dict, behavior: str, obs_size, action_spec: ActionSpec,
                      path) -> None:
    """A host-loop checkpoint continues only a behavior of the same observation and action
    shapes (``obs_size``: an int for one sensor, shapes for several)."""
    if saved.get("driver") != HOST_DRIVER:
        raise UserError(f"cannot resume: checkpoint {str(path)!r} was written by the JAX driver "
                        f"for env {saved.get('env')!r}; resume it with --env {saved.get('env')}.")
    trained = observations.from_meta(saved["observation_size"])
    if observations.canonical(trained) != observations.canonical(obs_size):
        raise UserError(f"cannot resume: the checkpoint was trained on "
                        f"{observations.describe(trained)}, but behavior {behavior!r} sends "
                        f"{observations.describe(obs_size)}.")
    saved_spec = ActionSpec.from_meta(saved["action_spec"])
    if saved_spec != action_spec:
        raise UserError(f"cannot resume: the checkpoint acts with {saved_spec.describe()} "
                        f"actions, but behavior {behavior!r} needs {action_spec.describe()}.")


__all__ = ["Cadence", "HOST_DRIVER", "check_host_resume", "check_jax_resume", "open_folder",
           "restore"]
