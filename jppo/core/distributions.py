"""What the policy outputs, and the distribution over it: ML-Agents' ``ActionSpec`` and
``ActionModel`` as pure data.

An action has ``continuous_size`` Gaussian dimensions and/or one discrete choice per branch
(``discrete_branches``, sizes), as ``mlagents_envs.base_env.ActionSpec`` allows: continuous,
discrete with any number of branches, or both (hybrid). Its array form, the one rollouts and
buffers store, depends on the kind (``ActionSpec.action_shape``):

- continuous: float32 ``[..., c]``, the raw (unclamped) Gaussian sample;
- one discrete branch: int32 ``[...]``, the choice (as jppo has always stored it);
- several branches: int32 ``[..., branches]``;
- hybrid: float32 ``[..., c + branches]``, the Gaussian sample then each branch's choice as a
  float (exact for any branch size below 2**24), so one array carries the whole action.

Per action the PPO ratio is taken per *column*: one per continuous dimension, then one per
branch (ML-Agents' ``ActionLogProbs.flatten``), ``log_prob_dims = c + branches`` columns.

Discrete branches are masked categoricals: a mask ``[..., sum(branches)]`` (1 or True: allowed)
replaces the logits of forbidden choices with -1e8 (ML-Agents' ``_mask_branch``; a finite
value, so probabilities are exactly 0 and entropies stay finite), so they are never sampled and
the log-probs and entropies are those of the masked distribution.

Entropy, as ML-Agents sums it (``ActionModel.evaluate``): the Gaussian's entropy averaged
over its dimensions, plus each branch's entropy. ``entropy_terms`` returns it so that the loss's
mean over the last axis is that sum: per dimension ``[..., c]`` for a continuous-only action
(the mean over them is ML-Agents' value, and what jppo always reported), else one column.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import distrax
import flax.struct
import jax
import jax.numpy as jnp

# ML-Agents' MultiCategoricalDistribution._mask_branch: logits * mask - 1e8 * (1 - mask).
MASKED_LOGIT = -1.0e8


@dataclasses.dataclass(frozen=True)
class ActionSpec:
    """``continuous_size`` Gaussian dimensions and ``discrete_branches`` (one size per branch).

    ``ActionSpec.continuous(2)``, ``ActionSpec.discrete(3)`` (one branch of 3),
    ``ActionSpec.discrete(3, 2)`` (two branches), ``ActionSpec.hybrid(2, (3, 2))``.
    """

    continuous_size: int = 0
    discrete_branches: tuple = ()

    def __post_init__(self):
        branches = tuple(int(b) for b in self.discrete_branches)
        object.__setattr__(self, "continuous_size", int(self.continuous_size))
        object.__setattr__(self, "discrete_branches", branches)
        if self.continuous_size < 0 or any(b < 1 for b in branches):
            raise ValueError(f"an ActionSpec needs continuous_size >= 0 and branch sizes >= 1, "
                             f"not {self.continuous_size} and {list(branches)}.")
        if self.continuous_size == 0 and not branches:
            raise ValueError("an ActionSpec needs at least one continuous action or one branch.")

    @classmethod
    def continuous(cls, size: int) -> "ActionSpec":
        return cls(int(size), ())

    @classmethod
    def discrete(cls, *sizes) -> "ActionSpec":
        """One branch per size: ``discrete(3)``, ``discrete(3, 2)`` or ``discrete([3, 2])``."""
        if len(sizes) == 1 and isinstance(sizes[0], Sequence):
            sizes = tuple(sizes[0])
        return cls(0, tuple(int(s) for s in sizes))

    @classmethod
    def hybrid(cls, continuous_size: int, branches: Sequence[int]) -> "ActionSpec":
        return cls(int(continuous_size), tuple(int(b) for b in branches))

    # ------------------------------------------------------------------ kinds and sizes

    @property
    def kind(self) -> str:
        """"continuous", "discrete" or "hybrid"."""
        if not self.discrete_branches:
            return "continuous"
        return "discrete" if self.continuous_size == 0 else "hybrid"

    @property
    def is_continuous(self) -> bool:
        return self.kind == "continuous"

    @property
    def num_branches(self) -> int:
        return len(self.discrete_branches)

    @property
    def size(self) -> int:
        """Outputs of the policy's heads: Gaussian means plus every branch's logits (the number
        of continuous actions, or of choices of a single branch)."""
        return self.continuous_size + sum(self.discrete_branches)

    @property
    def mask_size(self) -> int:
        """Width of an action mask: every choice of every branch."""
        return sum(self.discrete_branches)

    @property
    def log_prob_dims(self) -> int:
        """Columns D of the per-column log-probs the PPO ratio is taken over."""
        return self.continuous_size + self.num_branches

    @property
    def action_shape(self) -> tuple:
        """Trailing shape of one action in its array form (see the module docstring)."""
        if self.kind == "discrete" and self.num_branches == 1:
            return ()
        return (self.continuous_size + self.num_branches,)

    @property
    def action_dtype(self):
        return jnp.float32 if self.continuous_size else jnp.int32

    # ------------------------------------------------------------------ the array form

    def split(self, actions: jax.Array):
        """``(continuous [..., c] float or None, discrete [..., branches] int32 or None)``."""
        c = self.continuous_size
        if self.kind == "continuous":
            return actions, None
        if self.kind == "discrete":
            discrete = actions[..., None] if self.num_branches == 1 else actions
            return None, discrete.astype(jnp.int32)
        return actions[..., :c], actions[..., c:].astype(jnp.int32)

    def join(self, continuous, discrete) -> jax.Array:
        """The array form from the parts ``split`` returns."""
        if self.kind == "continuous":
            return continuous
        if self.kind == "discrete":
            discrete = discrete.astype(jnp.int32)
            return discrete[..., 0] if self.num_branches == 1 else discrete
        return jnp.concatenate([continuous, discrete.astype(continuous.dtype)], axis=-1)

    # ------------------------------------------------------------------ checkpoints

    def to_meta(self):
        """JSON for a checkpoint: ``["continuous", c]`` and ``["discrete", n]`` as jppo has always
        written them; ``{"continuous": c, "discrete": [...]}`` for the other kinds."""
        if self.kind == "continuous":
            return ["continuous", self.continuous_size]
        if self.kind == "discrete" and self.num_branches == 1:
            return ["discrete", self.discrete_branches[0]]
        return {"continuous": self.continuous_size, "discrete": list(self.discrete_branches)}

    @classmethod
    def from_meta(cls, value) -> "ActionSpec":
        if isinstance(value, dict):
            return cls(int(value.get("continuous", 0)), tuple(value.get("discrete", ())))
        kind, size = value
        if kind == "continuous":
            return cls.continuous(size)
        if kind == "discrete":
            return cls.discrete(size)
        raise ValueError(f"unknown action kind {kind!r}")

    def describe(self) -> str:
        """For messages: "2 continuous", "discrete branches [3, 3]", "2 continuous and ..."."""
        parts = []
        if self.continuous_size:
            parts.append(f"{self.continuous_size} continuous")
        if self.discrete_branches:
            parts.append(f"discrete branches {list(self.discrete_branches)}")
        return " and ".join(parts)


def branch_slices(branches: Sequence[int]) -> list[slice]:
    """The columns of each branch in a ``[..., sum(branches)]`` array of logits or masks."""
    out, start = [], 0
    for size in branches:
        out.append(slice(start, start + size))
        start += size
    return out


def mask_logits(logits: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
    """Forbidden choices (mask 0 or False) get ``MASKED_LOGIT``; no mask: every choice allowed."""
    if mask is None:
        return logits
    return jnp.where(jnp.asarray(mask) > 0, logits, MASKED_LOGIT)


@flax.struct.dataclass
class ActionDistribution:
    """The policy's distribution over one action (batch shape ``[...]``): a Gaussian
    ``N(mean, std)`` over the continuous dimensions and a categorical per branch over the
    already masked ``logits`` ``[..., sum(branches)]``; ``None`` for a part the spec lacks."""

    mean: Optional[jax.Array]
    std: Optional[jax.Array]
    logits: Optional[jax.Array]
    spec: ActionSpec = flax.struct.field(pytree_node=False)

    def _normal(self) -> distrax.Normal:
        return distrax.Normal(self.mean, self.std)

    def _branch_logits(self) -> list[jax.Array]:
        """Each branch's logits (one branch: the array itself, no slicing)."""
        if self.spec.num_branches == 1:
            return [self.logits]
        return [self.logits[..., s] for s in branch_slices(self.spec.discrete_branches)]

    def _branches(self) -> list[distrax.Categorical]:
        return [distrax.Categorical(logits=logits) for logits in self._branch_logits()]

    def probs(self) -> jax.Array:
        """``[..., sum(branches)]``: each branch's probabilities, side by side."""
        return jnp.concatenate([jax.nn.softmax(self.logits[..., s], axis=-1)
                                for s in branch_slices(self.spec.discrete_branches)], axis=-1)

    def log_prob(self, actions: jax.Array, branches=None) -> jax.Array:
        """``[..., log_prob_dims]``: per continuous dimension, then per branch."""
        branches = self._branches() if branches is None and self.logits is not None else branches
        if self.spec.kind == "discrete" and self.spec.num_branches == 1:
            return branches[0].log_prob(actions)[..., None]
        continuous, discrete = self.spec.split(actions)
        columns = []
        if continuous is not None:
            columns.append(self._normal().log_prob(continuous))
        if discrete is not None:
            columns += [dist.log_prob(discrete[..., i])[..., None]
                        for i, dist in enumerate(branches)]
        return columns[0] if len(columns) == 1 else jnp.concatenate(columns, axis=-1)

    def entropy_terms(self, branches=None) -> jax.Array:
        """Entropy columns whose mean is ML-Agents' entropy (module docstring): ``[..., c]``
        for a continuous-only action, else ``[..., 1]``."""
        if self.spec.is_continuous:
            return self._normal().entropy()
        entropies = [dist.entropy() for dist in (branches or self._branches())]
        total = entropies[0]
        for more in entropies[1:]:
            total = total + more
        if self.mean is not None:
            total = total + jnp.mean(self._normal().entropy(), axis=-1)
        return total[..., None]

    def score(self, actions: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(log_prob(actions), entropy_terms())`` from one set of branch distributions (each
        normalizes its logits once, for both)."""
        branches = self._branches() if self.logits is not None else None
        return self.log_prob(actions, branches), self.entropy_terms(branches)

    def mode(self) -> jax.Array:
        """The deterministic action: the Gaussian mean and each branch's most likely choice."""
        discrete = None
        if self.logits is not None:
            discrete = jnp.stack([jnp.argmax(logits, axis=-1)
                                  for logits in self._branch_logits()], axis=-1)
        return self.spec.join(self.mean, discrete)

    def from_noise(self, noise: jax.Array) -> jax.Array:
        """The action for ``noise [..., size]`` (``sample_noise``): ``mean + std * n`` for the
        Gaussian, ``argmax(logits + g)`` per branch for Gumbel noise g (Gumbel-max sampling:
        a masked choice, at -1e8, is never the argmax)."""
        c, spec = self.spec.continuous_size, self.spec
        if spec.is_continuous:
            return self.mean + self.std * noise
        if spec.kind == "discrete" and spec.num_branches == 1:
            return jnp.argmax(self.logits + noise, axis=-1).astype(jnp.int32)
        continuous = self.mean + self.std * noise[..., :c] if c else None
        perturbed = self.logits + noise[..., c:]
        discrete = jnp.stack([jnp.argmax(perturbed[..., s], axis=-1)
                              for s in branch_slices(spec.discrete_branches)], axis=-1)
        return spec.join(continuous, discrete)

    def sample(self, key: jax.Array) -> jax.Array:
        batch = (self.mean if self.mean is not None else self.logits).shape[:-1]
        return self.from_noise(sample_noise(self.spec, key, batch))


def sample_noise(spec: ActionSpec, key: jax.Array, shape: tuple) -> jax.Array:
    """``[*shape, size]`` standard noise: N(0, 1) per continuous dimension, then Gumbel(0, 1) per
    choice of every branch."""
    if spec.is_continuous:
        return jax.random.normal(key, tuple(shape) + (spec.size,))
    if spec.continuous_size == 0:
        return jax.random.gumbel(key, tuple(shape) + (spec.size,))
    normal_key, gumbel_key = jax.random.split(key)
    return jnp.concatenate([jax.random.normal(normal_key, tuple(shape) + (spec.continuous_size,)),
                            jax.random.gumbel(gumbel_key, tuple(shape) + (spec.mask_size,))], -1)


__all__ = ["ActionDistribution", "ActionSpec", "MASKED_LOGIT", "branch_slices", "mask_logits",
           "sample_noise"]
