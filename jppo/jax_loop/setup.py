"""A JAX-loop run's environment, made by name with the YAML's ``environment_parameters``."""
from __future__ import annotations

import math

import numpy as np

from jppo import envs
from jppo.errors import UserError, brief

# Unity's 3DBall scene holds 12 agents; a JAX environment is one agent.
DEFAULT_NUM_ENVS = {"3DBall": 12, "3DBallHard": 12}


def make_env(name: str, parameters: dict):
    """The named environment (built-in, registered, ``gymnax:<id>`` or ``module:factory``; see
    ``jppo.envs.make``) with ``environment_parameters`` applied to its default params."""
    try:
        env = envs.make(name)
    except envs.UnknownEnvironmentError as err:
        raise UserError(str(err) + "; or pass a Unity build path, 'editor', or gymnasium:<id>.") from None
    except (TypeError, ValueError) as err:  # a user factory that does not make an environment
        raise UserError(f"environment {name!r} cannot be used: {err}") from None
    if not parameters:
        return env
    defaults = env.default_params
    _check_names(name, parameters, defaults)
    return envs.make(name, **check_env_parameters(name, parameters, defaults))


def _check_names(name: str, parameters, defaults) -> None:
    allowed = envs.param_names(defaults)
    unknown = sorted(set(parameters) - set(allowed))
    if unknown:
        raise UserError(f"environment parameter {unknown[0]!r} is not one of {name}'s: "
                        f"{', '.join(allowed) or 'it takes none'}.")


# A gaussian on a parameter that must be >= 0 keeps its mean this many standard deviations
# above 0 (a draw below 0 then has a chance under 1e-9; the loop clamps it at 0 regardless).
GAUSSIAN_MARGIN = 6.0


def check_sampled(name: str, env, samplers: dict) -> list[float]:
    """Parameters drawn per episode: ``{parameter: [(kind, numbers), ...]}`` (one pair per
    lesson, in ``jppo.runs.environment_parameters.Sampler``'s form) checked against ``env``'s
    params with ``check_env_parameters``' rules: every bound a range can reach (and a
    gaussian's mean) is a value that check accepts, a gaussian on a parameter that must be
    >= 0 stays ``GAUSSIAN_MARGIN`` standard deviations above 0, and an integer field (an
    episode length) is not sampled. Returns each parameter's floor (0 or -inf) for
    ``env_sampling``."""
    defaults = env.default_params
    _check_names(name, samplers, defaults)
    floors = []
    for key, lessons in samplers.items():
        default = getattr(defaults, key)
        if isinstance(default, (int, np.integer)) and not isinstance(default, bool):
            if any(kind != "constant" for kind, _ in lessons):
                raise UserError(f"environment_parameters.{key} cannot be sampled for {name}: "
                                f"{key} is a whole number (default {default}) and a sampler "
                                "draws real numbers; give a constant.")
            for _, (value,) in lessons:
                check_env_parameters(name, {key: value}, defaults)
            floors.append(-math.inf)
            continue
        for kind, numbers in lessons:
            points = numbers if kind != "gaussian" else numbers[:1]
            for value in points:
                check_env_parameters(name, {key: value}, defaults)
            if kind == "gaussian" and default >= 0:
                mean, std = numbers
                if mean - GAUSSIAN_MARGIN * std < 0:
                    raise UserError(
                        f"environment_parameters.{key}: a gaussian with mean {mean:g} and st_dev "
                        f"{std:g} draws values below 0, which {key} does not take for {name} "
                        f"(default {default}); keep mean - {GAUSSIAN_MARGIN:g} st_dev >= 0 or use "
                        "a uniform sampler.")
        floors.append(0.0 if default >= 0 else -math.inf)
    return floors


# Environment state is float32 and counters int32 inside the compiled loop.
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_INT32_MAX = 2**31 - 1


def check_env_parameters(name: str, parameters: dict, defaults) -> dict:
    """``parameters`` typed as ``defaults``' fields, or a ``UserError`` naming the first bad
    one. Every value is a finite number that fits the compiled loop (float32, int32); an
    integer field (an episode length, a decision period) takes a whole number >= 1; a field
    whose default is >= 0 (a mass, a length, a time step, gravity's magnitude) takes no
    negative value. Values that pass can still make the physics blow up (a 1e30 force): the
    driver stops the run with one sentence when its train state turns NaN or Inf."""
    typed = {}
    for key, value in parameters.items():
        default = getattr(defaults, key)
        shown = f"{value:g}" if isinstance(value, float) else brief(value)
        where = f"environment_parameters.{key} = {shown} is not allowed for {name}"
        if isinstance(default, (int, np.integer)) and not isinstance(default, bool):
            if not (math.isfinite(value) and float(value).is_integer() and 1 <= value <= _INT32_MAX):
                raise UserError(f"{where}; {key} must be a whole number from 1 to {_INT32_MAX} "
                                f"(default {default}).")
            typed[key] = type(default)(int(value))
            continue
        if not (math.isfinite(value) and abs(value) <= _FLOAT32_MAX):
            raise UserError(f"{where}; it must be a finite number within float32's range "
                            f"(default {default}).")
        if default >= 0 and value < 0:
            raise UserError(f"{where}; {key} must be >= 0 (default {default}).")
        typed[key] = type(default)(value)
    return typed


def num_envs_for(num_envs: int | None, env_name: str) -> int:
    """The configured number of environments, or the environment's default."""
    return num_envs or DEFAULT_NUM_ENVS.get(env_name, 1)


__all__ = ["DEFAULT_NUM_ENVS", "GAUSSIAN_MARGIN", "check_env_parameters", "check_sampled",
           "make_env", "num_envs_for"]
