"""The actor-critic as functions of (params, normalizer statistics, observations).

Drivers act with ``Policy.act``; the update scores stored actions with ``Policy.evaluate``;
export and evaluation use ``Policy.mode``. All are pure and jittable.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jppo import normalizer as obs_norm
from jppo.config import PPOConfig
from jppo.networks import ActionSpec, ActorCritic


@dataclasses.dataclass(frozen=True)
class Policy:
    """Pure functions of one actor-critic; ``obs`` is ``[..., obs_dim]`` raw observations."""

    model: ActorCritic
    action_spec: ActionSpec
    normalize: bool
    obs_clip: float = 5.0

    def forward(self, params, normalizer: obs_norm.NormalizerState, obs: jax.Array):
        """``(distribution, value[...])`` with the normalizer applied before both bodies."""
        if self.normalize:
            obs = obs_norm.apply(normalizer, obs, self.obs_clip)
        return self.model.apply(params, obs)

    def per_dim(self, x: jax.Array) -> jax.Array:
        """Log-probs or entropies as ``[..., D]``: a Categorical's ``[...]`` becomes ``[..., 1]``."""
        return x if self.action_spec.is_continuous else x[..., None]

    def act(self, params, normalizer, obs: jax.Array, key: jax.Array):
        """Sample: ``(action, log_prob[..., D], value[...])``. The raw (unclamped) Gaussian
        sample is returned and scored, as ML-Agents stores it."""
        dist, value = self.forward(params, normalizer, obs)
        action = dist.sample(seed=key)
        return action, self.per_dim(dist.log_prob(action)), value

    def evaluate(self, params, normalizer, obs: jax.Array, actions: jax.Array):
        """``(log_prob[..., D], entropy[..., D], value[...])`` of stored ``actions``."""
        dist, value = self.forward(params, normalizer, obs)
        return self.per_dim(dist.log_prob(actions)), self.per_dim(dist.entropy()), value

    def value(self, params, normalizer, obs: jax.Array) -> jax.Array:
        return self.forward(params, normalizer, obs)[1]

    def mode(self, params, normalizer, obs: jax.Array) -> jax.Array:
        """The deterministic action: the Gaussian mean, or the most likely choice."""
        dist, _ = self.forward(params, normalizer, obs)
        return dist.mode()

    def init_params(self, key: jax.Array, observation_size: int):
        return self.model.init(key, jnp.zeros((1, observation_size), jnp.float32))


def make_policy(config: PPOConfig, action_spec: ActionSpec) -> Policy:
    model = ActorCritic(action_spec, config.hidden_units, config.num_layers, config.network)
    return Policy(model, action_spec, config.normalize, config.obs_clip)
