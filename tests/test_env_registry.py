"""jppo.envs.make: names to environments; register and package.module:factory, in Python and
through python -m jppo.train (summaries, checkpoints, ONNX)."""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
import yaml

import jppo.envs
from jppo.envs.cartpole import CartPole
from jppo.envs.pendulum import Pendulum
from jppo.runs import checkpoint
from tiny_config import tiny_cartpole


@pytest.mark.parametrize("name, cls", [("CartPole-v1", CartPole), ("Pendulum-v1", Pendulum)])
def test_make_returns_the_registered_environment(name, cls):
    env = jppo.envs.make(name)
    assert type(env) is cls and env.name == name
    assert isinstance(env, jppo.envs.Environment)
    assert name in jppo.envs.names()


def test_make_passes_keyword_arguments_to_the_default_params():
    cartpole = jppo.envs.make("CartPole-v1", max_steps_in_episode=200)
    assert cartpole.default_params.max_steps_in_episode == 200
    assert jppo.envs.make("Pendulum-v1", g=9.81).default_params.g == 9.81
    with pytest.raises(ValueError, match="no_such_field"):
        jppo.envs.make("Pendulum-v1", no_such_field=1.0)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(jppo.envs.UnknownEnvironmentError) as info:
        jppo.envs.make("CartPole-v0")
    known = jppo.envs.names()
    assert {"CartPole-v1", "Pendulum-v1"} <= set(known)
    assert str(info.value) == ("unknown environment 'CartPole-v0'; known environments are: "
                               + ", ".join(known) + " (and gymnax:<id>, package.module:factory)")
    assert isinstance(info.value, ValueError)


# --------------------------------------------------------------------------- register, module:factory

# A user's package: a gymnax-like environment that does not subclass jppo's base, with a factory.
USER_MODULE = textwrap.dedent('''
    import jax.numpy as jnp
    from typing import NamedTuple

    class Params(NamedTuple):
        length: int = 5

    class Box:
        def __init__(self, low, high, shape):
            self.low, self.high, self.shape = low, high, shape

    class Two:
        n, shape = 2, ()

    class Corridor:
        """Walk right from 0 to ``length``: -0.01 a step, +1 at the end."""
        name = "Corridor"
        default_params = Params()

        def reset(self, key, params=None):
            return jnp.zeros(1), jnp.int32(0)

        def step(self, key, pos, action, params=None):
            length = (params or self.default_params).length
            pos = jnp.clip(pos + 2 * action - 1, 0, length)
            done = pos == length
            return (jnp.array([pos / length], jnp.float32), pos, jnp.where(done, 1.0, -0.01),
                    done, jnp.bool_(False), {})

        def observation_space(self, params=None):
            return Box(0.0, 1.0, (1,))

        def action_space(self, params=None):
            return Two()

    def make_corridor():
        return Corridor()
''')


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    (tmp_path / "user_envs.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("user_envs", None)
    jppo.envs.unregister("Corridor")


def test_module_factory_and_register_make_the_users_environment(user_package):
    env = jppo.envs.make("user_envs:make_corridor")
    assert env.action_space() == jppo.envs.Discrete(2)
    assert env.observation_space().shape == (1,)
    assert jppo.envs.make("user_envs:Corridor").name == "Corridor"  # a class is called too
    assert jppo.envs.make("user_envs:make_corridor", length=3).default_params.length == 3
    import user_envs

    jppo.envs.register("Corridor", user_envs.make_corridor)
    assert "Corridor" in jppo.envs.names() and jppo.envs.make("Corridor").name == "Corridor"
    with pytest.raises(ValueError, match="'Corridor' is already registered"):
        jppo.envs.register("Corridor", user_envs.make_corridor)
    jppo.envs.register("Corridor", user_envs.Corridor, overwrite=True)
    with pytest.raises(ValueError, match="'CartPole-v1' is already registered; pick another name"):
        jppo.envs.register("CartPole-v1", user_envs.make_corridor)
    with pytest.raises(ValueError, match="without ':'"):
        jppo.envs.register("a:b", user_envs.make_corridor)


@pytest.mark.parametrize("name, message", [
    ("no_such_module_17:make", "environment 'no_such_module_17:make': cannot import module "
                               "'no_such_module_17' (No module named 'no_such_module_17')"),
    ("user_envs:make_maze", "environment 'user_envs:make_maze': module 'user_envs' has no "
                            "'make_maze'"),
])
def test_a_factory_that_cannot_be_found_is_one_sentence(user_package, name, message):
    with pytest.raises(jppo.envs.UnknownEnvironmentError) as info:
        jppo.envs.make(name)
    assert str(info.value) == message


def cli(tmp_path, *args, code: str | None = None):
    """``python -m jppo.train`` (or ``code`` run as a script) in a fresh process with the user's
    package importable; returns (exit code, stdout, stderr)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "jppo.train", *args]
    out = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    return out.returncode, out.stdout, out.stderr


def tiny(tmp_path, **jppo_keys) -> str:
    data = tiny_cartpole(1024, checkpoint_interval=512)
    data["jppo"].update(jppo_keys)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.slow
def test_cli_trains_a_module_factory_environment_with_summaries_checkpoints_and_onnx(user_package):
    tmp = user_package
    code, _, err = cli(tmp, tiny(tmp), "--env", "user_envs:make_corridor", "--run-id", "mine",
                       "--results-dir", str(tmp / "results"), "--quiet",
                       "--set", "learning_rate=3e-3")
    assert code == 0, err
    run = tmp / "results" / "mine"
    info = json.loads((run / "run_info.json").read_text())
    assert info["env"] == "user_envs:make_corridor" and info["steps"] == 1024
    assert (run / "CartPole.onnx").is_file() and (run / "progress.csv").is_file()
    assert [p.name for p in (run / "checkpoints").iterdir()] != []
    assert list(run.glob("CartPole/events.out.tfevents.*"))
    meta, _ = checkpoint_meta(run)
    assert meta["env"] == "user_envs:make_corridor" and meta["observation_size"] == 1
    # environment_parameters reach the factory's params; an unknown one is refused by name
    data = yaml.safe_load(open(tiny(tmp)))
    data["environment_parameters"] = {"lenght": 3}
    (tmp / "bad.yaml").write_text(yaml.safe_dump(data))
    code, _, err = cli(tmp, str(tmp / "bad.yaml"), "--env", "user_envs:make_corridor",
                       "--results-dir", str(tmp / "results"), "--run-id", "bad", "--quiet")
    assert code == 2 and err == ("jppo: error: environment parameter 'lenght' is not one of "
                                 "user_envs:make_corridor's: length.\n")
    assert not (tmp / "results" / "bad").exists()


def checkpoint_meta(run):
    return checkpoint.read(checkpoint.latest(run))


@pytest.mark.slow
def test_cli_trains_a_registered_environment(user_package):
    tmp = user_package
    script = ("import sys, jppo.envs, user_envs; "
              "jppo.envs.register('Corridor', user_envs.make_corridor); "
              "from jppo.train import main; sys.exit(main(sys.argv[1:]))")
    code, _, err = cli(tmp, tiny(tmp), "--env", "Corridor", "--run-id", "reg", "--results-dir",
                       str(tmp / "results"), "--quiet", "--no-export", code=script)
    assert code == 0, err
    assert json.loads((tmp / "results" / "reg" / "run_info.json").read_text())["env"] == "Corridor"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gymnax") is None,
                    reason="gymnax is not installed")
def test_cli_trains_a_gymnax_environment(tmp_path):
    code, _, err = cli(tmp_path, tiny(tmp_path), "--env", "gymnax:Acrobot-v1", "--run-id", "acro",
                       "--results-dir", str(tmp_path / "results"), "--quiet")
    assert code == 0, err
    run = tmp_path / "results" / "acro"
    assert json.loads((run / "run_info.json").read_text())["env"] == "gymnax:Acrobot-v1"
    assert (run / "CartPole.onnx").is_file()
    code, _, err = cli(tmp_path, tiny(tmp_path), "--env", "gymnax:Acrobat-v1", "--quiet",
                       "--results-dir", str(tmp_path / "results"))
    assert code == 2 and err.startswith("jppo: error: gymnax has no environment 'Acrobat-v1'; its "
                                        "environments are: ")
