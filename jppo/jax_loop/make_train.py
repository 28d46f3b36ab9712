"""A whole training run on any JAX environment as one function of a key:

    train = jppo.make_train(config, env, env_params=None, num_envs=8)
    state, metrics = jax.jit(train)(jax.random.PRNGKey(0))

``train(key, hyperparameters=None) -> (LoopState, metrics)`` is jittable and vmappable: over
keys (``jax.vmap(train)(keys)``: one agent per key) and over ``SWEEPABLE`` hyperparameters
(``jax.vmap(train, in_axes=(None, 0))(key, {"learning_rate": jnp.array([1e-4, 3e-4])})``).
It is PureJaxRL's ``make_train(config)(key)`` shape, built on ``jppo.jax_loop.trainer.Trainer``,
so truncations bootstrap, ``time_horizon`` cuts, the observation normalizer, the schedules
and the checkpoint format are those of ``python -m jppo.train``. For logging, checkpoints and
resume while it runs, use ``jppo.fit`` (or ``Trainer.chunk``) instead: this function returns
only at the end.
"""
from __future__ import annotations

from typing import Any

import numbers

import jax
import jax.numpy as jnp

from jppo.core.config import SWEEPABLE, ConfigError, PPOConfig
from jppo.envs import adapt
from jppo.jax_loop.trainer import LoopState, Trainer


def make_trainer(config: PPOConfig, env: Any, env_params: Any = None, *, num_envs: int,
                 mesh: Any = None) -> Trainer:
    """A ``Trainer`` for any environment ``jppo.envs.adapt`` takes (a jppo, gymnax, gymnax-like,
    Brax or Playground environment, or gymnax's ``(env, params)``)."""
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise ConfigError(f"num_envs = {num_envs!r} is not allowed; num_envs must be an integer "
                          ">= 1.")
    adapted = adapt(env, None if isinstance(env, tuple) else env_params)
    if adapted is env:  # a jppo environment takes its params explicitly
        params = adapted.default_params if env_params is None else env_params
    else:  # an adapter holds them
        params = adapted.default_params
    return Trainer(config, adapted, params, num_envs, mesh)


def make_train(config: PPOConfig, env: Any, env_params: Any = None, *, num_envs: int,
               num_seeds: int = 1):
    """``train(key, hyperparameters=None) -> (LoopState, metrics)``: ``config.max_steps`` steps
    (rounded up to whole updates of ``ceil(buffer_size / num_envs) * num_envs`` steps) in one
    program.

    ``num_seeds > 1`` trains that many agents from ``jax.random.split(key, num_seeds)`` and
    gives every leaf of the result a leading seed axis. ``hyperparameters``: ``{name: float}``
    for names in ``jppo.core.config.SWEEPABLE``, replacing the config's values (traced, so a
    ``vmap`` over them trains every value in one program). ``kl_coef`` there also sets the
    starting coefficient.

    ``metrics`` holds one value per update: the update's losses (``loss``, ``policy_loss``,
    ``value_loss``, ``entropy``, ``approx_kl``, ``clip_fraction``, ``learning_rate``, ``epsilon``,
    ``beta``, ``kl_coef``, ``value_estimate``), the episodes that ended during its rollout
    (``episodes``, ``return_sum``, ``return_sq_sum``, ``length_sum``), and derived ``steps``
    (steps done after it) and ``episode_return`` (the mean return of those episodes; NaN where
    none ended).
    """
    trainer = make_trainer(config, env, env_params, num_envs=num_envs)
    if isinstance(num_seeds, bool) or not isinstance(num_seeds, int) or num_seeds < 1:
        raise ConfigError(f"num_seeds = {num_seeds!r} is not allowed; num_seeds must be an "
                          "integer >= 1.")
    total, per_update = trainer.total_iterations, trainer.steps_per_update

    def train_one(key: jax.Array, hyperparameters: dict | None = None):
        values = dict(hyperparameters or {})
        unknown = sorted(set(values) - set(SWEEPABLE))
        if unknown:
            raise ConfigError(f"hyperparameter {unknown[0]!r} cannot be passed to train; the "
                              f"ones that can are: {', '.join(SWEEPABLE)}.")
        # Plain numbers are checked as the config checks them; traced ones were the caller's.
        config.replace(**{k: float(v) for k, v in values.items() if isinstance(v, numbers.Real)})
        values = {k: jnp.asarray(v, jnp.float32) for k, v in values.items()}
        run_once = trainer.iteration(config.replace(**values) if values else None)
        state = trainer.init(key)
        if "kl_coef" in values:
            state = state.replace(train=state.train.replace(kl_coef=values["kl_coef"]))
        state, metrics = jax.lax.scan(lambda s, _: run_once(s), state, None, length=total)
        metrics["steps"] = (jnp.arange(total, dtype=jnp.int32) + 1) * per_update
        metrics["episode_return"] = jnp.where(
            metrics["episodes"] > 0, metrics["return_sum"] / jnp.maximum(metrics["episodes"], 1),
            jnp.nan)
        return state, metrics

    if num_seeds == 1:
        return train_one

    def train(key: jax.Array, hyperparameters: dict | None = None):
        keys = jax.random.split(key, num_seeds)
        return jax.vmap(train_one, in_axes=(0, None))(keys, hyperparameters)

    return train


__all__ = ["LoopState", "Trainer", "make_train", "make_trainer"]
