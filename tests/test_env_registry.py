"""jppo.envs.make: names to environments."""
import pytest

import jppo.envs
from jppo.envs.cartpole import CartPole
from jppo.envs.pendulum import Pendulum


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
    assert str(info.value) == "unknown environment 'CartPole-v0'; known environments are: " + ", ".join(known)
    assert isinstance(info.value, ValueError)
