"""The Unity 3DBall stand-in against the real ``mlagents_envs.environment.UnityEnvironment``:
handshake and behavior spec, decision cadence, falls and terminal messages, MaxStep, side
channels, mid-episode reset, close, the fault modes, and the hand-written wire encoding."""
from __future__ import annotations

import contextlib
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from mlagents_envs.base_env import ActionTuple
from mlagents_envs.communicator_objects.agent_info_pb2 import AgentInfoProto
from mlagents_envs.communicator_objects.brain_parameters_pb2 import ActionSpecProto, BrainParametersProto
from mlagents_envs.communicator_objects.command_pb2 import QUIT
from mlagents_envs.communicator_objects.header_pb2 import HeaderProto
from mlagents_envs.communicator_objects.unity_input_pb2 import UnityInputProto
from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto
from mlagents_envs.communicator_objects.unity_rl_input_pb2 import UnityRLInputProto
from mlagents_envs.communicator_objects.unity_to_external_pb2_grpc import (
    UnityToExternalProtoServicer, add_UnityToExternalProtoServicer_to_server)
from mlagents_envs.environment import UnityEnvironment
from mlagents_envs.exception import UnityEnvironmentException, UnityTimeOutException
from mlagents_envs.side_channel.engine_configuration_channel import EngineConfigurationChannel
from mlagents_envs.side_channel.environment_parameters_channel import EnvironmentParametersChannel
from mlagents_envs.side_channel.side_channel_manager import SideChannelManager

from jppo.standin.server import (BEHAVIOR, DIE_EXIT_CODE, SECOND_BEHAVIOR, StandIn, InfoEncoder,
                                     encode_output, free_port, launch)
from jppo.standin.scenes import Scene

G, DT = 9.81, 0.02
Q_RESET_MAX = np.sin(np.deg2rad(10.0) / 2)  # |q.x|, |q.z| after U(-10, 10) degree tilts


def free_fall_y(steps: int, gravity: float = G) -> float:
    """Ball height after ``steps`` semi-implicit Euler steps from rest at 4."""
    return 4.0 - gravity * DT * DT * steps * (steps + 1) / 2


@contextlib.contextmanager
def standin_env(timeout_wait: int = 30, side_channels=None, **standin_kwargs):
    """A StandIn playing in a thread against a real UnityEnvironment on a free port."""
    port = free_port()
    standin = StandIn(port, connect_timeout=30, **{"seed": 3, **standin_kwargs})
    standin.warm_up()
    thread = threading.Thread(target=lambda: setattr(standin, "code", standin.run()), daemon=True)
    thread.start()
    env = UnityEnvironment(file_name=None, base_port=port, worker_id=0, timeout_wait=timeout_wait,
                           side_channels=side_channels)
    try:
        yield env, standin
    finally:
        with contextlib.suppress(UnityEnvironmentException):  # a test may have closed it
            env.close()
        standin.stop()
        thread.join(10)
        assert not thread.is_alive()


def zero_actions(env, name=BEHAVIOR):
    decisions, _ = env.get_steps(name)
    env.set_actions(name, ActionTuple(continuous=np.zeros((len(decisions), 2), np.float32)))


# ---------------------------------------------------------------- the protocol


def test_handshake_spec_and_first_decision():
    with standin_env() as (env, standin):
        env.reset()
        assert list(env.behavior_specs) == [BEHAVIOR]
        spec = env.behavior_specs[BEHAVIOR]
        (obs_spec,) = spec.observation_specs
        assert obs_spec.shape == (8,) and obs_spec.name == "VectorSensor_size8"
        assert [int(d) for d in obs_spec.dimension_property] == [1]
        assert spec.action_spec.continuous_size == 2 and spec.action_spec.discrete_branches == ()
        decisions, terminals = env.get_steps(BEHAVIOR)
        assert len(decisions) == 12 and len(terminals) == 0
        np.testing.assert_array_equal(decisions.agent_id, np.arange(12))
        np.testing.assert_array_equal(decisions.reward, 0.0)  # no OnActionReceived yet
        obs = decisions.obs[0]
        assert obs.shape == (12, 8)
        assert np.all(np.abs(obs[:, :2]) <= Q_RESET_MAX + 1e-6) and np.abs(obs[:, :2]).max() > 0.01
        np.testing.assert_array_equal(obs[:, 3], 4.0)  # the first decision precedes any physics
        assert np.all(np.abs(obs[:, [2, 4]]) <= 1.5)
        np.testing.assert_array_equal(obs[:, 5:], 0.0)
        assert standin.messages == 3 and standin.physics_steps == 0


def test_zero_actions_keep_the_ball_on_five_physics_steps_per_decision():
    with standin_env() as (env, standin):
        env.reset()
        heights = []
        for decision in range(1, 11):
            zero_actions(env)
            env.step()
            decisions, terminals = env.get_steps(BEHAVIOR)
            assert len(decisions) == 12 and len(terminals) == 0
            np.testing.assert_allclose(decisions.reward, 0.1, rtol=1e-6)
            assert standin.physics_steps == 5 * decision
            heights.append(decisions.obs[0][:, 3])
        np.testing.assert_allclose(heights[0], free_fall_y(5), atol=1e-5)  # still falling freely
        # After 50 steps every ball has landed: centre about r + 2.5 = 3 above the tilted face.
        assert np.all((heights[-1] > 2.6) & (heights[-1] < 3.4))
        assert np.all(np.abs(decisions.obs[0][:, 6]) < 0.5)


def test_random_actions_end_episodes_and_agents_come_back_with_their_ids():
    rng = np.random.default_rng(0)
    with standin_env() as (env, standin):
        env.reset()
        terminal_only = both = 0
        first_after_fall = []  # (agent, physics steps since its reset, obs, reward)
        fallen_at = {}
        for _ in range(250):
            decisions, _ = env.get_steps(BEHAVIOR)
            env.set_actions(BEHAVIOR, ActionTuple(
                continuous=rng.uniform(-1, 1, (len(decisions), 2)).astype(np.float32)))
            env.step()
            decisions, terminals = env.get_steps(BEHAVIOR)
            for agent in terminals.agent_id:
                fallen_at[agent] = standin.physics_steps - 1  # the frame before this message
            terminal_only += len(terminals) > 0 and len(decisions) == 0
            both += bool(set(terminals.agent_id) & set(decisions.agent_id))
            if len(decisions):
                assert standin.physics_steps % 5 == 0
                np.testing.assert_array_equal(decisions.agent_id, np.arange(12))
                for agent in list(fallen_at):
                    i = list(decisions.agent_id).index(agent)
                    since = standin.physics_steps - fallen_at.pop(agent)
                    first_after_fall.append((since, decisions.obs[0][i], decisions.reward[i]))
            if len(terminals):
                np.testing.assert_array_equal(terminals.reward, -1.0)
                assert not terminals.interrupted.any()
                obs = terminals.obs[0]
                assert np.all((obs[:, 3] < -2) | (np.abs(obs[:, 2]) > 3) | (np.abs(obs[:, 4]) > 3))
        assert len(first_after_fall) >= 10 and terminal_only >= 3 and both >= 1
        for since, obs, reward in first_after_fall:
            # The reset frame's physics ran, then zero-action frames up to the global decision.
            assert 1 <= since <= 5
            np.testing.assert_allclose(obs[3], free_fall_y(since), atol=1e-5)
            np.testing.assert_allclose(obs[5:], [0, -G * DT * since, 0], atol=1e-5)
            assert np.all(np.abs(obs[:2]) <= Q_RESET_MAX + 1e-6)  # zero actions: the reset tilt
            # m_Reward: 0 after NotifyAgentDone, 0.1 once a zero-action OnActionReceived ran.
            assert reward == pytest.approx(0.0 if since == 1 else 0.1)


def step_until_terminal_only(env, rng, limit=200):
    """Random actions until a message carries terminal infos and no decision requests."""
    for _ in range(limit):
        decisions, _ = env.get_steps(BEHAVIOR)
        if len(decisions):
            env.set_actions(BEHAVIOR, ActionTuple(
                continuous=rng.uniform(-1, 1, (len(decisions), 2)).astype(np.float32)))
        env.step()
        decisions, terminals = env.get_steps(BEHAVIOR)
        if len(terminals) and not len(decisions):
            return terminals
    raise AssertionError("no terminal-only message")


def test_answers_to_terminal_only_messages_may_change_gravity_or_reset():
    rng, params = np.random.default_rng(1), EnvironmentParametersChannel()
    with standin_env(side_channels=[params]) as (env, standin):
        env.reset()
        terminals = step_until_terminal_only(env, rng)
        agent, reset_frame = terminals.agent_id[0], standin.physics_steps - 1
        # The answer carries gravity 20: the frames computed ahead with 9.81 must be redone.
        params.set_float_parameter("gravity", 20.0)
        env.step()
        while not len(env.get_steps(BEHAVIOR)[0]):
            env.step()
        decisions, _ = env.get_steps(BEHAVIOR)
        y, v = 4.0, 0.0
        for frame in range(reset_frame, standin.physics_steps):
            v -= (G if frame == reset_frame else 20.0) * DT
            y += v * DT
        i = list(decisions.agent_id).index(agent)
        np.testing.assert_allclose(decisions.obs[0][i, [3, 6]], [y, v], atol=1e-5)

        step_until_terminal_only(env, rng)
        before = standin.physics_steps
        env.reset()  # answers a terminal-only message: the reset frame acts and runs physics
        decisions, terminals = env.get_steps(BEHAVIOR)
        assert len(decisions) == 12 and len(terminals) == 0 and standin.physics_steps == before + 1
        np.testing.assert_allclose(decisions.obs[0][:, 3], free_fall_y(1, 20.0), atol=1e-5)
        np.testing.assert_allclose(decisions.reward, 0.1, rtol=1e-6)


def test_max_step_ends_episodes_as_interrupted():
    with standin_env(max_step=25) as (env, standin):
        env.reset()
        for _ in range(5):
            zero_actions(env)
            env.step()
        decisions, terminals = env.get_steps(BEHAVIOR)
        # Step count 25 is reached in frame 24; its terminal infos lead the decision at frame 25.
        assert standin.physics_steps == 25
        np.testing.assert_array_equal(terminals.agent_id, np.arange(12))
        assert terminals.interrupted.all()
        np.testing.assert_allclose(terminals.reward, 0.1, rtol=1e-6)
        np.testing.assert_array_equal(decisions.agent_id, np.arange(12))
        np.testing.assert_array_equal(decisions.reward, 0.0)
        np.testing.assert_allclose(decisions.obs[0][:, 3], free_fall_y(1), atol=1e-5)
        # After a RESET answer the reset frame is not counted (Unity counted it before the
        # reset): MaxStep falls on the 25th frame after it, so the terminals ride on a decision.
        env.reset()
        before = standin.physics_steps
        for _ in range(5):
            zero_actions(env)
            env.step()
        decisions, terminals = env.get_steps(BEHAVIOR)
        assert standin.physics_steps == before + 25
        assert len(decisions) == 12 and len(terminals) == 12 and terminals.interrupted.all()


def test_reset_mid_episode_restarts_every_agent_and_the_clock():
    with standin_env() as (env, standin):
        env.reset()
        for _ in range(3):
            zero_actions(env)
            env.step()
        env.reset()
        decisions, terminals = env.get_steps(BEHAVIOR)
        assert len(decisions) == 12 and len(terminals) == 0  # no terminal infos on a reset
        assert standin.physics_steps == 16  # the reset frame still runs its physics
        np.testing.assert_allclose(decisions.obs[0][:, 3], free_fall_y(1), atol=1e-5)
        np.testing.assert_allclose(decisions.reward, 0.1, rtol=1e-6)
        zero_actions(env)
        env.step()
        assert standin.physics_steps == 21


def test_gravity_applies_at_once_and_scale_at_the_next_episode():
    params = EnvironmentParametersChannel()
    with standin_env(side_channels=[params]) as (env, standin):
        params.set_float_parameter("scale", 2.0)
        params.set_float_parameter("mass", 5.0)
        env.reset()
        np.testing.assert_array_equal(np.asarray(standin.scene.carry.scale), 2.0)
        np.testing.assert_array_equal(np.asarray(standin.scene.carry.mass), 5.0)
        params.set_float_parameter("gravity", 20.0)
        zero_actions(env)
        env.step()
        decisions, _ = env.get_steps(BEHAVIOR)
        np.testing.assert_allclose(decisions.obs[0][:, 3], free_fall_y(5, 20.0), atol=1e-5)
        for _ in range(9):
            zero_actions(env)
            env.step()
        big = env.get_steps(BEHAVIOR)[0].obs[0][:, 3]
    with standin_env(side_channels=[params]) as (env, standin):
        params.set_float_parameter("gravity", 20.0)
        env.reset()
        for _ in range(10):
            zero_actions(env)
            env.step()
        small = env.get_steps(BEHAVIOR)[0].obs[0][:, 3]
    # Same seed, same tilts: resting on the face, a radius-1 ball sits ~0.5 higher.
    assert np.all((big - small > 0.4) & (big - small < 0.6))


def test_engine_configuration_is_parsed_and_ignored():
    engine = EngineConfigurationChannel()
    with standin_env(side_channels=[engine]) as (env, standin):
        engine.set_configuration_parameters(width=84, height=84, quality_level=1, time_scale=1000.0,
                                            target_frame_rate=-1, capture_frame_rate=60)
        env.reset()
        assert standin.scene.engine_config == {
            "width": 84, "height": 84, "quality_level": 1, "time_scale": 100.0,  # Unity clamps
            "target_frame_rate": -1, "capture_frame_rate": 60}
        zero_actions(env)
        env.step()
        np.testing.assert_allclose(env.get_steps(BEHAVIOR)[0].obs[0][:, 3], free_fall_y(5), atol=1e-5)


# mlagents_envs' close() puts status 400 in the pipe, then stops its server with no grace period:
# about 1 close in 30 aborts the pending call before the 400 goes out. Unity quits either way.
CLOSED = ("closed by Python", "connection lost")


def test_close_ends_the_thread():
    with standin_env() as (env, standin):
        env.reset()
        env.close()
        for _ in range(100):
            if hasattr(standin, "code"):  # run() returned (exit_reason is set just before)
                break
            threading.Event().wait(0.05)
        assert standin.exit_reason.startswith(CLOSED) and standin.code == 0


@pytest.mark.parametrize("answer, reason", [
    (UnityMessageProto(header=HeaderProto(status=400)), "closed by Python"),
    (UnityMessageProto(header=HeaderProto(status=200),
                       unity_input=UnityInputProto(rl_input=UnityRLInputProto(command=QUIT))),
     "quit command")])
def test_status_400_and_quit_end_the_stand_in(answer, reason):
    """A scripted server: the initialization answer, then ``answer`` to the second message."""
    seen = []

    class Servicer(UnityToExternalProtoServicer):
        def Exchange(self, request, context):
            seen.append(request)
            if len(seen) == 1:
                return UnityMessageProto(header=HeaderProto(status=200))
            return answer

    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    add_UnityToExternalProtoServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("localhost:0")
    server.start()
    try:
        standin = StandIn(port, connect_timeout=10)
        assert standin.run() == 0 and standin.exit_reason == reason
    finally:
        server.stop(None)
    init = seen[0].unity_output.rl_initialization_output
    assert (init.communication_version, init.name) == ("1.5.0", "AcademySingleton")
    assert all(getattr(init.capabilities, f.name) for f in init.capabilities.DESCRIPTOR.fields)
    assert not seen[1].HasField("unity_output") and seen[1].header.status == 200


def test_process_exits_0_on_close_and_abruptly_on_die():
    ports = free_port(), free_port()
    procs = [launch(ports[0], connect_timeout=60, stderr=subprocess.PIPE),
             launch(ports[1], fault="die-after=3", connect_timeout=60, stderr=subprocess.PIPE)]
    try:
        env = UnityEnvironment(file_name=None, base_port=ports[0], worker_id=0, timeout_wait=60)
        env.reset()
        env.step()
        env.close()
        assert procs[0].wait(timeout=30) == 0
        assert any(reason.encode() in procs[0].stderr.read() for reason in CLOSED)
        procs[1].stderr.readline()  # "compiled; connecting": a short timeout is now fair
        env = UnityEnvironment(file_name=None, base_port=ports[1], worker_id=0, timeout_wait=3)
        env.reset()
        with pytest.raises(UnityTimeOutException):
            env.step()  # message 3 was answered, then the process died
            env.step()
        env.close()
        assert procs[1].wait(timeout=30) == DIE_EXIT_CODE
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


# ---------------------------------------------------------------- fault modes


def test_silent_after_times_out():
    with standin_env(timeout_wait=2, fault="silent-after=3") as (env, standin):
        env.reset()
        with pytest.raises(UnityTimeOutException):
            env.step()
        assert standin.messages == 3


def test_bad_shape_shows_in_the_behavior_spec():
    with standin_env(fault="bad-shape") as (env, _):
        env.reset()
        (obs_spec,) = env.behavior_specs[BEHAVIOR].observation_specs
        assert obs_spec.shape == (7,) and obs_spec.name == "VectorSensor_size7"
        assert env.get_steps(BEHAVIOR)[0].obs[0].shape == (12, 7)


def test_nan_after_is_rejected_by_mlagents():
    with standin_env(fault="nan-after=3") as (env, _):
        env.reset()
        assert np.isfinite(env.get_steps(BEHAVIOR)[0].obs[0]).all()
        zero_actions(env)
        with pytest.raises(RuntimeError, match="NaN"):  # rpc_utils checks every observation
            env.step()


def test_two_behaviors_each_with_their_agents():
    with standin_env(fault="two-behaviors") as (env, standin):
        env.reset()
        assert sorted(env.behavior_specs) == sorted([BEHAVIOR, SECOND_BEHAVIOR])
        np.testing.assert_array_equal(env.get_steps(BEHAVIOR)[0].agent_id, np.arange(6))
        np.testing.assert_array_equal(env.get_steps(SECOND_BEHAVIOR)[0].agent_id, np.arange(6, 12))
        q_before = [env.get_steps(b)[0].obs[0][:, :2] for b in (BEHAVIOR, SECOND_BEHAVIOR)]
        env.set_actions(SECOND_BEHAVIOR, ActionTuple(continuous=np.ones((6, 2), np.float32)))
        env.step()  # UnityEnvironment fills the first behavior's actions with zeros
        q_after = [env.get_steps(b)[0].obs[0][:, :2] for b in (BEHAVIOR, SECOND_BEHAVIOR)]
        assert standin.physics_steps == 5
        np.testing.assert_array_equal(q_after[0], q_before[0])  # zero actions: no rotation
        # +2 degrees about z and x per frame, 5 frames: q.z and q.x grow by about sin(5 deg).
        assert np.all(q_after[1] - q_before[1] > 0.07)


# ---------------------------------------------------------------- pieces


def test_wire_encoding_parses_as_the_generated_messages():
    encoder = InfoEncoder(8)
    obs = np.linspace(-1, 1, 8, dtype=np.float32)
    infos = [encoder.encode(0, 0.0, False, False, obs), encoder.encode(300, -1.0, True, True, obs)]
    brain = BrainParametersProto(brain_name=BEHAVIOR, is_training=True,
                                 action_spec=ActionSpecProto(num_continuous_actions=2))
    got = UnityMessageProto.FromString(encode_output(
        {BEHAVIOR: infos, SECOND_BEHAVIOR: []}, [brain.SerializeToString()]))

    want = UnityMessageProto()
    want.header.status = 200
    for agent, reward, done in ((0, 0.0, False), (300, -1.0, True)):
        info = AgentInfoProto(id=agent, reward=reward, done=done, max_step_reached=done)
        o = info.observations.add()
        o.shape.append(8)
        o.float_data.data.extend(obs.tolist())
        o.dimension_properties.append(1)
        o.name = "VectorSensor_size8"
        want.unity_output.rl_output.agentInfos[BEHAVIOR].value.append(info)
    want.unity_output.rl_output.agentInfos[SECOND_BEHAVIOR].SetInParent()
    want.unity_output.rl_initialization_output.brain_parameters.append(brain)
    assert got == want


def test_side_channel_blocks_from_mlagents_are_parsed():
    params, engine = EnvironmentParametersChannel(), EngineConfigurationChannel()
    params.set_float_parameter("gravity", 12.5)
    params.set_uniform_sampler_parameters("scale", 0.75, 3.0, seed=7)
    params.set_multirangeuniform_sampler_parameters("mass", [(1.0, 2.0), (5.0, 6.0)], seed=1)
    engine.set_configuration_parameters(time_scale=0.5)
    scene = Scene(12)
    scene.on_side_channels(bytes(SideChannelManager([params, engine]).generate_side_channel_messages()))
    assert scene.gravity == 12.5 and scene.engine_config == {"time_scale": 1.0}
    scales = [scene.params.get("scale", 1.0) for _ in range(200)]
    masses = [scene.params.get("mass", 1.0) for _ in range(200)]
    assert min(scales) >= 0.75 and max(scales) <= 3.0 and np.std(scales) > 0.4
    assert all(1 <= m <= 2 or 5 <= m <= 6 for m in masses) and min(masses) < 2 < 5 < max(masses)
    scene.reset_all(mid_step=False)  # each agent's OnEpisodeBegin reads the sampler anew
    scale = np.asarray(scene.carry.scale)
    assert len(set(scale.tolist())) == 12 and scale.min() >= 0.75 and scale.max() <= 3.0


# ---------------------------------------------------------------- scenes beyond 3DBall


@pytest.mark.parametrize("scene, sensors, branches", [
    ("3DBallHard", [(27,), (18,)], ()), ("GridWorld", [(6,), (2,)], (5,)),
    ("Reach", [(4,), (3,)], (3, 2)), ("Basic", [(20,)], (3,))])
def test_scenes_declare_their_sensors_and_actions(scene, sensors, branches):
    with standin_env(scene=scene) as (env, standin):
        env.reset()
        (name, spec), = env.behavior_specs.items()
        assert name == f"{scene}?team=0"
        assert [o.shape for o in spec.observation_specs] == sensors
        assert spec.action_spec.discrete_branches == branches
        decisions, _ = env.get_steps(name)
        assert [o.shape[1:] for o in decisions.obs] == sensors


def test_standin_counts_masked_actions_it_receives():
    """The counter the training tests read: random actions ignore GridWorld's masks and are
    counted; actions drawn among the allowed ones are not."""
    with standin_env(scene="GridWorld") as (env, standin):
        env.reset()
        name = "GridWorld?team=0"
        rng = np.random.default_rng(0)
        for _ in range(60):
            decisions, _ = env.get_steps(name)
            env.set_actions(name, ActionTuple(discrete=rng.integers(0, 5, (len(decisions), 1))))
            env.step()
        assert standin.masked_actions > 0
        before = standin.masked_actions
        for _ in range(60):
            decisions, _ = env.get_steps(name)
            allowed = ~decisions.action_mask[0]
            choice = [rng.choice(np.flatnonzero(row)) for row in allowed]
            env.set_actions(name, ActionTuple(discrete=np.array(choice).reshape(-1, 1)))
            env.step()
        assert standin.masked_actions == before and standin.actions_received >= 120 * 9
