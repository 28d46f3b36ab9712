"""A plain PyTorch PPO training loop in the style of CleanRL's ppo.py, on jppo's JAX environments.

The baseline for ``bench_e2e_vs_torch.py``: one file, eager PyTorch, a Python loop over
environment steps and a Python loop over minibatches, as CleanRL writes it (rollout buffers
as preallocated ``[num_steps, num_envs, ...]`` tensors, GAE by a backward loop over time,
``torch.randperm`` minibatches, Adam). It runs the same algorithm as ``jppo.jax_loop.trainer.Trainer``
with the same ``PPOConfig``:

- the actor-critic of ``jppo.reference.torch_ppo.ActorCritic`` (same layers and init as jppo's
  network preset) and its running observation normalizer, updated with the rollout's
  observations at the start of each update;
- ``num_steps = ceil(buffer_size / num_envs)`` steps per update; a time limit or a
  ``time_horizon`` cut bootstraps from V(final observation), a real end does not;
- advantages normalized over the whole rollout; the clipped surrogate with the ratio per action
  dimension, the value loss clipped by epsilon, the entropy bonus;
- learning rate, epsilon and beta decayed per Adam step over the whole run's Adam steps;
  optional global-norm gradient clipping.

The environments are jppo's JAX environments, stepped from the host: each step is ONE call of
a jitted, vmapped ``auto_reset_step`` over all envs (actions in as numpy; observations,
rewards, flags and final observations back packed in one numpy array, one transfer), so the
environment dynamics are the same code jppo runs inside its scan. ``HostEnvs`` plays the role of CleanRL's ``gym.vector.SyncVectorEnv``.

    python benchmarks/torch_cleanrl_loop.py configs/CartPole.yaml --updates 10
"""
from __future__ import annotations

import argparse
import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch import nn

from jppo import envs as jenvs
from jppo.core.config import PPOConfig
from jppo.envs.base import Discrete, auto_reset_step
from jppo.reference import torch_ppo as ref
from jppo.reference.transfer import load_flax_params
from jppo.jax_loop.rollout import to_env_action
from jppo.runs.settings import load


class HostEnvs:
    """``num_envs`` copies of a JAX environment, reset on episode end, stepped from the host."""

    def __init__(self, env, params, num_envs: int, seed: int):
        self.num_envs = num_envs
        self.space = env.action_space(params)
        step_one = functools.partial(auto_reset_step, env)
        step_all = jax.vmap(step_one, in_axes=(0, 0, 0, None))

        def step(key, state, action):
            key, sub = jax.random.split(key)
            out = step_all(jax.random.split(sub, num_envs), state,
                           to_env_action(self.space, action), params)
            flags = jnp.stack([out.reward, out.terminated, out.truncated], 1).astype(jnp.float32)
            # One array to the host: one transfer per step instead of five (4x cheaper here).
            return key, out.state, jnp.concatenate([out.obs, flags, out.final_obs], 1)

        def reset(key):
            key, sub = jax.random.split(key)
            obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(sub, num_envs),
                                                                params)
            return key, state, obs

        self._step, self._reset = jax.jit(step), jax.jit(reset)
        self._key, self._state = jax.random.PRNGKey(seed), None

    def reset(self) -> np.ndarray:
        self._key, self._state, obs = self._reset(self._key)
        return np.array(obs)

    def step(self, action: np.ndarray):
        """``(obs, reward, terminated, truncated, final_obs)`` as numpy arrays; ``obs`` is the
        next episode's first observation where one ended, ``final_obs`` the true next one."""
        self._key, self._state, packed = self._step(self._key, self._state, action)
        packed = np.array(packed)  # a writable host copy
        d = (packed.shape[1] - 3) // 2
        return (packed[:, :d], packed[:, d], packed[:, d + 1] > 0.5, packed[:, d + 2] > 0.5,
                packed[:, d + 3:])


class Agent(nn.Module):
    """CleanRL's ``Agent`` interface around the reference actor-critic and normalizer."""

    def __init__(self, config: PPOConfig, obs_size: int, discrete: bool, action_size: int):
        super().__init__()
        self.config, self.discrete = config, discrete
        self.net = ref.ActorCritic(obs_size, "discrete" if discrete else "continuous",
                                   action_size, config.hidden_units, config.num_layers,
                                   config.network)
        self.normalizer = ref.RunningNormalizer(obs_size)

    def _norm(self, obs):
        return self.normalizer(obs, self.config.obs_clip) if self.config.normalize else obs

    def get_value(self, obs):
        return self.net(self._norm(obs))[1]

    def get_action_and_value(self, obs, action=None):
        """``(action, log_prob[N, D], entropy[N, D], value[N])``; D = 1 for discrete."""
        dist, value = self.net(self._norm(obs))
        if action is None:
            action = dist.sample()
        log_prob, entropy = dist.log_prob(action), dist.entropy()
        if self.discrete:
            log_prob, entropy = log_prob.unsqueeze(-1), entropy.unsqueeze(-1)
        return action, log_prob, entropy, value


class TorchPPOLoop:
    """``run(num_updates)`` trains; ``envs`` may be shared between loops (its jit is reused)."""

    def __init__(self, config: PPOConfig, envs: HostEnvs, obs_size: int, seed: int = 0,
                 params=None):
        if config.loss != "clip":
            raise ValueError(f"torch_cleanrl_loop implements loss 'clip' only, not {config.loss!r}")
        torch.manual_seed(seed)
        self.config, self.envs = config, envs
        self.discrete = isinstance(envs.space, Discrete)
        action_size = envs.space.n if self.discrete else envs.space.shape[0]
        self.agent = Agent(config, obs_size, self.discrete, action_size)
        if params is not None:  # start from given Flax parameters (e.g. jppo's initial ones)
            load_flax_params(self.agent.net, params)
        self.optimizer = torch.optim.Adam(self.agent.parameters(), lr=config.learning_rate,
                                          eps=config.adam_eps)
        self.num_envs = envs.num_envs
        self.num_steps = math.ceil(config.buffer_size / self.num_envs)
        self.steps_per_update = self.num_steps * self.num_envs
        self.minibatches = config.minibatches_per_epoch(self.steps_per_update)
        # The schedules' horizon: every Adam step of the full run (max_steps), as jppo's Trainer.
        run_updates = max(1, math.ceil(config.max_steps / self.steps_per_update))
        self.schedules = ref.make_schedules(config, run_updates * config.num_epoch *
                                            self.minibatches)
        self.adam_steps = 0
        self.next_obs = torch.from_numpy(envs.reset())
        self.since_cut = np.zeros(self.num_envs, np.int64)
        self.episode_return = np.zeros(self.num_envs)
        self.returns: list[float] = []  # returns of finished episodes

        T, E = self.num_steps, self.num_envs
        act_shape = () if self.discrete else (action_size,)
        d = 1 if self.discrete else action_size
        self.obs = torch.zeros((T, E, obs_size))
        self.actions = torch.zeros((T, E) + act_shape, dtype=torch.long if self.discrete
                                   else torch.float32)
        self.logprobs = torch.zeros((T, E, d))
        self.values = torch.zeros((T, E))
        self.rewards = torch.zeros((T, E))
        self.terminated = torch.zeros((T, E))
        self.cut = torch.zeros((T, E))
        self.final_obs = torch.zeros((T, E, obs_size))

    def collect(self) -> float:
        """Fill the rollout buffers; returns the seconds spent inside ``envs.step``."""
        env_s = 0.0
        for step in range(self.num_steps):
            self.obs[step] = self.next_obs
            with torch.no_grad():
                action, logprob, _, value = self.agent.get_action_and_value(self.next_obs)
            self.actions[step], self.logprobs[step], self.values[step] = action, logprob, value
            np_action = action.numpy().astype(np.int32 if self.discrete else np.float32)
            start = time.perf_counter()
            obs, reward, terminated, truncated, final_obs = self.envs.step(np_action)
            env_s += time.perf_counter() - start
            self.since_cut += 1
            cut = (truncated | (self.since_cut >= self.config.time_horizon)) & ~terminated
            done = terminated | truncated
            self.since_cut[done | cut] = 0
            self.episode_return += reward
            self.returns.extend(self.episode_return[done].tolist())
            self.episode_return[done] = 0.0
            self.rewards[step] = torch.from_numpy(reward)
            self.terminated[step] = torch.from_numpy(terminated.astype(np.float32))
            self.cut[step] = torch.from_numpy(cut.astype(np.float32))
            self.final_obs[step] = torch.from_numpy(final_obs)
            self.next_obs = torch.from_numpy(obs)
        return env_s

    def update(self):
        config, agent = self.config, self.agent
        gamma, lam = config.gamma, config.lambd
        with torch.no_grad():
            next_value = agent.get_value(self.next_obs)
            # V(final obs) where an episode was cut: one batched pass, as jppo does.
            final_values = torch.where(self.cut > 0, agent.get_value(self.final_obs), 0.0)
        if config.normalize:
            agent.normalizer.update(self.obs)
        # GAE, CleanRL's backward loop; a cut bootstraps from V(final obs) folded into the reward.
        cut = self.cut * (1.0 - self.terminated)
        rewards = self.rewards * config.strength + gamma * cut * final_values
        masks = (1.0 - self.terminated) * (1.0 - cut)
        advantages = torch.zeros_like(rewards)
        lastgaelam = torch.zeros(self.num_envs)
        for t in reversed(range(self.num_steps)):
            nextvalues = next_value if t == self.num_steps - 1 else self.values[t + 1]
            delta = rewards[t] + gamma * nextvalues * masks[t] - self.values[t]
            advantages[t] = lastgaelam = delta + gamma * lam * masks[t] * lastgaelam
        returns = advantages + self.values

        n = self.steps_per_update
        b_obs = self.obs.reshape(n, -1)
        b_actions = self.actions.reshape((n,) + self.actions.shape[2:])
        b_logprobs = self.logprobs.reshape(n, -1)
        b_values, b_returns = self.values.reshape(n), returns.reshape(n)
        b_adv = advantages.reshape(n)
        b_adv = (b_adv - b_adv.mean()) / (b_adv.std(unbiased=False) + config.advantage_eps)

        bs = config.batch_size
        for _ in range(config.num_epoch):
            b_inds = torch.randperm(n)
            for start in range(0, self.minibatches * bs, bs):
                mb = b_inds[start:start + bs]
                eps = self.schedules.epsilon(self.adam_steps)
                beta = self.schedules.beta(self.adam_steps)
                _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb],
                                                                              b_actions[mb])
                ratio = (newlogprob - b_logprobs[mb]).exp()
                adv = b_adv[mb].unsqueeze(-1)
                pg_loss = -torch.min(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv).mean()
                v_loss = (newvalue - b_returns[mb]) ** 2
                if config.clip_value:
                    v_clipped = b_values[mb] + (newvalue - b_values[mb]).clamp(-eps, eps)
                    v_loss = torch.max(v_loss, (v_clipped - b_returns[mb]) ** 2)
                loss = pg_loss + config.value_coef * v_loss.mean() - beta * entropy.mean()

                self.optimizer.param_groups[0]["lr"] = self.schedules.learning_rate(self.adam_steps)
                self.optimizer.zero_grad()
                loss.backward()
                if config.max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(agent.parameters(), config.max_grad_norm)
                self.optimizer.step()
                self.adam_steps += 1

    def run(self, num_updates: int) -> dict:
        """``num_updates`` rollout + update iterations; wall times split by phase."""
        env_s = collect_s = update_s = 0.0
        for _ in range(num_updates):
            start = time.perf_counter()
            env_s += self.collect()
            collect_s += time.perf_counter() - start
            start = time.perf_counter()
            self.update()
            update_s += time.perf_counter() - start
        return {"steps": num_updates * self.steps_per_update, "seconds": collect_s + update_s,
                "collect_s": collect_s, "env_step_s": env_s, "update_s": update_s}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default="configs/CartPole.yaml")
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    settings = load(args.config)
    env = jenvs.make(settings.env)
    envs = HostEnvs(env, env.default_params, settings.num_envs or 1, args.seed)
    loop = TorchPPOLoop(settings.ppo, envs, env.observation_space(env.default_params).shape[0],
                        args.seed)
    for update in range(1, args.updates + 1):
        timing = loop.run(1)
        recent = loop.returns[-20:]
        print(f"update {update}: {timing['steps'] / timing['seconds']:.0f} steps/s, "
              f"mean return of the last {len(recent)} episodes "
              f"{np.mean(recent) if recent else float('nan'):.2f}")


if __name__ == "__main__":
    main()
