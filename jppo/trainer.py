"""The fully jitted training loop on JAX-native environments.

One compiled program runs a chunk of ``rollout -> update`` iterations with ``lax.scan`` for
``num_seeds`` independent agents at once (``vmap`` over the seed axis); the host only sees
the loop between chunks, to log, show progress and checkpoint.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from jppo.config import PPOConfig
from jppo.envs.base import Box, Discrete, Environment
from jppo.networks import ActionSpec
from jppo.policy import make_policy
from jppo.rollout import RunnerState, init_runner, make_collect
from jppo.update import TrainState, init_train_state, make_update


@flax.struct.dataclass
class LoopState:
    """The whole state of one agent's training run: resume from it and nothing else is needed."""

    train: TrainState
    runner: RunnerState
    updates: jax.Array  # int32: rollout/update iterations done


def action_spec_of(space) -> ActionSpec:
    if isinstance(space, Discrete):
        return ActionSpec.discrete(space.n)
    if isinstance(space, Box) and len(space.shape) == 1:
        return ActionSpec.continuous(space.shape[0])
    raise ValueError(f"unsupported action space {space!r}; jppo handles Discrete and 1-D Box.")


@dataclasses.dataclass(frozen=True)
class Trainer:
    """Builds and runs the jitted loop for one config, environment and number of environments.

    ``steps_per_update = num_steps * num_envs`` where ``num_steps = ceil(buffer_size /
    num_envs)``: like ML-Agents, an update runs once the buffer holds ``buffer_size`` steps.
    """

    config: PPOConfig
    env: Environment
    env_params: Any
    num_envs: int

    @property
    def num_steps(self) -> int:
        return math.ceil(self.config.buffer_size / self.num_envs)

    @property
    def steps_per_update(self) -> int:
        return self.num_steps * self.num_envs

    @property
    def total_updates(self) -> int:
        """Iterations needed to reach ``max_steps``."""
        return max(1, math.ceil(self.config.max_steps / self.steps_per_update))

    @property
    def action_spec(self) -> ActionSpec:
        return action_spec_of(self.env.action_space(self.env_params))

    @property
    def observation_size(self) -> int:
        return int(self.env.observation_space(self.env_params).shape[0])

    def init(self, key: jax.Array) -> LoopState:
        train_key, env_key = jax.random.split(key)
        train = init_train_state(train_key, self.config, self.observation_size, self.action_spec)
        return LoopState(train, init_runner(self.env, self.env_params, self.num_envs, env_key),
                         jnp.zeros((), jnp.int32))

    def iteration(self):
        """``(loop_state) -> (loop_state, metrics)``: one rollout then one update (not jitted)."""
        policy = make_policy(self.config, self.action_spec)
        collect = make_collect(self.env, self.env_params, policy, self.num_steps,
                               self.config.time_horizon)
        total_adam = self.total_updates * self.config.adam_steps_per_update(self.steps_per_update)
        update = make_update(self.config, self.action_spec, total_adam, jit=False)

        def run_once(state: LoopState):
            runner, rollout, stats = collect(state.train.params, state.train.normalizer, state.runner)
            train, metrics = update(state.train, rollout)
            metrics.update(stats._asdict())
            return LoopState(train, runner, state.updates + 1), metrics

        return run_once

    def chunk(self, length: int):
        """A jitted ``(states, active) -> (states, metrics[length])`` for states with a leading
        seed axis: ``length`` iterations by ``lax.scan``, of which only the first ``active``
        (a traced int, shared by all seeds) run, so a short last chunk needs no recompile."""
        run_once = self.iteration()

        def skip(state):
            shapes = jax.eval_shape(run_once, state)[1]
            return state, jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        def body(state, index, active):
            keep = index < active
            state, metrics = jax.lax.cond(keep, run_once, skip, state)
            return state, dict(metrics, active=keep)

        def run(states, active):
            def one_seed(state):
                return jax.lax.scan(lambda s, i: body(s, i, active), state, jnp.arange(length))
            if states.updates.shape[0] == 1:
                # vmap over a seed axis of 1 still turns every matmul into a batched one, which
                # XLA:CPU runs about 20% slower: one seed runs the plain program.
                squeeze = lambda tree: jax.tree_util.tree_map(lambda x: x[0], tree)
                expand = lambda tree: jax.tree_util.tree_map(lambda x: x[None], tree)
                return expand(one_seed(squeeze(states)))
            return jax.vmap(one_seed)(states)

        return jax.jit(run)

    def init_seeds(self, seed: int, num_seeds: int) -> LoopState:
        """Independent agents with a leading seed axis; seed ``s + i`` for member i."""
        keys = jnp.stack([jax.random.PRNGKey(seed + i) for i in range(num_seeds)])
        return jax.jit(jax.vmap(self.init))(keys)
