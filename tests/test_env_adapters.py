"""jppo.envs adapters: gymnax 0.0.x (five-value step) and 1.x (six-value step), Brax / MuJoCo
Playground, and duck-typed spaces, each against a stub written here with known answers, plus the
real gymnax and Brax packages where they are installed."""
from __future__ import annotations

import importlib.util
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jppo
from jppo.envs import Box, BraxEnv, Discrete, GymnaxEnv, adapt, as_space
from jppo.jax_loop.make_train import make_trainer
from jppo.jax_loop.rollout import make_collect


# --------------------------------------------------------------------------- gymnax-like stubs

class Space(NamedTuple):  # gymnax's Box: low, high, shape (not jppo's class)
    low: Any
    high: Any
    shape: tuple


class Choices:  # gymnax's Discrete: n, shape ()
    def __init__(self, n):
        self.n, self.shape = n, ()


@flax.struct.dataclass
class Params:  # a flax struct dataclass, as gymnax's EnvParams
    goal: int = 3
    max_steps_in_episode: int = 5


@flax.struct.dataclass
class State:
    pos: jax.Array
    time: jax.Array


class Walk:
    """A gymnax-style walk: obs = [pos, time]; action 1 steps right, 0 stays; reward 1 per step;
    the episode ends at pos == goal (natural) or time == max_steps_in_episode (time limit)."""

    def __init__(self):
        self.default_params = Params()

    def reset_env(self, key, params):
        state = State(jnp.int32(0), jnp.int32(0))
        return self.obs(state), state

    def reset(self, key, params=None):
        return self.reset_env(key, params or self.default_params)

    def obs(self, state):
        return jnp.array([[state.pos, state.time]], jnp.float32)  # 2-D: the adapter flattens

    def transition(self, state, action, params):
        state = State(state.pos + action, state.time + 1)
        return state, state.pos >= params.goal, state.time >= params.max_steps_in_episode

    def observation_space(self, params):
        return Space(0.0, 10.0, (1, 2))

    def action_space(self, params):
        return Choices(2)


class Walk0(Walk):
    """gymnax 0.0.x: ``step`` resets and returns five values, ``done`` includes the time limit."""

    def step_env(self, key, state, action, params):
        state, natural, limit = self.transition(state, action, params)
        return self.obs(state), state, jnp.float32(1.0), natural | limit, {"discount": 1.0}

    def step(self, key, state, action, params=None):
        params = params or self.default_params
        obs, state, reward, done, info = self.step_env(key, state, action, params)
        reset_obs, reset_state = self.reset_env(key, params)
        pick = lambda a, b: jnp.where(done, a, b)
        return (pick(reset_obs, obs), jax.tree_util.tree_map(pick, reset_state, state), reward,
                done, info)


class Walk0NoStepEnv(Walk0):
    """A five-value env that reports its truncation in ``info`` and has no ``step_env``."""

    step_env = None

    def step(self, key, state, action, params=None):
        params = params or self.default_params
        state, natural, limit = self.transition(state, action, params)
        return self.obs(state), state, jnp.float32(1.0), natural | limit, {"truncated": limit & ~natural}

    def __getattribute__(self, name):
        if name == "step_env":
            raise AttributeError(name)
        return super().__getattribute__(name)


class Walk1(Walk):
    """gymnax 1.x: ``step`` resets and returns six values, the true obs in
    ``info["final_observation"]``."""

    def step(self, key, state, action, params=None):
        params = params or self.default_params
        state_st, natural, limit = self.transition(state, action, params)
        obs_st = self.obs(state_st)
        reset_obs, reset_state = self.reset_env(key, params)
        done = natural | limit
        pick = lambda a, b: jnp.where(done, a, b)
        return (pick(reset_obs, obs_st), jax.tree_util.tree_map(pick, reset_state, state_st),
                jnp.float32(1.0), natural, limit,
                {"final_observation": obs_st, "terminated": natural, "truncated": limit})


def walk(env, actions, params=None):
    """Step the adapted env through ``actions`` from reset: a list of (obs, terminated, truncated)."""
    adapted = adapt(env, params)
    obs, state = adapted.reset(jax.random.PRNGKey(0))
    out = []
    for a in actions:
        obs, state, reward, terminated, truncated, _ = adapted.step(jax.random.PRNGKey(1), state,
                                                                    jnp.int32(a))
        assert float(reward) == 1.0
        out.append((np.asarray(obs).tolist(), bool(terminated), bool(truncated)))
    return out


@pytest.mark.parametrize("env", [Walk0(), Walk1(), Walk0NoStepEnv()],
                         ids=["gymnax-0.0.x", "gymnax-1.x", "five-values-info-truncated"])
def test_a_natural_end_is_terminated_with_its_true_final_observation(env):
    steps = walk(env, [1, 1, 1])
    assert isinstance(adapt(env), GymnaxEnv)
    assert steps == [([1.0, 1.0], False, False), ([2.0, 2.0], False, False), ([3.0, 3.0], True, False)]


@pytest.mark.parametrize("env", [Walk0(), Walk1(), Walk0NoStepEnv()],
                         ids=["gymnax-0.0.x", "gymnax-1.x", "five-values-info-truncated"])
def test_a_time_limit_is_truncated_not_terminated(env):
    steps = walk(env, [0, 0, 0, 0, 0])
    assert steps[-1] == ([0.0, 5.0], False, True)  # the final obs, not the reset one
    assert [s[1] or s[2] for s in steps[:-1]] == [False] * 4


def test_gymnax_0_0_x_counts_a_natural_end_on_the_limit_step_as_truncated():
    """Its ``done`` cannot tell them apart; the documented reading is the time limit's."""
    (_, terminated, truncated), = walk(Walk0(), [1], Params(goal=1, max_steps_in_episode=1))
    assert (terminated, truncated) == (False, True)
    (_, terminated, truncated), = walk(Walk1(), [1], Params(goal=1, max_steps_in_episode=1))
    assert (terminated, truncated) == (True, True)  # 1.x reports both; the rollout picks terminated


def test_params_are_overridden_by_field_and_unknown_fields_refused():
    env = GymnaxEnv(Walk1(), goal=2)
    assert env.default_params == Params(goal=2)
    assert walk(env.env, [1, 1], env.default_params)[-1] == ([2.0, 2.0], True, False)
    with pytest.raises(TypeError, match="'gaol' is not one of goal, max_steps_in_episode"):
        GymnaxEnv(Walk1(), gaol=2)


def test_spaces_are_duck_typed_and_observations_flattened():
    env = adapt(Walk1())
    space = env.observation_space()
    assert space.shape == (2,) and np.asarray(space.low).tolist() == [0.0, 0.0]
    assert np.asarray(space.high).tolist() == [10.0, 10.0]
    assert env.action_space() == Discrete(2)
    assert as_space(Space(-1.0, 1.0, (3,))) == Box(-1.0, 1.0, (3,))
    with pytest.raises(TypeError, match="unsupported space"):
        as_space(object())


def test_rollout_bootstraps_the_time_limit_and_not_the_natural_end():
    """Through the JAX loop's collect: a truncation carries V(final obs), a natural end is a done."""
    config = jppo.PPOConfig(batch_size=8, buffer_size=16, time_horizon=100, hidden_units=8,
                            num_layers=1)
    trainer = make_trainer(config, Walk1(), Params(goal=100, max_steps_in_episode=3), num_envs=2)
    state = trainer.init(jax.random.PRNGKey(0))
    policy = jppo.make_policy(config, trainer.action_spec)
    collect = make_collect(trainer.env, trainer.env_params, policy, 8, config.time_horizon)
    _, rollout, stats = collect(state.train.params, state.train.normalizer, state.runner)
    truncations = np.asarray(rollout.truncations)
    assert truncations[:, 0].tolist() == [0, 0, 1, 0, 0, 1, 0, 0]  # every 3rd step: the limit
    assert np.asarray(rollout.dones).sum() == 0
    finals = np.asarray(rollout.final_values)
    assert np.all(finals[truncations > 0] != 0.0) and np.all(finals[truncations == 0] == 0.0)
    assert int(stats.episodes) == 4


# --------------------------------------------------------------------------- Brax-style stub

@flax.struct.dataclass
class BraxState:  # brax.envs.base.State's fields
    pipeline_state: Any
    obs: jax.Array
    reward: jax.Array
    done: jax.Array
    metrics: dict = flax.struct.field(default_factory=dict)
    info: dict = flax.struct.field(default_factory=dict)


class Slide:
    """A Brax-style env: a point at x, action in [-1, 1] moves it; done (float) once |x| >= 1."""

    observation_size = 1
    action_size = 1

    def __init__(self, info: dict | None = None, dict_obs: bool = False):
        self.extra, self.dict_obs = info or {}, dict_obs

    def _obs(self, x):
        o = jnp.reshape(x, (1,))
        return {"state": o, "privileged_state": o * 0} if self.dict_obs else o

    def reset(self, rng):
        x = jnp.float32(0.0)
        return BraxState(x, self._obs(x), jnp.float32(0.0), jnp.float32(0.0), {}, dict(self.extra))

    def step(self, state, action):
        x = state.pipeline_state + 0.5 * action[0]
        return state.replace(pipeline_state=x, obs=self._obs(x), reward=jnp.float32(1.0),
                             done=(jnp.abs(x) >= 1.0).astype(jnp.float32))


class EpisodeWrapped(Slide):
    """Brax's EpisodeWrapper: ``done`` at its limit too, ``info["truncation"]`` = 1 - done there."""

    limit = 2

    def reset(self, rng):
        s = super().reset(rng)
        return s.replace(info={"steps": jnp.int32(0), "truncation": jnp.float32(0.0)})

    def step(self, state, action):
        s = super().step(state, action)
        steps = state.info["steps"] + 1
        at_limit = steps >= self.limit
        return s.replace(done=jnp.where(at_limit, 1.0, s.done),
                         info={"steps": steps, "truncation": jnp.where(at_limit, 1.0 - s.done, 0.0)})


def brax_walk(env, actions):
    obs, state = env.reset(jax.random.PRNGKey(0))
    out = []
    for a in actions:
        obs, state, reward, terminated, truncated, _ = env.step(jax.random.PRNGKey(0), state,
                                                                jnp.array([a], jnp.float32))
        out.append((round(float(obs[0]), 3), bool(terminated), bool(truncated)))
    return out


def test_brax_done_is_a_termination_and_the_adapter_adds_a_time_limit():
    env = adapt(Slide())
    assert isinstance(env, BraxEnv)
    assert env.observation_space() == Box(-jnp.inf, jnp.inf, (1,))
    assert env.action_space() == Box(-1.0, 1.0, (1,))
    assert brax_walk(env, [1, 1]) == [(0.5, False, False), (1.0, True, False)]
    limited = BraxEnv(Slide(), episode_length=2)
    assert brax_walk(limited, [1, -1]) == [(0.5, False, False), (0.0, False, True)]
    assert brax_walk(limited, [1, 1]) == [(0.5, False, False), (1.0, True, False)]  # not both


def test_brax_episode_wrapper_truncation_is_kept_apart_from_done():
    env = BraxEnv(EpisodeWrapped(), episode_length=None)
    assert brax_walk(env, [0.2, 0.2]) == [(0.1, False, False), (0.2, False, True)]
    assert brax_walk(env, [1, 1]) == [(0.5, False, False), (1.0, True, False)]


def test_playground_dict_observations_and_auto_reset_refused():
    assert brax_walk(BraxEnv(Slide(dict_obs=True)), [1]) == [(0.5, False, False)]
    with pytest.raises(ValueError, match="AutoResetWrapper"):
        BraxEnv(Slide(info={"first_obs": jnp.zeros(1)})).reset(jax.random.PRNGKey(0))


def test_brax_style_env_trains_through_make_train():
    """The whole program compiles and runs on the stub: episodes end by termination (|x| >= 1)
    or by the adapter's time limit."""
    config = jppo.PPOConfig(batch_size=32, buffer_size=64, max_steps=256, hidden_units=16,
                            num_layers=1, time_horizon=16)
    train = jppo.make_train(config, BraxEnv(Slide(), episode_length=10), num_envs=4)
    _, metrics = jax.jit(train)(jax.random.PRNGKey(0))
    assert metrics["episodes"].shape == (4,) and float(metrics["episodes"].sum()) > 0
    assert np.all(np.isfinite(np.asarray(metrics["loss"])))


# --------------------------------------------------------------------------- the real packages

needs_gymnax = pytest.mark.skipif(importlib.util.find_spec("gymnax") is None,
                                  reason="gymnax is not installed (pip install 'jppo[gymnax]')")


@needs_gymnax
def test_real_gymnax_acrobot_truncates_at_its_limit():
    env = jppo.envs.make("gymnax:Acrobot-v1", max_steps_in_episode=4)
    assert env.observation_space().shape == (6,) and env.action_space() == Discrete(3)
    obs, state = env.reset(jax.random.PRNGKey(0))
    flags = []
    for _ in range(4):
        obs, state, reward, terminated, truncated, _ = env.step(jax.random.PRNGKey(1), state, 1)
        flags.append((bool(terminated), bool(truncated), float(reward)))
    assert flags == [(False, False, -1.0)] * 3 + [(False, True, -1.0)]
    assert int(state.time) == 4  # the true final state, not the reset one


@needs_gymnax
def test_real_gymnax_continuous_env_maps_actions_onto_its_box():
    env = jppo.envs.make("gymnax:MountainCarContinuous-v0")
    assert env.action_space() == Box(-1.0, 1.0, (1,))
    config = jppo.PPOConfig(batch_size=32, buffer_size=64, max_steps=128, hidden_units=16,
                            num_layers=1)
    _, metrics = jax.jit(jppo.make_train(config, env, num_envs=4))(jax.random.PRNGKey(0))
    assert np.all(np.isfinite(np.asarray(metrics["loss"])))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("brax") is None, reason="brax is not installed")
def test_real_brax_inverted_pendulum_adapts_and_steps():
    from brax import envs as brax_envs  # an optional extra

    env = adapt(brax_envs.get_environment("inverted_pendulum"))
    assert isinstance(env, BraxEnv) and env.action_space() == Box(-1.0, 1.0, (1,))
    obs, state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    for _ in range(3):
        obs, state, reward, terminated, truncated, _ = step(None, state, jnp.zeros(1))
    assert obs.shape == (4,) and float(reward) == 1.0 and not bool(truncated)
    assert int(state.steps) == 3


def test_jppo_environments_with_sensors_branches_and_hybrid_actions_are_taken_as_they_are():
    """A tuple of Boxes (one per sensor), masked branches and hybrid actions are jppo's own
    spaces: ``adapt`` (behind make_train and fit) must not wrap them as gymnax-like."""
    from jppo.envs.reach import Reach
    for env in (jppo.envs.make("GridWorld"), jppo.envs.make("Basic"), jppo.envs.make("3DBallHard"),
                Reach()):
        assert adapt(env) is env
