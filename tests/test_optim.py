"""Schedules at start, middle and end; the Optax chain against hand-written Adam."""
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jppo import PPOConfig, make_optimizer, make_schedules

CONFIG = PPOConfig(batch_size=64, buffer_size=12000, learning_rate=3e-4, beta=1e-3, epsilon=0.2)


@pytest.mark.parametrize("name, start, end", [
    ("learning_rate", 3e-4, 1e-10), ("epsilon", 0.2, 0.1), ("beta", 1e-3, 1e-5)])
def test_linear_schedules_start_middle_end(name, start, end):
    fn = getattr(make_schedules(CONFIG, 1000), name)
    assert float(fn(0)) == pytest.approx(start, rel=1e-6)
    assert float(fn(500)) == pytest.approx((start + end) / 2, rel=1e-5)
    assert float(fn(1000)) == pytest.approx(end, rel=1e-4)
    assert float(fn(5000)) == pytest.approx(end, rel=1e-4)  # held after the horizon


def test_constant_schedules():
    config = CONFIG.replace(learning_rate_schedule="constant")
    s = make_schedules(config, 1000)
    assert config.schedule("epsilon") == "constant" and config.schedule("beta") == "constant"
    for step in (0, 500, 1000):
        assert float(s.learning_rate(step)) == pytest.approx(3e-4)
        assert float(s.epsilon(step)) == pytest.approx(0.2)
    mixed = make_schedules(CONFIG.replace(epsilon_schedule="constant"), 1000)
    assert float(mixed.epsilon(1000)) == pytest.approx(0.2)
    assert float(mixed.learning_rate(1000)) == pytest.approx(1e-10, rel=1e-3)


def test_total_adam_steps_follows_ml_agents_max_steps():
    # 500k steps in updates of 12000: 42 updates x 3 epochs x 187 minibatches.
    assert CONFIG.replace(max_steps=500_000).total_adam_steps(12000) == 42 * 3 * 187


def hand_adam(params, grads_seq, lrs, eps=1e-8, clip=None):
    m = np.zeros_like(params)
    v = np.zeros_like(params)
    p = params.copy()
    for t, (g, lr) in enumerate(zip(grads_seq, lrs), start=1):
        if clip is not None:
            norm = np.sqrt((g**2).sum())
            g = g * min(1.0, clip / norm)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        mhat, vhat = m / (1 - 0.9**t), v / (1 - 0.999**t)
        p = p - lr * mhat / (np.sqrt(vhat) + eps)
    return p


@pytest.mark.parametrize("clip", [None, 0.5])
def test_optimizer_is_adam_with_decayed_learning_rate(clip):
    config = CONFIG.replace(learning_rate=0.1, max_grad_norm=clip)
    opt = make_optimizer(config, 4)
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=3).astype(np.float32) for _ in range(6)]
    params = jnp.array([1.0, -2.0, 0.5])
    state = opt.init(params)
    for g in grads:
        updates, state = opt.update(jnp.asarray(g), state, params)
        params = optax.apply_updates(params, updates)
    lrs = [0.1 + (1e-10 - 0.1) * min(k, 4) / 4 for k in range(6)]
    expected = hand_adam(np.array([1.0, -2.0, 0.5]), [g.astype(np.float64) for g in grads], lrs,
                         clip=clip)
    np.testing.assert_allclose(params, expected, rtol=1e-5, atol=1e-6)
