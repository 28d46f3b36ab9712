"""The actor-critic: separate actor and critic MLPs, a Gaussian or Categorical head (distrax).

Two presets:

- ``"mlagents"``: Linear -> Swish per hidden layer with ML-Agents' initialisation
  (hidden kernels He-normal, i.e. torch's ``kaiming_normal_`` with its default gain sqrt(2),
  times 1.0; zero biases; policy mean head He-normal times 0.2; discrete head He-normal times
  0.1; value head Glorot-uniform).
- ``"seed"``: Linear -> LayerNorm -> Tanh per hidden layer, as in the seed notebooks
  (RL-Adventure-2's ``init_weights``: weights N(0, 0.1), biases 0.1; LayerNorm eps 1e-5 as torch).

Continuous actions: a Gaussian with a state-independent log-std initialised to 0 and no tanh
squash. Discrete actions: a Categorical over ``size`` choices.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp


class ActionSpec(NamedTuple):
    """What the policy outputs: ``kind`` "continuous" (``size`` dims) or "discrete" (``size`` choices)."""

    kind: str
    size: int

    @classmethod
    def continuous(cls, size: int) -> "ActionSpec":
        return cls("continuous", int(size))

    @classmethod
    def discrete(cls, size: int) -> "ActionSpec":
        return cls("discrete", int(size))

    @property
    def is_continuous(self) -> bool:
        return self.kind == "continuous"

    @property
    def log_prob_dims(self) -> int:
        """Width D of the per-dimension log-probs the PPO ratio is taken over."""
        return self.size if self.is_continuous else 1


def _he_normal(gain: float) -> nn.initializers.Initializer:
    # torch.nn.init.kaiming_normal_ (fan_in, leaky_relu with a=0 -> gain sqrt(2)) then *= gain.
    return nn.initializers.variance_scaling(2.0 * gain * gain, "fan_in", "normal")


_SEED_KERNEL = nn.initializers.normal(0.1)
_SEED_BIAS = nn.initializers.constant(0.1)


class MLP(nn.Module):
    """A hidden stack in one of the presets; returns the last hidden activation."""

    hidden: Sequence[int]
    preset: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden:
            if self.preset == "seed":
                x = nn.Dense(width, kernel_init=_SEED_KERNEL, bias_init=_SEED_BIAS)(x)
                x = nn.tanh(nn.LayerNorm(epsilon=1e-5)(x))
            else:
                x = nn.swish(nn.Dense(width, kernel_init=_he_normal(1.0))(x))
        return x


class ActorCritic(nn.Module):
    """``apply(params, obs[..., obs_dim]) -> (distribution, value[...])``.

    ``obs`` is already normalized (see ``jppo.policy``). For continuous actions the
    distribution is a per-dimension ``distrax.Normal`` with batch shape ``[..., size]``;
    for discrete actions a ``distrax.Categorical`` with batch shape ``[...]``.
    """

    action_spec: ActionSpec
    hidden_units: int = 128
    num_layers: int = 2
    preset: str = "mlagents"

    def setup(self):
        hidden = [self.hidden_units] * self.num_layers
        self.actor = MLP(hidden, self.preset)
        self.critic = MLP(hidden, self.preset)
        seed = self.preset == "seed"
        if self.action_spec.is_continuous:
            head_init = _SEED_KERNEL if seed else _he_normal(0.2)
        else:
            head_init = _SEED_KERNEL if seed else _he_normal(0.1)
        bias_init = _SEED_BIAS if seed else nn.initializers.zeros
        self.policy_head = nn.Dense(self.action_spec.size, kernel_init=head_init,
                                    bias_init=bias_init)
        value_init = _SEED_KERNEL if seed else nn.initializers.glorot_uniform()
        self.value_head = nn.Dense(1, kernel_init=value_init, bias_init=bias_init)
        if self.action_spec.is_continuous:
            self.log_std = self.param("log_std", nn.initializers.zeros, (self.action_spec.size,))

    def __call__(self, obs: jax.Array):
        value = self.value_head(self.critic(obs))[..., 0]
        out = self.policy_head(self.actor(obs))
        if self.action_spec.is_continuous:
            scale = jnp.broadcast_to(jnp.exp(self.log_std), out.shape)
            return distrax.Normal(out, scale), value
        return distrax.Categorical(logits=out), value
