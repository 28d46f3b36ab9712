"""Image encoders (``jppo.core.encoders``) against ML-Agents' figures and the torch reference.

ML-Agents' figures are computed by hand from its layer shapes (release 19,
``trainers/torch/encoders.py``): a ``Conv2d(i, o, k)`` holds o*i*k*k + o parameters, a
``Linear(i, o)`` i*o + o; output sides follow ``conv_output_shape`` ((n - k) // s + 1) and
``pool_out_shape`` ((n - 3) // 2 + 1).
"""
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jppo  # noqa: E402
from jppo.core import normalizer as obs_norm  # noqa: E402
from jppo.core.config import ConfigError, PPOConfig  # noqa: E402
from jppo.core.distributions import ActionSpec  # noqa: E402
from jppo.core.encoders import ImageEncoder, MIN_RESOLUTION  # noqa: E402
from jppo.core.policy import make_policy  # noqa: E402
from jppo.reference import torch_encoders, torch_networks  # noqa: E402
from jppo.reference.transfer import flax_to_torch, torch_to_flax  # noqa: E402

KINDS = ["simple", "nature_cnn", "resnet", "match3", "fully_connected"]

# ML-Agents' parameter count of each encoder for an 84x84x3 camera and h_size 128 (its default
# hidden_units), from its layer shapes.
MLAGENTS_84x84x3_H128 = {
    # conv 3->16 k8 s4 (3088; side 20), conv 16->32 k4 s2 (8224; side 9), dense 9*9*32=2592->128
    "simple": 3088 + 8224 + (2592 * 128 + 128),  # 343216
    # conv 3->32 k8 s4 (6176; 20), 32->64 k4 s2 (32832; 9), 64->64 k3 s1 (36928; 7), dense 3136
    "nature_cnn": 6176 + 32832 + 36928 + (3136 * 128 + 128),  # 477472
    # stacks of 16, 32, 32: conv (448, 4640, 9248) + 4 convs c->c k3 (2320, 9248, 9248 each);
    # max-pools 84 -> 41 -> 20 -> 9; dense 32*9*9 = 2592 -> 128
    "resnet": 448 + 4 * 2320 + 4640 + 4 * 9248 + 9248 + 4 * 9248 + (2592 * 128 + 128),  # 429504
    # conv 3->35 k3 (980; 82), 35->144 k3 (45504; 80), dense 80*80*144 = 921600 -> 128
    "match3": 980 + 45504 + (921600 * 128 + 128),  # 118011412
    # dense 84*84*3 = 21168 -> 128
    "fully_connected": 21168 * 128 + 128,  # 2709632
}
# Small, non-square images (so a height/width mix-up shows) for the parity checks, hidden 16.
SHAPES = {"simple": (22, 27, 2), "nature_cnn": (36, 41, 1), "resnet": (15, 18, 2),
          "match3": (6, 8, 3), "fully_connected": (3, 5, 2)}
HIDDEN = 16
MLAGENTS_SMALL_H16 = {
    # 22x27 -> 4x5 -> 1x1
    "simple": (16 * 2 * 64 + 16) + (32 * 16 * 16 + 32) + (1 * 1 * 32 * 16 + 16),
    # 36x41 -> 8x9 -> 3x3 -> 1x1
    "nature_cnn": (32 * 64 + 32) + (64 * 32 * 16 + 64) + (64 * 64 * 9 + 64) + (64 * 16 + 16),
    # 15x18 -> pools 7x8 -> 3x3 -> 1x1
    "resnet": (16 * 2 * 9 + 16) + 4 * 2320 + 4640 + 4 * 9248 + 9248 + 4 * 9248 + (32 * 16 + 16),
    # 6x8 -> 4x6 -> 2x4
    "match3": (35 * 27 + 35) + (144 * 35 * 9 + 144) + (2 * 4 * 144 * 16 + 16),
    "fully_connected": 30 * 16 + 16,
}


def count(tree) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))


def encoder_params(kind, shape, features, key=0):
    module = ImageEncoder(kind, features, shape)
    return module, module.init(jax.random.PRNGKey(key), jnp.zeros((1,) + shape))


@pytest.mark.parametrize("kind", KINDS)
def test_parameter_counts_and_output_shape_are_mlagents(kind):
    module = ImageEncoder(kind, 128, (84, 84, 3))
    shapes = jax.eval_shape(lambda k: module.init(k, jnp.zeros((1, 84, 84, 3))),
                            jax.random.PRNGKey(0))
    assert count(shapes) == MLAGENTS_84x84x3_H128[kind]
    small = SHAPES[kind]
    module, params = encoder_params(kind, small, HIDDEN)
    assert count(params) == MLAGENTS_SMALL_H16[kind]
    assert count(params) == sum(p.numel() for p in
                                torch_encoders.ImageEncoder(kind, HIDDEN, small).parameters())
    # Leading axes are kept: [T, E, H, W, C] -> [T, E, hidden].
    out = module.apply(params, jnp.zeros((3, 2) + small))
    assert out.shape == (3, 2, HIDDEN)


@pytest.mark.parametrize("kind", KINDS)
def test_forward_and_gradients_equal_the_torch_reference(kind):
    shape = SHAPES[kind]
    module, params = encoder_params(kind, shape, HIDDEN, key=1)
    reference = torch_encoders.ImageEncoder(kind, HIDDEN, shape)
    reference.load_state_dict(flax_to_torch(params), strict=True)
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(5,) + shape).astype(np.float32)  # [0, 1] as mlagents_envs gives
    weights = rng.normal(size=(5, HIDDEN)).astype(np.float32)

    def loss(p):
        return jnp.sum(module.apply(p, images) * weights)

    out = module.apply(params, images)
    grads = jax.grad(loss)(params)
    t_out = reference(torch.from_numpy(images))
    (t_out * torch.from_numpy(weights)).sum().backward()
    np.testing.assert_allclose(t_out.detach().numpy(), out, rtol=1e-5, atol=1e-5)
    assert np.abs(out).max() > 1e-2  # not a dead encoder
    t_grads = torch_to_flax({n: p.grad for n, p in reference.named_parameters()})
    assert jax.tree_util.tree_structure(t_grads) == jax.tree_util.tree_structure(grads)
    for (path, g), t in zip(jax.tree_util.tree_leaves_with_path(grads),
                            jax.tree_util.tree_leaves(t_grads)):
        g, t = np.asarray(g, np.float64), np.asarray(t, np.float64)
        scale = np.abs(g).max()
        assert scale > 0, jax.tree_util.keystr(path)
        assert np.abs(t - g).max() <= 1e-4 * scale, jax.tree_util.keystr(path)


def test_initialisation_is_mlagents():
    """Convolutions: torch's default, U(+-1/sqrt(fan_in)) for kernel and bias; the dense layer:
    He-normal times 1.41, zero bias."""
    _, params = encoder_params("nature_cnn", (84, 84, 3), 256)
    p = params["params"]
    for name, fan_in in (("conv0", 8 * 8 * 3), ("conv1", 4 * 4 * 32), ("conv2", 3 * 3 * 64)):
        bound = 1 / np.sqrt(fan_in)
        for leaf in ("kernel", "bias"):
            x = np.asarray(p[name][leaf])
            assert np.abs(x).max() <= bound and np.abs(x).max() > 0.9 * bound, (name, leaf)
    kernel = np.asarray(p["Dense_0"]["kernel"])
    assert kernel.std() == pytest.approx(1.41 * np.sqrt(2 / 3136), rel=0.03)
    assert not np.asarray(p["Dense_0"]["bias"]).any()


SENSORS = ((6,), (20, 23, 2))  # a vector then a camera: the order the body sees them in


def policy_case(kind="simple"):
    config = PPOConfig(hidden_units=HIDDEN, num_layers=1, vis_encode_type=kind, normalize=True,
                       batch_size=16, buffer_size=32, num_epoch=2)
    return config, ActionSpec.discrete(3)


def test_actor_critic_with_a_camera_equals_the_torch_reference():
    config, spec = policy_case()
    state = jppo.init_train_state(jax.random.PRNGKey(2), config, SENSORS, spec)
    model = torch_networks.ActorCritic.for_spec(SENSORS, spec, HIDDEN, 1, "mlagents",
                                                vis_encode_type="simple")
    model.load_state_dict(flax_to_torch(state.params), strict=True)
    rng = np.random.default_rng(1)
    obs = (rng.normal(size=(4, 6)).astype(np.float32),
           rng.uniform(size=(4, 20, 23, 2)).astype(np.float32))
    policy = make_policy(config, spec, SENSORS)
    dist, value = policy.forward(state.params, state.normalizer, obs)
    (_, (categorical,)), t_value = model([torch.from_numpy(x) for x in obs])
    np.testing.assert_allclose(t_value.detach().numpy(), value, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(categorical.logits.detach().numpy(),
                               jax.nn.log_softmax(dist.logits), rtol=1e-5, atol=1e-5)


def test_vector_only_policies_keep_their_parameter_tree():
    """No encoder parameters for vector sensors: checkpoints of vector policies load unchanged."""
    spec = ActionSpec.continuous(2)
    for size in (8, ((5,), (3,))):
        params = jppo.init_train_state(jax.random.PRNGKey(0), PPOConfig(), size, spec).params
        assert sorted(params["params"]) == ["actor", "critic", "log_std", "policy_head",
                                            "value_head"]
        assert count(params) == 8 * 128 + 128 + 128 * 128 + 128 + (8 * 128 + 128 + 128 * 128
                                                                   + 128) + 2 * 128 + 2 + 2 + 129


def test_images_are_not_normalized():
    state = obs_norm.init(((4, 4, 3), (2,)))
    assert state[0].mean.shape == (0,) and state[1].mean.shape == (2,)
    images = jnp.full((5, 4, 4, 3), 0.7)
    vectors = jnp.arange(10.0).reshape(5, 2)
    state = obs_norm.update(state, (images, vectors))
    assert float(state[0].count) == 0.0 and float(state[1].count) == 5.0
    out_images, out_vectors = obs_norm.apply(state, (images, vectors))
    assert out_images is images
    np.testing.assert_allclose(out_vectors[:, 0], (vectors[:, 0] - 4.0) / np.sqrt(8.0), rtol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_images_below_the_minimum_resolution_are_refused_by_name(kind):
    minimum = MIN_RESOLUTION[kind]
    spec = ActionSpec.discrete(2)
    config = PPOConfig(hidden_units=8, vis_encode_type=kind)
    make_policy(config, spec, ((3,), (minimum, minimum, 1)))  # at the minimum: accepted
    if minimum == 1:
        return
    small = (minimum + 4, minimum - 1, 1)
    with pytest.raises(ConfigError) as err:
        jppo.init_train_state(jax.random.PRNGKey(0), config, ((3,), small), spec)
    message = str(err.value)
    assert message.count(". ") == 0 and message.endswith(").")
    assert f"sensor 1 of shape {small}" in message
    assert f"{small[0]}x{small[1]} pixels" in message
    assert re.search(rf"'{kind}' encoder's minimum of {minimum}x{minimum}", message)


def test_update_trains_a_policy_with_a_camera_and_a_vector():
    config, spec = policy_case("simple")
    sensors = ((20, 21, 3), (4,))
    state = jppo.init_train_state(jax.random.PRNGKey(0), config, sensors, spec)
    rng = np.random.default_rng(3)
    T, E = 8, 4
    obs = (jnp.asarray(rng.uniform(size=(T, E, 20, 21, 3)), jnp.float32),
           jnp.asarray(rng.normal(size=(T, E, 4)), jnp.float32))
    policy = make_policy(config, spec, sensors)
    actions, log_probs, values = policy.act(state.params, state.normalizer, obs,
                                            jax.random.PRNGKey(1))
    rollout = jppo.Rollout(obs, actions, log_probs, values,
                           jnp.asarray(rng.normal(size=(T, E)), jnp.float32),
                           jnp.zeros((T, E)), jnp.zeros(E))
    update = jppo.make_update(config, spec, total_adam_steps=4)
    new, metrics = update(state, rollout)
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert float(metrics["value_loss"]) > 0
    before = state.params["params"]["actor_encoder"]["sensor_0"]["conv0"]["kernel"]
    after = new.params["params"]["actor_encoder"]["sensor_0"]["conv0"]["kernel"]
    assert float(jnp.abs(after - before).max()) > 0  # the encoder learns
    assert float(new.normalizer[0].count) == 0 and float(new.normalizer[1].count) == T * E
