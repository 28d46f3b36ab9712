"""The running normalizer against numpy over the same stream of batches."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jppo import normalizer as obs_norm


@pytest.mark.parametrize("seed", range(3))
def test_running_stats_match_numpy_over_a_stream(seed):
    rng = np.random.default_rng(seed)
    update = jax.jit(obs_norm.update)
    state = obs_norm.init(4)
    seen = []
    for size in rng.integers(1, 200, size=25):
        batch = rng.normal(loc=[0.0, 5.0, -3.0, 100.0], scale=[1.0, 0.1, 3.0, 20.0],
                           size=(int(size), 4)).astype(np.float32)
        seen.append(batch)
        state = update(state, batch)
        data = np.concatenate(seen).astype(np.float64)
        np.testing.assert_allclose(state.mean, data.mean(0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(obs_norm.variance(state), data.var(0), rtol=1e-4, atol=1e-6)
        assert float(state.count) == len(data)


def test_merge_is_stable_with_a_large_offset():
    # A naive float32 E[x^2] - E[x]^2 loses all digits here; Chan's merge keeps them.
    rng = np.random.default_rng(0)
    state = obs_norm.init(1)
    seen = []
    for _ in range(50):
        batch = (1e4 + rng.normal(size=(100, 1))).astype(np.float32)
        seen.append(batch)
        state = obs_norm.update(state, batch)
    data = np.concatenate(seen).astype(np.float64)
    np.testing.assert_allclose(obs_norm.variance(state), data.var(0), rtol=2e-2)


def test_any_leading_shape_is_flattened():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    state = obs_norm.update(obs_norm.init(4), x)
    np.testing.assert_allclose(state.mean, x.reshape(-1, 4).mean(0))
    assert float(state.count) == 6


def test_apply_normalizes_and_clips_to_five():
    state = obs_norm.update(obs_norm.init(2), np.array([[0.0, 10.0], [2.0, 14.0]], np.float32))
    # mean [1, 12], population std [1, 2]
    out = obs_norm.apply(state, jnp.array([[2.0, 8.0], [100.0, -100.0]]))
    np.testing.assert_allclose(out, [[1.0, -2.0], [5.0, -5.0]], rtol=1e-6)


def test_identity_before_any_data_and_finite_for_constant_features():
    x = jnp.array([[0.5, -3.0]])
    np.testing.assert_allclose(obs_norm.apply(obs_norm.init(2), x), x)
    state = obs_norm.update(obs_norm.init(1), np.ones((10, 1), np.float32))
    assert np.isfinite(np.asarray(obs_norm.apply(state, jnp.ones((1, 1))))).all()
