"""Hand-computed PPO loss cases: clip binding or not, value clipping, KL penalty, A2C, vmap."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jppo
from jppo import adapt_kl_coef, ppo_loss
from jppo.core.losses import KL_COEF_MAX, KL_COEF_MIN, sample_terms
from jppo.envs import make


def single(ratio, advantage, **kw):
    """Policy loss of one sample with one action dimension at ``ratio``."""
    _, m = ppo_loss(jnp.log(jnp.array([[ratio]])), jnp.zeros((1, 1)), jnp.array([advantage]),
                    jnp.zeros(1), jnp.zeros(1), jnp.zeros(1), jnp.zeros((1, 1)),
                    epsilon=0.2, beta=0.0, **kw)
    return float(m.policy_loss), float(m.clip_fraction)


@pytest.mark.parametrize("ratio, advantage, expected, clipped", [
    (1.5, 2.0, -2.4, 1.0),    # r > 1+eps, A > 0: clip binds, 1.2 * 2
    (1.5, -2.0, 3.0, 1.0),    # r > 1+eps, A < 0: unclipped term is smaller, -(1.5 * -2)
    (0.5, 2.0, -1.0, 1.0),    # r < 1-eps, A > 0: unclipped 0.5 * 2 is smaller
    (0.5, -2.0, 1.6, 1.0),    # r < 1-eps, A < 0: clip binds, -(0.8 * -2)
    (1.1, 2.0, -2.2, 0.0),    # inside the trust region: plain surrogate
    (0.9, -2.0, 1.8, 0.0),
])
def test_clipped_surrogate_by_hand(ratio, advantage, expected, clipped):
    loss, fraction = single(ratio, advantage)
    assert loss == pytest.approx(expected, abs=1e-6)
    assert fraction == clipped


def test_clip_binding_stops_the_gradient():
    def policy_loss(log_prob, advantage):
        return ppo_loss(log_prob[None, None], jnp.zeros((1, 1)), jnp.array([advantage]),
                        jnp.zeros(1), jnp.zeros(1), jnp.zeros(1), jnp.zeros((1, 1)),
                        epsilon=0.2, beta=0.0)[1].policy_loss
    grad = jax.grad(policy_loss)
    assert float(grad(jnp.log(1.5), 2.0)) == 0.0  # bound: no push beyond 1 + eps
    assert float(grad(jnp.log(1.1), 2.0)) == pytest.approx(-1.1 * 2.0, rel=1e-6)  # d(-rA)/dlogp
    assert float(grad(jnp.log(1.5), -2.0)) == pytest.approx(1.5 * 2.0, rel=1e-6)


def test_ratio_is_taken_per_action_dimension():
    # Dim 0 ratio 1.5 (clipped to 1.2), dim 1 ratio 1.0; A = 1: loss = -(1.2 + 1.0) / 2.
    _, m = ppo_loss(jnp.log(jnp.array([[1.5, 1.0]])), jnp.zeros((1, 2)), jnp.array([1.0]),
                    jnp.zeros(1), jnp.zeros(1), jnp.zeros(1), jnp.zeros((1, 2)), epsilon=0.2, beta=0.0)
    assert float(m.policy_loss) == pytest.approx(-1.1, abs=1e-6)
    assert float(m.clip_fraction) == pytest.approx(0.5)
    # The joint ratio 1.5 would have been clipped as a whole to 1.2: a different number.
    assert float(m.policy_loss) != pytest.approx(-1.2, abs=1e-3)


@pytest.mark.parametrize("clip_value, expected", [(True, 3.24), (False, 1.0)])
def test_value_loss_clipping_by_hand(clip_value, expected):
    # V_old = 1, V = 2, R = 3, eps = 0.2: unclipped (3-2)^2 = 1, clipped (3-1.2)^2 = 3.24.
    _, m = ppo_loss(jnp.zeros((1, 1)), jnp.zeros((1, 1)), jnp.zeros(1), jnp.array([2.0]),
                    jnp.array([1.0]), jnp.array([3.0]), jnp.zeros((1, 1)), epsilon=0.2, beta=0.0,
                    clip_value=clip_value)
    assert float(m.value_loss) == pytest.approx(expected, abs=1e-5)


def test_value_clipping_keeps_the_larger_error():
    # V moved toward R past eps: the clipped error (larger) is kept, so no gain from the jump.
    _, m = ppo_loss(jnp.zeros((1, 1)), jnp.zeros((1, 1)), jnp.zeros(1), jnp.array([2.9]),
                    jnp.array([1.0]), jnp.array([3.0]), jnp.zeros((1, 1)), epsilon=0.2, beta=0.0)
    assert float(m.value_loss) == pytest.approx((3.0 - 1.2) ** 2, abs=1e-5)


def test_total_combines_terms_with_coefficients():
    loss, m = ppo_loss(jnp.log(jnp.array([[1.1]])), jnp.zeros((1, 1)), jnp.array([2.0]),
                       jnp.array([2.0]), jnp.array([1.0]), jnp.array([3.0]), jnp.array([[1.4]]),
                       epsilon=0.2, beta=0.01, value_coef=0.5)
    assert float(loss) == pytest.approx(-2.2 + 0.5 * 3.24 - 0.01 * 1.4, abs=1e-5)
    assert float(m.loss) == float(loss)
    assert float(m.entropy) == pytest.approx(1.4)


def test_kl_penalty_surrogate_by_hand():
    # Two dims with ratios 1.5 and 0.8, A = 1, kl_coef = 0.5.
    lp = jnp.log(jnp.array([[1.5, 0.8]]))
    _, m = ppo_loss(lp, jnp.zeros((1, 2)), jnp.array([1.0]), jnp.zeros(1), jnp.zeros(1),
                    jnp.zeros(1), jnp.zeros((1, 2)), epsilon=0.2, beta=0.0, kind="kl_penalty",
                    kl_coef=0.5)
    joint = 1.5 * 0.8
    kl = (joint - 1.0) - math.log(joint)
    assert float(m.approx_kl) == pytest.approx(kl, rel=1e-5)
    assert float(m.policy_loss) == pytest.approx(-(1.5 + 0.8) / 2 + 0.5 * kl, rel=1e-5)


def test_a2c_loss_is_advantage_weighted_log_likelihood():
    lp = jnp.array([[-1.0, -2.0], [-0.5, -0.25]])
    adv = jnp.array([2.0, -1.0])
    _, m = ppo_loss(lp, jnp.zeros((2, 2)), adv, jnp.zeros(2), jnp.zeros(2), jnp.zeros(2),
                    jnp.zeros((2, 2)), epsilon=0.2, beta=0.0, kind="a2c")
    expected = -np.mean([(-1.0 * 2 + -2.0 * 2) / 2, (-0.5 * -1 + -0.25 * -1) / 2])
    assert float(m.policy_loss) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("kl, expected", [
    (0.015, 2.0),    # exactly 1.5 x target: doubles
    (0.02, 2.0),
    (0.01, 1.0),     # on target: unchanged
    (0.014, 1.0),
    (0.01 / 1.5, 0.5),  # exactly target / 1.5: halves
    (0.001, 0.5),
])
def test_adaptive_kl_coefficient_rule(kl, expected):
    assert float(adapt_kl_coef(jnp.float32(1.0), jnp.float32(kl), 0.01)) == pytest.approx(expected)


def test_vmapped_loss_equals_an_explicit_loop_over_agents():
    rng = np.random.default_rng(3)
    n, d = 12, 2
    args = [rng.normal(size=(n, d)) * 0.3, rng.normal(size=(n, d)) * 0.3, rng.normal(size=n),
            rng.normal(size=n), rng.normal(size=n), rng.normal(size=n), rng.uniform(size=(n, d))]
    args = [jnp.asarray(a, jnp.float32) for a in args]
    for kind in ("clip", "kl_penalty", "a2c"):
        loss, m = ppo_loss(*args, epsilon=0.2, beta=0.01, value_coef=0.5, kind=kind, kl_coef=0.3)
        terms = [sample_terms(*(a[i] for a in args), epsilon=0.2, kind=kind, kl_coef=0.3)
                 for i in range(n)]
        policy = np.mean([float(t.policy_loss) for t in terms])
        value = np.mean([float(t.value_loss) for t in terms])
        entropy = np.mean([float(t.entropy) for t in terms])
        assert float(m.policy_loss) == pytest.approx(policy, rel=1e-5, abs=1e-6)
        assert float(m.value_loss) == pytest.approx(value, rel=1e-5)
        assert float(loss) == pytest.approx(policy + 0.5 * value - 0.01 * entropy, rel=1e-5, abs=1e-6)


def test_adaptive_kl_coefficient_stays_between_its_floor_and_ceiling():
    """Halving for 100 updates of tiny KL (CartPole went to 6e-30 this way) stops at the floor,
    doubling stops at the ceiling, and from either end 10 updates bring it back to 1."""
    assert (KL_COEF_MIN, KL_COEF_MAX) == (1e-3, 1e3)
    coef = jnp.float32(1.0)
    for _ in range(100):
        coef = adapt_kl_coef(coef, jnp.float32(0.0), 0.01)
    assert float(coef) == pytest.approx(1e-3)
    for _ in range(10):
        coef = adapt_kl_coef(coef, jnp.float32(1.0), 0.01)
    assert float(coef) == pytest.approx(1.024)
    for _ in range(100):
        coef = adapt_kl_coef(coef, jnp.float32(1.0), 0.01)
    assert float(coef) == pytest.approx(1e3)
    assert float(adapt_kl_coef(jnp.float32(0.0), jnp.float32(0.01), 0.01)) == pytest.approx(1e-3)


def test_kl_penalty_training_keeps_its_coefficient_at_the_floor_not_below():
    """A kl_penalty CartPole run whose KL stays far under target: the coefficient rests on the
    floor instead of vanishing."""
    config = jppo.PPOConfig(loss="kl_penalty", kl_target=10.0, batch_size=64, buffer_size=128,
                            max_steps=128 * 20, hidden_units=16, num_layers=1)
    _, metrics = jax.jit(jppo.make_train(config, make("CartPole-v1"), num_envs=4))(
        jax.random.PRNGKey(0))
    coefs = np.asarray(metrics["kl_coef"])
    assert coefs[0] == pytest.approx(0.5) and coefs.min() == pytest.approx(KL_COEF_MIN)
    assert coefs[-1] == pytest.approx(KL_COEF_MIN)
