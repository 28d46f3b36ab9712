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

from jppo import distributed
from jppo.core.config import PPOConfig
from jppo.envs.base import Box, Discrete, Environment, Hybrid, MultiDiscrete
from jppo.core.networks import ActionSpec
from jppo.core.policy import make_policy
from jppo.core.update import TrainState, init_train_state, make_update
from jppo.jax_loop import sharding
from jppo.jax_loop.rollout import RunnerState, init_runner, make_collect, observation_spec


@flax.struct.dataclass
class LoopState:
    """The whole state of one agent's training run: resume from it and nothing else is needed."""

    train: TrainState
    runner: RunnerState
    updates: jax.Array  # int32: rollout/update iterations done
    # The current lessons' samplers (jppo.jax_loop.env_sampling.SamplerTable) when environment
    # parameters are sampled, else None (and the state is what it was before samplers existed).
    samplers: Any = None


def action_spec_of(space) -> ActionSpec:
    if isinstance(space, Discrete):
        return ActionSpec.discrete(space.n)
    if isinstance(space, MultiDiscrete):
        return ActionSpec.discrete(tuple(space.nvec))
    if isinstance(space, Box) and len(space.shape) == 1:
        return ActionSpec.continuous(space.shape[0])
    if isinstance(space, Hybrid) and len(space.continuous.shape) == 1:
        return ActionSpec.hybrid(space.continuous.shape[0], space.discrete.nvec)
    raise ValueError(f"unsupported action space {space!r}; jppo handles Discrete, MultiDiscrete, "
                     "1-D Box and Hybrid.")


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
    # A jax.sharding.Mesh whose one axis splits the environments (jppo.distributed.make_mesh);
    # None: everything on one device, the plain program.
    mesh: Any = None
    # Environment parameters drawn per episode (names of env_params' fields) and the first
    # lessons' SamplerTable (host arrays); the host may swap the state's table between chunks.
    sampled: tuple = ()
    table: Any = None

    @property
    def num_steps(self) -> int:
        return math.ceil(self.config.buffer_size / self.num_envs)

    @property
    def steps_per_update(self) -> int:
        return self.num_steps * self.num_envs

    @property
    def total_iterations(self) -> int:
        """Rollout-and-update iterations needed to reach ``max_steps``."""
        return max(1, math.ceil(self.config.max_steps / self.steps_per_update))

    @property
    def action_spec(self) -> ActionSpec:
        return action_spec_of(self.env.action_space(self.env_params))

    @property
    def observation_size(self):
        """An int (one observation array), or one shape per sensor."""
        return observation_spec(self.env, self.env_params)

    def init(self, key: jax.Array) -> LoopState:
        train_key, env_key = jax.random.split(key)
        train = init_train_state(train_key, self.config, self.observation_size, self.action_spec)
        table = jax.tree_util.tree_map(jnp.asarray, self.table) if self.sampled else None
        runner = init_runner(self.env, self.env_params, self.num_envs, env_key, self.sampled, table)
        return LoopState(train, runner, jnp.zeros((), jnp.int32), table)

    def iteration(self, config: PPOConfig | None = None, learn: bool = True):
        """``(loop_state) -> (loop_state, metrics)``: one rollout then one update (not jitted).

        ``config`` (default: the trainer's) may hold traced ``SWEEPABLE`` floats: a sweep
        passes each member's values as arguments of the compiled program. ``learn=False``
        (``--inference``): the rollout only, the train state left as it is (the normalizer
        too, as ML-Agents' inference leaves it), metrics the episodes' only."""
        config = self.config if config is None else config
        policy = make_policy(config, self.action_spec, self.observation_size)
        collect = make_collect(self.env, self.env_params, policy, self.num_steps,
                               config.time_horizon, self.sampled)
        total_adam = self.total_iterations * config.adam_steps_per_update(self.steps_per_update)
        if self.mesh is None:
            update = make_update(config, self.action_spec, total_adam, jit=False)
        else:
            update = sharding.make_data_parallel_update(config, self.action_spec, total_adam,
                                                        self.mesh)

        def run_once(state: LoopState):
            runner, rollout, stats = collect(state.train.params, state.train.normalizer, state.runner,
                                             state.samplers)
            if not learn:
                return (LoopState(state.train, runner, state.updates + 1, state.samplers),
                        dict(stats._asdict()))
            train, metrics = update(state.train, rollout)
            metrics.update(stats._asdict())
            return LoopState(train, runner, state.updates + 1, state.samplers), metrics

        return run_once

    def chunk(self, length: int, sweep: tuple[str, ...] = (), learn: bool = True):
        """A jitted ``(states, active) -> (states, metrics[length])`` for states with a leading
        seed axis: ``length`` iterations by ``lax.scan``, of which only the first ``active``
        (a traced int, shared by all seeds) run, so a short last chunk needs no recompile.

        With ``sweep`` (names in ``config.SWEEPABLE``) the function takes a third argument,
        ``{name: float32[members]}``: member i trains with ``config.replace(name=values[i])``,
        every member in the one program (vmapped, the values traced). With a ``mesh`` the
        program is laid out over it: states as ``jppo.jax_loop.sharding.state_shardings``, the rest
        replicated."""
        sweep = tuple(sweep)

        def skip_for(run_once):
            def skip(state):
                shapes = jax.eval_shape(run_once, state)[1]
                return state, jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
            return skip

        def scan_for(run_once, active):
            skip = skip_for(run_once)

            def body(state, index):
                keep = index < active
                state, metrics = jax.lax.cond(keep, run_once, skip, state)
                return state, dict(metrics, active=keep)

            return lambda state: jax.lax.scan(body, state, jnp.arange(length))

        squeeze = lambda tree: jax.tree_util.tree_map(lambda x: x[0], tree)
        expand = lambda tree: jax.tree_util.tree_map(lambda x: x[None], tree)

        if not sweep:
            run_once = self.iteration(learn=learn)

            def run(states, active):
                one_seed = scan_for(run_once, active)
                if states.updates.shape[0] == 1:
                    # vmap over a seed axis of 1 still turns every matmul into a batched one,
                    # which XLA:CPU runs slower: one seed runs the plain program.
                    return expand(one_seed(squeeze(states)))
                return jax.vmap(one_seed)(states)
        else:
            def run(states, active, values):
                def one_member(state, member_values):
                    config = self.config.replace(**member_values)
                    return scan_for(self.iteration(config), active)(state)
                if states.updates.shape[0] == 1:
                    return expand(one_member(squeeze(states), squeeze(values)))
                return jax.vmap(one_member)(states, values)

        if self.mesh is None:
            return jax.jit(run)
        key = jax.eval_shape(lambda: jax.random.PRNGKey(0))
        template = jax.eval_shape(jax.vmap(self.init),
                                  jax.ShapeDtypeStruct((1,) + key.shape, key.dtype))
        states_sharding = sharding.state_shardings(self.mesh, template)
        rep = distributed.replicated(self.mesh)
        in_shardings = (states_sharding, rep) + ((rep,) if sweep else ())
        return jax.jit(run, in_shardings=in_shardings, out_shardings=(states_sharding, rep))

    def init_seeds(self, seed: int, num_seeds: int) -> LoopState:
        """Independent agents with a leading seed axis; seed ``s + i`` for member i."""
        keys = jnp.stack([jax.random.PRNGKey(seed + i) for i in range(num_seeds)])
        return jax.jit(jax.vmap(self.init))(keys)

    def init_members(self, seeds: list[int], kl_coef=None) -> LoopState:
        """Agents with a leading member axis, member i from seed ``seeds[i]`` (a sweep repeats
        each seed once per hyperparameter setting: same seed, same initial state). ``kl_coef``
        (one value per member) replaces the configured starting coefficient when swept."""
        keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
        states = jax.jit(jax.vmap(self.init))(keys)
        if kl_coef is not None:
            train = states.train.replace(kl_coef=jnp.asarray(kl_coef, jnp.float32))
            states = states.replace(train=train)
        return states
