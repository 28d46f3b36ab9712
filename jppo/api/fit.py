"""``fit``: a run on an environment object, chunk by chunk, as ``python -m jppo.train`` runs one.

    info = jppo.fit(MyEnv(), "configs/CartPole.yaml", run_id="mine", num_seeds=4)

The run folder (``results/<run-id>/``: configuration, TensorBoard, progress.csv, checkpoints,
learning curve, ONNX, run_info.json), ``resume=True`` continuing exactly, ``stop_after_steps``
and ``force`` are the CLI's; the environment is any object ``jppo.envs.adapt`` takes. A mistake
raises ``jppo.errors.UserError`` with the CLI's one sentence.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Optional

from jppo import envs
from jppo.core.config import PPOConfig
from jppo.errors import UserError
from jppo.jax_loop import driver
from jppo.runs.launch import Launch
from jppo.runs.settings import (DEFAULT_CONFIG, RunSettings, apply_overrides, load, make_ppo_config,
                                validate_run)

# RunSettings fields a caller may set by keyword (the rest are Unity's or set by name above).
RUN_FIELDS = ("summary_freq", "checkpoint_interval", "keep_checkpoints", "export_onnx")


def fit(env: Any, config: str | pathlib.Path | PPOConfig | RunSettings | None = None, *,
        env_params: Any = None, name: Optional[str] = None, run_id: str = "ppo",
        results_dir: str = "results", num_envs: Optional[int] = None,
        num_seeds: Optional[int] = None, seed: Optional[int] = None,
        hyperparameters: Optional[dict] = None, resume: bool = False, force: bool = False,
        stop_after_steps: Optional[int] = None, quiet: bool = False, mesh: Any = None,
        **run: Any) -> dict:
    """Train on ``env`` with the CLI's logging, checkpoints and resume; returns run_info.

    ``config``: a trainer YAML's path (default configs/3DBall.yaml's hyperparameters), a
    ``PPOConfig``, or ``RunSettings``. ``name`` (default the environment's ``name`` or class
    name) is what the run folder and checkpoints call the environment; a resume checks it.
    ``hyperparameters`` (``{name: value}``) are applied as ``--set`` is; ``run`` takes
    ``summary_freq``, ``checkpoint_interval``, ``keep_checkpoints`` and ``export_onnx``.
    ``mesh`` (``jppo.distributed.make_mesh``) splits the environments over devices.
    """
    unknown = sorted(set(run) - set(RUN_FIELDS))
    if unknown:
        raise UserError(f"fit() got an unknown setting {unknown[0]!r}; the run settings it "
                        f"takes by keyword are: {', '.join(RUN_FIELDS)}.")
    adapted = envs.adapt(env, env_params)
    label = name or str(getattr(env, "name", None) or type(env).__name__)
    settings = _settings(config, label)
    settings = apply_overrides(settings, [f"{k}={v}" for k, v in (hyperparameters or {}).items()])
    changes = {k: v for k, v in {"run_id": run_id, "results_dir": str(results_dir),
                                 "num_envs": num_envs, "num_seeds": num_seeds, "seed": seed,
                                 **run}.items() if v is not None}
    settings = validate_run(dataclasses.replace(settings, env=label, **changes))
    if stop_after_steps is not None and stop_after_steps < 1:
        raise UserError(f"stop_after_steps = {stop_after_steps} is not allowed; give a number "
                        "of steps >= 1.")
    launch = Launch(settings, label, resume=resume, force=force, quiet=quiet,
                    stop_after_steps=stop_after_steps)
    return driver.run(launch, mesh, environment=adapted)


def _settings(config, label: str) -> RunSettings:
    if isinstance(config, RunSettings):
        return config
    if isinstance(config, PPOConfig):
        return RunSettings(behavior=label, ppo=make_ppo_config(dataclasses.asdict(config)))
    if config is None or isinstance(config, (str, pathlib.Path)):
        return load(config if config is not None else DEFAULT_CONFIG)
    raise UserError(f"config = {config!r} is not a trainer YAML path, a PPOConfig or "
                    "RunSettings.")


__all__ = ["RUN_FIELDS", "fit"]
