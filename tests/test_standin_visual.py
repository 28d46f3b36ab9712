"""The stand-in's VisualGridWorld scene against the real ``UnityEnvironment``: the camera image
arrives PNG-compressed (as a CameraSensor sends it by default) or as raw floats, decoded by
mlagents_envs to float32 [0, 1] (N, 64, 84, 3) equal to the JAX render; the observation specs,
the masks and the goal signal arrive as for GridWorld; it plays inside a composite too."""
from __future__ import annotations

import jax
import numpy as np
import pytest
from mlagents_envs.base_env import ActionTuple
from mlagents_envs.communicator_objects.agent_info_pb2 import AgentInfoProto
from mlagents_envs.communicator_objects.observation_pb2 import PNG, ObservationProto
from mlagents_envs.rpc_utils import _observation_to_np_array

from jppo.envs.visual_gridworld import COLOURS, VisualGridWorld, pixel_layout
from jppo.standin.scenes import Sensor
from jppo.standin.wire import InfoEncoder
from test_unity_standin import standin_env

GRID = "GridWorld?team=0"
IMAGE = (64, 84, 3)


def board_of(images: np.ndarray) -> np.ndarray:
    """Where the agent is (x, z) in each image, read from the pixels: the cell whose ring
    pixels are the agent's colour."""
    cell, _, _, ring = pixel_layout(5)
    agent = np.all(np.abs(images - COLOURS[4]) < 1e-6, axis=-1) & ring  # [N, H, W]
    found = [np.unique(cell[a]) for a in agent]
    assert all(len(f) == 1 for f in found)
    return np.array([[f[0] // 5, f[0] % 5] for f in found])


def act_randomly(env, rng, name=GRID):
    decisions, _ = env.get_steps(name)
    allowed = ~decisions.action_mask[0]
    choice = [rng.choice(np.flatnonzero(a)) for a in allowed]
    env.set_actions(name, ActionTuple(discrete=np.array(choice, np.int32)[:, None]))


# Raw images cost mlagents_envs' pure-Python protobuf about 0.2 s a message to parse: few steps.
@pytest.mark.parametrize("fault, steps", [(None, 120), ("uncompressed-images", 6)])
def test_camera_images_reach_python_as_the_jax_render(fault, steps):
    """Specs as Unity's GridWorld agent (CameraSensor (64, 84, 3) translational equivariance on
    height and width; VectorSensor (2,) goal signal); every image of 120 steps (PNG; raw floats:
    6) equals the JAX render of the scene's state within 1/255; masks follow the
    agent's cell read from the image."""
    rng = np.random.default_rng(0)
    render = jax.jit(jax.vmap(VisualGridWorld().render_camera))
    with standin_env(scene="VisualGridWorld", fault=fault) as (env, standin):
        env.reset()
        assert list(env.behavior_specs) == [GRID]
        spec = env.behavior_specs[GRID]
        camera, goal = spec.observation_specs
        assert camera.name == "CameraSensor" and camera.shape == IMAGE
        assert [int(d) for d in camera.dimension_property] == [2, 2, 1]
        assert goal.name == "VectorSensor" and goal.shape == (2,) and goal.observation_type.value == 1
        assert spec.action_spec.discrete_branches == (5,)
        scene, ended = standin.scene, 0
        for _ in range(steps):
            decisions, terminals = env.get_steps(GRID)
            images = decisions.obs[0]
            assert images.dtype == np.float32 and images.shape == (9,) + IMAGE
            expected = np.asarray(render(scene.state))
            np.testing.assert_allclose(images, expected, atol=1 / 255 + 1e-6)
            np.testing.assert_array_equal(decisions.obs[1], np.eye(2)[np.asarray(scene.state.goal)])
            x, z = board_of(images).T
            allowed = np.stack([np.ones(9, bool), z != 4, z != 0, x != 0, x != 4], 1)
            np.testing.assert_array_equal(decisions.action_mask[0], ~allowed)
            ended += len(terminals)
            if len(terminals):
                assert terminals.obs[0].shape == (len(terminals),) + IMAGE
                board_of(terminals.obs[0])  # the agent on its last cell
            act_randomly(env, rng)
            env.step()
        assert (ended > 0 or steps < 100) and standin.masked_actions == 0


def _row(states, i):
    return type(states)(*(np.asarray(field)[i] for field in states))


def test_visual_gridworld_plays_inside_a_composite():
    """VisualGridWorld+3DBall: both behaviors, the camera images with GridWorld's masks, 3DBall
    on its 5-step cadence."""
    rng = np.random.default_rng(2)
    with standin_env(scene="VisualGridWorld+3DBall", agents="3+2") as (env, standin):
        env.reset()
        assert sorted(env.behavior_specs) == ["3DBall?team=0", GRID]
        assert env.behavior_specs[GRID].observation_specs[0].shape == IMAGE
        for t in range(1, 31):
            act_randomly(env, rng)
            balls, _ = env.get_steps("3DBall?team=0")
            env.set_actions("3DBall?team=0",
                            ActionTuple(continuous=np.zeros((len(balls), 2), np.float32)))
            env.step()
            decisions, _ = env.get_steps(GRID)
            assert decisions.obs[0].shape == (3,) + IMAGE
            board_of(decisions.obs[0])
            assert len(env.get_steps("3DBall?team=0")[0]) == (2 if t % 5 == 0 else 0)
        assert standin.masked_actions == 0


def test_wire_png_observation_as_unity_writes_it():
    """The hand-written ObservationProto parses with the generated class: shape, compression
    PNG, no channel mapping (CameraSensor's CompressionSpec has none), dimension properties,
    name; mlagents_envs decodes it to the image; raw floats parse back exactly."""
    image = np.asarray(VisualGridWorld().render_camera(_row(_state(), 0)))
    png_sensor = Sensor("CameraSensor", IMAGE, 0, (2, 2, 1), compression=PNG)
    info = AgentInfoProto.FromString(InfoEncoder([png_sensor]).encode(7, 0.5, False, False,
                                                                        [image.reshape(-1)]))
    (obs,) = info.observations
    assert isinstance(obs, ObservationProto) and info.id == 7
    assert list(obs.shape) == list(IMAGE) and obs.compression_type == PNG
    assert obs.compressed_data[:8] == b"\x89PNG\r\n\x1a\n" and not obs.float_data.data
    assert list(obs.compressed_channel_mapping) == [] and list(obs.dimension_properties) == [2, 2, 1]
    np.testing.assert_allclose(_observation_to_np_array(obs, IMAGE), image, atol=1 / 255 + 1e-6)
    raw = AgentInfoProto.FromString(InfoEncoder([png_sensor._replace(compression=0)]).encode(
        7, 0.0, False, False, [image.reshape(-1)])).observations[0]
    assert raw.compression_type == 0 and not raw.compressed_data
    np.testing.assert_array_equal(_observation_to_np_array(raw, IMAGE), image)


def _state():
    _, state = jax.vmap(VisualGridWorld().reset)(jax.random.split(jax.random.PRNGKey(4), 1))
    return state
