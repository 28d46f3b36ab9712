"""The reference actor-critic in PyTorch (``jppo.reference.torch_ppo`` uses it): two bodies,
the Gaussian and masked per-branch Categorical heads, observations from one or several sensors.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import torch
from torch import nn
from torch.distributions import Categorical, Normal

from jppo.reference.torch_encoders import ObservationEncoder


# --------------------------------------------------------------------------- the actor-critic

def body(obs_size: int, hidden_units: int, num_layers: int, preset: str,
         layer_norm_eps: float = 1e-5) -> nn.Sequential:
    """A hidden stack ``[..., obs_size] -> [..., hidden_units]``. Layers are named
    ``dense{i}``, ``norm{i}``, ... so the ``state_dict`` keys read like Flax's module names."""
    layers = OrderedDict()
    width = obs_size
    for i in range(num_layers):
        layers[f"dense{i}"] = nn.Linear(width, hidden_units)
        if preset == "seed":
            layers[f"norm{i}"] = nn.LayerNorm(hidden_units, eps=layer_norm_eps)
            layers[f"tanh{i}"] = nn.Tanh()
        elif preset == "cleanrl":
            layers[f"tanh{i}"] = nn.Tanh()
        else:
            layers[f"swish{i}"] = nn.SiLU()  # Swish: x * sigmoid(x)
        width = hidden_units
    return nn.Sequential(layers)


MASKED_LOGIT = -1.0e8  # ML-Agents' _mask_branch


class ActorCritic(nn.Module):
    """``model(obs[N, obs_size], mask=None) -> ((normal or None, [Categorical per branch]),
    value[N])``.

    ``action_kind`` is "continuous" (a Normal with batch shape ``[N, action_size]``), "discrete"
    (a Categorical over ``action_size`` choices, or one per size in ``branches``) or "hybrid"
    (``action_size`` Gaussian dimensions and ``branches``). ``obs`` is already normalized, one
    tensor or a sequence of per-sensor tensors (``obs_size`` then a sequence of sizes),
    concatenated before the bodies. Actions have jppo's array form
    (``jppo.core.distributions``). A hybrid action's logits come from ``discrete_head``.
    ``obs_size`` may give per-sensor shapes: an HWC image sensor (rank 3) gets
    ``vis_encode_type``'s encoder (``jppo.reference.torch_encoders``), one for the actor
    (``actor_encoder``) and one for the critic (``critic_encoder``).
    """

    def __init__(self, obs_size, action_kind: str, action_size: int, hidden_units: int = 128,
                 num_layers: int = 2, preset: str = "mlagents", layer_norm_eps: float = 1e-5,
                 branches=None, vis_encode_type: str = "simple"):
        super().__init__()
        if action_kind not in ("continuous", "discrete", "hybrid"):
            raise ValueError(f"action_kind must be 'continuous', 'discrete' or 'hybrid', "
                             f"not {action_kind!r}.")
        self.continuous_size = action_size if action_kind != "discrete" else 0
        self.branches = (tuple(branches) if branches is not None
                         else (action_size,) if action_kind == "discrete" else ())
        self.continuous = action_kind == "continuous"
        self.preset = preset
        width = obs_size if isinstance(obs_size, int) else int(sum(
            s if isinstance(s, int) else s[0] for s in obs_size))
        shapes = () if isinstance(obs_size, int) else tuple(
            (s,) if isinstance(s, int) else tuple(s) for s in obs_size)
        if any(len(s) == 3 for s in shapes):
            self.actor_encoder = ObservationEncoder(shapes, vis_encode_type, hidden_units)
            self.critic_encoder = ObservationEncoder(shapes, vis_encode_type, hidden_units)
            width = self.actor_encoder.width(hidden_units)
        self.actor = body(width, hidden_units, num_layers, preset, layer_norm_eps)
        self.critic = body(width, hidden_units, num_layers, preset, layer_norm_eps)
        if self.continuous_size:
            self.policy_head = nn.Linear(hidden_units, self.continuous_size)
            self.log_std = nn.Parameter(torch.zeros(self.continuous_size))
        if self.branches:
            logits = nn.Linear(hidden_units, sum(self.branches))
            if self.continuous_size:
                self.discrete_head = logits
            else:
                self.policy_head = logits
        self.value_head = nn.Linear(hidden_units, 1)
        self.reset_parameters()

    @classmethod
    def for_spec(cls, obs_size, spec, hidden_units: int = 128, num_layers: int = 2,
                 preset: str = "mlagents", layer_norm_eps: float = 1e-5,
                 vis_encode_type: str = "simple") -> "ActorCritic":
        """The reference network for a ``jppo.ActionSpec``."""
        size = spec.continuous_size if spec.continuous_size else spec.discrete_branches[0]
        return cls(obs_size, spec.kind, size, hidden_units, num_layers, preset, layer_norm_eps,
                   spec.discrete_branches, vis_encode_type)

    @torch.no_grad()
    def reset_parameters(self):
        # The image encoders keep their own (ML-Agents') initialisation.
        linears = [m for name, m in self.named_modules()
                   if isinstance(m, nn.Linear) and "encoder" not in name]
        if self.preset == "seed":
            # RL-Adventure-2's init_weights.
            for layer in linears:
                nn.init.normal_(layer.weight, 0.0, 0.1)
                nn.init.constant_(layer.bias, 0.1)
            return
        if self.preset == "cleanrl":
            # CleanRL's layer_init: orthogonal, gain sqrt(2) hidden, 0.01 policy, 1 value.
            for layer in linears:
                nn.init.orthogonal_(layer.weight, 2.0 ** 0.5)
                nn.init.zeros_(layer.bias)
            nn.init.orthogonal_(self.policy_head.weight, 0.01)
            nn.init.orthogonal_(self.value_head.weight, 1.0)
            return
        # ML-Agents: He-normal (kaiming_normal_, gain sqrt(2)) scaled per layer, zero biases.
        for layer in linears:
            nn.init.kaiming_normal_(layer.weight)
            nn.init.zeros_(layer.bias)
        if self.continuous_size:
            self.policy_head.weight.mul_(0.2)
        if self.branches:
            (self.discrete_head if self.continuous_size else self.policy_head).weight.mul_(0.1)
        nn.init.xavier_uniform_(self.value_head.weight)

    def forward(self, obs, mask: Optional[torch.Tensor] = None):
        if hasattr(self, "actor_encoder"):
            actor_in, critic_in = self.actor_encoder(obs), self.critic_encoder(obs)
        else:
            if not isinstance(obs, torch.Tensor):
                obs = torch.cat(list(obs), dim=-1)  # one encoder (the identity) per vector sensor
            actor_in = critic_in = obs
        value = self.value_head(self.critic(critic_in)).squeeze(-1)
        hidden = self.actor(actor_in)
        normal, categoricals = None, []
        if self.continuous_size:
            mu = self.policy_head(hidden)
            normal = Normal(mu, self.log_std.exp().expand_as(mu))
        if self.branches:
            logits = (self.discrete_head if self.continuous_size else self.policy_head)(hidden)
            if mask is not None:
                logits = torch.where(mask > 0, logits, torch.full_like(logits, MASKED_LOGIT))
            start = 0
            for size in self.branches:
                categoricals.append(Categorical(logits=logits[..., start:start + size]))
                start += size
        return (normal, categoricals), value

    def evaluate(self, obs, actions: torch.Tensor, mask: Optional[torch.Tensor] = None):
        """``(log_prob[N, D], entropy[N, E], value[N])`` of stored ``actions``: D columns, one per
        continuous dimension then one per branch; the entropy per continuous dimension for a
        continuous-only action, else one column: the Gaussian's mean plus every branch's."""
        (normal, categoricals), value = self(obs, mask)
        c = self.continuous_size
        if self.continuous:
            return normal.log_prob(actions), normal.entropy(), value
        if c:
            continuous, discrete = actions[..., :c], actions[..., c:].long()
        else:
            continuous, discrete = None, actions.long()
            if len(self.branches) == 1 and discrete.dim() == 1:
                discrete = discrete.unsqueeze(-1)
        columns = [] if normal is None else [normal.log_prob(continuous)]
        columns += [d.log_prob(discrete[..., i]).unsqueeze(-1) for i, d in enumerate(categoricals)]
        entropy = sum(d.entropy() for d in categoricals)
        if normal is not None:
            entropy = entropy + normal.entropy().mean(-1)
        return torch.cat(columns, dim=-1), entropy.unsqueeze(-1), value


__all__ = ["ActorCritic", "MASKED_LOGIT", "body"]
