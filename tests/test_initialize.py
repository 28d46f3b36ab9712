"""--initialize-from / init_path (a fine-tune starts from another run's policy) and --inference
(the trained policy run without training), on the JAX loop and through Gymnasium.

The source is a JAX-loop checkpoint written without a run (``source_run``): its parameters,
normalizer and Adam moments are random and distinct from any fresh state, its step count and
schedule clock far from 0, so each test sees exactly what was carried over and what restarted.
"""
import dataclasses
import hashlib
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import yaml

from jppo import envs
from jppo.core.normalizer import NormalizerState
from jppo.jax_loop import driver as jax_driver
from jppo.jax_loop.trainer import Trainer
from jppo.runs import checkpoint
from jppo.runs.launch import Launch
from jppo.runs.settings import load
from jppo.train import main
from tiny_config import tiny_cartpole

SOURCE_STEPS = 4096


def write_config(folder: pathlib.Path, max_steps=256, name="cp.yaml", **network) -> str:
    data = tiny_cartpole(max_steps)
    data["behaviors"]["CartPole"]["network_settings"].update(network)
    path = folder / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def perturbed(tree, key, scale=0.5):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten([x + scale * jax.random.normal(k, x.shape, x.dtype)
                              for x, k in zip(leaves, keys)])


def adam_of(opt_state) -> optax.ScaleByAdamState:
    (adam,) = [s for s in opt_state if isinstance(s, optax.ScaleByAdamState)]
    return adam


def schedule_count(opt_state):
    (state,) = [s for s in opt_state if isinstance(s, optax.ScaleByScheduleState)]
    return state.count


@pytest.fixture(scope="module")
def source_run(tmp_path_factory) -> pathlib.Path:
    """results/src: a JAX-loop CartPole checkpoint (one seed) as the driver writes it, after
    ``SOURCE_STEPS`` steps, with every array made distinct from a fresh start."""
    tmp = tmp_path_factory.mktemp("init")
    settings = load(write_config(tmp))
    env = envs.make("CartPole-v1")
    trainer = Trainer(settings.ppo, env, env.default_params, 4)
    states = trainer.init_seeds(7, 1)
    train = states.train
    adam = adam_of(train.opt_state)
    adam = adam._replace(count=adam.count + 321,
                         mu=perturbed(adam.mu, jax.random.PRNGKey(1), 0.01),
                         nu=jnp.abs(perturbed(adam.nu, jax.random.PRNGKey(2), 0.01)))
    opt_state = tuple(adam if isinstance(s, optax.ScaleByAdamState) else
                      s._replace(count=s.count + 321) if isinstance(s, optax.ScaleByScheduleState)
                      else s for s in train.opt_state)
    normalizer = NormalizerState(jnp.full((1,), 1000.0), jnp.asarray([[0.1, -0.2, 0.03, 0.4]]),
                                 jnp.asarray([[50.0, 80.0, 2.0, 300.0]]))
    train = train.replace(params=perturbed(train.params, jax.random.PRNGKey(3)),
                          opt_state=opt_state, normalizer=normalizer,
                          step=train.step + 321, kl_coef=train.kl_coef + 1.0)
    states = states.replace(train=train, updates=states.updates + SOURCE_STEPS // 128)
    meta = {**checkpoint.policy_meta(settings.ppo, trainer.action_spec, trainer.observation_size,
                                     "CartPole"),
            "env": "CartPole-v1", "num_envs": 4, "num_seeds": 1, "seed": 7}
    checkpoint.save(tmp / "results" / "src", SOURCE_STEPS, states, meta)
    return tmp


def saved_train(tmp: pathlib.Path):
    """The source checkpoint's train state, raw (leading seed axis of 1)."""
    _, raw = checkpoint.read(checkpoint.latest(tmp / "results" / "src"))
    return raw["train"]


def digest(folder: pathlib.Path) -> dict:
    """Every entry under ``folder``: a file's content and modification time, a folder's name."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(),
                                         p.stat().st_mtime_ns) if p.is_file() else "folder"
            for p in sorted(folder.rglob("*"))}


def cli(tmp, *args, config=None, quiet=True):
    return main([config or write_config(tmp), "--results-dir", str(tmp / "results"), "--no-export",
                 *(["--quiet"] if quiet else []), *args])


def error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("jppo: error: ") and "Traceback" not in err, err
    return err[len("jppo: error: "):].rstrip("\n")


def assert_started_from_source(train, saved, seed_axis: bool):
    """``train`` (this run's state before its first update) holds the source's parameters,
    normalizer and Adam moments, with the step, the schedule clock and the KL coefficient
    fresh."""
    pick = (lambda x: np.asarray(x)) if seed_axis else (lambda x: np.asarray(x)[0])
    ours = jax.tree_util.tree_leaves(jax.device_get(train.params))
    theirs = [pick(x) for x in jax.tree_util.tree_leaves(saved["params"])]
    assert len(ours) == len(theirs) > 0
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)
    norm = jax.device_get(train.normalizer)
    for name in ("count", "mean", "m2"):
        np.testing.assert_array_equal(getattr(norm, name), pick(saved["normalizer"][name]))
    adam = jax.device_get(adam_of(train.opt_state))
    (raw_adam,) = [v for v in saved["opt_state"].values() if isinstance(v, dict) and "mu" in v]
    np.testing.assert_array_equal(adam.mu, pick(raw_adam["mu"]))
    np.testing.assert_array_equal(adam.nu, pick(raw_adam["nu"]))
    assert int(np.asarray(adam.count).reshape(-1)[0]) == 321  # Adam's own count goes on
    assert np.all(np.asarray(train.step) == 0)  # the schedules' clock restarts
    assert np.all(np.asarray(schedule_count(train.opt_state)) == 0)
    assert np.allclose(np.asarray(train.kl_coef), pick(saved["kl_coef"]) - 1.0)


def test_jax_run_starts_from_the_other_runs_policy(source_run, tmp_path):
    """The state the first update receives: the source's parameters, normalizer and Adam
    moments; step 0 (schedules from their start values), updates 0; then the run trains its
    own max_steps and writes its own folder, the source untouched."""
    before = digest(source_run / "results" / "src")
    settings = load(write_config(tmp_path))
    settings = dataclasses.replace(settings, results_dir=str(source_run / "results"),
                                   run_id="tuned", initialize_from="src")
    run = jax_driver.JaxRun(Launch(settings, "CartPole-v1", quiet=True))
    try:
        run.setup()
        assert not run.resuming and run.done == 0 and run.start_step == 0
        assert_started_from_source(run.states.train, saved_train(source_run), seed_axis=True)
        run.loop()
        info = run.finish()
    finally:
        run.folder.release()
    assert info["complete"] and info["steps"] == 256  # its own max_steps, counted from 0
    meta, _ = checkpoint.read(checkpoint.latest(source_run / "results" / "tuned"))
    assert meta["steps"] == 256
    config = yaml.safe_load((source_run / "results" / "tuned" / "configuration.yaml").read_text())
    assert config["checkpoint_settings"]["initialize_from"] == "src"
    assert digest(source_run / "results" / "src") == before


def test_gymnasium_run_starts_from_a_jax_runs_policy(source_run, tmp_path, monkeypatch):
    """init_path (a run folder) on the host loop: the first update's state is the source's
    (a JAX-loop CartPole policy fine-tuned on Gymnasium's CartPole)."""
    pytest.importorskip("gymnasium")
    from jppo.host_loop.learner import Learner
    seen = []
    learn = Learner.learn

    def first_learn(self, *args):
        if not seen:
            seen.append(jax.device_get(self.state))
        learn(self, *args)

    monkeypatch.setattr(Learner, "learn", first_learn)
    data = tiny_cartpole(256)
    data["behaviors"]["CartPole"]["init_path"] = str(source_run / "results" / "src")
    config = tmp_path / "gym.yaml"
    config.write_text(yaml.safe_dump(data))
    assert cli(tmp_path, "--env", "gymnasium:CartPole-v1", "--run-id", "gym",
               config=str(config)) == 0
    assert seen
    assert_started_from_source(seen[0], saved_train(source_run), seed_axis=False)
    meta, _ = checkpoint.read(checkpoint.latest(tmp_path / "results" / "gym"))
    assert meta["driver"] == "host" and SOURCE_STEPS > meta["steps"] >= 256


@pytest.mark.parametrize("args, network, message", [
    (["--initialize-from", "ghost"], {},
     "--initialize-from: run 'ghost' does not exist in '{results}'; check the run id and "
     "--results-dir."),
    (["--initialize-from", "src"], {"hidden_units": 32},
     "cannot initialize from '{results}/src/checkpoints/checkpoint-000004096.msgpack': its "
     "parameters do not fit this run's"),
    (["--initialize-from", "src", "--resume"], {},
     "--resume and --initialize-from contradict each other"),
    (["--inference"], {}, "--inference needs a trained policy"),
    (["--initialize-from", "src", "--inference", "--force"], {},
     "--inference and --force contradict each other"),
])
def test_mistakes_are_one_sentence_and_write_nothing(source_run, tmp_path, capsys, args, network,
                                                     message):
    results = source_run / "results"
    before = digest(results)
    code = main([write_config(tmp_path, **network), "--results-dir", str(results), "--run-id",
                 "new", "--quiet", *args])
    assert code == 2
    text = error(capsys)
    assert text.startswith(message.format(results=results)), text
    if network:
        assert "hidden_units 16 there, 32 here" in text
    assert digest(results) == before  # nothing written, not even the new run's folder


def test_another_environment_is_refused_naming_the_shapes(source_run, tmp_path, capsys):
    """A CartPole policy (4 observations, 2 choices) cannot start a Pendulum run."""
    results = source_run / "results"
    before = digest(results)
    code = main([write_config(tmp_path), "--env", "Pendulum-v1", "--results-dir", str(results),
                 "--run-id", "pend", "--quiet", "--initialize-from", "src"])
    assert code == 2
    assert error(capsys) == (
        f"cannot initialize from '{results}/src/checkpoints/checkpoint-000004096.msgpack': it "
        "was trained on 4 observations, but behavior 'CartPole' sends 3 observations.")
    assert digest(results) == before


def test_init_path_that_does_not_exist(source_run, tmp_path, capsys):
    data = tiny_cartpole(256)
    data["behaviors"]["CartPole"]["init_path"] = "checkpoint-000000001.msgpack"
    data["checkpoint_settings"] = {"initialize_from": "src"}
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(data))
    assert main([str(config), "--results-dir", str(source_run / "results"), "--run-id", "x",
                 "--quiet"]) == 2
    # A bare file name is looked up in initialize_from's run, as ML-Agents does.
    assert error(capsys).startswith(
        "behaviors.CartPole.init_path 'checkpoint-000000001.msgpack' does not exist ("
        f"'{source_run / 'results'}/src/checkpoints/checkpoint-000000001.msgpack')")


REWARD_LINE = re.compile(r"Step: (\d+)\. .*?Mean Reward: ([-\d.n/a]+)\. .*?Not Training\.")


@pytest.mark.parametrize("env", ["CartPole-v1", "gymnasium:CartPole-v1"])
def test_inference_reports_rewards_and_writes_nothing(source_run, tmp_path, capsys, env):
    """--resume --inference runs the run's own policy for max_steps steps (counted from 0),
    printing ML-Agents' lines ("Not Training.") with episode rewards; no file of the run
    folder changes and none is added."""
    if env.startswith("gymnasium"):
        pytest.importorskip("gymnasium")
    results = source_run / "results"
    before = digest(results)
    code = main([write_config(tmp_path, max_steps=1024), "--results-dir", str(results),
                 "--run-id", "src", "--env", env, "--resume", "--inference"])
    assert code == 0
    out = capsys.readouterr()
    text = re.sub(r"\s+", " ", out.out + out.err)
    assert "inference: running the policy of" in text
    lines = REWARD_LINE.findall(text)
    assert lines, text
    assert int(lines[-1][0]) >= 1024
    rewards = [float(r) for _, r in lines if r != "n/a"]
    assert rewards and all(1.0 <= r <= 500.0 for r in rewards)  # CartPole: 1 per step survived
    assert "Training." not in text.replace("Not Training.", "")
    assert digest(results) == before


@pytest.mark.slow
def test_unity_standin_inference_writes_nothing(tmp_path, capsys):
    """Through a 3DBall stand-in (the real protocol): --resume --inference runs a host run's
    policy for max_steps decisions, prints rewards, and writes nothing (no Player log either).
    (A fine-tune's start through the host loop: the Gymnasium test above.)"""
    from test_unity_training import host_checkpoint, standins, write_config as ball_config
    host_checkpoint(tmp_path / "results" / "src")
    config = ball_config(tmp_path, max_steps=1200)
    before = digest(tmp_path / "results")
    with standins(tmp_path, [None]) as (port, procs, logs):
        assert main([config, "--env", "editor", "--base-port", str(port), "--results-dir",
                     str(tmp_path / "results"), "--run-id", "src", "--resume",
                     "--inference"]) == 0
    text = re.sub(r"\s+", " ", "".join(capsys.readouterr()))
    assert "inference: running the policy of" in text
    lines = REWARD_LINE.findall(text)
    assert lines and int(lines[-1][0]) >= 1200, text
    assert all(0.0 < float(r) <= 100.0 for _, r in lines if r != "n/a")
    assert digest(tmp_path / "results") == before
