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
    allowed = envs.param_names(defaults)
    unknown = sorted(set(parameters) - set(allowed))
    if unknown:
        raise UserError(f"environment parameter {unknown[0]!r} is not one of {name}'s: "
                        f"{', '.join(allowed) or 'it takes none'}.")
    return envs.make(name, **check_env_parameters(name, parameters, defaults))


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


__all__ = ["DEFAULT_NUM_ENVS", "check_env_parameters", "make_env", "num_envs_for"]
