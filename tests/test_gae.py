"""GAE against the seed's plain-Python compute_gae, hand-computed ends and truncations."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jppo import gae

jit_gae = jax.jit(gae, static_argnames=("gamma", "lam"))


def seed_compute_gae(next_value, rewards, masks, values, gamma, tau):
    """Seed 001's compute_gae, verbatim in logic, on Python floats."""
    values = list(values) + [next_value]
    g = 0.0
    returns = []
    for step in reversed(range(len(rewards))):
        delta = rewards[step] + gamma * values[step + 1] * masks[step] - values[step]
        g = delta + gamma * tau * masks[step] * g
        returns.insert(0, g + values[step])
    return returns


def reference(rewards, values, dones, last_value, gamma, lam):
    """The seed's loop applied to every trailing batch index."""
    returns = np.zeros_like(rewards, dtype=np.float64)
    for idx in np.ndindex(rewards.shape[1:]):
        col = (slice(None),) + idx
        returns[col] = seed_compute_gae(float(last_value[idx]), rewards[col].tolist(),
                                        (1.0 - dones[col]).tolist(), values[col].tolist(), gamma, lam)
    return returns - values, returns


@pytest.mark.parametrize("shape", [(50,), (40, 3), (30, 2, 3)])
@pytest.mark.parametrize("seed", range(5))
def test_gae_matches_seed_compute_gae_on_random_data(shape, seed):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=shape).astype(np.float32)
    values = rng.normal(size=shape).astype(np.float32)
    dones = (rng.uniform(size=shape) < 0.1).astype(np.float32)
    last_value = rng.normal(size=shape[1:]).astype(np.float32)
    adv, ret = jit_gae(rewards, values, dones, last_value, gamma=0.99, lam=0.95)
    ref_adv, ref_ret = reference(rewards, values, dones, last_value, 0.99, 0.95)
    assert adv.shape == shape and ret.shape == shape
    np.testing.assert_allclose(adv, ref_adv, rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(ret, ref_ret, rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(ret, adv + values, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.floats(0.5, 1.0), st.floats(0.0, 1.0), st.integers(0, 2**31 - 1))
def test_gae_property_against_seed_loop(length, gamma, lam, seed):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(length, 2)).astype(np.float32)
    values = rng.normal(size=(length, 2)).astype(np.float32)
    dones = (rng.uniform(size=(length, 2)) < 0.2).astype(np.float32)
    last_value = rng.normal(size=(2,)).astype(np.float32)
    adv, _ = gae(rewards, values, dones, last_value, gamma=gamma, lam=lam)
    ref_adv, _ = reference(rewards, values, dones, last_value, gamma, lam)
    np.testing.assert_allclose(adv, ref_adv, rtol=1e-5, atol=5e-5)


def test_gae_true_end_does_not_bootstrap():
    # Episode of 2 steps ends at t=1; a new one starts at t=2. Hand computed, gamma=0.9, lam=0.5.
    rewards = jnp.array([1.0, 2.0, 3.0])
    values = jnp.array([0.5, 1.0, 4.0])
    dones = jnp.array([0.0, 1.0, 0.0])
    adv, ret = gae(rewards, values, dones, jnp.array(10.0), gamma=0.9, lam=0.5)
    a2 = 3.0 + 0.9 * 10.0 - 4.0  # 8.0, bootstraps from last_value
    a1 = 2.0 - 1.0  # 1.0: no 0.9 * V(t=2), the next episode's value
    a0 = (1.0 + 0.9 * 1.0 - 0.5) + 0.45 * a1  # 1.85
    np.testing.assert_allclose(adv, [a0, a1, a2], atol=1e-6)
    np.testing.assert_allclose(ret, [a0 + 0.5, a1 + 1.0, a2 + 4.0], atol=1e-6)


def test_gae_bootstraps_on_truncation():
    # Same data, but t=1 is a time limit whose final observation has V = 7.
    rewards = jnp.array([1.0, 2.0, 3.0])
    values = jnp.array([0.5, 1.0, 4.0])
    zeros = jnp.zeros(3)
    trunc = jnp.array([0.0, 1.0, 0.0])
    final_values = jnp.array([0.0, 7.0, 0.0])
    adv, _ = gae(rewards, values, zeros, jnp.array(10.0), gamma=0.9, lam=0.5,
                 truncations=trunc, final_values=final_values)
    a2 = 8.0
    a1 = 2.0 + 0.9 * 7.0 - 1.0  # 7.3: bootstrapped from V(final obs), cut from t=2
    a0 = (1.0 + 0.9 * 1.0 - 0.5) + 0.45 * a1
    np.testing.assert_allclose(adv, [a0, a1, a2], atol=1e-5)
    # The documented fold gives the same numbers.
    folded, _ = gae(rewards + 0.9 * trunc * final_values, values, trunc, jnp.array(10.0),
                    gamma=0.9, lam=0.5)
    np.testing.assert_allclose(adv, folded, atol=1e-6)


def test_gae_termination_wins_over_truncation():
    rewards, values = jnp.array([1.0]), jnp.array([0.0])
    adv, _ = gae(rewards, values, jnp.array([1.0]), jnp.array(5.0), gamma=0.9, lam=0.9,
                 truncations=jnp.array([1.0]), final_values=jnp.array([100.0]))
    np.testing.assert_allclose(adv, [1.0])


def test_gae_vmaps_over_a_leading_axis():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(4, 20)).astype(np.float32)
    v = rng.normal(size=(4, 20)).astype(np.float32)
    d = (rng.uniform(size=(4, 20)) < 0.1).astype(np.float32)
    lv = rng.normal(size=(4,)).astype(np.float32)
    batched, _ = jax.vmap(lambda *a: gae(*a, gamma=0.99, lam=0.95))(r, v, d, lv)
    time_major, _ = gae(r.T, v.T, d.T, lv, gamma=0.99, lam=0.95)
    np.testing.assert_allclose(batched, time_major.T, atol=1e-6)


def test_gae_uses_a_reverse_scan():
    jaxpr = jax.make_jaxpr(lambda *a: gae(*a, gamma=0.99, lam=0.95))(
        jnp.zeros(5), jnp.zeros(5), jnp.zeros(5), jnp.zeros(()))
    scans = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]
    assert len(scans) == 1 and scans[0].params["reverse"] is True
