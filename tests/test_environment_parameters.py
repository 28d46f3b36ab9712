"""ML-Agents' environment_parameters: samplers and curricula read as release 19 reads them,
drawn per episode inside the jitted loop, lessons advanced on their completion criteria."""
from __future__ import annotations

import csv
import math
import threading
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from mlagents_envs.side_channel.environment_parameters_channel import EnvironmentParametersChannel

import jppo
from jppo.core.policy import make_policy
from jppo.envs.base import Box, Discrete, Environment
from jppo.errors import UserError
from jppo.host_loop.unity_env import UnityVecEnv
from jppo.jax_loop.env_sampling import draw, make_table
from jppo.jax_loop.rollout import make_collect
from jppo.jax_loop.setup import check_sampled, make_env
from jppo.jax_loop.trainer import Trainer
from jppo.runs import checkpoint, environment_parameters as ep
from jppo.runs.settings import parse
from jppo.standin.server import StandIn, free_port
from jppo.train import main

from event_files import scalars  # noqa: E402 (tests/)

# ML-Agents' config/ppo/3DBall_randomize.yaml (release 19): its environment_parameters.
RANDOMIZE = {
    "mass": {"sampler_type": "uniform", "sampler_parameters": {"min_value": 0.5, "max_value": 10}},
    "scale": {"sampler_type": "uniform", "sampler_parameters": {"min_value": 0.75, "max_value": 3}},
}


def test_3dball_randomize_reads_as_ml_agents_with_seeds_from_the_run_seed():
    params = ep.plan(ep.normalize(RANDOMIZE), run_seed=7)
    assert [(p.name, p.lessons[0].value) for p in params] == [
        ("mass", ep.Sampler("uniform", (0.5, 10.0), 7)),
        ("scale", ep.Sampler("uniform", (0.75, 3.0), 8))]


def test_seed_offsets_count_every_unseeded_lesson_constants_included():
    # EnvironmentParameterManager._set_sampler_seeds: run seed + offset, in file order, over
    # every lesson value whose seed is -1 (ConstantSettings has a seed too).
    value = {
        "a": 1.5,
        "b": {"sampler_type": "gaussian", "sampler_parameters": {"mean": 2, "st_dev": 0.5, "seed": 99}},
        "c": {"curriculum": [
            {"name": "easy", "value": 3, "completion_criteria":
                {"behavior": "B", "measure": "progress", "threshold": 0.5}},
            {"name": "hard", "value": {"sampler_type": "multirangeuniform",
                                       "sampler_parameters": {"intervals": [[1, 2], [4, 5]]}}}]},
    }
    a, b, c = ep.plan(ep.normalize(value), run_seed=10)
    assert a.lessons[0].value == ep.Sampler("constant", (1.5,), 10)
    assert b.lessons[0].value == ep.Sampler("gaussian", (2.0, 0.5), 99)
    assert [l.value.seed for l in c.lessons] == [11, 12]
    assert c.lessons[0].criteria == ep.Criteria("B", "progress", 0, True, 0.5, False)
    assert c.lessons[1].value.intervals == [(1.0, 2.0), (4.0, 5.0)]
    # Plain data for the run's configuration.yaml: a constant stays a number, defaults filled.
    normal = ep.normalize({"u": {"sampler_type": "uniform", "sampler_parameters": {}}, "k": 2})
    assert normal == {"u": {"sampler_type": "uniform",
                            "sampler_parameters": {"min_value": 0.0, "max_value": 1.0}}, "k": 2.0}


@pytest.mark.parametrize("value, message", [
    ({"m": {"sampler_type": "uniform", "sampler_parameters": {"min_value": 3, "max_value": 1}}},
     "environment_parameters.m.sampler_parameters: min_value 3 is greater than max_value 1."),
    ({"m": {"sampler_type": "beta", "sampler_parameters": {}}},
     "environment_parameters.m.sampler_type = 'beta' is not allowed; use one of uniform, "),
    ({"m": {"sampler_type": "uniform"}}, "environment_parameters.m has no sampler_parameters; "),
    ({"m": {"sampler_type": "gaussian", "sampler_parameters": {"mean": 1, "stdev": 2}}},
     "unknown key 'stdev' in environment_parameters.m.sampler_parameters; allowed keys are: "
     "mean, seed, st_dev."),
    ({"m": {"curriculum": [{"name": "a", "value": 1}, {"name": "b", "value": 2}]}},
     "environment_parameters.m.curriculum[0] (a) has no completion_criteria; "),
    ({"m": {"curriculum": [{"name": "a", "value": 1, "completion_criteria": {
        "behavior": "B", "measure": "progress", "threshold": 1.5}}, {"name": "b", "value": 2}]}},
     "environment_parameters.m.curriculum[0].completion_criteria.threshold = 1.5 is not allowed; "),
    ({"m": True}, "environment_parameters.m = True has the wrong type; it must be a number."),
])
def test_a_mistake_is_one_sentence(value, message):
    with pytest.raises(UserError) as err:
        parse({"behaviors": {"B": {}}, "environment_parameters": value})
    assert str(err.value).startswith(message)


def test_completion_criteria_as_ml_agents_need_increment():
    reward = ep.Criteria("B", "reward", min_lesson_length=2, threshold=0.5)
    assert ep.need_increment(reward, 0.0, [0.9], 0.0) == (False, 0.0)  # too few episodes
    # Smoothed: 0.25 * previous + 0.75 * mean.
    assert ep.need_increment(reward, 0.0, [0.6, 0.6], 0.0) == (False, pytest.approx(0.45))
    assert ep.need_increment(reward, 0.0, [0.6, 0.6], 0.45) == (True, pytest.approx(0.5625))
    raw = ep.Criteria("B", "reward", signal_smoothing=False, threshold=0.5)
    assert ep.need_increment(raw, 0.0, [0.6], 0.0) == (True, 0.0)
    progress = ep.Criteria("B", "progress", threshold=0.5)
    assert ep.need_increment(progress, 0.5, [], 0.0) == (False, 0.0)  # strictly above
    assert ep.need_increment(progress, 0.51, [], 0.0) == (True, 0.0)


# ---------------------------------------------------------------- drawn in the jitted loop


class ProbeParams(NamedTuple):
    p: float = 0.0
    length: int = 3


class Probe(Environment):
    """Episodes of ``length`` steps; the observation shows the ``p`` its reset saw and the
    step count, the reward is the ``p`` its step sees."""

    name = "Probe"
    default_params = ProbeParams()

    def reset(self, key, params=None):
        state = (jnp.asarray(params.p, jnp.float32), jnp.zeros((), jnp.int32))
        return self._obs(state), state

    def step(self, key, state, action, params=None):
        state = (state[0], state[1] + 1)
        done = state[1] >= params.length
        return (self._obs(state), state, jnp.asarray(params.p, jnp.float32), done,
                jnp.zeros((), bool), {})

    @staticmethod
    def _obs(state):
        return jnp.stack([state[0], state[1].astype(jnp.float32)])

    def observation_space(self, params=None):
        return Box(-jnp.inf, jnp.inf, (2,))

    def action_space(self, params=None):
        return Discrete(2)


def test_multirange_draws_cover_the_intervals_in_proportion_to_their_widths():
    table = make_table([("multirangeuniform", (0.0, 1.0, 5.0, 7.0)), ("gaussian", (1.0, 0.1)),
                        ("constant", (3.0,))], [-math.inf] * 3, 2)
    v = np.asarray(jax.vmap(draw, (None, 0))(table, jax.random.split(jax.random.PRNGKey(0), 20000)))
    inside = ((v[:, 0] >= 0) & (v[:, 0] <= 1)) | ((v[:, 0] >= 5) & (v[:, 0] <= 7))
    assert inside.all() and abs((v[:, 0] >= 5).mean() - 2 / 3) < 0.015
    assert abs(v[:, 1].mean() - 1.0) < 0.005 and abs(v[:, 1].std() - 0.1) < 0.005
    assert (v[:, 2] == 3.0).all()


def test_each_copy_draws_at_its_reset_and_keeps_the_value_for_the_episode():
    env = Probe()
    config = jppo.PPOConfig(buffer_size=48, batch_size=16, max_steps=48)
    table = make_table([("multirangeuniform", (1.0, 2.0, 4.0, 5.0))], [-math.inf], 2)
    trainer = Trainer(config, env, env.default_params, 4, sampled=("p",), table=table)
    state = trainer.init(jax.random.PRNGKey(0))
    collect = make_collect(env, env.default_params, make_policy(config, trainer.action_spec), 12,
                           1000, ("p",))
    _, rollout, _ = jax.jit(collect)(state.train.params, state.train.normalizer, state.runner,
                                     state.samplers)
    p, t = np.asarray(rollout.obs[..., 0]), np.asarray(rollout.obs[..., 1])
    # The step sees the value the reset saw; every value lies in [1, 2] or [4, 5].
    np.testing.assert_array_equal(np.asarray(rollout.rewards), p)
    assert (((p >= 1) & (p <= 2)) | ((p >= 4) & (p <= 5))).all()
    episodes = p.T.reshape(4, 4, 3)  # [env, episode, step]: 3-step episodes from t = 0
    assert (t.T.reshape(4, 4, 3) == [0, 1, 2]).all()
    assert (episodes == episodes[..., :1]).all()  # one value per episode
    assert len(np.unique(episodes[..., 0])) == 16  # a fresh draw per episode and copy


def test_sampler_bounds_are_checked_like_constants():
    env = make_env("3DBall", {})
    with pytest.raises(UserError, match=r"environment_parameters.scale = -1 is not allowed for "
                                        r"3DBall; scale must be >= 0"):
        check_sampled("3DBall", env, {"scale": [("uniform", (-1.0, 3.0))]})
    with pytest.raises(UserError, match="a gaussian with mean 1 and st_dev 0.5 draws values below 0"):
        check_sampled("3DBall", env, {"mass": [("gaussian", (1.0, 0.5))]})
    with pytest.raises(UserError, match="max_physics_steps cannot be sampled for 3DBall"):
        check_sampled("3DBall", env, {"max_physics_steps": [("uniform", (10.0, 20.0))]})
    with pytest.raises(UserError, match="environment parameter 'size' is not one of 3DBall's"):
        check_sampled("3DBall", env, {"size": [("uniform", (1.0, 2.0))]})
    assert check_sampled("3DBall", env, {"gravity": [("gaussian", (9.81, 1.0))]}) == [0.0]


def test_a_curriculum_advances_on_reward_then_progress_without_recompiling(tmp_path):
    lesson = lambda name, value, criteria=None: {"name": name, "value": value, **(
        {"completion_criteria": criteria} if criteria else {})}
    settings = parse({
        "behaviors": {"Probe": {"hyperparameters": {"buffer_size": 48, "batch_size": 16},
                                "max_steps": 480, "summary_freq": 48, "time_horizon": 64}},
        "environment_parameters": {"p": {"curriculum": [
            lesson("one", 1.0, {"behavior": "Probe", "measure": "reward", "threshold": 2.0,
                                "min_lesson_length": 4, "signal_smoothing": False}),
            lesson("ten", 10.0, {"behavior": "Probe", "measure": "progress", "threshold": 0.5,
                                 "require_reset": True}),
            lesson("twenty", {"sampler_type": "uniform",
                              "sampler_parameters": {"min_value": 20, "max_value": 21}})]}},
        "jppo": {"num_envs": 4, "export_onnx": False}})
    # Stopped after 3 summaries and resumed: the checkpoint carries the lessons.
    run = lambda **kw: jppo.fit(Probe(), settings, run_id="curriculum", results_dir=tmp_path,
                                quiet=True, **kw)
    assert run(stop_after_steps=144)["steps"] == 144
    assert run(resume=True)["steps"] == 480
    rows = list(csv.DictReader(open(tmp_path / "curriculum" / "progress.csv")))
    rewards = [float(r["cumulative_reward"]) for r in rows]
    # Chunk 1 (lesson one): 3-step episodes of reward 1. Its mean return 3 > 2 moves to lesson
    # ten; progress passes 0.5 after step 288 (6 x 48; 240 / 480 is not above 0.5). A new
    # lesson reaches a copy at its next reset (as Unity's agents read parameters in
    # OnEpisodeBegin): the first of a chunk's 4 episodes per copy began under the old lesson;
    # lesson ten's require_reset starts every copy's episode afresh under lesson twenty.
    assert rewards[:6] == [3.0, (4 * 3 + 12 * 30) / 16, 30.0, 30.0, 30.0, 30.0]
    assert all(60.0 <= r <= 63.0 for r in rewards[6:]) and len(rewards) == 10
    lessons = [v for _, v in scalars(tmp_path / "curriculum" / "Probe")["Environment/Lesson Number/p"]]
    assert lessons == [1, 1, 1, 1, 1, 2, 2, 2, 2, 2]


# ---------------------------------------------------------------- sent to Unity


def test_unity_receives_the_samplers_as_mlagents_learn_encodes_them():
    value = {
        "mass": RANDOMIZE["mass"],
        "scale": {"sampler_type": "gaussian", "sampler_parameters": {"mean": 1, "st_dev": 0.1, "seed": 5}},
        "gravity": 9.81,
        "wind": {"sampler_type": "multirangeuniform", "sampler_parameters": {"intervals": [[0, 1], [2, 3]]}},
    }
    calls = ep.channel_calls(ep.Curriculum(ep.plan(ep.normalize(value), run_seed=3)).samplers())
    # ML-Agents' own channel, as mlagents-learn's samplers call it: seeds 3 + offset over the
    # unseeded values (mass 3, gravity 4 (unused by a constant), wind 5).
    expected = EnvironmentParametersChannel()
    expected.set_uniform_sampler_parameters("mass", 0.5, 10.0, 3)
    expected.set_gaussian_sampler_parameters("scale", 1.0, 0.1, 5)
    expected.set_float_parameter("gravity", 9.81)
    expected.set_multirangeuniform_sampler_parameters("wind", [(0.0, 1.0), (2.0, 3.0)], 5)
    later = EnvironmentParametersChannel()
    later.set_float_parameter("mass", 2.0)

    port = free_port()
    standin = StandIn(port, connect_timeout=30, seed=3)
    standin.warm_up()
    thread = threading.Thread(target=standin.run, daemon=True)
    thread.start()
    vec = UnityVecEnv(None, 1, port, environment_parameters=calls, timeout_wait=30)
    try:
        vec.reset()
        assert standin.scene.params.received == [bytes(m) for m in expected.message_queue]
        # A new lesson's calls go with the next step (UnityVecEnv.set_environment_parameters).
        vec.set_environment_parameters(ep.channel_calls({"mass": ep.Sampler("constant", (2.0,))}))
        vec.send({0: {}})
        vec.receive()
        assert standin.scene.params.received[4:] == [bytes(m) for m in later.message_queue]
    finally:
        vec.close()
        standin.stop()
        thread.join(10)


@pytest.mark.slow
def test_a_unity_run_sends_the_next_lesson_when_progress_passes_the_threshold(tmp_path):
    config = {
        "behaviors": {"3DBall": {
            "hyperparameters": {"batch_size": 120, "buffer_size": 1200, "num_epoch": 1},
            "network_settings": {"hidden_units": 16, "num_layers": 1},
            "max_steps": 3000, "time_horizon": 100, "summary_freq": 1200}},
        "environment_parameters": {"scale": {"curriculum": [
            {"name": "one", "value": 1.0, "completion_criteria": {
                "behavior": "3DBall", "measure": "progress", "threshold": 0.3}},
            {"name": "wide", "value": {"sampler_type": "uniform",
                                       "sampler_parameters": {"min_value": 1.5, "max_value": 2}}}]}},
        "jppo": {"timeout_wait": 30},
    }
    path = tmp_path / "curriculum.yaml"
    path.write_text(yaml.safe_dump(config))
    first = EnvironmentParametersChannel()
    first.set_float_parameter("scale", 1.0)
    first.set_uniform_sampler_parameters("scale", 1.5, 2.0, 5 + 1)  # --seed 5, offset 1
    received = []
    for more in (["--stop-after-steps", "1200"], ["--resume"]):
        port = free_port()
        standin = StandIn(port, connect_timeout=60, seed=3)
        standin.warm_up()
        thread = threading.Thread(target=standin.run, daemon=True)
        thread.start()
        try:
            code = main([str(path), "--env", "editor", "--base-port", str(port), "--seed", "5",
                         "--run-id", "unity-curriculum", "--results-dir", str(tmp_path),
                         "--quiet", "--no-export"] + more)
        finally:
            standin.stop()
            thread.join(10)
        assert code == 0
        received.append(standin.scene.params.received)
        # The checkpoint holds the lesson numbers and smoothed rewards the resumed run continues.
        _, state = checkpoint.read(checkpoint.latest(tmp_path / "unity-curriculum"))
        assert np.asarray(state["lessons"]["0"]).tolist() == [1]
    # Steps pass 0.3 x 3000 before the first summary (1200); the resumed run resets Unity with
    # the first lesson, then sends the checkpoint's lesson with its first step.
    assert received == [[bytes(m) for m in first.message_queue]] * 2
    shown = scalars(tmp_path / "unity-curriculum" / "3DBall")["Environment/Lesson Number/scale"]
    assert [value for _, value in shown] == [1, 1, 1]
