"""PPOConfig: ML-Agents' hyperparameter names plus jppo's own, validated on construction.

The config is frozen and hashable, so it can close over a jitted function. It is also a
JAX pytree whose float hyperparameters (``SWEEPABLE``) are leaves and everything that fixes
shapes or code paths is static, so a sweep can ``vmap`` over learning rates or gammas
without editing the core.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from typing import Optional

import jax

SCHEDULES = ("linear", "constant")
LOSSES = ("clip", "kl_penalty", "a2c")
NETWORKS = ("mlagents", "seed", "cleanrl")
# ML-Agents' EncoderType values: the image encoder built for every image sensor
# (jppo.core.encoders).
VIS_ENCODE_TYPES = ("simple", "nature_cnn", "resnet", "match3", "fully_connected")

# Array sizes and Optax's step counter are int32: integer settings and the schedules' horizon
# (total Adam steps) must fit.
INT32_MAX = 2**31 - 1

# Floats a sweep may vary (pytree leaves); every other field is static.
SWEEPABLE = ("learning_rate", "beta", "epsilon", "lambd", "gamma", "strength",
             "value_coef", "kl_target", "kl_coef")


class ConfigError(ValueError):
    """A hyperparameter value that jppo does not accept; the message is one sentence."""


class ConfigWarning(UserWarning):
    """Settings jppo accepts that are known to train badly; the message is one sentence."""


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters.

    ML-Agents' names and defaults (``trainer_type: ppo``) come first, so an ML-Agents YAML
    means the same thing here; jppo's own options follow. A "step" is one agent decision,
    summed over agents, as ML-Agents counts it.
    """

    # hyperparameters (ML-Agents)
    batch_size: int = 1024
    buffer_size: int = 10240
    learning_rate: float = 3.0e-4
    learning_rate_schedule: str = "linear"
    beta: float = 5.0e-3
    beta_schedule: Optional[str] = None  # None: follow learning_rate_schedule, as ML-Agents does
    epsilon: float = 0.2
    epsilon_schedule: Optional[str] = None
    lambd: float = 0.95
    num_epoch: int = 3
    # network_settings (ML-Agents)
    normalize: bool = False
    hidden_units: int = 128
    num_layers: int = 2
    # reward_signals.extrinsic (ML-Agents)
    gamma: float = 0.99
    strength: float = 1.0
    # trainer settings (ML-Agents)
    time_horizon: int = 64
    max_steps: int = 500_000
    # jppo's own
    loss: str = "clip"
    network: str = "mlagents"
    value_coef: float = 0.5
    clip_value: bool = True
    max_grad_norm: Optional[float] = None  # None: no clipping, as ML-Agents
    kl_target: float = 0.01  # loss kl_penalty: the KL the adaptive coefficient aims at
    kl_coef: float = 1.0  # loss kl_penalty: the coefficient's starting value
    adam_eps: float = 1.0e-8  # torch.optim.Adam's default, which ML-Agents uses
    advantage_eps: float = 1.0e-10  # (A - mean) / (std + eps), as ML-Agents
    obs_clip: float = 5.0  # normalized observations are clipped to [-obs_clip, obs_clip]
    # network_settings (ML-Agents), last so that positional construction keeps its meaning:
    # the encoder of each image sensor (jppo.core.encoders).
    vis_encode_type: str = "simple"

    def __post_init__(self):
        _validate(self)
        advice = a2c_advice(self)
        if advice:
            warnings.warn(advice, ConfigWarning, stacklevel=3)

    def schedule(self, name: str) -> str:
        """The decay kind of ``name`` ("learning_rate", "beta" or "epsilon"), resolving a
        ``None`` beta or epsilon schedule to the learning rate's, as ML-Agents does."""
        return getattr(self, f"{name}_schedule") or self.learning_rate_schedule

    def replace(self, **changes) -> "PPOConfig":
        """A copy with ``changes`` applied and validated."""
        unknown = sorted(set(changes) - set(field_names()))
        if unknown:
            raise ConfigError(f"unknown hyperparameter {unknown[0]!r}; allowed names are: "
                              f"{', '.join(field_names())}.")
        return dataclasses.replace(self, **changes)

    def minibatches_per_epoch(self, rollout_size: int) -> int:
        """Minibatches one epoch cuts from ``rollout_size`` samples (the remainder is dropped)."""
        return rollout_size // self.batch_size

    def adam_steps_per_update(self, rollout_size: int) -> int:
        return self.num_epoch * self.minibatches_per_epoch(rollout_size)

    def total_adam_steps(self, rollout_size: int) -> int:
        """Adam steps over ``max_steps`` when every update consumes ``rollout_size`` steps;
        the horizon of the learning-rate, epsilon and beta schedules."""
        updates = max(1, math.ceil(self.max_steps / rollout_size))
        return updates * self.adam_steps_per_update(rollout_size)


def a2c_advice(cfg: "PPOConfig") -> Optional[str]:
    """The warning for ``loss: a2c`` with several gradient steps per rollout, else None.

    A2C's gradient is exact only for the policy that collected the rollout, and it has no ratio
    clip to stop a stale one: with PPO's epochs and minibatches it overshoots (issue 17 saw
    Pendulum fall to -1489, its entropy to -8). Warned, not refused: a short run or a test may want it."""
    steps = cfg.num_epoch * max(1, cfg.buffer_size // cfg.batch_size)
    if cfg.loss != "a2c" or steps <= 1:
        return None
    return (f"loss a2c with num_epoch = {cfg.num_epoch} and batch_size = {cfg.batch_size} of "
            f"buffer_size = {cfg.buffer_size} takes {steps} gradient steps per rollout, which "
            "A2C's on-policy gradient does not survive; A2C settings are num_epoch: 1 and "
            "batch_size equal to buffer_size (one step per rollout), with a short rollout "
            "(about 5 to 20 steps per environment).")


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(PPOConfig)]


def _is_concrete(value) -> bool:
    # Under vmap or jit the sweepable leaves are tracers; they were checked before tracing.
    return isinstance(value, (numbers.Number, str, type(None)))


def _fail(name: str, value, allowed: str):
    raise ConfigError(f"{name} = {value!r} is not allowed; {name} must be {allowed}.")


def _check_int(cfg, name: str, minimum: int, maximum: int = INT32_MAX):
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        _fail(name, value, f"an integer >= {minimum}")
    if value > maximum:
        _fail(name, value, f"an integer from {minimum} to {maximum}")


def _check_float(cfg, name: str, allowed: str, ok):
    value = getattr(cfg, name)
    if not _is_concrete(value):
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or not ok(value):
        _fail(name, value, allowed)


def _check_choice(cfg, name: str, choices, note: str = ""):
    value = getattr(cfg, name)
    if value not in choices:
        _fail(name, value, "one of " + ", ".join(repr(c) for c in choices if c is not None) + note)


def _check_bool(cfg, name: str):
    value = getattr(cfg, name)
    if not isinstance(value, bool):
        _fail(name, value, "true or false")


def _validate(cfg: PPOConfig):
    for name in ("batch_size", "buffer_size", "num_epoch", "hidden_units", "num_layers",
                 "time_horizon"):
        _check_int(cfg, name, 1)
    _check_int(cfg, "max_steps", 1, 2**62)  # steps are counted in int64
    if cfg.batch_size > cfg.buffer_size:
        raise ConfigError(f"batch_size = {cfg.batch_size} is larger than buffer_size = "
                          f"{cfg.buffer_size}; batch_size must be <= buffer_size.")
    if cfg.total_adam_steps(cfg.buffer_size) > INT32_MAX:
        raise ConfigError(f"max_steps = {cfg.max_steps} is not allowed with buffer_size = "
                          f"{cfg.buffer_size}, batch_size = {cfg.batch_size}, num_epoch = "
                          f"{cfg.num_epoch}: it takes {cfg.total_adam_steps(cfg.buffer_size):,} "
                          f"Adam steps, more than the optimizer's int32 step counter holds "
                          f"({INT32_MAX:,}); lower max_steps or raise batch_size.")
    _check_float(cfg, "learning_rate", "a number > 0", lambda v: v > 0)
    _check_float(cfg, "beta", "a number >= 0", lambda v: v >= 0)
    _check_float(cfg, "epsilon", "a number in (0, 1)", lambda v: 0 < v < 1)
    _check_float(cfg, "lambd", "a number in (0, 1]", lambda v: 0 < v <= 1)
    _check_float(cfg, "gamma", "a number in (0, 1]", lambda v: 0 < v <= 1)
    _check_float(cfg, "strength", "a number", lambda v: True)
    _check_float(cfg, "value_coef", "a number >= 0", lambda v: v >= 0)
    _check_float(cfg, "kl_target", "a number > 0", lambda v: v > 0)
    _check_float(cfg, "kl_coef", "a number >= 0", lambda v: v >= 0)
    _check_float(cfg, "adam_eps", "a number >= 0", lambda v: v >= 0)
    _check_float(cfg, "advantage_eps", "a number >= 0", lambda v: v >= 0)
    _check_float(cfg, "obs_clip", "a number > 0", lambda v: v > 0)
    if cfg.max_grad_norm is not None:
        _check_float(cfg, "max_grad_norm", "a number > 0 or null (no clipping)", lambda v: v > 0)
    _check_choice(cfg, "learning_rate_schedule", SCHEDULES)
    for name in ("beta_schedule", "epsilon_schedule"):
        _check_choice(cfg, name, SCHEDULES + (None,),
                      " (or unset, to follow learning_rate_schedule)")
    _check_choice(cfg, "loss", LOSSES)
    _check_choice(cfg, "network", NETWORKS)
    _check_choice(cfg, "vis_encode_type", VIS_ENCODE_TYPES)
    _check_bool(cfg, "normalize")
    _check_bool(cfg, "clip_value")


jax.tree_util.register_dataclass(
    PPOConfig,
    data_fields=list(SWEEPABLE),
    meta_fields=[name for name in field_names() if name not in SWEEPABLE],
)
