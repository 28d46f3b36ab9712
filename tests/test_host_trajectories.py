"""Experience assembly for host environments, on hand-made DecisionSteps/TerminalSteps.

Each report goes through the real conversion path (``unity_worker._report`` on mlagents-envs'
own ``DecisionSteps``/``TerminalSteps``, then ``unity_env.to_agent_steps``), then through the
``TrajectoryAssembler``; the numbers asserted are worked out by hand.
"""
import jax
import numpy as np
import pytest
from mlagents_envs import base_env
from mlagents_envs.base_env import DecisionSteps, TerminalSteps

from jppo import normalizer as obs_norm
from jppo.host_loop import unity_worker
from jppo.core.config import PPOConfig
from jppo.core.networks import ActionSpec
from jppo.core.policy import make_policy
from jppo.core.buffer_update import FlatBuffer, gae_targets, make_buffer_update
from jppo.host_loop.trajectories import Episode, Trajectory, TrajectoryAssembler, UpdateBuffer
from jppo.host_loop.unity_env import non_finite, to_agent_steps
from jppo.core.update import init_train_state
from jppo.host_loop.vec_env import Actions, order_actions, to_unit_range

B = "3DBall?team=0"
SPEC = ActionSpec.continuous(1)


class _FakeEnv:
    """The two things ``unity_worker._report`` asks a UnityEnvironment."""

    def __init__(self, decisions, terminals, action_spec=None):
        action_spec = action_spec or base_env.ActionSpec.create_continuous(1)
        self.behavior_specs = {B: base_env.BehaviorSpec([], action_spec)}
        self._steps = decisions, terminals

    def get_steps(self, name):
        return self._steps


def report(decisions=(), terminals=(), obs_size=2):
    """``decisions``: [(id, obs, reward)], ``terminals``: [(id, obs, reward, interrupted)]."""
    def obs(rows):
        return [np.array([r[1] for r in rows], np.float32).reshape(len(rows), obs_size)]

    zeros = lambda rows: np.zeros(len(rows), np.int32)
    d = DecisionSteps(obs(decisions), np.array([r[2] for r in decisions], np.float32),
                      np.array([r[0] for r in decisions], np.int32), None, zeros(decisions),
                      np.zeros(len(decisions), np.float32))
    t = TerminalSteps(obs(terminals), np.array([r[2] for r in terminals], np.float32),
                      np.array([r[3] for r in terminals], bool),
                      np.array([r[0] for r in terminals], np.int32), zeros(terminals),
                      np.zeros(len(terminals), np.float32))
    return to_agent_steps(unity_worker._report(_FakeEnv(d, t))[B])


def act(asm, ids, actions, worker=0):
    """Acts with action a and log-prob -a for each agent."""
    a = np.array(actions, np.float32).reshape(-1, 1)
    asm.act(worker, np.array(ids), a, -a)


def assert_trajectory(t: Trajectory, agent, obs, actions, rewards, next_obs, done):
    assert t.agent == agent and t.done is done
    np.testing.assert_array_equal(t.obs, np.array(obs, np.float32))
    np.testing.assert_array_equal(t.actions[:, 0], np.array(actions, np.float32))
    np.testing.assert_array_equal(t.log_probs[:, 0], -np.array(actions, np.float32))
    np.testing.assert_array_equal(t.rewards, np.array(rewards, np.float32))
    np.testing.assert_array_equal(t.next_obs, np.array(next_obs, np.float32))


def test_agent_terminal_and_deciding_in_one_step_splits_the_episodes():
    asm = TrajectoryAssembler(time_horizon=100, obs_size=2, action_spec=SPEC)
    assert asm.observe(0, report([(0, [0, 0], 0.0), (1, [1, 0], 0.0)])) == ([], [], 0)
    act(asm, [0, 1], [0.5, 1.5])
    assert asm.observe(0, report([(0, [0, 1], 0.1), (1, [1, 1], 0.1)])) == ([], [], 2)
    act(asm, [1, 0], [1.6, 0.6])  # any order: actions are keyed by agent id
    # Agent 1 fell: its final observation and -1, then the first observation of its next episode.
    trajectories, episodes, experiences = asm.observe(0, report(
        [(0, [0, 2], 0.1), (1, [1, 100], 0.0)], terminals=[(1, [1, 9], -1.0, False)]))
    assert experiences == 2 and asm.agents == 2
    (t,) = trajectories
    assert_trajectory(t, (0, 1), [[1, 0], [1, 1]], [1.5, 1.6], [0.1, -1.0], [1, 9], done=True)
    assert episodes == [Episode(pytest.approx(-0.9), 2)]
    act(asm, [0, 1], [0.7, 2.0])
    assert asm.observe(0, report([(0, [0, 3], 0.1), (1, [1, 101], 0.1)]))[2] == 2
    act(asm, [0, 1], [0.8, 2.1])
    # MaxStep for agent 1 only, in a message without decisions: interrupted, bootstrap.
    trajectories, episodes, experiences = asm.observe(0, report(terminals=[(1, [1, 102], 0.1, True)]))
    assert experiences == 1 and episodes == [Episode(pytest.approx(0.2), 2)]
    (t,) = trajectories
    assert_trajectory(t, (0, 1), [[1, 100], [1, 101]], [2.0, 2.1], [0.1, 0.1], [1, 102], done=False)
    # Agent 0 still waits for the outcome of 0.8; its episode goes on.
    assert asm.observe(0, report([(0, [0, 4], 0.25)]))[2] == 1
    act(asm, [0], [0.9])
    trajectories, episodes, _ = asm.observe(0, report(terminals=[(0, [0, 5], -1.0, False)]))
    assert_trajectory(trajectories[0], (0, 0), [[0, 0], [0, 1], [0, 2], [0, 3], [0, 4]],
                      [0.5, 0.6, 0.7, 0.8, 0.9], [0.1, 0.1, 0.1, 0.25, -1.0], [0, 5], done=True)
    assert episodes == [Episode(pytest.approx(-0.45), 5)] and asm.agents == 0


def test_empty_reports_leave_pending_actions_waiting():
    asm = TrajectoryAssembler(time_horizon=100, obs_size=2, action_spec=SPEC)
    asm.observe(0, report([(0, [0, 0], 0.0), (1, [1, 0], 0.0)]))
    act(asm, [0, 1], [1.0, 2.0])
    # A terminal-only message (agent 0 fell between decisions), then an empty one.
    trajectories, _, experiences = asm.observe(0, report(terminals=[(0, [0, 7], -1.0, False)]))
    assert experiences == 1 and len(trajectories) == 1
    assert asm.observe(0, report()) == ([], [], 0)
    # Agent 1's reward since its last decision arrives with its next one; agent 0 starts afresh.
    assert asm.observe(0, report([(0, [0, 50], 0.0), (1, [1, 1], 0.3)]))[2] == 1
    act(asm, [0, 1], [3.0, 4.0])
    trajectories, episodes, experiences = asm.observe(0, report(
        terminals=[(0, [0, 51], 0.5, True), (1, [1, 2], -1.0, False)]))
    assert experiences == 2
    assert_trajectory(trajectories[0], (0, 0), [[0, 50]], [3.0], [0.5], [0, 51], done=False)
    assert_trajectory(trajectories[1], (0, 1), [[1, 0], [1, 1]], [2.0, 4.0], [0.3, -1.0], [1, 2], done=True)
    assert episodes == [Episode(0.5, 1), Episode(pytest.approx(-0.7), 2)]


def test_an_agent_ending_before_its_first_action_leaves_no_experience():
    asm = TrajectoryAssembler(time_horizon=100, obs_size=2, action_spec=SPEC)
    asm.observe(0, report([(3, [3, 0], 0.0)]))
    assert asm.observe(0, report(terminals=[(3, [3, 1], -1.0, False), (4, [4, 1], -1.0, False)])) == ([], [], 0)
    assert asm.agents == 0


def test_time_horizon_cuts_bootstrap_from_the_decision_observation():
    asm = TrajectoryAssembler(time_horizon=3, obs_size=2, action_spec=SPEC)
    cuts, total = [], 0
    for t in range(7):
        trajectories, episodes, experiences = asm.observe(0, report([(5, [t, -t], float(t))]))
        cuts += trajectories
        total += experiences
        assert episodes == []
        act(asm, [5], [10.0 + t])
    assert total == 6 and len(cuts) == 2
    assert_trajectory(cuts[0], (0, 5), [[0, 0], [1, -1], [2, -2]], [10, 11, 12], [1, 2, 3], [3, -3], done=False)
    assert_trajectory(cuts[1], (0, 5), [[3, -3], [4, -4], [5, -5]], [13, 14, 15], [4, 5, 6], [6, -6], done=False)


def test_many_agents_long_horizon_and_two_workers_with_the_same_ids():
    """20 agents x 2 workers outgrow the first 8 slots and 64 steps of storage."""
    asm = TrajectoryAssembler(time_horizon=70, obs_size=2, action_spec=SPEC)
    ids = list(range(20))
    cuts = []
    for t in range(71):
        for w in (0, 1):
            cuts += asm.observe(w, report([(a, [100 * w + a, t], 0.5 * w) for a in ids]))[0]
            act(asm, ids, [1000 * w + a + t / 100 for a in ids], worker=w)
    assert len(cuts) == 40 and asm.agents == 40
    for cut in cuts:
        w, a = cut.agent
        np.testing.assert_array_equal(cut.obs, [[100 * w + a, t] for t in range(70)])
        np.testing.assert_allclose(cut.actions[:, 0], [1000 * w + a + t / 100 for t in range(70)], rtol=1e-6)
        np.testing.assert_array_equal(cut.rewards, 0.5 * w)
        np.testing.assert_array_equal(cut.next_obs, [100 * w + a, 70])


def traj(n, start, done, next_obs, agent=(0, 0)):
    obs = np.stack([np.arange(start, start + n), np.zeros(n)], 1).astype(np.float32)
    return Trajectory(obs, obs[:, :1] * 2, -obs[:, :1], obs[:, 0] / 10, np.array(next_obs, np.float32),
                      done, agent)


def test_update_buffer_takes_exactly_its_size_and_splits_a_trajectory():
    buffer = UpdateBuffer(5)
    buffer.add(traj(3, 0, True, [99, 0]))
    buffer.add(traj(4, 10, False, [14, 0]))
    assert buffer.ready() and buffer.count == 7
    first = buffer.take()
    np.testing.assert_array_equal(first.obs[:, 0], [0, 1, 2, 10, 11])
    np.testing.assert_array_equal(first.actions[:, 0], [0, 2, 4, 20, 22])
    np.testing.assert_array_equal(first.dones, [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(first.truncations, [0, 0, 0, 0, 1])  # the split: a cut
    np.testing.assert_array_equal(first.final_obs, [[0, 0]] * 4 + [[12, 0]])  # the tail's first obs
    assert buffer.count == 2 and not buffer.ready()
    buffer.add(traj(3, 20, True, [23, 0]))
    second = buffer.take()
    np.testing.assert_array_equal(second.obs[:, 0], [12, 13, 20, 21, 22])
    np.testing.assert_allclose(second.rewards, [1.2, 1.3, 2.0, 2.1, 2.2], rtol=1e-6)
    np.testing.assert_array_equal(second.dones, [0, 0, 0, 0, 1])
    np.testing.assert_array_equal(second.truncations, [0, 1, 0, 0, 0])
    np.testing.assert_array_equal(second.final_obs[1], [14, 0])  # the original trajectory's end
    assert buffer.count == 0
    with pytest.raises(ValueError):
        buffer.take()


def test_gae_bootstraps_interrupted_and_cut_trajectories_and_zeroes_real_ends():
    # Two 2-step trajectories, rewards [1, 2], V = 0.5 everywhere: the first bootstraps from
    # V(final obs) = 10, the second really ended.
    flat = FlatBuffer(np.zeros((4, 2), np.float32), np.zeros((4, 1), np.float32), np.zeros((4, 1), np.float32),
                      np.array([1, 2, 1, 2], np.float32), np.array([0, 0, 0, 1], np.float32),
                      np.array([0, 1, 0, 0], np.float32), np.zeros((4, 2), np.float32))
    values = np.full(4, 0.5, np.float32)
    final_values = np.array([0, 10, 0, 0], np.float32)
    for strength, want in ((1.0, [5.675, 10.5, 1.625, 1.5]), (2.0, [7.575, 12.5, 3.525, 3.5])):
        config = PPOConfig(gamma=0.9, lambd=0.5, strength=strength, batch_size=2, buffer_size=4)
        advantages, returns = gae_targets(config, flat, values, final_values)
        # By hand: A1 = s*2 + 0.9 * 10 - 0.5 (bootstrap) or s*2 - 0.5 (end);
        # A0 = s*1 + 0.9 * 0.5 - 0.5 + 0.9 * 0.5 * A1.
        np.testing.assert_allclose(advantages, want, rtol=1e-6)
        np.testing.assert_allclose(returns, np.array(want) + 0.5, rtol=1e-6)


def test_gae_in_segments_equals_one_run_through_the_buffer():
    """The data-parallel update runs GAE on each device's rows alone: cut where trajectories
    end, side by side, it must give what one run through the whole buffer gives."""
    rng = np.random.default_rng(7)
    n, segments = 24, 3
    dones = (rng.random(n) < 0.15).astype(np.float32)
    truncations = ((rng.random(n) < 0.15) & (dones == 0)).astype(np.float32)
    ends = np.arange(n // segments - 1, n, n // segments)
    truncations[ends] = np.where(dones[ends] == 0, 1.0, 0.0)  # every segment ends a trajectory
    flat = FlatBuffer(np.zeros((n, 2), np.float32), np.zeros((n, 1), np.float32),
                      np.zeros((n, 1), np.float32), rng.normal(size=n).astype(np.float32), dones,
                      truncations, np.zeros((n, 2), np.float32))
    values = rng.normal(size=n).astype(np.float32)
    final_values = rng.normal(size=n).astype(np.float32) * truncations
    config = PPOConfig(gamma=0.9, lambd=0.8, batch_size=4, buffer_size=n)
    one = gae_targets(config, flat, values, final_values)
    split = gae_targets(config, flat, values, final_values, segments)
    for a, b in zip(one, split):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)
    # Plain Python, backwards through the buffer, for the one run.
    want, running = np.zeros(n), 0.0
    for t in reversed(range(n)):
        if dones[t]:
            delta, running = flat.rewards[t] - values[t], 0.0
        elif truncations[t]:
            delta, running = flat.rewards[t] + 0.9 * final_values[t] - values[t], 0.0
        else:
            delta = flat.rewards[t] + 0.9 * values[t + 1] - values[t]
        running = delta + 0.9 * 0.8 * running
        want[t] = running
    np.testing.assert_allclose(np.asarray(split[0]), want, rtol=1e-5, atol=1e-5)


def test_update_learns_from_exactly_the_buffer_and_updates_the_normalizer_once():
    config = PPOConfig(batch_size=4, buffer_size=8, num_epoch=2, hidden_units=8, num_layers=1,
                       normalize=True, time_horizon=4)
    state = init_train_state(jax.random.PRNGKey(0), config, 2, SPEC)
    buffer = UpdateBuffer(8)
    buffer.add(traj(5, 0, True, [5, 0]))
    buffer.add(traj(6, 10, False, [16, 0]))
    update = jax.jit(make_buffer_update(config, SPEC, config.total_adam_steps(8)))
    flat = buffer.take()
    want = obs_norm.update(state.normalizer, flat.obs)
    # Log-probs as the acting policy would have stored them, so the first ratios are 1.
    log_probs = make_policy(config, SPEC).evaluate(state.params, want, flat.obs, flat.actions)[0]
    new, metrics = update(state, flat._replace(log_probs=np.asarray(log_probs)))
    for got, expected in zip(new.normalizer, want):
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert float(new.normalizer.count) == 8.0
    assert int(new.step) == 2 * (8 // 4)  # num_epoch x minibatches of exactly buffer_size samples
    assert all(np.isfinite(float(v)) for v in metrics.values())
    changed = jax.tree_util.tree_map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                                     state.params, new.params)
    assert all(jax.tree_util.tree_leaves(changed))


def test_actions_are_reordered_by_agent_id_and_clamped_for_unity():
    values = np.array([[1.0], [2.0], [3.0]], np.float32)
    got = order_actions(Actions(np.array([7, 3, 5]), values), np.array([3, 5, 7]), 0, B)
    np.testing.assert_array_equal(got[:, 0], [2.0, 3.0, 1.0])
    with pytest.raises(ValueError, match="requested decisions"):
        order_actions(Actions(np.array([7, 3]), values[:2]), np.array([3, 5, 7]), 0, B)
    np.testing.assert_allclose(to_unit_range(np.array([-4.5, -1.5, 0.0, 0.3, 3.0, 9.0])),
                               [-1, -0.5, 0, 0.1, 1, 1], rtol=1e-6)


def test_non_finite_names_the_bad_field():
    steps = report([(0, [0, 1], 0.0)], terminals=[(1, [1, 1], 0.0, False)])
    assert non_finite(steps) is None
    assert non_finite(steps._replace(terminal_obs=np.array([[np.inf, 0]], np.float32))) == "Inf observations"
    assert non_finite(steps._replace(decision_rewards=np.array([np.nan], np.float32))) == "NaN rewards"
