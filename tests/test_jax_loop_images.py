"""The JAX loop trains a policy that sees an image: ML-Agents' Basic drawn as a 5x20 picture.

``ImageBasic`` is ``jppo.envs.basic.Basic`` whose one-hot position is drawn as a bright column
in a 5x20x1 image (float32 in [0, 1], HWC), beside a vector sensor (the decisions taken, /10):
``observation_size`` ``((5, 20, 1), (1,))``. The ``match3`` encoder (minimum side 5) reads it.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jppo
from jppo.envs.base import Box, Environment
from jppo.envs.basic import BEST_RETURN, Basic
from jppo.runs import checkpoint

ROWS = 5


class ImageBasic(Environment):
    name = "ImageBasic"

    def __init__(self):
        self.inner = Basic()

    @property
    def default_params(self):
        return self.inner.default_params

    def _obs(self, one_hot, state):
        image = jnp.broadcast_to(one_hot[None, :, None], (ROWS, one_hot.shape[0], 1))
        steps = jnp.reshape(state.steps / 10.0, (1,)).astype(jnp.float32)
        return image.astype(jnp.float32), steps

    def reset(self, key, params=None):
        obs, state = self.inner.reset(key, params)
        return self._obs(obs, state), state

    def step(self, key, state, action, params=None):
        obs, state, *rest = self.inner.step(key, state, action, params)
        return (self._obs(obs, state), state, *rest)

    def observation_space(self, params=None):
        return (Box(0.0, 1.0, (ROWS, 20, 1)), Box(0.0, jnp.inf, (1,)))

    def action_space(self, params=None):
        return self.inner.action_space(params)


CONFIG = jppo.PPOConfig(vis_encode_type="match3", hidden_units=32, num_layers=1, normalize=True,
                        batch_size=64, buffer_size=256, num_epoch=3, learning_rate=3e-3,
                        beta=1e-2, time_horizon=32, max_steps=6144, gamma=0.9)


@pytest.mark.slow
def test_a_policy_over_an_image_learns_in_the_jax_loop():
    train = jppo.make_train(CONFIG, ImageBasic(), num_envs=8)
    state, metrics = jax.jit(train)(jax.random.PRNGKey(0))
    kernel = state.train.params["params"]["actor_encoder"]["sensor_0"]["conv0"]["kernel"]
    assert kernel.shape == (3, 3, 1, 35)  # match3's first convolution, over one channel
    losses = np.asarray(metrics["loss"])
    assert np.isfinite(losses).all() and len(losses) == 6144 // 256
    returns = np.asarray(metrics["episode_return"])
    first, last = np.nanmean(returns[:3]), np.nanmean(returns[-3:])
    # Random play wanders: about -0.2; the best return is 0.93 (seven steps right).
    assert first < 0.3 and last > 0.8, (first, last, BEST_RETURN)
    # The image sensor carries no normalizer statistics; the vector sensor's saw every step.
    image_norm, vector_norm = state.train.normalizer
    assert image_norm.mean.shape == (0,) and float(vector_norm.count) == 6144


def test_one_array_of_an_image_is_refused_with_the_tuple_form_named():
    class Flat(ImageBasic):
        def observation_space(self, params=None):
            return Box(0.0, 1.0, (ROWS, 20, 1))

    with pytest.raises(ValueError, match="as a tuple of one Box"):
        jppo.make_train(CONFIG, Flat(), num_envs=2)(jax.random.PRNGKey(0))


def test_a_run_over_an_image_ends_well_with_its_onnx_model(tmp_path, capsys):
    """``jppo.fit`` (the CLI's driver: run folder, checkpoints, the run's end): the run finishes,
    its checkpoint holds the image policy, and the ONNX model is exported."""
    config = CONFIG.replace(vis_encode_type="fully_connected", max_steps=512)
    info = jppo.fit(ImageBasic(), config, run_id="images", results_dir=str(tmp_path),
                    num_envs=4, summary_freq=256, checkpoint_interval=512)
    capsys.readouterr()
    models = list((tmp_path / "images").glob("*.onnx"))
    assert len(models) == 1 and [str(p) for p in models] == [str(p) for p in info["models"]]
    saved = checkpoint.load_policy(tmp_path / "images")
    assert saved.observation_size == ((ROWS, 20, 1), (1,)) and saved.steps == 512
    assert saved.config.vis_encode_type == "fully_connected"
