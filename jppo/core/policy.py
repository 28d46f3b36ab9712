"""The actor-critic as functions of (params, normalizer statistics, observations).

Drivers act with ``Policy.act``; the update scores stored actions with ``Policy.evaluate``;
export and evaluation use ``Policy.mode``. All are pure and jittable.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jppo.core import normalizer as obs_norm
from jppo.core.config import PPOConfig
from jppo.core.networks import ActionSpec, ActorCritic

# ML-Agents hands the environment ``clamp(a, -3, 3) / 3`` of the raw Gaussian sample (and
# stores the raw sample): every path to an environment or an exported model uses this bound.
ACTION_CLAMP = 3.0


@dataclasses.dataclass(frozen=True)
class Policy:
    """Pure functions of one actor-critic; ``obs`` is ``[..., obs_dim]`` raw observations."""

    model: ActorCritic
    action_spec: ActionSpec
    normalize: bool
    obs_clip: float = 5.0

    def forward(self, params, normalizer: obs_norm.NormalizerState, obs: jax.Array):
        """``(distribution, value[...])`` with the normalizer applied before both bodies."""
        return self.model.apply(params, self._input(normalizer, obs))

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

    def _input(self, normalizer, obs):
        return obs_norm.apply(normalizer, obs, self.obs_clip) if self.normalize else obs

    def value(self, params, normalizer, obs: jax.Array) -> jax.Array:
        """V(obs[..., obs_dim]) without evaluating the actor."""
        return self.model.apply(params, self._input(normalizer, obs), method="value")

    def sample_noise(self, key: jax.Array, shape: tuple) -> jax.Array:
        """Standard noise for ``act_with_noise`` at batch ``shape``: N(0, 1) per action dimension
        (Gaussian), or Gumbel(0, 1) per choice (Categorical: argmax(logits + g) samples it)."""
        if self.action_spec.is_continuous:
            return jax.random.normal(key, shape + (self.action_spec.size,))
        return jax.random.gumbel(key, shape + (self.action_spec.size,))

    def act_with_noise(self, params, normalizer, obs: jax.Array, noise: jax.Array):
        """``(action, log_prob[..., D])`` from ``sample_noise``'s noise, without the critic.

        The same distribution as ``act``, with the randomness drawn beforehand: a driver can
        draw a whole rollout's noise in one batched call instead of one PRNG call per step
        (on CPU each of those is a loop of dozens of small kernels).
        """
        dist = self.model.apply(params, self._input(normalizer, obs), method="distribution")
        if self.action_spec.is_continuous:
            action = dist.loc + dist.scale * noise
        else:
            action = jnp.argmax(dist.logits + noise, axis=-1).astype(jnp.int32)
        return action, self.per_dim(dist.log_prob(action))

    def mode(self, params, normalizer, obs: jax.Array) -> jax.Array:
        """The deterministic action: the Gaussian mean, or the most likely choice."""
        dist, _ = self.forward(params, normalizer, obs)
        return dist.mode()

    def init_params(self, key: jax.Array, observation_size: int):
        return self.model.init(key, jnp.zeros((1, observation_size), jnp.float32))


def make_policy(config: PPOConfig, action_spec: ActionSpec) -> Policy:
    model = ActorCritic(action_spec, config.hidden_units, config.num_layers, config.network)
    return Policy(model, action_spec, config.normalize, config.obs_clip)
