"""Action masks travel with the experience: read at every step, used when acting, stored, and
used again when the update scores the stored actions, so that on the same parameters the
update's log-probs are exactly the acting ones. Both loops, several sensors, discrete and
hybrid actions."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

import jppo
from jppo.core.buffer_update import make_buffer_update
from jppo.envs.gridworld import GridWorld
from jppo.envs.reach import Reach
from jppo.host_loop.acting import Acting
from jppo.host_loop.driver import decision_batch
from jppo.host_loop.trajectories import TrajectoryAssembler, UpdateBuffer
from jppo.host_loop.vec_env import AgentSteps
from jppo.jax_loop.rollout import init_runner, make_collect

CONFIG = jppo.PPOConfig(batch_size=64, buffer_size=256, hidden_units=16, num_layers=1,
                        normalize=True, time_horizon=16, max_steps=10_000)


@functools.lru_cache(maxsize=None)
def collect(env_class, steps=64, num_envs=8):
    """A rollout of a fresh policy (cached: both tests read the same one)."""
    env = env_class()
    spec = jppo.ActionSpec.discrete(5) if isinstance(env, GridWorld) else \
        jppo.ActionSpec.hybrid(2, (3, 2))
    policy = jppo.make_policy(CONFIG, spec)
    sizes = tuple(b.shape for b in env.observation_space())
    state = jppo.init_train_state(jax.random.PRNGKey(0), CONFIG, sizes, spec)
    runner = init_runner(env, env.default_params, num_envs, jax.random.PRNGKey(1))
    run = jax.jit(make_collect(env, env.default_params, policy, steps, CONFIG.time_horizon))
    _, rollout, stats = run(state.params, state.normalizer, runner)
    return policy, state, rollout, stats, spec


def allowed_of(spec, actions, masks):
    _, discrete = spec.split(actions)
    offsets = np.cumsum((0,) + spec.discrete_branches)[:-1]
    return np.take_along_axis(np.asarray(masks) > 0, offsets + np.asarray(discrete), -1)


def test_jax_rollouts_store_masks_and_never_take_a_masked_action():
    for env_class in (GridWorld, Reach):
        policy, state, rollout, stats, spec = collect(env_class)
        masks = np.asarray(rollout.action_masks)
        assert masks.shape == (64, 8, spec.mask_size)
        assert (masks == 0).sum() > 50  # walls (GridWorld), grabs out of reach (Reach)
        assert allowed_of(spec, rollout.actions, masks).all()
        assert int(stats.episodes) > 0
        # The mask stored at step t is the environment's mask for the observation at step t:
        # recompute it from the observation (GridWorld: the agent's cell).
        if env_class is GridWorld:
            where = np.rint(np.asarray(rollout.obs[0])[..., :2] * 4).astype(int)
            want = np.stack([np.ones(where.shape[:2], bool), where[..., 1] != 4,
                             where[..., 1] != 0, where[..., 0] != 0, where[..., 0] != 4], -1)
            np.testing.assert_array_equal(masks > 0, want)


def test_the_update_scores_stored_actions_as_they_were_acted():
    for env_class in (GridWorld, Reach):
        policy, state, rollout, _, _ = collect(env_class)
        evaluate = jax.jit(policy.evaluate)
        log_probs, _, _ = evaluate(state.params, state.normalizer, rollout.obs, rollout.actions,
                                   rollout.action_masks)
        np.testing.assert_allclose(log_probs, rollout.log_probs, rtol=1e-6, atol=1e-6)
        # Without the masks the same actions score differently: the mask is what makes them equal.
        unmasked, _, _ = evaluate(state.params, state.normalizer, rollout.obs, rollout.actions)
        assert np.abs(np.asarray(unmasked) - np.asarray(rollout.log_probs)).max() > 1e-3
        # Flattened for the minibatches, the masks stay with their actions.
        batch = jax.jit(jppo.prepare_batch, static_argnums=0)(CONFIG, rollout)
        lp, _, _ = evaluate(state.params, state.normalizer, batch.obs, batch.actions,
                            batch.action_masks)
        np.testing.assert_allclose(lp, batch.log_probs, rtol=1e-6, atol=1e-6)
        # (That the update's loss scores minibatches under these masks is what the parity suite's
        # masked cases prove: the torch reference does, and whole updates agree.)


def host_steps(ids, obs, rewards, masks, terminal=None):
    empty = AgentSteps.empty(((6,), (2,)))
    steps = empty._replace(decision_ids=np.array(ids), decision_obs=obs,
                           decision_rewards=np.asarray(rewards, np.float32), decision_masks=masks)
    if terminal is not None:
        t_ids, t_obs, t_rewards, interrupted = terminal
        steps = steps._replace(terminal_ids=np.array(t_ids), terminal_obs=t_obs,
                               terminal_rewards=np.asarray(t_rewards, np.float32),
                               interrupted=np.asarray(interrupted, bool))
    return steps


def test_host_loop_acts_stores_and_updates_under_the_reported_masks():
    spec = jppo.ActionSpec.discrete(5)
    sizes = ((6,), (2,))
    config = CONFIG.replace(buffer_size=64, batch_size=32)
    state = jppo.init_train_state(jax.random.PRNGKey(0), config, sizes, spec)
    acting = Acting(config, spec, sizes, seed=0, counter=0)
    acting.use(state.params, state.normalizer)
    assembler = TrajectoryAssembler(config.time_horizon, sizes, spec)
    buffer = UpdateBuffer(config.buffer_size)
    rng = np.random.default_rng(0)
    taken, forbidden = [], 0
    for step in range(40):
        n = 3
        obs = (rng.normal(size=(n, 6)).astype(np.float32), np.eye(2, dtype=np.float32)[[0, 1, 0]])
        masks = rng.random((n, 5)) < 0.5
        masks[:, 0] = True
        # Two workers report; the policy call covers both, one with and one without masks.
        reports = [host_steps([0, 1, 2], obs, np.full(n, 0.1), masks),
                   host_steps([5], tuple(o[:1] for o in obs), [0.0], None)]
        batch_obs, batch_masks = decision_batch(reports)
        assert batch_masks.shape == (4, 5) and batch_masks[3].all()
        actions, log_probs = acting(batch_obs, batch_masks)
        forbidden += int((~batch_masks[np.arange(4), actions]).sum())
        trajectories, _, _ = assembler.observe(0, reports[0])
        assembler.act(0, np.array([0, 1, 2]), actions[:3], log_probs[:3])
        for t in trajectories:
            buffer.add(t)
        taken.append((masks, actions[:3]))
    assert forbidden == 0  # masked actions are never chosen
    flat = buffer.take()
    assert flat.action_masks.shape == (64, 5) and flat.action_masks.dtype == bool
    assert isinstance(flat.obs, tuple) and [o.shape for o in flat.obs] == [(64, 6), (64, 2)]
    assert allowed_of(spec, flat.actions, flat.action_masks).all()
    # The stored masks are the reported ones, experience by experience (agent 0, step by step).
    first = flat.action_masks[:config.time_horizon]
    np.testing.assert_array_equal(first, np.stack([m[0] for m, _ in taken[:config.time_horizon]]))
    policy = jppo.make_policy(config, spec)
    lp, _, _ = policy.evaluate(state.params, state.normalizer, flat.obs, flat.actions,
                               flat.action_masks)
    np.testing.assert_allclose(lp, flat.log_probs, rtol=1e-5, atol=1e-6)
    update = jax.jit(make_buffer_update(config, spec, 10))
    state, metrics = update(state, jax.tree_util.tree_map(jnp.asarray, flat))
    assert np.isfinite(float(metrics["loss"]))
