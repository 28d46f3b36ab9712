"""The actor-critic as functions of (params, normalizer statistics, observations[, mask]).

Drivers act with ``Policy.act``; the update scores stored actions with ``Policy.evaluate``;
export and evaluation use ``Policy.mode``. All are pure and jittable.

``obs`` is one array ``[..., D]`` or a tuple with one array per sensor
(``jppo.core.observations``); the normalizer statistics have the same form, one running
normalizer per sensor. ``mask`` (optional, ``[..., sum(branches)]``, 1 or True: allowed) masks
discrete choices: pass the mask the environment gave with the observation both when acting and
when scoring the stored action, so that the update's log-probs are the acting ones.
"""
from __future__ import annotations

import dataclasses

import jax

from jppo.core import normalizer as obs_norm
from jppo.core import observations
from jppo.core.config import PPOConfig
from jppo.core.distributions import ActionSpec, sample_noise
from jppo.core.encoders import check_resolution
from jppo.core.networks import ActorCritic

# ML-Agents hands the environment ``clamp(a, -3, 3) / 3`` of the raw Gaussian sample (and
# stores the raw sample): every path to an environment or an exported model uses this bound.
ACTION_CLAMP = 3.0


@dataclasses.dataclass(frozen=True)
class Policy:
    """Pure functions of one actor-critic; ``obs`` are raw observations (module docstring)."""

    model: ActorCritic
    action_spec: ActionSpec
    normalize: bool
    obs_clip: float = 5.0

    def forward(self, params, normalizer, obs, mask=None):
        """``(ActionDistribution, value[...])`` with the normalizers applied before both bodies."""
        return self.model.apply(params, self._input(normalizer, obs), mask)

    def act(self, params, normalizer, obs, key: jax.Array, mask=None):
        """Sample: ``(action, log_prob[..., D], value[...])``. The raw (unclamped) Gaussian
        sample is returned and scored, as ML-Agents stores it."""
        dist, value = self.forward(params, normalizer, obs, mask)
        action = dist.sample(key)
        return action, dist.log_prob(action), value

    def evaluate(self, params, normalizer, obs, actions: jax.Array, mask=None):
        """``(log_prob[..., D], entropy[..., E], value[...])`` of stored ``actions``; the mean of
        the entropy over its last axis is the entropy the loss rewards
        (``ActionDistribution.entropy_terms``)."""
        dist, value = self.forward(params, normalizer, obs, mask)
        log_prob, entropy = dist.score(actions)
        return log_prob, entropy, value

    def _input(self, normalizer, obs):
        return obs_norm.apply(normalizer, obs, self.obs_clip) if self.normalize else obs

    def value(self, params, normalizer, obs) -> jax.Array:
        """V(obs) without evaluating the actor."""
        return self.model.apply(params, self._input(normalizer, obs), method="value")

    def sample_noise(self, key: jax.Array, shape: tuple) -> jax.Array:
        """Standard noise for ``act_with_noise`` at batch ``shape``: ``[*shape, size]``, N(0, 1)
        per continuous dimension, Gumbel(0, 1) per discrete choice."""
        return sample_noise(self.action_spec, key, shape)

    def act_with_noise(self, params, normalizer, obs, noise: jax.Array, mask=None):
        """``(action, log_prob[..., D])`` from ``sample_noise``'s noise, without the critic.

        The same distribution as ``act``, with the randomness drawn beforehand: a driver can
        draw a whole rollout's noise in one batched call instead of one PRNG call per step
        (on CPU each of those is a loop of dozens of small kernels).
        """
        dist = self.model.apply(params, self._input(normalizer, obs), mask, method="distribution")
        action = dist.from_noise(noise)
        return action, dist.log_prob(action)

    def mode(self, params, normalizer, obs, mask=None) -> jax.Array:
        """The deterministic action: the Gaussian mean, each branch's most likely choice."""
        return self.model.apply(params, self._input(normalizer, obs), mask,
                                method="distribution").mode()

    def init_params(self, key: jax.Array, observation_size):
        """Fresh parameters for observations of ``observation_size`` (an int, or one size or
        shape per sensor)."""
        return self.model.init(key, observations.zeros(observation_size))


def make_policy(config: PPOConfig, action_spec: ActionSpec, observation_size=()) -> Policy:
    """The policy of ``config`` acting with ``action_spec``. ``observation_size`` (an int, or one
    size or shape per sensor; an empty tuple: vector sensors) chooses each sensor's encoder: an
    image sensor (HWC) gets ``config.vis_encode_type``'s, and one smaller than that encoder's
    minimum resolution is a ``ConfigError`` naming it (``jppo.core.encoders``)."""
    shapes = observations.encoder_shapes(observation_size)
    check_resolution(shapes, config.vis_encode_type)
    model = ActorCritic(action_spec, config.hidden_units, config.num_layers, config.network,
                        shapes, config.vis_encode_type)
    return Policy(model, action_spec, config.normalize, config.obs_clip)
