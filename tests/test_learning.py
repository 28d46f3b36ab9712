"""Learning with fixed seeds, short enough for CI: the shipped configs solve their environments.

Each test trains with one compiled program, then scores the final (stochastic) policy on fresh
episodes, as ML-Agents' reported rewards are stochastic too.
"""
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jppo
from jppo.jax_loop.evaluate import episode_returns
from jppo.jax_loop.setup import make_env
from jppo.runs.settings import load
from jppo.jax_loop.trainer import Trainer

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"


def train_and_score(config_name: str, episodes: int, max_episode_steps: int, seed: int = 0, **changes):
    settings = load(CONFIGS / config_name)
    config = settings.ppo.replace(**changes)
    env = make_env(settings.env, {})
    trainer = Trainer(config, env, env.default_params, settings.num_envs)
    states = trainer.init_seeds(seed, 1)
    states, metrics = trainer.chunk(trainer.total_iterations)(states, jnp.int32(trainer.total_iterations))
    train = jax.tree_util.tree_map(lambda x: x[0], states.train)
    returns, _ = episode_returns(env, env.default_params, jppo.make_policy(config, trainer.action_spec),
                                 train.params, train.normalizer, jax.random.PRNGKey(1234), episodes,
                                 max_episode_steps)
    return float(np.mean(returns)), int(states.updates[0]) * trainer.steps_per_update


@pytest.mark.slow
def test_cartpole_reaches_475():
    score, steps = train_and_score("CartPole.yaml", episodes=32, max_episode_steps=500)
    assert steps >= 500_000
    assert score >= 475, score


@pytest.mark.slow
def test_pendulum_reaches_minus_250():
    score, _ = train_and_score("Pendulum.yaml", episodes=32, max_episode_steps=200, max_steps=300_000)
    assert score >= -250, score


@pytest.mark.slow
def test_3dball_reaches_90():
    score, _ = train_and_score("3DBall.yaml", episodes=24, max_episode_steps=1000, max_steps=240_000)
    assert score >= 90, score
