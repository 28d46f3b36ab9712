"""The optimizer (an Optax chain) and the linear decays of learning rate, epsilon and beta.

All three schedules run on one clock, the Adam step count, and reach their end values after
``total_adam_steps`` Adam steps (``PPOConfig.total_adam_steps`` maps ML-Agents' ``max_steps`` to
it). ML-Agents evaluates the same lines once per update from its environment step count;
jppo samples them per Adam step, the same line sampled finer. End values are ML-Agents':
learning rate 1e-10, epsilon 0.1, beta 1e-5.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import optax

from jppo.core.config import PPOConfig

LEARNING_RATE_END = 1.0e-10
EPSILON_END = 0.1
BETA_END = 1.0e-5


class Schedules(NamedTuple):
    """Each maps the Adam step count (int array) to the value used at that step."""

    learning_rate: Callable
    epsilon: Callable
    beta: Callable


def _decay(kind: str, start, end, total: int) -> optax.Schedule:
    if kind == "constant":
        return optax.constant_schedule(start)
    return optax.linear_schedule(start, end, max(int(total), 1))


def make_schedules(config: PPOConfig, total_adam_steps: int) -> Schedules:
    """The learning-rate, epsilon and beta schedules over ``total_adam_steps`` Adam steps."""
    return Schedules(
        _decay(config.schedule("learning_rate"), config.learning_rate, LEARNING_RATE_END,
               total_adam_steps),
        _decay(config.schedule("epsilon"), config.epsilon, EPSILON_END, total_adam_steps),
        _decay(config.schedule("beta"), config.beta, BETA_END, total_adam_steps),
    )


def make_optimizer(config: PPOConfig, total_adam_steps: int) -> optax.GradientTransformation:
    """Optional global-norm clipping, then Adam (torch's defaults), then the decayed learning rate.

    ``total_adam_steps`` is the number of Adam steps over which the learning rate decays.
    """
    transforms = []
    if config.max_grad_norm is not None:
        transforms.append(optax.clip_by_global_norm(config.max_grad_norm))
    transforms.append(optax.scale_by_adam(b1=0.9, b2=0.999, eps=config.adam_eps))
    transforms.append(optax.scale_by_learning_rate(make_schedules(config, total_adam_steps).learning_rate))
    return optax.chain(*transforms)
