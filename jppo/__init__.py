"""jppo: actor-critic PPO as pure JAX functions composed into one jitted update.

The public names (a contract other parts and users depend on)::

    jppo.PPOConfig, jppo.ConfigError        frozen, validated hyperparameters
    jppo.ConfigWarning                       accepted settings known to train badly (a2c + epochs)
    jppo.gae                                 advantages and returns (reverse lax.scan)
    jppo.ActorCritic, jppo.ActionSpec        the Flax actor-critic
    jppo.normalizer                          running observation normalizer (init/update/apply)
    jppo.ppo_loss                            the minibatch objective (clip / kl_penalty / a2c)
    jppo.make_optimizer, jppo.make_schedules Optax chain and the linear decays
    jppo.init_train_state, jppo.make_update  the train state and the jitted update
    jppo.Rollout, jppo.TrainState            the data that crosses into the update
    jppo.make_policy                         act / evaluate / value / mode functions
    jppo.make_train                          a whole run on any JAX env as one jittable train(key)
    jppo.Trainer, jppo.LoopState             the chunked loop under make_train and the CLI
    jppo.fit                                 a run on an env object with the CLI's folder and resume
    jppo.evaluate_run                        a run's policy played for episodes, with an animation
    jppo.envs                                environments: make, register, adapt (gymnax, Brax)

The package is laid out in layers, each a folder whose ``__init__`` says what it holds and what
it may import (``tests/test_layers.py`` keeps the rules): ``core`` (the pure PPO functions),
``envs`` (JAX-native environments), ``jax_loop`` and ``host_loop`` (the two loops that feed the
core), ``runs`` (the run folder both loops share), ``onnx`` (export for Unity), ``standin`` (a
Unity player for tests), ``reference`` (PyTorch), ``distributed``, ``errors``, ``files``, and
the two CLIs ``train`` and ``export``.

The public names load on first use (PEP 562 ``__getattr__``), so ``import jppo`` costs nothing
until one is used: ``python -m jppo.train`` imports this package before its own code runs, and
must set up Ctrl-C and SIGTERM handling (``jppo.interrupts``) before JAX loads; a Ctrl-C caught
by Python's default handler while JAX loads can be swallowed inside a JAX callback.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from jppo.version import __version__ as __version__  # noqa: F401 (the package version)

# Each public name and the module that defines it (``normalizer`` is the module itself).
_PUBLIC = {
    "normalizer": "jppo.core.normalizer",
    "envs": "jppo.envs",
    "evaluate_run": "jppo.api.evaluation", "fit": "jppo.api.fit",
    "ConfigError": "jppo.core.config", "ConfigWarning": "jppo.core.config",
    "PPOConfig": "jppo.core.config",
    "gae": "jppo.core.gae",
    "LossMetrics": "jppo.core.losses", "adapt_kl_coef": "jppo.core.losses",
    "ppo_loss": "jppo.core.losses",
    "ActionSpec": "jppo.core.networks", "ActorCritic": "jppo.core.networks",
    "Schedules": "jppo.core.optim", "make_optimizer": "jppo.core.optim",
    "make_schedules": "jppo.core.optim",
    "Policy": "jppo.core.policy", "make_policy": "jppo.core.policy",
    **{name: "jppo.core.update" for name in (
        "Batch", "Rollout", "TrainState", "init_train_state", "make_train_on_batch", "make_update",
        "minibatch_indices", "normalized_batch", "prepare_batch")},
    "make_train": "jppo.jax_loop.make_train",
    "LoopState": "jppo.jax_loop.trainer", "Trainer": "jppo.jax_loop.trainer",
}

_MODULES = ("envs", "normalizer")  # names that are modules, not attributes of one

if TYPE_CHECKING:  # what the names are, for type checkers and editors
    from jppo import envs
    from jppo.api.evaluation import evaluate_run
    from jppo.api.fit import fit
    from jppo.core import normalizer
    from jppo.core.config import ConfigError, ConfigWarning, PPOConfig
    from jppo.core.gae import gae
    from jppo.core.losses import LossMetrics, adapt_kl_coef, ppo_loss
    from jppo.core.networks import ActionSpec, ActorCritic
    from jppo.core.optim import Schedules, make_optimizer, make_schedules
    from jppo.core.policy import Policy, make_policy
    from jppo.core.update import (Batch, Rollout, TrainState, init_train_state,
                                  make_train_on_batch, make_update, minibatch_indices,
                                  normalized_batch, prepare_batch)
    from jppo.jax_loop.make_train import make_train
    from jppo.jax_loop.trainer import LoopState, Trainer


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'jppo' has no attribute {name!r}")
    module = importlib.import_module(_PUBLIC[name])
    value = module if name in _MODULES else getattr(module, name)
    globals()[name] = value  # loaded once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


__all__ = [
    "ActionSpec", "ActorCritic", "Batch", "ConfigError", "ConfigWarning", "LoopState",
    "LossMetrics", "PPOConfig", "Policy", "Rollout", "Schedules", "TrainState", "Trainer", "adapt_kl_coef", "envs",
    "evaluate_run", "fit", "gae", "init_train_state", "make_optimizer", "make_policy",
    "make_schedules", "make_train", "make_train_on_batch", "make_update", "minibatch_indices",
    "normalized_batch", "normalizer", "ppo_loss", "prepare_batch",
]
