"""jppo.envs.cartpole.CartPole against Gymnasium's CartPole-v1 (with its TimeLimit of 500 steps)."""
import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jppo.envs import Box, Discrete, auto_reset_step
from jppo.envs.cartpole import CartPole, EnvParams, EnvState

ENV = CartPole()
KEY = jax.random.key(0)  # step is deterministic; any key will do
STEP = jax.jit(ENV.step)
RESET = jax.jit(ENV.reset)
V_STEP = jax.jit(jax.vmap(ENV.step))
V_RESET = jax.jit(jax.vmap(ENV.reset))
BATCH = 16  # one batch size for the vmapped functions, so each compiles once
# A linear state-feedback law (theta, theta_dot, x, x_dot gains chosen by hand) that keeps the
# pole up for well over 500 steps from Gymnasium's initial states, so episodes reach the time limit.
GAINS = np.array([0.1, 0.5, 3.0, 1.0], np.float32)
EPS32 = 2.0 ** -23  # float32 spacing at 1.0


def controller(obs):
    return (jnp.dot(jnp.asarray(GAINS), obs) > 0).astype(jnp.int32)


def policy(obs, rng, p_random):
    """The controller's action, or with probability p_random a uniform one; a Python int."""
    return int(rng.integers(2)) if rng.random() < p_random else int(GAINS @ obs > 0)


def inject(genv) -> EnvState:
    """Rounds Gymnasium's float64 state to float32 in place and returns it as the same EnvState."""
    s32 = np.asarray(genv.unwrapped.state, np.float32)
    genv.unwrapped.state = s32.astype(np.float64)
    return EnvState(*jnp.asarray(s32), jnp.int32(genv._elapsed_steps))


def to_vec(state):
    return jnp.stack([state.x, state.x_dot, state.theta, state.theta_dot])


@jax.jit
def rollout_with_error_bound(state, actions, params):
    """Open-loop rollout of ``actions`` [T] and a first-order bound on its float32 rounding error.

    Returns obs [T, 4], terminated [T], truncated [T] and bound [T]: an estimate, from the
    Jacobians J_t of the step, of how far obs[t] may sit from the exact (float64) trajectory if
    each step rounds every state component by one ulp of the state's size d_k:
    bound[t] = sum_k |J_t ... J_{k+1}|_F d_k. The pole's instability grows it like exp(3.8 t / s).
    """
    horizon = actions.shape[0]

    def body(carry, action):
        state, phi, t = carry
        step_vec = lambda v: to_vec(ENV.step(KEY, EnvState(*v, state.time), action, params)[1])
        jac = jax.jacfwd(step_vec)(to_vec(state))
        obs, state, _, terminated, truncated, _ = ENV.step(KEY, state, action, params)
        ulp = EPS32 * (1.0 + jnp.sum(jnp.abs(obs)))
        phi = jnp.einsum("ij,kjl->kil", jac, phi).at[t].set(ulp * jnp.eye(4))
        bound = jnp.sum(jnp.sqrt(jnp.sum(phi ** 2, axis=(1, 2))))
        return (state, phi, t + 1), (obs, terminated, truncated, bound)

    carry = (state, jnp.zeros((horizon, 4, 4), jnp.float32), 0)
    return jax.lax.scan(body, carry, actions)[1]


def test_spaces_and_dtypes():
    obs, state = RESET(KEY)
    obs2, _, reward, terminated, truncated, info = STEP(KEY, state, jnp.int32(1))
    assert obs.shape == obs2.shape == (4,) and obs.dtype == obs2.dtype == jnp.float32
    assert reward.shape == () and reward.dtype == jnp.float32 and float(reward) == 1.0
    assert terminated.dtype == truncated.dtype == jnp.bool_
    assert terminated.shape == truncated.shape == ()
    assert info == {} and int(state.time) == 0
    assert ENV.action_space() == Discrete(2)
    space = ENV.observation_space()
    assert isinstance(space, Box) and space.shape == (4,)
    np.testing.assert_allclose(space.high, [4.8, np.inf, 0.41887903, np.inf], rtol=1e-6)


def test_one_step_transitions_match_gymnasium():
    """Every step of whole episodes starts both envs from the same (float32) state."""
    seen = {"terminated": 0, "truncated": 0, "steps": 0}
    for seed, p_random in [(0, 0.0), (1, 0.05), (2, 1.0), (3, 1.0), (4, 0.5)]:
        genv, rng = gym.make("CartPole-v1"), np.random.default_rng(seed)
        obs, _ = genv.reset(seed=seed)
        for episode in range(3 if p_random > 0.4 else 1):
            if episode:
                obs, _ = genv.reset()
            done = False
            while not done:
                state = inject(genv)
                action = policy(obs, rng, p_random)
                obs, reward, terminated, truncated, _ = genv.step(action)
                j_obs, j_state, j_reward, j_term, j_trunc, _ = STEP(KEY, state, jnp.int32(action))
                np.testing.assert_allclose(j_obs, obs, rtol=0, atol=1e-5)
                assert float(j_reward) == reward == 1.0
                assert (bool(j_term), bool(j_trunc)) == (terminated, truncated)
                assert int(j_state.time) == genv._elapsed_steps
                done = terminated or truncated
                seen["steps"] += 1
            seen["terminated"] += terminated
            if truncated:
                # TimeLimit ends the episode after exactly 500 steps and the pole is still up.
                assert genv._elapsed_steps == 500 and not terminated
                seen["truncated"] += 1
    assert seen["truncated"] >= 2 and seen["terminated"] >= 6 and seen["steps"] > 1200


def test_one_step_with_other_params_matches_gymnasium():
    params = EnvParams(gravity=4.0, masscart=2.0, masspole=0.3, length=0.8, force_mag=7.0, tau=0.01)
    genv = gym.make("CartPole-v1")
    raw = genv.unwrapped
    for name in ("gravity", "masscart", "masspole", "length", "force_mag", "tau"):
        setattr(raw, name, getattr(params, name))
    raw.total_mass, raw.polemass_length = raw.masspole + raw.masscart, raw.masspole * raw.length
    rng = np.random.default_rng(7)
    genv.reset(seed=7)
    for _ in range(40):
        raw.state = rng.uniform(-0.2, 0.2, 4)
        state = inject(genv)
        action = int(rng.integers(2))
        obs, _, terminated, _, _ = genv.step(action)
        j_obs, _, _, j_term, _, _ = STEP(KEY, state, jnp.int32(action), params)
        np.testing.assert_allclose(j_obs, obs, rtol=0, atol=1e-5)
        assert bool(j_term) == terminated
    # The defaults would have moved the state visibly differently.
    d_obs = STEP(KEY, state, jnp.int32(action))[0]
    assert np.abs(np.asarray(d_obs) - obs).max() > 1e-3


def gym_random_episode(seed):
    """Gymnasium's episode of uniform random actions: initial EnvState, the n actions padded
    with zeros to [500] (one shape, one compile), obs [n, 4] and whether it ended terminated."""
    genv, rng = gym.make("CartPole-v1"), np.random.default_rng(seed)
    genv.reset(seed=seed)
    state = inject(genv)
    actions, obs, done = [], [], False
    while not done:
        actions.append(int(rng.integers(2)))
        o, _, terminated, truncated, _ = genv.step(actions[-1])
        obs.append(o)
        done = terminated or truncated
    return state, np.array(actions + [0] * (500 - len(actions)), np.int32), np.array(obs), terminated


@pytest.mark.parametrize("seed", range(5))
def test_episode_rollout_matches_gymnasium(seed):
    """Gymnasium's own float64 episode of random actions against an open-loop float32 rollout.

    The tolerance is the first-order float32 error bound of ``rollout_with_error_bound`` plus 1e-5
    for rounding the observation itself. Over 200 seeds the real error stayed below 3% of it,
    while a 1e-4 relative error in force_mag, length or tau exceeded it 3-fold or more on every
    seed (the next test). Random actions end episodes within ~75 steps, where the bound is below
    ~1e-3; a balanced 500-step episode leaves open-loop float32 and float64 apart by order 1 (the
    bound grows like exp(3.8 t / s)), so long episodes are checked step by step above instead.
    """
    state, actions, g_obs, terminated = gym_random_episode(seed)
    n = len(g_obs)
    j_obs, j_term, j_trunc, bound = map(
        np.asarray, rollout_with_error_bound(state, actions, ENV.default_params))
    err = np.abs(j_obs[:n] - g_obs).max(axis=1)
    assert np.all(err <= 1e-5 + bound[:n]), (err / (1e-5 + bound[:n])).max()
    assert terminated and j_term[n - 1] and not j_term[:n - 1].any() and not j_trunc[:n].any()
    assert n >= 8 and bound[n - 1] < 1e-2  # a real episode, and a tolerance that still bites


@pytest.mark.parametrize("field", ["force_mag", "length", "tau"])
def test_rollout_error_bound_catches_small_physics_errors(field):
    params = EnvParams()._replace(**{field: getattr(EnvParams(), field) * (1 + 1e-4)})
    for seed in range(3):
        state, actions, g_obs, _ = gym_random_episode(seed)
        n = len(g_obs)
        j_obs, _, _, bound = map(np.asarray, rollout_with_error_bound(state, actions, params))
        assert np.any(np.abs(j_obs[:n] - g_obs).max(axis=1) > 1e-5 + bound[:n])


def test_falling_on_the_last_step_is_both_terminated_and_truncated():
    """Gymnasium's TimeLimit sets truncated at step 500 whatever terminated says."""
    genv = gym.make("CartPole-v1")
    genv.reset(seed=0)
    for elapsed, x_dot in [(499, 1.0), (499, -1.0), (499, 0.0), (498, 1.0)]:
        genv.unwrapped.state = np.array([2.39, x_dot, 0.01, 0.0])
        genv.unwrapped.steps_beyond_terminated = None
        genv._elapsed_steps = elapsed
        state = inject(genv)
        obs, _, terminated, truncated, _ = genv.step(1)
        j_obs, _, _, j_term, j_trunc, _ = STEP(KEY, state, jnp.int32(1))
        assert (bool(j_term), bool(j_trunc)) == (terminated, truncated) == (x_dot > 0, elapsed == 499)
        np.testing.assert_allclose(j_obs, obs, rtol=0, atol=1e-5)


def test_truncates_at_exactly_500_steps():
    @jax.jit
    def run(state):
        def body(state, _):
            action = controller(to_vec(state))
            _, state, reward, terminated, truncated, _ = ENV.step(KEY, state, action)
            return state, (terminated, truncated, reward)
        return jax.lax.scan(body, state, None, length=520)

    for seed in range(3):
        final, (terminated, truncated, reward) = run(RESET(jax.random.key(seed))[1])
        terminated, truncated = np.asarray(terminated), np.asarray(truncated)
        assert not terminated.any()  # the controller holds the pole: the episode only times out
        assert np.argmax(truncated) == 499 and truncated[499:].all()
        assert int(final.time) == 520 and np.all(np.asarray(reward) == 1.0)


def test_reset_distribution():
    obs, state = V_RESET(jax.random.split(jax.random.key(1), 4096))
    obs = np.asarray(obs)
    assert obs.shape == (4096, 4) and obs.dtype == np.float32
    np.testing.assert_array_equal(obs, np.asarray(jax.vmap(to_vec)(state)))
    assert np.all(obs >= -0.05) and np.all(obs < 0.05)
    assert np.all(obs.min(axis=0) < -0.049) and np.all(obs.max(axis=0) > 0.049)
    # Uniform on [-0.05, 0.05): mean 0 (standard error 4.5e-4), standard deviation 0.1 / sqrt(12).
    np.testing.assert_allclose(obs.mean(axis=0), 0.0, atol=2.5e-3)
    np.testing.assert_allclose(obs.std(axis=0), 0.1 / np.sqrt(12), rtol=0.05)
    assert np.all(np.asarray(state.time) == 0)
    assert len(np.unique(obs[:, 0])) > 4000


def test_vmap_matches_single_steps():
    keys = jax.random.split(jax.random.key(2), BATCH)
    _, states = V_RESET(keys)
    actions = jnp.arange(BATCH, dtype=jnp.int32) % 2
    b_obs, b_state, b_reward, b_term, b_trunc, _ = jax.tree_util.tree_map(
        np.asarray, V_STEP(keys, states, actions))
    assert b_obs.shape == (BATCH, 4) and b_reward.shape == b_term.shape == b_trunc.shape == (BATCH,)
    states = jax.tree_util.tree_map(np.asarray, states)
    for i in range(BATCH):
        state = EnvState(*(field[i] for field in states))
        obs, _, reward, term, trunc, _ = STEP(keys[i], state, actions[i])
        np.testing.assert_allclose(b_obs[i], obs, rtol=0, atol=1e-7)
        assert (b_reward[i], b_term[i], b_trunc[i]) == (reward, term, trunc)
    assert np.all(b_state.time == 1) and len(np.unique(b_obs[:, 2])) == BATCH


@jax.jit
def auto_reset_scan(states, keys, actions):
    """``auto_reset_step`` over [T, B] keys and actions: (states before each step, AutoResetStep)."""
    def body(states, xs):
        out = jax.vmap(lambda k, s, a: auto_reset_step(ENV, k, s, a))(xs[0], states, xs[1])
        return out.state, (states, out)
    return jax.lax.scan(body, states, (keys, actions))[1]


@jax.jit
@jax.vmap  # over one flat batch: a nested vmap here took 3x longer to compile
def step_and_reset(key, state, action):
    """What auto_reset_step should combine: (step's obs, terminated, truncated, reset obs)."""
    obs, _, _, terminated, truncated, _ = ENV.step(key, state, action)
    reset_key = jax.random.split(key)[1]  # as auto_reset_step splits its key
    return obs, terminated, truncated, ENV.reset(reset_key)[0]


def test_auto_reset_step_resets_exactly_where_done():
    horizon, rng = 80, np.random.default_rng(3)
    _, states = V_RESET(jax.random.split(jax.random.key(3), BATCH))
    # Start half the envs near the time limit so truncations happen alongside terminations.
    states = states._replace(time=jnp.where(jnp.arange(BATCH) % 2 == 0, 495, 0).astype(jnp.int32))
    keys = rng.integers(0, 2 ** 32, (horizon, BATCH, 2), dtype=np.uint32)  # raw threefry keys
    actions = rng.integers(0, 2, (horizon, BATCH), dtype=np.int32)
    before, out = jax.tree_util.tree_map(np.asarray, auto_reset_scan(states, keys, actions))
    flat = lambda a: np.reshape(a, (horizon * BATCH,) + np.shape(a)[2:])
    unflat = lambda a: np.reshape(a, (horizon, BATCH) + np.shape(a)[1:])
    obs, terminated, truncated, reset_obs = map(unflat, step_and_reset(
        flat(keys), jax.tree_util.tree_map(flat, before), flat(actions)))
    done = terminated | truncated
    assert terminated.sum() >= 20 and truncated.sum() >= BATCH // 2
    np.testing.assert_array_equal(out.terminated, terminated)
    np.testing.assert_array_equal(out.truncated, truncated)
    np.testing.assert_array_equal(out.final_obs, obs)
    np.testing.assert_array_equal(out.obs, np.where(done[..., None], reset_obs, obs))
    np.testing.assert_array_equal(out.state.time, np.where(done, 0, before.time + 1))
    np.testing.assert_array_equal(before.time[1:], out.state.time[:-1])  # the scan carried the state
