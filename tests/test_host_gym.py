"""--env gymnasium:<id>: the adapter's mapping of Gymnasium's ends and actions, and the host
driver training CartPole a little, stopping and resuming."""
import json

import numpy as np
import pytest
import yaml

pytest.importorskip("gymnasium")

from jppo.runs import checkpoint  # noqa: E402
from jppo.host_loop.gym_env import GymVecEnv  # noqa: E402
from jppo.train import main  # noqa: E402
from jppo.core.networks import ActionSpec  # noqa: E402
from jppo.host_loop.vec_env import Actions, EnvFault  # noqa: E402


def push(env, action, n=2):
    return env.step([{"CartPole": Actions(np.arange(n), np.full(n, action))}])[0]["CartPole"]


def test_truncation_is_interrupted_and_reports_the_final_observation():
    env = GymVecEnv("CartPole-v1", 2, "CartPole", seed=3, environment_parameters={"max_episode_steps": 4})
    first = env.reset()[0]["CartPole"]
    np.testing.assert_array_equal(first.decision_ids, [0, 1])
    assert first.decision_obs.shape == (2, 4) and len(first.terminal_ids) == 0
    for _ in range(3):
        steps = push(env, 0)
        np.testing.assert_array_equal(steps.decision_rewards, [1.0, 1.0])
        assert len(steps.terminal_ids) == 0
    last_obs = steps.decision_obs
    steps = push(env, 0)  # the 4th step hits the time limit in both
    np.testing.assert_array_equal(steps.terminal_ids, [0, 1])
    np.testing.assert_array_equal(steps.interrupted, [True, True])
    np.testing.assert_array_equal(steps.terminal_rewards, [1.0, 1.0])
    # The final observation follows from the previous one (x moves by tau * x_dot) ...
    np.testing.assert_allclose(steps.terminal_obs[:, 0], last_obs[:, 0] + 0.02 * last_obs[:, 1], rtol=1e-5)
    # ... while the deciding agents with the same ids start over: fresh state, no reward yet.
    np.testing.assert_array_equal(steps.decision_ids, [0, 1])
    assert np.all(np.abs(steps.decision_obs) <= 0.05)
    np.testing.assert_array_equal(steps.decision_rewards, [0.0, 0.0])
    env.close()


def test_termination_is_a_real_end():
    env = GymVecEnv("CartPole-v1", 1, "CartPole", seed=0)
    env.reset()
    for t in range(100):
        steps = push(env, 1, n=1)  # always push right: the pole falls within a few dozen steps
        if len(steps.terminal_ids):
            break
    assert 5 < t < 60
    np.testing.assert_array_equal(steps.interrupted, [False])
    assert abs(steps.terminal_obs[0, 2]) > 0.2094 or abs(steps.terminal_obs[0, 0]) > 2.4
    env.close()


def test_box_actions_are_clamped_scaled_and_mapped_onto_the_bounds():
    env = GymVecEnv("Pendulum-v1", 1, "Pendulum")
    raw = np.array([[9.0], [3.0], [-1.5], [0.3], [-7.0]], np.float32)
    np.testing.assert_allclose(env.to_env_action(raw)[:, 0], [2.0, 2.0, -1.0, 0.2, -2.0], rtol=1e-6)
    assert env.specs["Pendulum"].action_spec() == ActionSpec.continuous(1)
    env.close()


def test_unknown_environment_and_parameters_are_config_faults():
    with pytest.raises(EnvFault, match="Gymnasium cannot make 'NoSuchEnv-v0'"):
        GymVecEnv("NoSuchEnv-v0", 1, "X")
    with pytest.raises(EnvFault, match="does not take these environment parameters"):
        GymVecEnv("CartPole-v1", 1, "X", environment_parameters={"gravity_of_mars": 3.7})


CARTPOLE = {
    "behaviors": {"CartPole": {
        "trainer_type": "ppo",
        "hyperparameters": {"batch_size": 128, "buffer_size": 512, "learning_rate": 1e-3,
                            "beta": 0.01, "epsilon": 0.2, "lambd": 0.95, "num_epoch": 4},
        "network_settings": {"normalize": False, "hidden_units": 64, "num_layers": 2},
        "reward_signals": {"extrinsic": {"gamma": 0.99, "strength": 1.0}},
        "max_steps": 8000, "time_horizon": 128, "summary_freq": 2048, "keep_checkpoints": 2,
        "checkpoint_interval": 4096}},
    "jppo": {"num_envs": 4, "network": "seed", "max_grad_norm": 0.5},
}


def run(tmp_path, *args):
    config = tmp_path / "cartpole.yaml"
    config.write_text(yaml.safe_dump(CARTPOLE))
    return main([str(config), "--env", "gymnasium:CartPole-v1", "--results-dir",
                 str(tmp_path / "results"), "--run-id", "cp", "--quiet", *args])


@pytest.mark.slow
def test_cartpole_learns_a_little_and_resumes(tmp_path):
    assert run(tmp_path, "--stop-after-steps", "3000") == 0
    folder = tmp_path / "results" / "cp"
    info = json.loads((folder / "run_info.json").read_text())
    assert not info["complete"] and 3000 <= info["steps"] < 3004 and info["models"] == []
    meta, _ = checkpoint.read(checkpoint.latest(folder))
    assert meta["steps"] == info["steps"] and meta["driver"] == "host" and meta["action_spec"] == ["discrete", 2]
    assert run(tmp_path, "--resume") == 0
    info = json.loads((folder / "run_info.json").read_text())
    assert info["complete"] and 8000 <= info["steps"] < 8004
    # Random play lasts about 22 steps; 8000 steps of PPO reach about 200 (seed 0).
    assert info["seeds"][0]["best_reward"] > 100
    assert (folder / "CartPole.onnx").exists() and len(checkpoint.list_checkpoints(folder)) == 2


def test_several_seeds_are_refused(tmp_path, capsys):
    assert run(tmp_path, "--num-seeds", "2") == 2
    err = capsys.readouterr().err
    assert err == ("jppo: error: num_seeds = 2 is not supported with --env gymnasium:CartPole-v1; "
                   "a Unity or Gymnasium environment trains one seed per run.\n")
    assert not (tmp_path / "results" / "cp").exists()


def test_unknown_gymnasium_id_is_one_sentence(tmp_path, capsys):
    config = tmp_path / "cartpole.yaml"
    config.write_text(yaml.safe_dump(CARTPOLE))
    assert main([str(config), "--env", "gymnasium:NoSuchEnv-v0", "--results-dir",
                 str(tmp_path / "results"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jppo: error: Gymnasium cannot make 'NoSuchEnv-v0'") and err.count("\n") == 1
