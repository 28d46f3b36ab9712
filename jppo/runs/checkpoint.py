"""Checkpoints: one msgpack file per save, written atomically, read without pickle.

    results/<run-id>/checkpoints/checkpoint-000120000.msgpack

A file holds ``{"meta": <json text>, "state": <flax state dict>}``. ``meta`` says what is
needed to rebuild the program that produced the state (the PPO config, the action spec, the
observation size, the behavior name, steps done), so a policy can be loaded without the
original YAML. A file is first written beside its final name and then renamed over it, so a
crash never leaves a half-written checkpoint under a real name.

Only finite states are saved, and a checkpoint holding NaN or Inf (written by hand, or by an
older version) is refused when read: a run never resumes, or exports, a diverged policy.
The behavior name a checkpoint carries becomes the ONNX file's name on export, so it is
checked as a file name when read (``jppo.runs.settings.check_name``).
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import re
from typing import Any, NamedTuple

import flax.serialization
import jax
import numpy as np

from jppo.core import observations
from jppo.core.config import PPOConfig
from jppo.core.networks import ActionSpec
from jppo.core.normalizer import NormalizerState
from jppo.errors import UserError
from jppo.files import write_atomic
from jppo.runs.settings import check_name

FORMAT = "jppo-checkpoint-1"
_NAME = re.compile(r"^checkpoint-(\d+)\.msgpack$")


def directory(run_dir: str | pathlib.Path) -> pathlib.Path:
    return pathlib.Path(run_dir) / "checkpoints"


class NonFiniteState(ValueError):
    """A state holding NaN or Inf was given to ``save``: it is never written."""


def finite(tree) -> bool:
    """Whether every floating-point array of ``tree`` is finite (NaN and Inf are not)."""
    return all(bool(np.isfinite(a).all()) for a in map(np.asarray, jax.tree_util.tree_leaves(tree))
               if np.issubdtype(a.dtype, np.inexact))


def save(run_dir, steps: int, state: Any, meta: dict, keep: int = 5) -> pathlib.Path:
    """Save ``state`` (any pytree of arrays) after ``steps`` steps; keep the newest ``keep``.
    A state that is not ``finite`` raises ``NonFiniteState`` and nothing is written."""
    host = jax.device_get(state)
    if not finite(host):
        raise NonFiniteState(f"the state after step {int(steps)} holds NaN or Inf; it is not saved.")
    payload = {"meta": json.dumps({"format": FORMAT, "steps": int(steps), **meta}),
               "state": flax.serialization.to_state_dict(host)}
    path = directory(run_dir) / f"checkpoint-{int(steps):09d}.msgpack"
    write_atomic(path, flax.serialization.msgpack_serialize(payload))
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(run_dir) -> list[pathlib.Path]:
    """Checkpoint files of a run, oldest first."""
    folder = directory(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest(run_dir) -> pathlib.Path | None:
    paths = list_checkpoints(run_dir)
    return paths[-1] if paths else None


def behavior_folders(run_dir) -> list[pathlib.Path]:
    """The behaviors' own run folders of a run that trained several (results/<run>/<behavior>/
    with checkpoints); empty for a run of one behavior."""
    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        return []
    return [d for d in sorted(run_dir.iterdir())
            if d.is_dir() and not d.is_symlink() and latest(d) is not None]


def newest_anywhere(run_dir) -> pathlib.Path | None:
    """The newest checkpoint of a run folder, or of one of its behaviors' folders."""
    found = [p for p in [latest(run_dir)] + [latest(d) for d in behavior_folders(run_dir)] if p]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def read(path: pathlib.Path) -> tuple[dict, dict]:
    """``(meta, raw state dict)`` of a checkpoint file; a damaged file is a ``UserError``."""
    try:
        payload = flax.serialization.msgpack_restore(path.read_bytes())
        meta = json.loads(payload["meta"])
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        return meta, payload["state"]
    except Exception as err:  # msgpack, JSON and key errors all mean the same to the user
        raise UserError(f"checkpoint {str(path)!r} is corrupt or not a jppo checkpoint "
                        f"({type(err).__name__}); delete it to resume from an earlier one, or "
                        "start again with --force.") from None


def restore(path: pathlib.Path, template: Any, check=None) -> tuple[dict, Any]:
    """``(meta, state)`` with ``state`` shaped like ``template``; a mismatch is a ``UserError``.
    ``check(meta)`` (raising ``UserError``) runs first, so a checkpoint of another kind of run
    is refused by what differs rather than by an array's shape."""
    meta, raw = read(path)
    if check is not None:
        check(meta)
    try:
        state = flax.serialization.from_state_dict(template, raw)
        for a, b in zip(jax.tree_util.tree_leaves(template), jax.tree_util.tree_leaves(state)):
            if np.shape(a) != np.shape(b) or np.asarray(a).dtype != np.asarray(b).dtype:
                raise ValueError(f"array of shape {np.shape(b)} where {np.shape(a)} was expected")
    except Exception as err:
        raise UserError(f"checkpoint {str(path)!r} does not match this run's configuration "
                        f"({err}); resume with the settings it was saved with.") from None
    if not finite(state):
        raise _non_finite(path)
    return meta, state


def _saved_at(run_dir: pathlib.Path, steps: int) -> pathlib.Path:
    """The checkpoint saved after ``steps`` steps; a missing one is a ``UserError`` listing
    those kept."""
    for path in list_checkpoints(run_dir):
        if int(_NAME.match(path.name).group(1)) == steps:
            return path
    kept = [str(int(_NAME.match(p.name).group(1))) for p in list_checkpoints(run_dir)]
    raise UserError(f"run folder {str(run_dir)!r} has no checkpoint at step {steps}; the kept "
                    f"checkpoints are at steps: {', '.join(kept) or 'none'}.")


def _non_finite(path: pathlib.Path) -> UserError:
    return UserError(f"checkpoint {str(path)!r} holds NaN or Inf (a diverged run); delete it to "
                     "resume from an earlier one, or start again with --force.")


def first_seed(meta: dict) -> int:
    """The seed a checkpoint's first agent started from (0 where its meta has none)."""
    return int(meta.get("seed", 0) or 0)


def agent_index(meta: dict, run_dir, seed: int | None, member: int | None) -> int:
    """The position on a checkpoint's agent axis of seed ``seed`` (a run of several seeds) or
    of sweep member ``member``; a seed or member the run does not have, or a seed given for a
    sweep (where members share seeds), is a ``UserError``."""
    run = str(run_dir)
    members = meta.get("num_members")
    if members is not None:
        if seed is not None:
            raise UserError(f"run {run!r} is a sweep, whose members share seeds; pick one with "
                            f"--member from 0 to {int(members) - 1} (its member.json index).")
        if isinstance(member, bool) or not isinstance(member, int) or not 0 <= member < members:
            raise UserError(f"member {member!r} is not in sweep {run!r}; give a member index "
                            f"from 0 to {int(members) - 1}.")
        return member
    if member is not None:
        raise UserError(f"run {run!r} is not a sweep; pick one of its seeds with --seed.")
    first, count = first_seed(meta), int(meta.get("num_seeds", 1) or 1)
    if isinstance(seed, bool) or not isinstance(seed, int) or not first <= seed < first + count:
        seeds = f"seed {first}" if count == 1 else f"seeds {first} to {first + count - 1}"
        raise UserError(f"seed {seed!r} is not in run {run!r}, which trained {seeds}.")
    return seed - first


class SavedPolicy(NamedTuple):
    """What export and evaluation need of a trained agent. ``observation_size``: an int (one
    observation array) or one shape per sensor; ``normalizer`` matches it (a tuple per sensor)."""

    config: PPOConfig
    action_spec: ActionSpec
    observation_size: Any
    params: Any
    normalizer: Any
    behavior: str
    steps: int
    seed: int = 0  # the seed this agent started from, as the run labels it


def policy_meta(config: PPOConfig, action_spec: ActionSpec, observation_size,
                behavior: str) -> dict:
    """The part of a checkpoint's meta that ``load_policy`` reads. ``action_spec`` is written as
    jppo always wrote it for the continuous and one-branch kinds (``["continuous", 2]``), and
    ``observation_size`` as an int for one observation array, a list of shapes for sensors."""
    return {"ppo": dataclasses.asdict(config), "action_spec": action_spec.to_meta(),
            "observation_size": observations.to_meta(observation_size), "behavior": behavior}


def add_policy_arguments(parser, verb: str) -> None:
    """RUN_DIR, --seed, --member and --checkpoint on ``parser``: which trained policy a command
    ``verb``-s (play, export), as ``load_policy`` takes them."""
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="the run folder (results/<run-id>; results/<run-id>/<behavior> for "
                             "a run of several behaviors)")
    parser.add_argument("--seed", type=int, metavar="S",
                        help=f"which of the run's seeds to {verb}, by its value as the run labels "
                             "it (--seed 5 --num-seeds 2 trained seeds 5 and 6; default: the "
                             "first)")
    parser.add_argument("--member", type=int, metavar="I",
                        help=f"a sweep: which member to {verb} (its member.json index; default 0)")
    parser.add_argument("--checkpoint", type=int, metavar="STEP",
                        help="the checkpoint saved at STEP steps (default: the newest)")


def load_policy(run_dir, seed_index: int = 0, steps: int | None = None, *,
                seed: int | None = None, member: int | None = None) -> SavedPolicy:
    """The policy of a run folder's newest checkpoint, or of the one saved after ``steps``
    steps; member ``seed_index`` of a seed batch (or sweep), or the agent of seed ``seed``
    (a run's seeds are labelled by their value: ``--seed 5 --num-seeds 2`` trains seeds 5 and
    6), or sweep member ``member`` (its member.json ``index``); see ``agent_index``. A
    checkpoint whose behavior name is not a safe file name, or whose policy holds NaN or Inf,
    is a ``UserError``."""
    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder {str(run_dir)!r} does not exist; give a folder written by "
                        "python -m jppo.train, such as results/<run-id>.")
    path = latest(run_dir) if steps is None else _saved_at(run_dir, steps)
    several = behavior_folders(run_dir) if path is None else []
    if several:
        raise UserError(f"run folder {str(run_dir)!r} trained several behaviors ("
                        f"{', '.join(d.name for d in several)}); give one behavior's folder, such "
                        f"as {str(several[0])!r}.")
    if path is None:
        raise UserError(f"run folder {str(run_dir)!r} holds no checkpoint yet; train first, or "
                        "wait for the first checkpoint.")
    meta, raw = read(path)
    members = int(meta.get("num_members", meta.get("num_seeds", 1)) or 1)
    if seed is not None or member is not None:
        seed_index = agent_index(meta, run_dir, seed, member)
    if isinstance(seed_index, bool) or not isinstance(seed_index, int) \
            or not 0 <= seed_index < members:
        raise UserError(f"seed {seed_index!r} is not in run {str(run_dir)!r}, which trained "
                        f"{members} agent(s); give a seed index from 0 to {members - 1}.")
    try:
        train = raw["train"]
        params, norm = train["params"], train["normalizer"]
        seeds = int(meta.get("num_seeds", 0))
        pick = (lambda x: np.asarray(x)[seed_index]) if seeds else np.asarray
        params = jax.tree_util.tree_map(pick, params)
        observation_size = observations.from_meta(meta["observation_size"])
        one = lambda n: NormalizerState(pick(n["count"]), pick(n["mean"]), pick(n["m2"]))
        # A flax state dict keeps a tuple of per-sensor states as {"0": ..., "1": ...}.
        normalizer = (one(norm) if observations.is_single(observation_size)
                      else tuple(one(norm[str(i)]) for i in range(len(observation_size))))
        config = PPOConfig(**meta["ppo"])
        spec = ActionSpec.from_meta(meta["action_spec"])
        label = first_seed(meta) + seed_index % max(1, int(meta.get("num_seeds", 1) or 1))
        policy = SavedPolicy(config, spec, observation_size, params, normalizer,
                             str(meta["behavior"]), int(meta["steps"]), label)
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise UserError(f"checkpoint {str(path)!r} is corrupt or not a jppo checkpoint "
                        f"({type(err).__name__}: {err}).") from None
    try:
        check_name("behavior name", policy.behavior)
    except UserError as err:
        raise UserError(f"checkpoint {str(path)!r} is not a jppo checkpoint to trust: {err}") from None
    if not finite((policy.params, policy.normalizer)):
        raise _non_finite(path)
    return policy
