"""The seeds' actor-critic PPO written plainly in PyTorch, to read beside ``jppo``'s JAX code.

It follows seed 001 (RL-Adventure-2's ``3.ppo.ipynb``: ``ActorCritic``, ``compute_gae``,
``ppo_iter``, ``ppo_update``) with the decisions ``jppo`` made (ML-Agents' trainer), so the two
can be compared number for number (``tests/test_parity_torch.py``):

- two bodies, actor and critic: Linear -> LayerNorm -> Tanh ("seed") or Linear -> Swish
  ("mlagents"); a Normal head with a state-independent log-std and/or one masked Categorical
  per discrete branch (ML-Agents' ``MultiCategoricalDistribution``: forbidden choices at -1e8),
  with the entropy summed as ML-Agents does (the Gaussian's mean over its dimensions plus each
  branch's); observations may come as several sensors (concatenated before the bodies, one
  normalizer each);
- GAE with ``masks = 1 - dones``; a truncated step bootstraps from V(final observation), folded
  into the reward as ``gamma * V(final)``;
- advantages normalized over the whole rollout, ``(A - mean) / (population std + 1e-10)``;
- the clipped surrogate with the ratio taken per action dimension, the value loss clipped with
  the same epsilon, the entropy bonus; or PPO1's KL penalty, or A2C;
- Adam (torch's defaults) whose learning rate, like epsilon and beta, decays linearly in the
  Adam step count; optional global-norm gradient clipping;
- a running observation normalizer (Chan's merge, population variance, clipped to +-5).

Everything is float32. Hyperparameters come from a ``jppo.PPOConfig``.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Iterator, NamedTuple, Optional

import numpy as np
import torch
from torch import nn

from jppo.core.config import PPOConfig
from jppo.core.losses import KL_COEF_MAX, KL_COEF_MIN
from jppo.reference.torch_networks import MASKED_LOGIT, ActorCritic, body  # noqa: F401 (re-exported)

# ML-Agents' end values of the linear decays (jppo.core.optim uses the same).
LEARNING_RATE_END = 1.0e-10
EPSILON_END = 0.1
BETA_END = 1.0e-5


# ------------------------------------------------------------------------------- normalizer

class SensorNormalizers:
    """One ``RunningNormalizer`` per sensor, for observations that come as a sequence."""

    def __init__(self, sizes):
        self.parts = [RunningNormalizer(int(size)) for size in sizes]

    def update(self, batch):
        for part, x in zip(self.parts, batch):
            part.update(x)

    def __call__(self, obs, clip: float = 5.0):
        return [part(x, clip) for part, x in zip(self.parts, obs)]


class RunningNormalizer:
    """Running mean and population variance of observations ``[..., size]`` (Chan's merge)."""

    def __init__(self, size: int):
        self.count = torch.zeros(())
        self.mean = torch.zeros(size)
        self.m2 = torch.zeros(size)  # sum of squared deviations from the mean

    def update(self, batch: torch.Tensor):
        x = batch.reshape(-1, self.mean.shape[-1]).float()
        n_b = float(x.shape[0])
        mean_b = x.mean(0)
        m2_b = ((x - mean_b) ** 2).sum(0)
        total = self.count + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / total)
        self.m2 = self.m2 + m2_b + delta ** 2 * (self.count * n_b / total)
        self.count = total

    def variance(self) -> torch.Tensor:
        if self.count > 0:
            return self.m2 / self.count
        return torch.ones_like(self.m2)

    def __call__(self, obs: torch.Tensor, clip: float = 5.0) -> torch.Tensor:
        # The floor keeps a constant feature finite instead of 0/0.
        std = self.variance().clamp_min(1e-8).sqrt()
        return ((obs - self.mean) / std).clamp(-clip, clip)


# ------------------------------------------------------------------------------------- GAE

def compute_gae(next_value, rewards, masks, values, gamma=0.99, tau=0.95, truncations=None,
                final_values=None):
    """Seed 001's ``compute_gae`` on tensors: ``rewards``, ``masks``, ``values`` are
    ``[T, *B]`` (``masks = 1 - dones``), ``next_value`` is ``[*B]``, V after the last step.

    ``truncations[t] = 1`` marks a time-limit cut: step t bootstraps from ``final_values[t]``
    (V of the final observation) instead of the next episode's first value, done by adding
    ``gamma * final_values[t]`` to the reward and cutting the mask. A real end wins over a
    truncation. Returns ``(advantages, returns)``, both ``[T, *B]``.
    """
    if truncations is not None:
        cut = truncations * masks
        rewards = rewards + gamma * cut * final_values
        masks = masks * (1.0 - cut)
    values = torch.cat([values, next_value.unsqueeze(0)])
    gae = torch.zeros_like(next_value)
    advantages = []
    for step in reversed(range(len(rewards))):
        delta = rewards[step] + gamma * values[step + 1] * masks[step] - values[step]
        gae = delta + gamma * tau * masks[step] * gae
        advantages.insert(0, gae)
    advantages = torch.stack(advantages)
    return advantages, advantages + values[:-1]


def normalize_advantages(advantages: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """``(A - mean) / (std + eps)`` over all samples, with the population std as ML-Agents."""
    return (advantages - advantages.mean()) / (advantages.std(unbiased=False) + eps)


# -------------------------------------------------------------------------------- minibatches

def shuffled_indices(n: int, batch_size: int, num_epoch: int,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``[num_epoch, n // batch_size, batch_size]``: a fresh permutation per epoch, the
    remainder dropped. (Seed 001 drew ``randint`` ids, with replacement; ML-Agents and jppo
    shuffle.) Tests pass ``jppo.minibatch_indices`` instead, to replay JAX's order."""
    per_epoch = n // batch_size
    return torch.stack([torch.randperm(n, generator=generator)[: per_epoch * batch_size]
                        .reshape(per_epoch, batch_size) for _ in range(num_epoch)])


def ppo_iter(index_batches, batch: dict) -> Iterator[dict]:
    """Seed 001's ``ppo_iter`` over explicit indices: ``index_batches`` is
    ``[num_epoch, per_epoch, batch_size]`` (any array-like); yields ``{name: tensor[ids]}``
    epoch by epoch, minibatch by minibatch."""
    if not isinstance(index_batches, torch.Tensor):
        index_batches = torch.from_numpy(np.array(index_batches))
    def take(value, ids):
        if value is None or isinstance(value, torch.Tensor):
            return None if value is None else value[ids]
        return [part[ids] for part in value]  # per-sensor observations

    for epoch in index_batches.long():
        for ids in epoch:
            yield {name: take(value, ids) for name, value in batch.items()}


# ------------------------------------------------------------------------------------ loss

def ppo_loss(log_probs, old_log_probs, advantages, values, old_values, returns, entropy, *,
             epsilon, beta, value_coef=0.5, kind="clip", clip_value=True, kl_coef=0.0):
    """The minibatch objective ``L = L_pi + value_coef * L_v - beta * H``.

    Shapes: ``log_probs``, ``old_log_probs``, ``entropy``: ``[N, D]``; ``advantages``,
    ``values``, ``old_values``, ``returns``: ``[N]``. Returns ``(loss, terms)`` with ``terms`` a
    dict of scalar tensors: policy_loss, value_loss, entropy, approx_kl, clip_fraction.
    """
    log_ratio = log_probs - old_log_probs
    ratio = log_ratio.exp()  # per action dimension, as ML-Agents
    adv = advantages.unsqueeze(-1)  # broadcast over action dimensions
    joint_log_ratio = log_ratio.sum(-1)
    approx_kl = torch.expm1(joint_log_ratio) - joint_log_ratio  # KL(old || new) >= 0
    if kind == "clip":
        surr1 = ratio * adv
        surr2 = torch.clamp(ratio, 1.0 - epsilon, 1.0 + epsilon) * adv
        policy = -torch.min(surr1, surr2).mean(-1)
    elif kind == "kl_penalty":
        policy = -(ratio * adv).mean(-1) + kl_coef * approx_kl
    elif kind == "a2c":
        policy = -(log_probs * adv).mean(-1)
    else:
        raise ValueError(f"unknown loss kind {kind!r}; allowed: 'clip', 'kl_penalty', 'a2c'.")
    value_error = (returns - values) ** 2
    if clip_value:
        # ML-Agents: V may move at most epsilon from the value stored at acting time.
        clipped = old_values + torch.clamp(values - old_values, -epsilon, epsilon)
        value_error = torch.max(value_error, (returns - clipped) ** 2)
    terms = dict(policy_loss=policy.mean(), value_loss=value_error.mean(),
                 entropy=entropy.mean(-1).mean(), approx_kl=approx_kl.mean(),
                 clip_fraction=((ratio - 1.0).abs() > epsilon).float().mean(-1).mean())
    loss = terms["policy_loss"] + value_coef * terms["value_loss"] - beta * terms["entropy"]
    return loss, terms


def adapt_kl_coef(kl_coef: float, kl: float, kl_target: float) -> float:
    """PPO1: double the coefficient when ``kl >= 1.5 target``, halve when ``kl <= target/1.5``,
    kept within jppo's ``[KL_COEF_MIN, KL_COEF_MAX]``."""
    if kl >= 1.5 * kl_target:
        kl_coef *= 2.0
    if kl <= kl_target / 1.5:
        kl_coef *= 0.5
    return min(max(kl_coef, KL_COEF_MIN), KL_COEF_MAX)


# ------------------------------------------------------------------------- schedules, Adam

def linear_decay(start: float, end: float, total: int) -> Callable[[int], float]:
    """``step -> start + (end - start) * min(step, total) / total``; step 0: the first Adam step."""
    total = max(int(total), 1)
    return lambda step: start + (end - start) * min(step, total) / total


class Schedules(NamedTuple):
    learning_rate: Callable[[int], float]
    epsilon: Callable[[int], float]
    beta: Callable[[int], float]


def make_schedules(config: PPOConfig, total_adam_steps: int) -> Schedules:
    """Learning rate, epsilon and beta as functions of the Adam step count."""
    def decay(name, end):
        start = getattr(config, name)
        if config.schedule(name) == "constant":
            return lambda step: start
        return linear_decay(start, end, total_adam_steps)

    return Schedules(decay("learning_rate", LEARNING_RATE_END), decay("epsilon", EPSILON_END),
                     decay("beta", BETA_END))


def make_optimizer(model: nn.Module, config: PPOConfig) -> torch.optim.Adam:
    return torch.optim.Adam(model.parameters(), lr=config.learning_rate, betas=(0.9, 0.999),
                            eps=config.adam_eps)


def clip_grad_global_norm(parameters: Iterable[nn.Parameter], max_norm: float):
    """Scale all gradients by ``max_norm / norm`` when their global norm exceeds ``max_norm``.
    (``torch.nn.utils.clip_grad_norm_`` divides by ``norm + 1e-6`` instead; optax, and so
    jppo, divides by the norm itself.)"""
    grads = [p.grad for p in parameters if p.grad is not None]
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    if norm >= max_norm:
        for g in grads:
            g.div_(norm).mul_(max_norm)


def adam_step(model: nn.Module, optimizer: torch.optim.Adam, learning_rate: float,
              max_grad_norm: Optional[float] = None):
    """One optimizer step on the gradients already in ``.grad``."""
    if max_grad_norm is not None:
        clip_grad_global_norm(model.parameters(), max_grad_norm)
    for group in optimizer.param_groups:
        group["lr"] = learning_rate
    optimizer.step()


# ---------------------------------------------------------------------------------- update

@dataclasses.dataclass
class Learner:
    """What persists between updates: the model, Adam's state, the normalizer, the Adam step
    count (the schedules' clock) and the KL penalty coefficient."""

    config: PPOConfig
    model: ActorCritic
    optimizer: torch.optim.Adam
    normalizer: RunningNormalizer
    total_adam_steps: int
    step: int = 0
    kl_coef: float = 1.0

    @classmethod
    def create(cls, config: PPOConfig, obs_size, action_kind: str, action_size: int,
               total_adam_steps: int, layer_norm_eps: float = 1e-5, branches=None) -> "Learner":
        """``obs_size``: an int, or a sequence of per-sensor sizes (a normalizer each)."""
        model = ActorCritic(obs_size, action_kind, action_size, config.hidden_units,
                            config.num_layers, config.network, layer_norm_eps, branches)
        normalizer = (RunningNormalizer(obs_size) if isinstance(obs_size, int)
                      else SensorNormalizers(obs_size))
        return cls(config, model, make_optimizer(model, config), normalizer,
                   total_adam_steps, 0, config.kl_coef)

    def evaluate(self, obs, actions, mask=None):
        if self.config.normalize:
            obs = self.normalizer(obs, self.config.obs_clip)
        return self.model.evaluate(obs, actions, mask)


def prepare_batch(config: PPOConfig, rollout: dict) -> dict:
    """GAE on a time-major rollout (tensors ``[T, *B, ...]``, see ``ppo_update``), flattened to
    ``[N, ...]`` samples with normalized advantages."""
    advantages, returns = compute_gae(
        rollout["last_value"], rollout["rewards"] * config.strength, 1.0 - rollout["dones"],
        rollout["values"], config.gamma, config.lambd, rollout.get("truncations"),
        rollout.get("final_values"))
    lead = rollout["rewards"].dim()

    def flat(x):
        if x is None:
            return None
        if not isinstance(x, torch.Tensor):  # per-sensor observations
            return [flat(part) for part in x]
        return x.reshape((-1,) + tuple(x.shape[lead:]))

    return dict(obs=flat(rollout["obs"]), actions=flat(rollout["actions"]),
                log_probs=flat(rollout["log_probs"]), values=flat(rollout["values"]),
                advantages=normalize_advantages(flat(advantages), config.advantage_eps),
                returns=flat(returns), action_masks=flat(rollout.get("action_masks")))


def ppo_update(learner: Learner, rollout: dict, index_batches) -> dict:
    """One PPO update in place; returns the minibatch-mean loss terms.

    ``rollout`` holds tensors: obs ``[T, *B, obs]`` (or a list of per-sensor tensors), actions
    in jppo's array form, log_probs ``[T, *B, D]``, values, rewards, dones ``[T, *B]``,
    last_value ``[*B]``, and optionally truncations and final_values ``[T, *B]`` and
    action_masks ``[T, *B, sum(branches)]``. ``index_batches`` is
    ``[num_epoch, per_epoch, batch_size]`` (``shuffled_indices`` or ``jppo.minibatch_indices``).
    """
    config, model = learner.config, learner.model
    if config.normalize:
        learner.normalizer.update(rollout["obs"])
    batch = prepare_batch(config, rollout)
    schedules = make_schedules(config, learner.total_adam_steps)
    totals = {}
    count = 0
    for mb in ppo_iter(index_batches, batch):
        log_probs, entropy, values = learner.evaluate(mb["obs"], mb["actions"], mb["action_masks"])
        loss, terms = ppo_loss(
            log_probs, mb["log_probs"], mb["advantages"], values, mb["values"], mb["returns"],
            entropy, epsilon=schedules.epsilon(learner.step), beta=schedules.beta(learner.step),
            value_coef=config.value_coef, kind=config.loss, clip_value=config.clip_value,
            kl_coef=learner.kl_coef)
        learner.optimizer.zero_grad()
        loss.backward()
        adam_step(model, learner.optimizer, schedules.learning_rate(learner.step),
                  config.max_grad_norm)
        learner.step += 1
        count += 1
        for name, value in dict(terms, loss=loss).items():
            totals[name] = totals.get(name, 0.0) + value.item()
    if config.loss == "kl_penalty":
        # PPO1 measures the KL of the finished update on all the data, then adapts.
        with torch.no_grad():
            log_probs, _, _ = learner.evaluate(batch["obs"], batch["actions"],
                                               batch["action_masks"])
            log_ratio = (log_probs - batch["log_probs"]).sum(-1)
            kl = float((torch.expm1(log_ratio) - log_ratio).mean())
        learner.kl_coef = adapt_kl_coef(learner.kl_coef, kl, config.kl_target)
    return {name: total / max(count, 1) for name, total in totals.items()}
