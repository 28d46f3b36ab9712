"""The public entry points for a user's own environment: ``jppo.make_train`` (one jittable,
vmappable ``train(key)``) and ``jppo.fit`` (the CLI's run folder, checkpoints and resume), on
an environment written here that does not subclass jppo's base and has a known best return."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jppo
from jppo.envs import Box, Discrete
from jppo.errors import UserError
from jppo.jax_loop.evaluate import episode_returns
from jppo.jax_loop.make_train import make_trainer
from jppo.runs.checkpoint import load_policy

BEST = 1.0 - 0.01 * 4  # five steps right: four step costs, then the goal's 1.0


class Corridor:
    """Positions 0..5; action 1 steps right, 0 left; -0.01 a step, +1.0 on reaching 5, where
    the episode ends. A plain class: gymnax-like methods, jppo's spaces, no jppo base."""

    name = "Corridor"
    default_params = None

    def reset(self, key, params=None):
        return jnp.zeros(1), jnp.int32(0)

    def step(self, key, pos, action, params=None):
        pos = jnp.clip(pos + 2 * action - 1, 0, 5)
        done = pos == 5
        return (jnp.array([pos / 5.0]), pos, jnp.where(done, 1.0, -0.01), done, jnp.bool_(False),
                {})

    def observation_space(self, params=None):
        return Box(0.0, 1.0, (1,))

    def action_space(self, params=None):
        return Discrete(2)


CONFIG = jppo.PPOConfig(batch_size=64, buffer_size=256, max_steps=12_800, time_horizon=32,
                        learning_rate=1e-3, network="cleanrl", hidden_units=32, num_layers=2)


def greedy_return(config, agent, seed_index=None):
    """The deterministic policy's mean return over 8 episodes of the trained agent."""
    if seed_index is not None:
        agent = jax.tree_util.tree_map(lambda x: x[seed_index], agent)
    trainer = make_trainer(config, Corridor(), num_envs=1)
    policy = jppo.make_policy(config, trainer.action_spec)
    returns, lengths = episode_returns(trainer.env, None, policy, agent.params, agent.normalizer,
                                       jax.random.PRNGKey(5), 8, 50, deterministic=True)
    return float(np.mean(returns)), float(np.mean(lengths))


def test_a_user_environment_learns_its_best_return_through_make_train():
    train = jppo.make_train(CONFIG, Corridor(), num_envs=8, num_seeds=2)
    state, metrics = jax.jit(train)(jax.random.PRNGKey(0))
    assert metrics["loss"].shape == (2, 50) and int(metrics["steps"][0, -1]) == 12_800
    assert int(state.updates[0]) == 50
    for seed in range(2):
        assert greedy_return(CONFIG, state.train, seed) == pytest.approx((BEST, 5.0), abs=1e-5)
        # the training curve ends at the best return too (a few sampled detours allowed)
        assert float(metrics["episode_return"][seed, -1]) > BEST - 0.03


def test_seeds_and_keys_vmap_alike():
    """num_seeds=2 from a key is a vmap of train over that key's split."""
    small = CONFIG.replace(max_steps=512)
    one = jppo.make_train(small, Corridor(), num_envs=4)
    two = jppo.make_train(small, Corridor(), num_envs=4, num_seeds=2)
    key = jax.random.PRNGKey(3)
    a, _ = jax.jit(two)(key)
    b, _ = jax.jit(jax.vmap(one))(jax.random.split(key, 2))
    for x, y in zip(jax.tree_util.tree_leaves(a.train.params), jax.tree_util.tree_leaves(b.train.params)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_sweepable_hyperparameters_vmap_and_each_member_equals_its_own_run():
    small = CONFIG.replace(max_steps=512)
    train = jppo.make_train(small, Corridor(), num_envs=4)
    key = jax.random.PRNGKey(1)
    rates = jnp.array([1e-4, 3e-3])
    swept, metrics = jax.jit(jax.vmap(train, in_axes=(None, 0)))(key, {"learning_rate": rates})
    lr = np.asarray(metrics["learning_rate"][:, 0])
    assert lr[1] / lr[0] == pytest.approx(30.0, rel=1e-5)  # same decay, each member its own rate
    alone, _ = jax.jit(train)(key, {"learning_rate": 3e-3})
    for x, y in zip(jax.tree_util.tree_leaves(alone.train.params),
                    jax.tree_util.tree_leaves(swept.train.params)):
        np.testing.assert_allclose(x, y[1], rtol=1e-4, atol=1e-6)


def test_make_train_refuses_what_it_cannot_do():
    with pytest.raises(jppo.ConfigError, match="num_envs = 0 is not allowed"):
        jppo.make_train(CONFIG, Corridor(), num_envs=0)
    train = jppo.make_train(CONFIG.replace(max_steps=256), Corridor(), num_envs=4)
    with pytest.raises(jppo.ConfigError, match="'batch_size' cannot be passed to train"):
        train(jax.random.PRNGKey(0), {"batch_size": 32.0})
    with pytest.raises(jppo.ConfigError, match="learning_rate = -1.0 is not allowed"):
        train(jax.random.PRNGKey(0), {"learning_rate": -1.0})
    with pytest.raises(TypeError, match="not an environment jppo can drive"):
        jppo.make_train(CONFIG, object(), num_envs=1)


@pytest.mark.slow
def test_fit_writes_the_cli_run_folder_and_resumes(tmp_path):
    """Stopped and resumed through fit (the CLI's driver, whose exact resume the CLI tests
    prove); a resume under another environment name is refused."""
    config = CONFIG.replace(max_steps=2048)
    common = dict(results_dir=tmp_path, num_envs=8, quiet=True, summary_freq=512,
                  checkpoint_interval=512)
    first = jppo.fit(Corridor(), config, run_id="split", stop_after_steps=1024, **common)
    assert first["steps"] == 1024 and not first["complete"]
    resumed = jppo.fit(Corridor(), config, run_id="split", resume=True, **common)
    assert resumed["steps"] == 2048 and resumed["complete"] and resumed["env"] == "Corridor"
    run = tmp_path / "split"
    for name in ("progress.csv", "configuration.yaml", "learning_curve.png", "run_info.json",
                 "Corridor.onnx"):
        assert (run / name).is_file(), name
    steps = [int(line.split(",")[0]) for line in (run / "progress.csv").read_text().splitlines()[1:]]
    assert steps == [512, 1024, 1536, 2048]
    assert load_policy(run).steps == 2048
    with pytest.raises(UserError, match="env = 'Corridor', this command asks for 'Maze'"):
        jppo.fit(Corridor(), config, run_id="split", resume=True, name="Maze", **common)
    with pytest.raises(UserError, match="unknown setting 'summary_frequency'"):
        jppo.fit(Corridor(), config, run_id="x", summary_frequency=3, **common)
