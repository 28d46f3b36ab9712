"""python -m jppo.evaluate and jppo.evaluate_run on a trained CartPole: the figures, the seed and
checkpoint choice, the animation (frame count, size, frames that change), and the renderers of
the other built-in scenes; python -m jppo.export --seed / --checkpoint."""
from __future__ import annotations

import jax
import numpy as np
import pytest
import yaml
from PIL import Image

import jppo
from jppo import render
from jppo.envs import make
from jppo.evaluate import main as evaluate_main
from jppo.export import main as export_main
from jppo.jax_loop.evaluate import episode_returns
from jppo.runs import checkpoint
from jppo.train import main as train_main

CARTPOLE = {
    "behaviors": {"CartPole": {
        "trainer_type": "ppo",
        "hyperparameters": {"batch_size": 128, "buffer_size": 512, "learning_rate": 2.5e-4,
                            "beta": 0.01, "beta_schedule": "constant", "epsilon": 0.2,
                            "lambd": 0.95, "num_epoch": 4},
        "network_settings": {"normalize": False, "hidden_units": 64, "num_layers": 2},
        "reward_signals": {"extrinsic": {"gamma": 0.99, "strength": 1.0}},
        "max_steps": 61_440, "time_horizon": 500, "summary_freq": 10_240,
        "checkpoint_interval": 20_480, "keep_checkpoints": 5}},
    "jppo": {"env": "CartPole-v1", "num_envs": 4, "network": "cleanrl", "max_grad_norm": 0.5},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """CartPole trained for 61k steps with 2 seeds (PureJaxRL's settings), checkpoints kept."""
    tmp = tmp_path_factory.mktemp("evaluate")
    (tmp / "cp.yaml").write_text(yaml.safe_dump(CARTPOLE))
    assert train_main([str(tmp / "cp.yaml"), "--results-dir", str(tmp), "--run-id", "cp",
                       "--num-seeds", "2", "--quiet", "--no-export"]) == 0
    return tmp / "cp"


@pytest.mark.slow
def test_evaluate_run_figures_are_those_of_the_episodes_it_plays(run):
    result = jppo.evaluate_run(run, seed=1, episodes=20, max_steps=500, animation=None)
    saved = checkpoint.load_policy(run, 1)
    env = make("CartPole-v1")
    policy = jppo.make_policy(saved.config, saved.action_spec)
    for deterministic, scores in ((False, result.stochastic), (True, result.deterministic)):
        returns, lengths = episode_returns(env, env.default_params, policy, saved.params,
                                           saved.normalizer, jax.random.PRNGKey(0), 20, 500,
                                           deterministic=deterministic)
        returns = np.asarray(returns, np.float64)
        assert (scores.mean, scores.std, scores.min, scores.max, scores.episodes) == pytest.approx(
            (returns.mean(), returns.std(), returns.min(), returns.max(), 20))
        assert scores.mean_length == pytest.approx(np.mean(lengths))  # CartPole: +1 a step
    assert result.steps == 61_440 and result.env == "CartPole-v1" and result.seed == 1
    assert result.deterministic.mean > 150  # trained: a random policy scores about 22
    assert result.animation is None and result.frames == 0


@pytest.mark.slow
def test_cli_prints_both_policies_and_picks_the_seed_and_checkpoint(run, capsys):
    assert evaluate_main([str(run), "--seed", "0", "--checkpoint", "20480", "--episodes", "10",
                          "--no-animation"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{run}: seed 0, checkpoint at step 20,480, CartPole-v1, 10 episodes per policy"
    assert out[1].split() == ["policy", "mean", "std", "min", "max", "length"]
    assert out[2].split()[0] == "stochastic" and out[3].split()[0] == "deterministic"
    figures = [float(v) for v in out[3].split()[1:5]]
    early = jppo.evaluate_run(run, seed=0, checkpoint_step=20_480, episodes=10, animation=None)
    assert figures == pytest.approx([round(v, 2) for v in (early.deterministic.mean,
                                     early.deterministic.std, early.deterministic.min,
                                     early.deterministic.max)], abs=0.006)


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--seed", "2"], "seed 2 is not in run '{run}', which trained seeds 0 to 1."),
    (["--member", "1"], "run '{run}' is not a sweep; pick one of its seeds with --seed."),
    (["--checkpoint", "123"], "run folder '{run}' has no checkpoint at step 123; the kept "
                              "checkpoints are at steps: 20480, 40960, 61440."),
    (["--episodes", "0"], "episodes = 0 is not allowed; episodes must be an integer >= 1."),
])
def test_cli_mistakes_are_one_sentence_and_exit_2(run, capsys, args, message):
    assert evaluate_main([str(run), "--no-animation", *args]) == 2
    assert capsys.readouterr().err == f"jppo: error: {message.format(run=run)}\n"


@pytest.mark.slow
def test_animation_has_the_expected_frames_size_and_motion(run, tmp_path):
    result = jppo.evaluate_run(run, seed=1, episodes=2, animation=tmp_path / "cp.gif", frames=40)
    assert result.animation == tmp_path / "cp.gif" and result.frames == 40
    gif = Image.open(result.animation)
    assert gif.n_frames == 40 and gif.size == (400, 240)  # CartPole's panel: 4.0 x 2.4 in at 100 dpi
    frames = []
    for i in range(gif.n_frames):
        gif.seek(i)
        frames.append(np.asarray(gif.convert("RGB"), np.int16))
    changed = [np.abs(a - b).sum() > 0 for a, b in zip(frames, frames[1:])]
    assert all(changed)  # the cart, pole and caption move every step
    assert Image.open(result.still).size == (400, 240)


def states_of(env, steps: int, action):
    """A short random-key walk of a built-in env, as numpy states (what evaluate_run renders)."""
    obs, state = env.reset(jax.random.PRNGKey(0))
    out = [jax.device_get(state)]
    for i in range(steps):
        obs, state, *_ = env.step(jax.random.PRNGKey(i), state, action, env.default_params)
        out.append(jax.device_get(state))
    return out


@pytest.mark.parametrize("name, action, size", [
    ("3DBall", jax.numpy.array([1.0, -1.0]), (640, 320)),  # from the side and from above
    ("3DBallHard", jax.numpy.array([0.5, 0.5]), (640, 320)),
    ("Pendulum-v1", jax.numpy.array([2.0]), (320, 320)),
    ("Basic", jax.numpy.int32(2), (640, 120)),  # right, one cell a step towards the large goal
])
def test_every_built_in_scene_animates(tmp_path, name, action, size):
    env = make(name)
    states = states_of(env, 6, action)
    path = render.animate(states, env.default_params, render.renderer_for(name), tmp_path / "a.gif")
    gif = Image.open(path)
    assert gif.n_frames == 7 and gif.size == size
    gif.seek(0)
    first = np.asarray(gif.convert("RGB"), np.int16)
    gif.seek(6)
    assert np.abs(np.asarray(gif.convert("RGB"), np.int16) - first).sum() > 0


def test_gridworld_is_drawn_where_its_state_says(tmp_path):
    env = make("GridWorld")
    _, state = env.reset(jax.random.PRNGKey(3))
    state = jax.device_get(state)
    path = render.animate([state], env.default_params, render.renderer_for("GridWorld"),
                          tmp_path / "g.gif")
    image = np.asarray(Image.open(path).convert("RGB"), np.int16)
    assert image.shape == (320, 320, 3)
    # The agent, the plus and the ex are in distinct cells; each colour is on the picture.
    for colour in ("#4c72b0", "#55a868", "#c44e52"):
        rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(image - rgb).sum(axis=-1) < 30).sum() > 100, colour


def test_a_grid_scene_renderer_is_a_few_lines(tmp_path):
    """How Basic or GridWorld plug in: a draw function registered under the env's name."""
    def draw(axes, state, params):
        render.draw_grid(axes[0], state, {0: "white", 1: "black", 2: "green", 3: "blue"})

    render.register("TinyGrid", render.Renderer(draw, ("TinyGrid",)))
    grids = [np.array([[0, 1, 2], [3, 0, 0]]), np.array([[0, 1, 2], [0, 3, 0]])]
    path = render.animate(grids, None, render.renderer_for("TinyGrid"), tmp_path / "g.gif")
    assert Image.open(path).n_frames == 2
    with pytest.raises(ValueError, match="give a .gif or .mp4 path"):
        render.animate(grids, None, render.renderer_for("TinyGrid"), tmp_path / "g.avi")


@pytest.mark.slow
def test_export_picks_the_seed_and_checkpoint(run, tmp_path, capsys):
    assert export_main([str(run), "--seed", "1", "--checkpoint", "40960"]) == 0
    path = run / "CartPole-seed1-40960.onnx"
    assert capsys.readouterr().out == f"wrote {path}\n" and path.is_file()
    assert export_main([str(run), "--seed", "0", "--output", str(tmp_path / "s0.onnx")]) == 0
    assert path.read_bytes() != (tmp_path / "s0.onnx").read_bytes()
    assert export_main([str(run), "--seed", "5"]) == 2
