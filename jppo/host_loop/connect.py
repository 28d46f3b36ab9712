"""What a host run connects to (a Unity build, the editor, a Gymnasium vector), how many
workers it starts, and whether the scene's behavior is one jppo can train."""
from __future__ import annotations

import pathlib
from typing import Any, NamedTuple

import jax

from jppo.core.networks import ActionSpec
from jppo.errors import UserError
from jppo.host_loop import gym_env
from jppo.host_loop.restarts import Limits
from jppo.host_loop.vec_env import EnvFault, VecEnv

EDITOR = "editor"


class Behavior(NamedTuple):
    """The behavior a host run trains: its name as the scene sends it, what it observes (an
    int for one vector sensor, one shape per sensor for several), how it acts."""

    name: str
    observation_size: Any
    action_spec: ActionSpec


# ML-Agents' DimensionProperty.VARIABLE_SIZE: the entity axis of a BufferSensor.
_VARIABLE_SIZE = 4
SUPPORTED = ("jppo trains vector sensors (any number, stacked or not) with continuous actions, "
             "discrete branches (with action masks) or both")


def is_host_env(env: str) -> bool:
    """A Unity build, the Unity editor, or a Gymnasium id: driven from the host, not in JAX."""
    return env == EDITOR or env.startswith(gym_env.PREFIX) or pathlib.Path(env).exists()


def num_workers(settings, env: str) -> int:
    """Workers a host run starts, from the run's ``RunSettings``: a Gymnasium vector of
    ``num_envs`` sub-environments (one worker process-wide, that many agents); Unity instances:
    ``num_workers`` (``--num-envs``, else the YAML's ``env_settings.num_envs``; never
    ``jppo.num_envs``, which counts JAX copies), else 1."""
    if env.startswith(gym_env.PREFIX):
        return settings.num_envs or 1
    return settings.num_workers or 1


def check_shares(settings, env: str, workers: int) -> None:
    """A host run trains one seed, and its workers divide evenly over the processes."""
    if settings.num_seeds != 1:
        raise UserError(f"num_seeds = {settings.num_seeds} is not supported with --env {env}; "
                        "a Unity or Gymnasium environment trains one seed per run.")
    processes = jax.process_count()
    if workers % processes:
        raise UserError(f"{workers} worker(s) cannot be shared evenly by {processes} processes; "
                        f"give --num-envs (the workers of all processes together) a multiple of "
                        f"{processes}.")


def make_vec_env(settings, env: str, workers: int, log_folder: pathlib.Path | None,
                 first_worker: int = 0, parameter_calls: list | None = None) -> VecEnv:
    """``workers`` environments numbered from ``first_worker`` (this process's share of a
    multi-process run): their seeds, and for Unity their worker ids and ports, follow on from
    the previous process's. ``settings`` is the run's ``RunSettings``; a Unity build writes its
    Player-<worker>.log into ``log_folder``, as under mlagents-learn. ``parameter_calls``: the
    environment parameters as EnvironmentParametersChannel calls (default: the constants)."""
    if env.startswith(gym_env.PREFIX):
        varying = [k for k, v in settings.environment_parameters.items() if not isinstance(v, float)]
        if varying:
            raise UserError(f"environment_parameters.{varying[0]} is a sampler or curriculum; a "
                            "Gymnasium environment takes constants (keyword arguments of "
                            "gymnasium.make). Samplers and curricula reach Unity and the JAX "
                            "environments.")
        return gym_env.GymVecEnv(env[len(gym_env.PREFIX):], workers, settings.behavior,
                                 seed=settings.seed + first_worker,
                                 environment_parameters=settings.environment_parameters)
    # Imported here: mlagents-envs is the optional unity extra.
    from jppo.host_loop.unity_env import UnityVecEnv

    if log_folder is not None:
        log_folder.mkdir(parents=True, exist_ok=True)
    return UnityVecEnv(None if env == EDITOR else str(pathlib.Path(env).resolve()), workers,
                       settings.base_port, seed=settings.seed, no_graphics=settings.no_graphics,
                       timeout_wait=settings.timeout_wait, time_scale=settings.time_scale,
                       environment_parameters=(settings.environment_parameters
                                               if parameter_calls is None else parameter_calls),
                       log_folder=None if log_folder is None else str(log_folder),
                       first_worker=first_worker, bind=settings.bind or "localhost",
                       limits=Limits(settings.max_lifetime_restarts, settings.restarts_rate_limit_n,
                                     settings.restarts_rate_limit_period_s))


def trained_name(scene_name: str) -> str:
    """The configuration's name of a scene's behavior ("3DBall?team=0" -> "3DBall")."""
    return scene_name.split("?")[0]


def pick_behaviors(vec: VecEnv, names: tuple, env: str) -> list[Behavior]:
    """The behaviors the scene announced at its first reset, each one the configuration
    trains (``names``). A run of one behavior needs exactly that one (a Gymnasium vector's is
    named after the config's); a run of several takes those present, in the scene's order,
    and the others as they appear (``admit_behavior``)."""
    scene = sorted(vec.specs)
    if len(names) == 1:
        if len(scene) != 1:
            raise EnvFault("behaviors", f"the environment has {len(scene)} behaviors ("
                           f"{', '.join(scene) or 'none'}); the configuration trains "
                           f"{names[0]!r} alone, so add a section under 'behaviors' for each "
                           "of the others (jppo trains them together), or give them a model or "
                           "Heuristic Only in Behavior Parameters.")
        if not env.startswith(gym_env.PREFIX) and trained_name(scene[0]) != names[0]:
            raise EnvFault("behaviors", f"the scene's behavior is {trained_name(scene[0])!r} but "
                           f"the config trains {names[0]!r}; name the behavior in the config's "
                           "'behaviors' section as in Behavior Parameters.")
        return [checked_behavior(vec, scene[0])]
    if not scene:
        raise EnvFault("behaviors", f"the environment has no behavior; the configuration trains "
                       f"{', '.join(names)}.")
    return [admit_behavior(vec, name, names, env, True) for name in scene]


def admit_behavior(vec: VecEnv, name: str, names: tuple, env: str, several: bool) -> Behavior:
    """A behavior the scene announced after the first reset: trained if the configuration
    names it (a run of several), else the run cannot go on (an ``EnvFault``)."""
    if not several:
        raise EnvFault("behaviors", f"the environment now has {len(vec.specs)} behaviors ("
                       f"{', '.join(sorted(vec.specs))}); the configuration trains {names[0]!r} "
                       "alone, so add a section under 'behaviors' for each of the others (jppo "
                       "trains them together), or give them a model or Heuristic Only in "
                       "Behavior Parameters.")
    trained = trained_name(name)
    if trained not in names:
        raise EnvFault("behaviors", f"the scene has behavior {trained!r}, which the "
                       f"configuration does not train ({', '.join(names)}); add a section for "
                       "it under 'behaviors', or give it a model or Heuristic Only in Behavior "
                       "Parameters.")
    teams = sorted(n for n in vec.specs if trained_name(n) == trained)
    if len(teams) > 1:
        raise EnvFault("behaviors", f"behavior {trained!r} plays as several teams ("
                       f"{', '.join(teams)}): that is self-play, which jppo does not implement; "
                       "give every agent of the behavior team id 0.")
    return checked_behavior(vec, name)


def checked_behavior(vec: VecEnv, name: str) -> Behavior:
    """Behavior ``name`` of the scene, if jppo can train what it observes and does."""
    spec = vec.specs[name]
    shapes = spec.observation_shapes
    for i, shape in enumerate(shapes):
        if len(shape) != 1:
            raise EnvFault("shape", f"behavior {name!r} has {_sensor(spec, i)} of shape "
                           f"{tuple(shape)}, {_kind_of(spec, i)}; {SUPPORTED}.")
    if not shapes:
        raise EnvFault("shape", f"behavior {name!r} has no sensor; {SUPPORTED}.")
    action_spec = spec.action_spec()
    if action_spec is None:
        raise EnvFault("shape", f"behavior {name!r} has no actions; {SUPPORTED}.")
    size = int(shapes[0][0]) if len(shapes) == 1 else tuple(tuple(s) for s in shapes)
    return Behavior(name, size, action_spec)


def _sensor(spec, i: int) -> str:
    """"sensor 'CameraSensor'" (or "sensor 2" where the scene does not name it)."""
    names = spec.observation_names
    return f"sensor {names[i]!r}" if i < len(names) and names[i] else f"sensor {i}"


def _kind_of(spec, i: int) -> str:
    """What a sensor of rank other than 1 is, in ML-Agents' terms."""
    shape = spec.observation_shapes[i]
    properties = spec.dimension_properties[i] if i < len(spec.dimension_properties) else ()
    if _VARIABLE_SIZE in properties:
        return "a variable-length buffer sensor"
    if len(shape) == 3:
        return "an image (visual observation)"
    return f"an observation of rank {len(shape)}"


__all__ = ["Behavior", "EDITOR", "admit_behavior", "check_shares", "checked_behavior", "is_host_env",
           "make_vec_env", "num_workers", "pick_behaviors", "trained_name"]
