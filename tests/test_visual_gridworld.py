"""VisualGridWorld: GridWorld's rules with the camera image of ML-Agents' GridWorld agent
(84 x 64, colour) as its first sensor: identical dynamics to the vector port, the image against a
plain-Python rasteriser of the prefab's shapes, and hand-placed pixels."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jppo import envs
from jppo.envs.base import auto_reset_step
from jppo.envs.gridworld import GridWorld, GridWorldState
from jppo.envs.visual_gridworld import COLOURS, VisualGridWorld

FLOOR, WALL, GREEN, RED, AGENT = COLOURS


def state(agent, plus, ex, goal=0):
    return GridWorldState(jnp.array(agent, jnp.int32), jnp.array([plus, ex], jnp.int32),
                          jnp.int32(goal), jnp.int32(0))


def reference_image(agent, plus, ex, width, height, grid=5) -> np.ndarray:
    """Pixel by pixel: the world point at the pixel's centre (orthographic camera over the
    grid's centre, the grid's height filling the image) and what lies there, the agent's ring
    over the ex over the plus over the floor; walls beyond the grid."""
    image = np.empty((height, width, 3), np.float32)
    scale = height / grid
    for row in range(height):
        for col in range(width):
            x = (grid - 1) / 2 + (col + 0.5 - width / 2) / scale
            z = (grid - 1) / 2 - (row + 0.5 - height / 2) / scale
            colour = WALL if not (-0.5 <= x < grid - 0.5 and -0.5 <= z < grid - 0.5) else FLOOR
            for (cx, cz), shape, paint in ((plus, "plus", GREEN), (ex, "ex", RED),
                                           (agent, "ring", AGENT)):
                dx, dz = x - cx, z - cz
                if not (-0.5 <= dx < 0.5 and -0.5 <= dz < 0.5):  # another cell
                    continue
                if shape == "ex":  # the plus's bars turned 45 degrees
                    dx, dz = (dx + dz) / np.sqrt(2), (dx - dz) / np.sqrt(2)
                bars = ((abs(dx) <= 0.5 and abs(dz) <= 0.1) or (abs(dz) <= 0.5 and abs(dx) <= 0.1))
                if (shape == "ring" and max(abs(dx), abs(dz)) >= 0.3) or (shape != "ring" and bars):
                    colour = paint
            image[row, col] = colour
    return image


def test_made_by_name_with_the_camera_and_goal_signal_of_ml_agents():
    env = envs.make("VisualGridWorld")
    assert isinstance(env, VisualGridWorld) and "VisualGridWorld" in envs.names()
    image_space, goal_space = env.observation_space(env.default_params)
    assert image_space.shape == (64, 84, 3) and goal_space.shape == (2,)
    obs, _ = env.reset(jax.random.PRNGKey(0))
    assert obs[0].shape == (64, 84, 3) and obs[0].dtype == jnp.float32
    assert float(obs[0].min()) >= 0.0 and float(obs[0].max()) <= 1.0
    assert envs.make("VisualGridWorld", width=84, height=84).observation_space()[0].shape == (84, 84, 3)
    assert envs.make("VisualGridWorld", grayscale=True).observation_space()[0].shape == (64, 84, 1)
    # Every colour is an 8-bit value: a PNG carries the image exactly.
    np.testing.assert_array_equal(np.rint(COLOURS * 255) / 255, COLOURS)


def test_steps_exactly_as_the_vector_gridworld():
    """Same keys and actions, 8 areas for 200 steps with auto-reset: identical states, rewards,
    ends, masks and goal signals; the image is the render of the state."""
    vector, visual = GridWorld(), VisualGridWorld()
    n, steps = 8, 200

    def run(env):
        def body(carry, key):
            states = carry
            k_act, k_step = jax.random.split(key)
            masks = jax.vmap(env.action_mask)(states)
            actions = jax.random.categorical(k_act, jnp.where(masks, 0.0, -jnp.inf))
            out = jax.vmap(lambda k, s, a: auto_reset_step(env, k, s, a))(
                jax.random.split(k_step, n), states, actions)
            return out.state, (out.state, out.reward, out.terminated, out.truncated, masks,
                               out.obs[1], out.obs[0][:, 32, 42] if env is visual else out.obs[0])
        _, first = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(5), n))
        return jax.jit(lambda s: jax.lax.scan(body, s, jax.random.split(jax.random.PRNGKey(6), steps)))(first)

    (_, a), (last, b) = run(vector), run(visual)
    for x, y in zip(a[:6], b[:6]):
        jax.tree_util.tree_map(np.testing.assert_array_equal, x, y)
    ended = np.asarray(a[2] | a[3])
    assert ended.sum() > 20 and np.asarray(a[2]).sum() > 0  # episodes end and restart
    images = jax.vmap(visual._obs)(last)[0]
    assert images.shape == (n, 64, 84, 3)
    for i in (0, n - 1):
        s = jax.tree_util.tree_map(lambda x: np.asarray(x[i]), last)
        np.testing.assert_array_equal(images[i], reference_image(s.agent, *s.goals, 84, 64))


@pytest.mark.parametrize("agent, plus, ex", [((0, 0), (3, 1), (2, 0)), ((4, 4), (0, 4), (4, 0)),
                                              ((2, 2), (1, 3), (3, 2))])
def test_image_matches_a_plain_python_rasteriser(agent, plus, ex):
    for width, height in ((84, 64), (30, 20)):
        env = VisualGridWorld(width=width, height=height)
        image = np.asarray(env.render_camera(state(agent, plus, ex)))
        np.testing.assert_array_equal(image, reference_image(agent, plus, ex, width, height))


def test_hand_placed_pixels_at_ml_agents_resolution():
    """84 x 64, 12.8 pixels a cell: cell (x, z) is centred at column 42 + 12.8 (x - 2) and row
    32 - 12.8 (z - 2); ten columns of wall each side (x < -0.5 up to column 9)."""
    image = np.asarray(VisualGridWorld().render_camera(state((0, 0), (3, 1), (2, 4))))
    centre = lambda x, z: (int(32 - 12.8 * (z - 2)), int(42 + 12.8 * (x - 2)))
    np.testing.assert_array_equal(image[:, :10], np.broadcast_to(WALL, (64, 10, 3)))
    np.testing.assert_array_equal(image[:, 74:], np.broadcast_to(WALL, (64, 10, 3)))
    assert not np.array_equal(image[0, 10], WALL)
    np.testing.assert_array_equal(image[centre(3, 1)], GREEN)  # the bars cross at the centre
    np.testing.assert_array_equal(image[centre(2, 4)], RED)
    np.testing.assert_array_equal(image[centre(0, 0)], FLOOR)  # the ring is hollow
    row, col = centre(0, 0)
    np.testing.assert_array_equal(image[row, col - 5], AGENT)  # its left bar
    np.testing.assert_array_equal(image[63, 10], AGENT)  # the grid's bottom-left corner
    np.testing.assert_array_equal(image[centre(4, 4)], FLOOR)
    assert (image == AGENT).all(-1).sum() > 60 and (image == RED).all(-1).sum() > 20


def test_the_goal_is_a_signal_not_a_picture():
    """The camera cannot see which goal is the target (Unity's goal rings lie under the agent's
    top ring): the same board with either goal is the same image; the goal signal differs."""
    env = VisualGridWorld()
    a, b = (env._obs(state((1, 1), (3, 3), (0, 4), goal)) for goal in (0, 1))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], [1.0, 0.0])
    np.testing.assert_array_equal(b[1], [0.0, 1.0])


def test_grayscale_averages_the_channels_and_bad_sizes_are_refused():
    s = state((0, 0), (3, 1), (2, 4))
    colour = np.asarray(VisualGridWorld().render_camera(s))
    gray = np.asarray(VisualGridWorld(grayscale=True).render_camera(s))
    np.testing.assert_allclose(gray[..., 0], colour.mean(-1), atol=1e-7)
    with pytest.raises(ValueError, match="resolution"):
        VisualGridWorld(width=0)
