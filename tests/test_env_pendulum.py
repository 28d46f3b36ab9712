"""jppo.envs.pendulum.Pendulum against Gymnasium's Pendulum-v1 (with its TimeLimit of 200 steps)."""
import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jppo.envs import Box, auto_reset_step
from jppo.envs.pendulum import EnvParams, EnvState, Pendulum, angle_normalize

ENV = Pendulum()
KEY = jax.random.key(0)  # step is deterministic; any key will do
STEP = jax.jit(ENV.step)
RESET = jax.jit(ENV.reset)
V_STEP = jax.jit(jax.vmap(ENV.step))
V_RESET = jax.jit(jax.vmap(ENV.reset))
BATCH = 16  # one batch size for the vmapped functions, so each compiles once
EPS32 = 2.0 ** -23  # float32 spacing at 1.0


def inject(genv) -> EnvState:
    """Rounds Gymnasium's float64 state to float32 in place and returns it as the same EnvState."""
    s32 = np.asarray(genv.unwrapped.state, np.float32)
    genv.unwrapped.state = s32.astype(np.float64)
    return EnvState(*jnp.asarray(s32), jnp.int32(genv._elapsed_steps))


def to_vec(state):
    return jnp.stack([state.theta, state.theta_dot])


@jax.jit
def rollout_with_error_bound(state, actions, params):
    """Open-loop rollout of ``actions`` [T, 1] and a first-order bound on its float32 rounding error.

    Returns obs [T, 3], reward [T], terminated [T], truncated [T] and bound [T]: an estimate, from
    the Jacobians J_t of the step, of how far the state after step t may sit from the exact
    (float64) trajectory if each step rounds (theta, theta_dot) by one ulp of their size d_k:
    bound[t] = sum_k |J_t ... J_{k+1}|_F d_k. Since |d cos theta| <= |d theta|, it bounds obs too.
    """
    horizon = actions.shape[0]

    def body(carry, action):
        state, phi, t = carry
        step_vec = lambda v: to_vec(ENV.step(KEY, EnvState(*v, state.time), action, params)[1])
        jac = jax.jacfwd(step_vec)(to_vec(state))
        obs, state, reward, terminated, truncated, _ = ENV.step(KEY, state, action, params)
        ulp = EPS32 * (1.0 + jnp.sum(jnp.abs(to_vec(state))))
        phi = jnp.einsum("ij,kjl->kil", jac, phi).at[t].set(ulp * jnp.eye(2))
        bound = jnp.sum(jnp.sqrt(jnp.sum(phi ** 2, axis=(1, 2))))
        return (state, phi, t + 1), (obs, reward, terminated, truncated, bound)

    carry = (state, jnp.zeros((horizon, 2, 2), jnp.float32), 0)
    return jax.lax.scan(body, carry, actions)[1]


def gym_episode(seed):
    """Gymnasium's episode of uniform(-3, 3) torques (clipped to +-2 inside): initial EnvState,
    actions [200, 1], obs [200, 3], rewards [200], terminated [200], truncated [200]."""
    genv, rng = gym.make("Pendulum-v1"), np.random.default_rng(seed)
    genv.reset(seed=seed)
    state = inject(genv)
    actions = rng.uniform(-3, 3, (200, 1)).astype(np.float32)
    steps = [genv.step(a)[:4] for a in actions]
    return state, actions, *map(np.asarray, zip(*steps))


def test_spaces_and_dtypes():
    obs, state = RESET(KEY)
    obs2, _, reward, terminated, truncated, info = STEP(KEY, state, jnp.array([0.5]))
    assert obs.shape == obs2.shape == (3,) and obs.dtype == obs2.dtype == jnp.float32
    assert reward.shape == () and reward.dtype == jnp.float32
    assert terminated.dtype == truncated.dtype == jnp.bool_
    assert terminated.shape == truncated.shape == ()
    assert info == {} and int(state.time) == 0
    assert ENV.action_space() == Box(-2.0, 2.0, (1,))
    space = ENV.observation_space()
    assert space.shape == (3,)
    np.testing.assert_array_equal(space.high, [1.0, 1.0, 8.0])
    # A scalar torque is the same action as its [1] array.
    np.testing.assert_array_equal(STEP(KEY, state, jnp.float32(0.5))[0], obs2)


def test_angle_normalize_is_accurate_for_large_angles():
    x = np.linspace(-100, 100, 100_001).astype(np.float32)
    exact = (x.astype(np.float64) + np.pi) % (2 * np.pi) - np.pi
    got = np.asarray(angle_normalize(jnp.asarray(x)), np.float64)
    # Same square (+pi and -pi are both allowed at the seam), to float32 precision of the result.
    np.testing.assert_allclose(got ** 2, exact ** 2, rtol=0, atol=2e-6)
    assert np.abs(got).max() <= np.pi + 1e-6


def test_one_step_transitions_match_gymnasium():
    """Whole episodes, every step started from the same (float32) state in both envs."""
    largest_theta = 0.0
    for seed, bias in [(0, 0.0), (1, 0.0), (2, 2.5), (3, -2.5)]:
        # Torques in [bias - 3, bias + 3] exercise the clipping; a bias spins the pendulum up
        # so theta (never wrapped, as in Gymnasium) reaches tens of radians.
        genv, rng = gym.make("Pendulum-v1"), np.random.default_rng(seed)
        genv.reset(seed=seed)
        for t in range(200):
            state = inject(genv)
            largest_theta = max(largest_theta, abs(float(state.theta)))
            action = np.array([bias + rng.uniform(-3, 3)], np.float32)
            obs, reward, terminated, truncated, _ = genv.step(action)
            j_obs, j_state, j_reward, j_term, j_trunc, _ = STEP(KEY, state, action)
            np.testing.assert_allclose(j_obs, obs, rtol=0, atol=1e-5)
            np.testing.assert_allclose(j_reward, reward, rtol=0, atol=1e-5)
            assert (bool(j_term), bool(j_trunc)) == (terminated, truncated) == (False, t == 199)
            assert int(j_state.time) == genv._elapsed_steps == t + 1
    assert largest_theta > 20


def test_one_step_with_other_params_matches_gymnasium():
    params = EnvParams(max_speed=5.0, max_torque=1.5, dt=0.03, g=9.81, m=0.7, l=1.3)
    genv = gym.make("Pendulum-v1", g=params.g)
    for name in ("max_speed", "max_torque", "dt", "m", "l"):
        setattr(genv.unwrapped, name, getattr(params, name))
    rng = np.random.default_rng(7)
    genv.reset(seed=7)
    for _ in range(40):
        genv.unwrapped.state = rng.uniform([-np.pi, -5], [np.pi, 5])
        state = inject(genv)
        action = rng.uniform(-3, 3, 1).astype(np.float32)
        obs, reward, _, _, _ = genv.step(action)
        j_obs, _, j_reward, _, _, _ = STEP(KEY, state, action, params)
        np.testing.assert_allclose(j_obs, obs, rtol=0, atol=1e-5)
        np.testing.assert_allclose(j_reward, reward, rtol=0, atol=1e-5)
    # The defaults would have moved the state visibly differently.
    assert np.abs(np.asarray(STEP(KEY, state, action)[0]) - obs).max() > 1e-3


@pytest.mark.parametrize("seed", range(5))
def test_episode_rollout_matches_gymnasium(seed):
    """Gymnasium's own float64 200-step episode against an open-loop float32 rollout of its actions.

    The obs tolerance is the first-order float32 error bound of ``rollout_with_error_bound`` plus
    1e-5 for rounding the observation itself; the reward's is 1e-5 plus the bound on the state
    before the step times |grad cost| <= |(2 pi, 0.2 * 8)| < 6.5. Over 200 seeds the real errors
    stayed below 10% of these, while a 1e-4 relative error in g, dt or l exceeded them 3.5-fold or
    more on every seed (the next test). A seed that swings slowly past upright can amplify rounding
    1e5-fold, which a fixed tolerance would have to absorb for every seed.
    """
    state, actions, g_obs, g_reward, g_term, g_trunc = gym_episode(seed)
    j_obs, j_reward, j_term, j_trunc, bound = map(
        np.asarray, rollout_with_error_bound(state, actions, ENV.default_params))
    assert np.all(np.abs(j_obs - g_obs).max(axis=1) <= 1e-5 + bound)
    bound_before = np.concatenate([[0.0], bound[:-1]])  # the initial state is shared exactly
    assert np.all(np.abs(j_reward - g_reward) <= 1e-5 + 6.5 * bound_before)
    np.testing.assert_array_equal(j_term, g_term)
    np.testing.assert_array_equal(j_trunc, g_trunc)
    assert not g_term.any() and np.flatnonzero(g_trunc).tolist() == [199]


@pytest.mark.parametrize("field", ["g", "dt", "l"])
def test_rollout_error_bound_catches_small_physics_errors(field):
    params = EnvParams()._replace(**{field: getattr(EnvParams(), field) * (1 + 1e-4)})
    for seed in range(3):
        state, actions, g_obs, *_ = gym_episode(seed)
        j_obs, _, _, _, bound = map(np.asarray, rollout_with_error_bound(state, actions, params))
        assert np.any(np.abs(j_obs - g_obs).max(axis=1) > 1e-5 + bound)


def test_truncates_at_exactly_200_steps_and_never_terminates():
    @jax.jit
    def run(state, actions):
        def body(state, action):
            _, state, _, terminated, truncated, _ = ENV.step(KEY, state, action)
            return state, (terminated, truncated)
        return jax.lax.scan(body, state, actions)

    actions = np.random.default_rng(0).uniform(-2, 2, (230, 1)).astype(np.float32)
    final, (terminated, truncated) = jax.tree_util.tree_map(np.asarray, run(RESET(KEY)[1], actions))
    assert not terminated.any()
    assert np.argmax(truncated) == 199 and truncated[199:].all()
    assert int(final.time) == 230


def test_reset_distribution():
    obs, state = V_RESET(jax.random.split(jax.random.key(1), 4096))
    obs, theta, theta_dot = np.asarray(obs), np.asarray(state.theta), np.asarray(state.theta_dot)
    assert obs.shape == (4096, 3) and obs.dtype == np.float32
    np.testing.assert_allclose(obs, np.stack([np.cos(theta), np.sin(theta), theta_dot], 1), atol=1e-6)
    assert np.all(np.abs(theta) <= np.float32(np.pi)) and np.all(np.abs(theta_dot) <= 1.0)
    assert theta.min() < -3.1 and theta.max() > 3.1 and theta_dot.min() < -0.99 and theta_dot.max() > 0.99
    # Uniform: mean 0 (standard errors 0.028 and 0.009), standard deviation half-width / sqrt(3).
    assert abs(theta.mean()) < 0.15 and abs(theta_dot.mean()) < 0.05
    np.testing.assert_allclose([theta.std(), theta_dot.std()], [np.pi, 1] / np.sqrt(3), rtol=0.05)
    assert np.all(np.asarray(state.time) == 0)


def test_vmap_matches_single_steps():
    keys = jax.random.split(jax.random.key(2), BATCH)
    _, states = V_RESET(keys)
    actions = np.linspace(-3, 3, BATCH, dtype=np.float32)[:, None]
    b_obs, b_state, b_reward, b_term, b_trunc, _ = jax.tree_util.tree_map(
        np.asarray, V_STEP(keys, states, actions))
    assert b_obs.shape == (BATCH, 3) and b_reward.shape == b_term.shape == b_trunc.shape == (BATCH,)
    states = jax.tree_util.tree_map(np.asarray, states)
    for i in range(BATCH):
        obs, _, reward, term, trunc, _ = STEP(keys[i], EnvState(*(f[i] for f in states)), actions[i])
        np.testing.assert_allclose(b_obs[i], obs, rtol=0, atol=1e-6)
        np.testing.assert_allclose(b_reward[i], reward, rtol=1e-6)
        assert (b_term[i], b_trunc[i]) == (term, trunc) == (False, False)
    assert np.all(b_state.time == 1)


@jax.jit
def auto_reset_scan(states, keys, actions):
    """``auto_reset_step`` over [T, B] keys and actions: (states before each step, AutoResetStep)."""
    def body(states, xs):
        out = jax.vmap(lambda k, s, a: auto_reset_step(ENV, k, s, a))(xs[0], states, xs[1])
        return out.state, (states, out)
    return jax.lax.scan(body, states, (keys, actions))[1]


@jax.jit
@jax.vmap  # over one flat batch: a nested vmap compiles 3x slower
def step_and_reset(key, state, action):
    """What auto_reset_step should combine: (step's obs, terminated, truncated, reset obs)."""
    obs, _, _, terminated, truncated, _ = ENV.step(key, state, action)
    reset_key = jax.random.split(key)[1]  # as auto_reset_step splits its key
    return obs, terminated, truncated, ENV.reset(reset_key)[0]


def test_auto_reset_step_resets_exactly_where_truncated():
    horizon, rng = 40, np.random.default_rng(3)
    _, states = V_RESET(jax.random.split(jax.random.key(3), BATCH))
    states = states._replace(time=jnp.arange(BATCH, dtype=jnp.int32) + 170)  # truncate at steps 14..29
    keys = rng.integers(0, 2 ** 32, (horizon, BATCH, 2), dtype=np.uint32)  # raw threefry keys
    actions = rng.uniform(-2, 2, (horizon, BATCH, 1)).astype(np.float32)
    before, out = jax.tree_util.tree_map(np.asarray, auto_reset_scan(states, keys, actions))
    flat = lambda a: np.reshape(a, (horizon * BATCH,) + np.shape(a)[2:])
    unflat = lambda a: np.reshape(a, (horizon, BATCH) + np.shape(a)[1:])
    obs, terminated, truncated, reset_obs = map(unflat, step_and_reset(
        flat(keys), jax.tree_util.tree_map(flat, before), flat(actions)))
    assert not terminated.any() and not out.terminated.any()
    np.testing.assert_array_equal(np.argmax(truncated, axis=0), 29 - np.arange(BATCH))
    assert truncated.sum() == BATCH
    np.testing.assert_array_equal(out.truncated, truncated)
    np.testing.assert_array_equal(out.final_obs, obs)
    np.testing.assert_array_equal(out.obs, np.where(truncated[..., None], reset_obs, obs))
    np.testing.assert_array_equal(out.state.time, np.where(truncated, 0, before.time + 1))
    np.testing.assert_array_equal(before.time[1:], out.state.time[:-1])  # the scan carried the state
