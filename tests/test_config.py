"""PPOConfig validation: every bad value names the field, the value and what is allowed; the
A2C warning."""
import warnings

import jax
import jax.numpy as jnp
import pytest
import yaml

from jppo import ConfigError, PPOConfig
from jppo.core.config import ConfigWarning, a2c_advice
from jppo.train import main
from tiny_config import tiny_cartpole


@pytest.mark.parametrize("changes, message", [
    (dict(batch_size=128, buffer_size=64),
     "batch_size = 128 is larger than buffer_size = 64; batch_size must be <= buffer_size."),
    (dict(learning_rate=0.0), "learning_rate = 0.0 is not allowed; learning_rate must be a number > 0."),
    (dict(learning_rate=-1e-3), "learning_rate = -0.001 is not allowed; learning_rate must be a number > 0."),
    (dict(gamma=1.5), "gamma = 1.5 is not allowed; gamma must be a number in (0, 1]."),
    (dict(gamma=0.0), "gamma = 0.0 is not allowed; gamma must be a number in (0, 1]."),
    (dict(lambd=-0.1), "lambd = -0.1 is not allowed; lambd must be a number in (0, 1]."),
    (dict(epsilon=1.0), "epsilon = 1.0 is not allowed; epsilon must be a number in (0, 1)."),
    (dict(learning_rate_schedule="cosine"),
     "learning_rate_schedule = 'cosine' is not allowed; learning_rate_schedule must be one of 'linear', 'constant'."),
    (dict(beta_schedule="exp"),
     "beta_schedule = 'exp' is not allowed; beta_schedule must be one of 'linear', 'constant' "
     "(or unset, to follow learning_rate_schedule)."),
    (dict(network="resnet"),
     "network = 'resnet' is not allowed; network must be one of 'mlagents', 'seed', 'cleanrl'."),
    (dict(loss="ppo3"),
     "loss = 'ppo3' is not allowed; loss must be one of 'clip', 'kl_penalty', 'a2c'."),
    (dict(num_epoch=0), "num_epoch = 0 is not allowed; num_epoch must be an integer >= 1."),
    (dict(batch_size=64.5), "batch_size = 64.5 is not allowed; batch_size must be an integer >= 1."),
    (dict(hidden_units=True), "hidden_units = True is not allowed; hidden_units must be an integer >= 1."),
    (dict(beta=-0.01), "beta = -0.01 is not allowed; beta must be a number >= 0."),
    (dict(max_grad_norm=0.0),
     "max_grad_norm = 0.0 is not allowed; max_grad_norm must be a number > 0 or null (no clipping)."),
    (dict(normalize="yes"), "normalize = 'yes' is not allowed; normalize must be true or false."),
    (dict(learning_rate="fast"), "learning_rate = 'fast' is not allowed; learning_rate must be a number > 0."),
    (dict(gamma=float("nan")), "gamma = nan is not allowed; gamma must be a number in (0, 1]."),
])
def test_bad_values_raise_one_clear_sentence(changes, message):
    with pytest.raises(ConfigError) as err:
        PPOConfig(**changes)
    assert str(err.value) == message


def test_replace_validates_and_rejects_unknown_names():
    with pytest.raises(ConfigError, match=r"gamma = 2 is not allowed"):
        PPOConfig().replace(gamma=2)
    with pytest.raises(ConfigError, match=r"unknown hyperparameter 'lr'; allowed names are: batch_size, "):
        PPOConfig().replace(lr=0.1)


def test_defaults_are_ml_agents_and_schedules_follow_learning_rate():
    c = PPOConfig()
    assert (c.batch_size, c.buffer_size, c.learning_rate, c.beta, c.epsilon, c.lambd, c.num_epoch,
            c.gamma, c.time_horizon, c.max_steps) == (1024, 10240, 3e-4, 5e-3, 0.2, 0.95, 3, 0.99, 64, 500_000)
    c = PPOConfig(learning_rate_schedule="constant")
    assert c.schedule("beta") == "constant" and c.schedule("epsilon") == "constant"
    assert c.replace(learning_rate_schedule="linear").schedule("beta") == "linear"
    assert c.replace(beta_schedule="linear").schedule("beta") == "linear"


def test_config_is_frozen_and_hashable():
    c = PPOConfig()
    with pytest.raises(Exception):
        c.gamma = 0.5
    assert hash(c) == hash(PPOConfig())


def test_float_hyperparameters_are_pytree_leaves_for_sweeps():
    c = PPOConfig()
    swept = jax.tree_util.tree_map(lambda x: jnp.array([x, 2 * x]), c)
    out = jax.vmap(lambda cfg: cfg.learning_rate * cfg.gamma)(swept)
    assert out.shape == (2,)
    assert float(out[1]) == pytest.approx(4 * 3e-4 * 0.99)
    assert swept.batch_size == 1024  # static fields stay Python values


def test_a2c_with_ppo_style_settings_warns_in_one_sentence():
    with pytest.warns(ConfigWarning) as caught:
        PPOConfig(loss="a2c", num_epoch=3, batch_size=64, buffer_size=256)
    message = str(caught[0].message)
    assert message == ("loss a2c with num_epoch = 3 and batch_size = 64 of buffer_size = 256 "
                       "takes 12 gradient steps per rollout, which A2C's on-policy gradient "
                       "does not survive; A2C settings are num_epoch: 1 and batch_size equal to "
                       "buffer_size (one step per rollout), with a short rollout (about 5 to 20 "
                       "steps per environment).")
    assert message.count(".") == 1  # one sentence (its only full stop ends it)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PPOConfig(loss="a2c", num_epoch=1, batch_size=64, buffer_size=64)  # A2C's own settings
        PPOConfig(loss="clip", num_epoch=3, batch_size=64, buffer_size=256)
    assert a2c_advice(PPOConfig(loss="a2c", num_epoch=1, batch_size=80, buffer_size=80)) is None


def test_the_cli_prints_the_a2c_warning_once(tmp_path, capsys):
    """Printed as one line before anything else happens (here the run then stops on an unknown
    environment, so no training is needed to see it)."""
    data = tiny_cartpole(256)
    data["jppo"]["env"] = "NoSuchEnv"
    (tmp_path / "a2c.yaml").write_text(yaml.safe_dump(data))
    assert main([str(tmp_path / "a2c.yaml"), "--set", "loss=a2c", "--results-dir",
                 str(tmp_path), "--quiet", "--no-export"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("jppo: warning: loss a2c with num_epoch = 2 and batch_size = 32 of "
                               "buffer_size = 128 takes 8 gradient steps per rollout")
    assert len(lines) == 2 and lines[1].startswith("jppo: error: unknown environment 'NoSuchEnv'")
