"""The actor-critic: separate actor and critic MLPs, a Gaussian or Categorical head (distrax).

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


@jax.custom_vjp
def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x[..., in] @ w[in, out]`` whose weight gradient XLA:CPU runs on its fast matmul path.

    The plain gradient ``x^T g`` contracts the batch axis of both operands, a form XLA:CPU's
    fast matmul library does not take; it falls back to a slower generic kernel, which
    dominated PPO's minibatch steps (benchmarks/README.md). Transposing ``x`` in memory first avoids that.
    """
    return x @ w


def _matmul_fwd(x, w):
    return x @ w, (x, w)


def _matmul_bwd(residuals, g):
    x, w = residuals
    x2 = jnp.reshape(x, (-1, x.shape[-1]))
    g2 = jnp.reshape(g, (-1, g.shape[-1]))
    x_t = jax.lax.optimization_barrier(jnp.transpose(x2))  # keep the transpose materialized
    return g @ w.T, x_t @ g2


matmul.defvjp(_matmul_fwd, _matmul_bwd)


def _dot_general(x, w, dimension_numbers, precision=None, preferred_element_type=None):
    """``nn.Dense``'s contraction (last axis of x with the first of w) through ``matmul``."""
    del precision, preferred_element_type
    assert dimension_numbers == (((x.ndim - 1,), (0,)), ((), ())), dimension_numbers
    return matmul(x, w)


def Dense(features: int, **kwargs) -> nn.Dense:
    return nn.Dense(features, dot_general=_dot_general, **kwargs)


def _he_normal(gain: float) -> nn.initializers.Initializer:
    # torch.nn.init.kaiming_normal_ (fan_in, leaky_relu with a=0 -> gain sqrt(2)) then *= gain.
    return nn.initializers.variance_scaling(2.0 * gain * gain, "fan_in", "normal")


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
    """``apply(params, obs[..., obs_dim]) -> (distribution, value[...])``.

    ``obs`` is already normalized (see ``jppo.core.policy``). For continuous actions the
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
        if seed:
            head_init = value_init = _SEED_KERNEL
        elif self.preset == "cleanrl":
            head_init = nn.initializers.orthogonal(0.01)
            value_init = nn.initializers.orthogonal(1.0)
        else:
            head_init = _he_normal(0.2 if self.action_spec.is_continuous else 0.1)
            value_init = nn.initializers.glorot_uniform()
        bias_init = _SEED_BIAS if seed else nn.initializers.zeros
        self.policy_head = Dense(self.action_spec.size, kernel_init=head_init,
                                    bias_init=bias_init)
        self.value_head = Dense(1, kernel_init=value_init, bias_init=bias_init)
        if self.action_spec.is_continuous:
            self.log_std = self.param("log_std", nn.initializers.zeros, (self.action_spec.size,))

    def __call__(self, obs: jax.Array):
        return self.distribution(obs), self.value(obs)

    def distribution(self, obs: jax.Array):
        """The policy alone (``apply(..., method="distribution")``): acting needs no critic."""
        out = self.policy_head(self.actor(obs))
        if self.action_spec.is_continuous:
            scale = jnp.broadcast_to(jnp.exp(self.log_std), out.shape)
            return distrax.Normal(out, scale)
        return distrax.Categorical(logits=out)

    def value(self, obs: jax.Array) -> jax.Array:
        """V(obs) alone (``apply(..., method="value")``)."""
        return self.value_head(self.critic(obs))[..., 0]
