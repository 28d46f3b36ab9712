"""The jitted update on a fixed rollout: deterministic, learns, compiles once, stays on device."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jppo
from jppo import ActionSpec, PPOConfig, Rollout

T, B, OBS = 65, 4, 3  # 260 samples: 8 minibatches of 32 per epoch, 4 dropped
CONFIG = PPOConfig(batch_size=32, buffer_size=256, num_epoch=2, hidden_units=16, num_layers=2,
                   normalize=True, learning_rate=1e-3, beta=1e-3, lambd=0.95, max_steps=10_000)


def fixed_rollout(spec, seed=0, truncate=False):
    """Experience the initial policy of ``setup`` would have gathered on made-up dynamics."""
    keys = jax.random.split(jax.random.PRNGKey(seed), 8)
    obs = jax.random.normal(keys[0], (T, B, OBS)) * 2.0 + 1.0
    policy = jppo.make_policy(CONFIG, spec)
    params = jppo.init_train_state(jax.random.PRNGKey(42), CONFIG, OBS, spec).params
    actions, log_probs, values = policy.act(params, jppo.normalizer.init(OBS), obs, keys[2])
    rewards = obs[..., 0] - 0.5 * obs[..., 1]  # learnable from obs
    dones = (jax.random.uniform(keys[3], (T, B)) < 0.2).astype(jnp.float32)
    extra = {}
    if truncate:
        extra = dict(truncations=(jax.random.uniform(keys[4], (T, B)) < 0.05).astype(jnp.float32),
                     final_values=jax.random.normal(keys[5], (T, B)))
    return Rollout(obs, actions, log_probs, values, rewards, dones, jnp.zeros(B), **extra)


def setup(spec=ActionSpec.continuous(2), config=CONFIG, **kw):
    state = jppo.init_train_state(jax.random.PRNGKey(42), config, OBS, spec)
    update = jppo.make_update(config, spec, config.total_adam_steps(T * B))
    return state, update, fixed_rollout(spec, **kw)


def test_update_is_deterministic_for_a_fixed_key():
    state, update, rollout = setup()
    a, ma = update(state, rollout)
    b, mb = update(state, rollout)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert ma == mb or all(float(ma[k]) == float(mb[k]) for k in ma)
    # A different key gives a different minibatch order, hence different parameters.
    c, _ = update(state.replace(key=jax.random.PRNGKey(7)), rollout)
    assert not np.allclose(c.params["params"]["log_std"], a.params["params"]["log_std"])


def full_batch_loss(config, params, normalizer, rollout, spec):
    """The objective the update minimises, on all the rollout's samples."""
    batch = jppo.prepare_batch(config, rollout)
    policy = jppo.make_policy(config, spec)
    lp, ent, v = policy.evaluate(params, normalizer, batch.obs, batch.actions)
    return jppo.ppo_loss(lp, batch.log_probs, batch.advantages, v, batch.values, batch.returns,
                         ent, epsilon=0.2, beta=1e-3, clip_value=config.clip_value)[1]


@pytest.mark.parametrize("spec", [ActionSpec.continuous(2), ActionSpec.discrete(3)])
@pytest.mark.parametrize("clip_value", [True, False])
def test_update_lowers_the_loss_on_its_data(spec, clip_value):
    config = CONFIG.replace(clip_value=clip_value)
    state, update, rollout = setup(spec, config=config)
    new, metrics = update(state, rollout)
    for _ in range(4):
        new, metrics = update(new, rollout)
    # Both scored with the final normalizer statistics, so only the parameters differ.
    before = full_batch_loss(config, state.params, new.normalizer, rollout, spec)
    after = full_batch_loss(config, new.params, new.normalizer, rollout, spec)
    assert float(after.policy_loss) < float(before.policy_loss) - 0.02
    if clip_value:
        # Clipping holds V within epsilon of the stored values, so the value error moves little.
        assert float(after.loss) < float(before.loss) - 0.2
    else:
        assert float(after.value_loss) < 0.7 * float(before.value_loss)
    assert all(np.isfinite(float(v)) for v in metrics.values())


def test_update_counts_adam_steps_and_drops_the_remainder():
    state, update, rollout = setup()
    new, metrics = update(state, rollout)
    assert int(new.step) == 2 * (260 // 32)  # 16
    assert float(new.normalizer.count) == 260
    np.testing.assert_allclose(new.normalizer.mean, np.asarray(rollout.obs).reshape(-1, OBS).mean(0),
                               rtol=1e-5)
    schedules = jppo.make_schedules(CONFIG, CONFIG.total_adam_steps(260))
    assert float(metrics["learning_rate"]) == pytest.approx(float(schedules.learning_rate(15)))
    assert float(metrics["epsilon"]) == pytest.approx(float(schedules.epsilon(15)))


def test_update_compiles_once_and_never_leaves_the_device():
    state, update, rollout = setup()
    state, rollout = jax.device_put((state, rollout))
    with jax.transfer_guard("disallow"):
        for _ in range(3):
            state, metrics = update(state, rollout)
    assert update._cache_size() == 1
    jaxpr = jax.make_jaxpr(update)(state, rollout)
    text = str(jaxpr)
    for primitive in ("callback", "io_callback", "pure_callback", "debug_callback"):
        assert primitive not in text


def test_update_traces_once_across_calls():
    traces = []
    plain = jppo.make_update(CONFIG, ActionSpec.continuous(2), 100, jit=False)

    def counted(state, rollout):
        traces.append(1)
        return plain(state, rollout)

    update = jax.jit(counted)
    state, _, rollout = setup()
    for _ in range(3):
        state, _ = update(state, rollout)
    assert len(traces) == 1


def test_update_with_truncations_uses_final_values():
    spec = ActionSpec.continuous(2)
    rollout = fixed_rollout(spec, truncate=True)
    batch = jppo.prepare_batch(CONFIG, rollout)
    adv, ret = jppo.gae(rollout.rewards, rollout.values, rollout.dones, rollout.last_value,
                        gamma=CONFIG.gamma, lam=CONFIG.lambd, truncations=rollout.truncations,
                        final_values=rollout.final_values)
    np.testing.assert_allclose(batch.returns, np.asarray(ret).reshape(-1), rtol=1e-6)
    flat = np.asarray(adv).reshape(-1)
    np.testing.assert_allclose(batch.advantages, (flat - flat.mean()) / (flat.std() + 1e-10),
                               rtol=1e-4, atol=1e-5)
    ignored = jppo.prepare_batch(CONFIG, rollout._replace(truncations=None, final_values=None))
    assert not np.allclose(ignored.returns, batch.returns)


def test_kl_penalty_adapts_its_coefficient():
    config = CONFIG.replace(loss="kl_penalty", kl_target=1e-6, kl_coef=1.0)
    state, update, rollout = setup(config=config)
    new, metrics = update(state, rollout)
    assert float(new.kl_coef) == 2.0  # any real step moves the policy far past a 1e-6 target
    config = CONFIG.replace(loss="kl_penalty", kl_target=10.0, kl_coef=1.0)
    state, update, rollout = setup(config=config)
    new, _ = update(state, rollout)
    assert float(new.kl_coef) == 0.5


def test_a2c_update_runs_and_learns_values():
    config = CONFIG.replace(loss="a2c", clip_value=False)
    state, update, rollout = setup(config=config)
    new, m0 = update(state, rollout)
    for _ in range(3):
        new, m = update(new, rollout)
    assert float(m["value_loss"]) < float(m0["value_loss"])


def test_rollout_smaller_than_a_minibatch_is_refused():
    config = CONFIG.replace(batch_size=256, buffer_size=256)
    spec = ActionSpec.continuous(2)
    state = jppo.init_train_state(jax.random.PRNGKey(0), config, OBS, spec)
    update = jppo.make_update(config, spec, 10)
    small = jax.tree_util.tree_map(lambda x: x[:10] if x is not None and x.ndim > 1 else x,
                                   fixed_rollout(spec))
    with pytest.raises(ValueError, match="holds no minibatch of batch_size = 256"):
        update(state, small)


def test_minibatch_indices_are_fresh_permutations_per_epoch():
    orders = np.asarray(jppo.minibatch_indices(jax.random.PRNGKey(0), 100, 32, 3))
    assert orders.shape == (3, 3, 32)
    for epoch in orders:
        flat = epoch.reshape(-1)
        assert len(set(flat.tolist())) == 96 and flat.min() >= 0 and flat.max() < 100
    assert not np.array_equal(orders[0], orders[1])


@pytest.mark.parametrize("n", [1, 7, 260, 5000, 70_000])
def test_permutations_are_permutations(n):
    perms = np.asarray(jppo.core.update.permutations(jax.random.PRNGKey(3), 3, n))
    assert perms.shape == (3, n)
    for p in perms:
        np.testing.assert_array_equal(np.sort(p), np.arange(n))
    if n > 7:
        assert not np.array_equal(perms[0], perms[1])


def test_packed_permutations_are_uniform_enough():
    # Each of 10 items lands in each position about equally often over 20k shuffles.
    perms = np.asarray(jppo.core.update.permutations(jax.random.PRNGKey(0), 20_000, 10))
    counts = np.stack([(perms == i).sum(0) for i in range(10)])  # [item, position]
    expected = 20_000 / 10
    assert np.abs(counts - expected).max() < 5 * np.sqrt(expected)


def test_init_train_state_accepts_given_params():
    spec = ActionSpec.continuous(2)
    fresh = jppo.init_train_state(jax.random.PRNGKey(0), CONFIG, OBS, spec)
    doubled = jax.tree_util.tree_map(lambda x: 2 * x, fresh.params)
    given = jppo.init_train_state(jax.random.PRNGKey(0), CONFIG, OBS, spec, params=doubled)
    for a, b in zip(jax.tree_util.tree_leaves(given.params), jax.tree_util.tree_leaves(doubled)):
        np.testing.assert_array_equal(a, b)
    # The optimizer state is over the flattened parameters: Adam's moments are one vector.
    size = sum(x.size for x in jax.tree_util.tree_leaves(fresh.params))
    assert [x.shape for x in jax.tree_util.tree_leaves(given.opt_state) if x.ndim] == [(size,), (size,)]
