"""The actor-critic: per-sensor encoders, separate actor and critic MLPs, and the action heads
(a Gaussian and/or one masked categorical per discrete branch: ``jppo.core.distributions``).

Two presets:

- ``"mlagents"``: Linear -> Swish per hidden layer with ML-Agents' initialisation
  (hidden kernels He-normal, i.e. torch's ``kaiming_normal_`` with its default gain sqrt(2),
  times 1.0; zero biases; policy mean head He-normal times 0.2; discrete head He-normal times
  0.1; value head Glorot-uniform).
- ``"seed"``: Linear -> LayerNorm -> Tanh per hidden layer, as in the seed notebooks
  (RL-Adventure-2's ``init_weights``: weights N(0, 0.1), biases 0.1; LayerNorm eps 1e-5 as torch).
- ``"cleanrl"``: Linear -> Tanh per hidden layer, orthogonal init (gain sqrt 2 on hidden layers,
  0.01 on the policy head, 1 on the value head), zero biases: CleanRL's and PureJaxRL's network,
  the common baseline in PPO papers.

Continuous actions: a Gaussian with a state-independent log-std initialised to 0 and no tanh
squash. Discrete actions: one categorical per branch, the logits of every branch from one
Dense layer (the same function as ML-Agents' one layer per branch, initialised alike, in one
matmul). Parameter names: ``actor``, ``critic`` (the MLPs), ``value_head``; ``policy_head``
(the Gaussian means, or the logits of a discrete-only action) with ``log_std``; a hybrid
action's logits come from ``discrete_head``. Observations go through the per-sensor
``ObservationEncoder`` first (``jppo.core.observations``); vector sensors add no parameters,
so a one-sensor policy has exactly the parameters jppo always had.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jppo.core.distributions import ActionDistribution, ActionSpec, mask_logits
from jppo.core.layers import Dense, he_normal as _he_normal, matmul
from jppo.core.observations import ObservationEncoder


_SEED_KERNEL = nn.initializers.normal(0.1)
_SEED_BIAS = nn.initializers.constant(0.1)
_ORTHOGONAL_HIDDEN = nn.initializers.orthogonal(2.0 ** 0.5)


class MLP(nn.Module):
    """A hidden stack in one of the presets; returns the last hidden activation."""

    hidden: Sequence[int]
    preset: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden:
            if self.preset == "seed":
                x = Dense(width, kernel_init=_SEED_KERNEL, bias_init=_SEED_BIAS)(x)
                x = nn.tanh(nn.LayerNorm(epsilon=1e-5)(x))
            elif self.preset == "cleanrl":
                x = nn.tanh(Dense(width, kernel_init=_ORTHOGONAL_HIDDEN)(x))
            else:
                x = nn.swish(Dense(width, kernel_init=_he_normal(1.0))(x))
        return x


class ActorCritic(nn.Module):
    """``apply(params, obs, mask=None) -> (ActionDistribution, value[...])``.

    ``obs`` is already normalized (see ``jppo.core.policy``): ``[..., D]`` or a tuple of
    per-sensor arrays; ``mask`` ``[..., sum(branches)]`` (1: allowed) masks discrete choices.
    ``observation_shapes`` (one shape per sensor) chooses the sensor encoders; empty: vectors.
    Image sensors get ``vis_encode_type``'s encoder (``jppo.core.encoders``), one for the actor
    and one for the critic, each ending in ``hidden_units`` features.
    """

    action_spec: ActionSpec
    hidden_units: int = 128
    num_layers: int = 2
    preset: str = "mlagents"
    observation_shapes: tuple = ()
    vis_encode_type: str = "simple"

    def setup(self):
        hidden = [self.hidden_units] * self.num_layers
        # Separate encoders and bodies for actor and critic, as ML-Agents (shared_critic off).
        encoder = lambda: ObservationEncoder(self.observation_shapes, self.vis_encode_type,
                                             self.hidden_units)
        self.actor_encoder = encoder()
        self.critic_encoder = encoder()
        self.actor = MLP(hidden, self.preset)
        self.critic = MLP(hidden, self.preset)
        spec = self.action_spec
        seed = self.preset == "seed"
        bias_init = _SEED_BIAS if seed else nn.initializers.zeros
        if seed:
            mean_init = logits_init = value_init = _SEED_KERNEL
        elif self.preset == "cleanrl":
            mean_init = logits_init = nn.initializers.orthogonal(0.01)
            value_init = nn.initializers.orthogonal(1.0)
        else:
            mean_init, logits_init = _he_normal(0.2), _he_normal(0.1)
            value_init = nn.initializers.glorot_uniform()
        if spec.continuous_size:
            self.policy_head = Dense(spec.continuous_size, kernel_init=mean_init,
                                     bias_init=bias_init)
            self.log_std = self.param("log_std", nn.initializers.zeros, (spec.continuous_size,))
        if spec.discrete_branches:
            logits = Dense(spec.mask_size, kernel_init=logits_init, bias_init=bias_init)
            if spec.continuous_size:
                self.discrete_head = logits
            else:
                self.policy_head = logits
        self.value_head = Dense(1, kernel_init=value_init, bias_init=bias_init)

    def __call__(self, obs, mask=None):
        return self.distribution(obs, mask), self.value(obs)

    def distribution(self, obs, mask=None) -> ActionDistribution:
        """The policy alone (``apply(..., method="distribution")``): acting needs no critic."""
        spec = self.action_spec
        hidden = self.actor(self.actor_encoder(obs))
        mean = std = logits = None
        if spec.continuous_size:
            mean = self.policy_head(hidden)
            std = jnp.broadcast_to(jnp.exp(self.log_std), mean.shape)
        if spec.discrete_branches:
            head = self.discrete_head if spec.continuous_size else self.policy_head
            logits = mask_logits(head(hidden), mask)
        return ActionDistribution(mean, std, logits, spec)

    def value(self, obs) -> jax.Array:
        """V(obs) alone (``apply(..., method="value")``)."""
        return self.value_head(self.critic(self.critic_encoder(obs)))[..., 0]


__all__ = ["ActionSpec", "ActorCritic", "Dense", "MLP", "matmul"]
