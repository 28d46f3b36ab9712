"""The actor-critic: presets, initialisation, distributions against closed forms."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jppo
from jppo import normalizer as obs_norm
from jppo.core.networks import ActionSpec, ActorCritic


def init(spec, preset="mlagents", hidden=128, layers=2, obs=8, seed=0):
    model = ActorCritic(spec, hidden, layers, preset)
    return model, model.init(jax.random.PRNGKey(seed), jnp.zeros((1, obs)))


def test_gaussian_log_prob_and_entropy_match_closed_forms():
    model, params = init(ActionSpec.continuous(2))
    params = jax.tree_util.tree_map(lambda x: x, params)
    params["params"]["log_std"] = jnp.array([-0.5, 0.3])
    obs = jax.random.normal(jax.random.PRNGKey(1), (5, 8))
    dist, _ = model.apply(params, obs)
    mu, sigma = np.asarray(dist.mean), np.exp([-0.5, 0.3])
    a = mu + np.array([0.7, -1.3])
    expected = -((a - mu) ** 2) / (2 * sigma**2) - np.log(sigma) - 0.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(dist.log_prob(a), expected, rtol=1e-6, atol=1e-6)
    assert dist.log_prob(a).shape == (5, 2)  # per action dimension
    np.testing.assert_allclose(dist.entropy_terms(), np.broadcast_to(
        0.5 * np.log(2 * math.pi * math.e * sigma**2), (5, 2)), rtol=1e-6)


def test_categorical_log_prob_and_entropy_match_closed_forms():
    model, params = init(ActionSpec.discrete(3))
    obs = jax.random.normal(jax.random.PRNGKey(2), (4, 8))
    dist, value = model.apply(params, obs)
    logits = np.asarray(dist.logits, np.float64)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    actions = np.array([0, 2, 1, 2])
    np.testing.assert_allclose(dist.log_prob(actions)[:, 0], np.log(p[np.arange(4), actions]),
                               rtol=1e-5)
    np.testing.assert_allclose(dist.entropy_terms()[:, 0], -(p * np.log(p)).sum(-1), rtol=1e-5)
    assert value.shape == (4,)


def test_log_std_is_state_independent_and_starts_at_zero():
    model, params = init(ActionSpec.continuous(3))
    np.testing.assert_array_equal(params["params"]["log_std"], np.zeros(3))
    dist, _ = model.apply(params, jax.random.normal(jax.random.PRNGKey(0), (6, 8)))
    np.testing.assert_allclose(dist.std, np.ones((6, 3)))


def test_mlagents_preset_initialisation():
    model, params = init(ActionSpec.continuous(2), hidden=256, layers=2, obs=64)
    p = params["params"]
    # He-normal (gain sqrt 2) on hidden layers: std sqrt(2 / fan_in); zero biases.
    assert float(jnp.std(p["actor"]["Dense_0"]["kernel"])) == pytest.approx(math.sqrt(2 / 64), rel=0.05)
    assert float(jnp.std(p["critic"]["Dense_1"]["kernel"])) == pytest.approx(math.sqrt(2 / 256), rel=0.05)
    assert float(jnp.abs(p["actor"]["Dense_0"]["bias"]).max()) == 0.0
    # Policy mean head: He-normal times 0.2.
    assert float(jnp.std(p["policy_head"]["kernel"])) == pytest.approx(0.2 * math.sqrt(2 / 256), rel=0.2)
    # Value head: Glorot uniform, bound sqrt(6 / (fan_in + fan_out)).
    bound = math.sqrt(6 / (256 + 1))
    k = p["value_head"]["kernel"]
    assert float(jnp.abs(k).max()) <= bound
    assert float(jnp.std(k)) == pytest.approx(bound / math.sqrt(3), rel=0.2)


def test_seed_preset_has_layernorm_tanh_and_seed_init():
    model, params = init(ActionSpec.continuous(2), preset="seed", hidden=64, layers=3)
    p = params["params"]
    assert set(p["actor"]) == {"Dense_0", "Dense_1", "Dense_2", "LayerNorm_0", "LayerNorm_1", "LayerNorm_2"}
    np.testing.assert_allclose(p["actor"]["Dense_0"]["bias"], 0.1)
    assert float(jnp.std(p["critic"]["Dense_1"]["kernel"])) == pytest.approx(0.1, rel=0.1)
    # Hidden activations are LayerNorm'd then tanh'd: bounded in (-1, 1).
    _, state = model.apply(params, jnp.full((1, 8), 50.0), mutable=["intermediates"],
                           capture_intermediates=True)
    acts = state["intermediates"]["actor"]["__call__"][0]
    assert float(jnp.abs(acts).max()) < 1.0


def test_mlagents_preset_uses_swish():
    model, params = init(ActionSpec.continuous(1), hidden=4, layers=1, obs=1)
    _, state = model.apply(params, jnp.array([[1.5]]), mutable=["intermediates"],
                           capture_intermediates=True)
    hidden = state["intermediates"]["actor"]["__call__"][0]
    pre = 1.5 * params["params"]["actor"]["Dense_0"]["kernel"][0]
    np.testing.assert_allclose(hidden[0], pre * jax.nn.sigmoid(pre), rtol=1e-6)


def test_actor_and_critic_are_separate_bodies():
    model, params = init(ActionSpec.continuous(2))
    obs = jnp.ones((1, 8))
    grads = jax.grad(lambda p: model.apply(p, obs)[1].sum())(params)["params"]
    assert float(jnp.abs(grads["actor"]["Dense_0"]["kernel"]).sum()) == 0.0
    assert float(jnp.abs(grads["critic"]["Dense_0"]["kernel"]).sum()) > 0.0


def test_normalizer_is_applied_before_both_bodies():
    config = jppo.PPOConfig(normalize=True, batch_size=8, buffer_size=8)
    policy = jppo.make_policy(config, ActionSpec.continuous(2))
    params = policy.init_params(jax.random.PRNGKey(0), 3)
    stats = obs_norm.update(obs_norm.init(3), jnp.array([[1.0, 2.0, 3.0], [3.0, 6.0, 9.0]]))
    obs = jnp.array([[2.0, 8.0, 3.0]])
    dist, value = policy.forward(params, stats, obs)
    raw_dist, raw_value = policy.model.apply(params, obs_norm.apply(stats, obs))
    np.testing.assert_allclose(dist.mean, raw_dist.mean)
    np.testing.assert_allclose(value, raw_value)
    unnormalized = jppo.make_policy(config.replace(normalize=False), ActionSpec.continuous(2))
    assert not np.allclose(unnormalized.value(params, stats, obs), value)


def test_policy_act_and_evaluate_agree():
    config = jppo.PPOConfig(batch_size=8, buffer_size=8)
    for spec in (ActionSpec.continuous(2), ActionSpec.discrete(4)):
        policy = jppo.make_policy(config, spec)
        params = policy.init_params(jax.random.PRNGKey(0), 5)
        stats = obs_norm.init(5)
        obs = jax.random.normal(jax.random.PRNGKey(1), (7, 5))
        action, log_prob, value = policy.act(params, stats, obs, jax.random.PRNGKey(2))
        lp, ent, v = policy.evaluate(params, stats, obs, action)
        assert log_prob.shape == (7, spec.log_prob_dims) and ent.shape == (7, spec.log_prob_dims)
        assert action.shape == (7,) + spec.action_shape
        np.testing.assert_allclose(lp, log_prob, rtol=1e-6)
        np.testing.assert_allclose(v, value)


def test_cleanrl_preset_is_orthogonal_tanh():
    model, params = init(ActionSpec.discrete(2), preset="cleanrl", hidden=64, layers=2, obs=64)
    p = params["params"]
    assert set(p["actor"]) == {"Dense_0", "Dense_1"}
    k = np.asarray(p["actor"]["Dense_1"]["kernel"])
    np.testing.assert_allclose(k.T @ k, 2.0 * np.eye(64), atol=1e-4)  # orthogonal, gain sqrt(2)
    head = np.asarray(p["policy_head"]["kernel"])
    np.testing.assert_allclose(np.linalg.svd(head, compute_uv=False), 0.01, rtol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(p["value_head"]["kernel"]), 1.0, rtol=1e-5)
    _, state = model.apply(params, jnp.full((1, 64), 9.0), mutable=["intermediates"],
                           capture_intermediates=True)
    pre = jnp.tanh(jnp.full((1, 64), 9.0) @ p["actor"]["Dense_0"]["kernel"])
    np.testing.assert_allclose(state["intermediates"]["actor"]["__call__"][0],
                               jnp.tanh(pre @ k), rtol=1e-5, atol=1e-6)
