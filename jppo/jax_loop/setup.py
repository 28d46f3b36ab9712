"""A JAX-loop run's environment, made by name with the YAML's ``environment_parameters``."""
from __future__ import annotations

from jppo import envs
from jppo.errors import UserError

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
    typed = {k: type(getattr(defaults, k))(v) for k, v in parameters.items()}
    return envs.make(name, **typed)


def num_envs_for(num_envs: int | None, env_name: str) -> int:
    """The configured number of environments, or the environment's default."""
    return num_envs or DEFAULT_NUM_ENVS.get(env_name, 1)


__all__ = ["DEFAULT_NUM_ENVS", "make_env", "num_envs_for"]
