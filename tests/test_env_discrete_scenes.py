"""The JAX ports of ML-Agents' Basic and GridWorld, and the Reach scene, against the C# rules:
observations, moves, rewards, ends, masks, time limits."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jppo import envs
from jppo.envs.basic import BEST_RETURN, Basic
from jppo.envs.gridworld import (DOWN, EX, LEFT, NOTHING, PLUS, RIGHT, UP, GridWorld,
                                 GridWorldState, expected_optimal_return, optimal_return)
from jppo.envs.reach import Reach, ReachState


def run(env, state, actions):
    """(observations, rewards, terminated, truncated) of the actions from ``state``."""
    step = jax.jit(env.step)
    out = []
    for a in actions:
        obs, state, r, te, tr, _ = step(None, state, a)
        out.append((obs, float(r), bool(te), bool(tr)))
    return out, state


def test_registered_by_name():
    assert isinstance(envs.make("Basic"), Basic) and isinstance(envs.make("GridWorld"), GridWorld)


def test_basic_large_goal_is_the_best_return_and_small_goal_the_other_end():
    env = Basic()
    obs, state = env.reset(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(obs, np.eye(20)[10])  # BasicSensor: one-hot position
    out, _ = run(env, state, [2] * 7)  # right x 7: 11 .. 17
    assert [o[2] for o in out] == [False] * 6 + [True]
    assert sum(o[1] for o in out) == pytest.approx(BEST_RETURN) == pytest.approx(0.93)
    np.testing.assert_array_equal(out[-1][0], np.eye(20)[17])
    out, _ = run(env, state, [0, 1, 1, 1])  # stay costs a step; left x 3 reaches 7
    assert [round(o[1], 4) for o in out] == [-0.01, -0.01, -0.01, 0.09] and out[-1][2]
    assert not any(o[3] for o in out)  # MaxStep 0: no time limit


def grid(agent, plus, ex, goal):
    return GridWorldState(jnp.array(agent, jnp.int32), jnp.array([plus, ex], jnp.int32),
                          jnp.int32(goal), jnp.int32(0))


def test_gridworld_moves_rewards_and_ends():
    env = GridWorld()
    state = grid((0, 0), (2, 0), (0, 2), PLUS)
    out, s = run(env, state, [RIGHT, NOTHING, UP])
    assert [round(o[1], 4) for o in out] == [-0.01, -0.01, -0.01] and s.agent.tolist() == [1, 1]
    out, _ = run(env, s, [DOWN, RIGHT])
    assert out[-1][1] == 1.0 and out[-1][2]  # SetReward(1) overwrites the step's -0.01
    out, _ = run(env, grid((0, 1), (2, 0), (0, 2), PLUS), [UP])
    assert out[0][1] == -1.0 and out[0][2]  # the other goal: -1, the episode ends
    out, _ = run(env, grid((0, 1), (2, 0), (0, 2), EX), [UP])
    assert out[0][1] == 1.0  # ... unless it is this episode's goal


def test_gridworld_observations_are_positions_and_the_goal_signal():
    env = GridWorld()
    where, goal = env._obs(grid((1, 4), (2, 0), (0, 2), EX))
    np.testing.assert_allclose(where, np.array([1, 4, 1, -4, -1, -2]) / 4)
    np.testing.assert_array_equal(goal, [0, 1])
    assert [b.shape for b in env.observation_space()] == [(6,), (2,)]


def test_gridworld_masks_forbid_walls_only():
    env = GridWorld()
    masks = {(x, z): np.asarray(env.action_mask(grid((x, z), (2, 2), (3, 3), PLUS)))
             for x in range(5) for z in range(5)}
    assert masks[(0, 0)].tolist() == [True, True, False, False, True]  # no down, no left
    assert masks[(4, 4)].tolist() == [True, False, True, True, False]  # no up, no right
    assert masks[(2, 2)].all()
    # Every masked move leads into a wall, every allowed one stays on the grid.
    moves = {UP: (0, 1), DOWN: (0, -1), LEFT: (-1, 0), RIGHT: (1, 0)}
    for (x, z), mask in masks.items():
        for action, (dx, dz) in moves.items():
            assert mask[action] == (0 <= x + dx < 5 and 0 <= z + dz < 5)


def test_gridworld_reset_draws_distinct_cells_and_both_goals():
    env = GridWorld()
    reset = jax.jit(jax.vmap(env.reset))
    _, states = reset(jax.random.split(jax.random.PRNGKey(0), 4000))
    cells = np.concatenate([np.asarray(states.agent)[:, None], np.asarray(states.goals)], 1)
    flat = cells[..., 0] * 5 + cells[..., 1]
    assert all(len(set(row)) == 3 for row in flat.tolist())
    assert abs(np.mean(np.asarray(states.goal) == EX) - 0.5) < 0.03
    counts = np.bincount(flat[:, 0], minlength=25)  # the agent's cell is uniform
    assert counts.min() > 100 and counts.max() < 230


def test_gridworld_is_interrupted_after_100_steps():
    env = GridWorld()
    out, _ = run(env, grid((0, 0), (4, 4), (4, 3), PLUS), [NOTHING] * 100)
    assert [o[3] for o in out] == [False] * 99 + [True] and not any(o[2] for o in out)


def test_gridworld_optimum_by_breadth_first_search():
    assert optimal_return(5, (0, 0), (0, 1), (3, 3), PLUS) == 1.0  # one move
    assert optimal_return(5, (0, 0), (0, 4), (3, 3), PLUS) == pytest.approx(0.97)  # four moves
    # The other goal blocks the straight line: two more moves around it.
    assert optimal_return(5, (0, 0), (0, 4), (0, 2), PLUS) == pytest.approx(0.95)
    assert expected_optimal_return(5) == pytest.approx(0.97638, abs=1e-5)


def test_reach_masks_grabs_out_of_reach_and_scores_the_colour():
    env = Reach()
    far = ReachState(jnp.array([-0.9, -0.9]), jnp.array([0.9, 0.9]), jnp.int32(2), jnp.int32(0))
    assert np.asarray(env.action_mask(far)).tolist() == [True] * 4 + [False]
    near = far._replace(position=jnp.array([0.8, 0.85]))
    assert np.asarray(env.action_mask(near)).tolist() == [True] * 5
    _, _, r, te, _, _ = env.step(None, near, (jnp.zeros(2), jnp.array([2, 1])))
    assert float(r) == 1.0 and bool(te)
    _, _, r, te, _, _ = env.step(None, near, (jnp.zeros(2), jnp.array([0, 1])))
    assert float(r) == -1.0 and bool(te)
    _, moved, r, te, _, _ = env.step(None, far, (jnp.array([1.0, 3.0]), jnp.array([0, 0])))
    np.testing.assert_allclose(moved.position, [-0.65, -0.65])  # speed 0.25, action clamped
    assert float(r) == pytest.approx(-0.01) and not bool(te)
