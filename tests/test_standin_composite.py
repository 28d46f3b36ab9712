"""The stand-in playing a Unity scene with two behaviors (``--scene 3DBall+Basic``), through the
real ``mlagents_envs.environment.UnityEnvironment``: both behaviors announced with their own
specs, each deciding at its own cadence with its own episode ends, actions routed to each
behavior's agents, GridWorld's masks inside a composite, side channels and RESET reaching every
part, per-part agent counts, named parts, and the refusals."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from mlagents_envs.base_env import ActionTuple
from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto
from mlagents_envs.environment import UnityEnvironment
from mlagents_envs.side_channel.engine_configuration_channel import EngineConfigurationChannel
from mlagents_envs.side_channel.environment_parameters_channel import EnvironmentParametersChannel

from jppo.envs.basic import LARGE_GOAL, SIZE, SMALL_GOAL, START
from jppo.standin.composite import per_part, split_parts
from jppo.standin.server import StandIn, free_port, launch
from test_unity_standin import standin_env

BALL, BASIC, GRID = "3DBall?team=0", "Basic?team=0", "GridWorld?team=0"


def act_randomly(env, rng, behavior, grid_masks=False):
    """Random actions for ``behavior``'s deciding agents (GridWorld: only allowed moves); returns
    what was sent, or None when it has no decision this step."""
    decisions, _ = env.get_steps(behavior)
    n = len(decisions)
    if not n:
        return None
    spec = env.behavior_specs[behavior].action_spec
    continuous = rng.uniform(-1, 1, (n, spec.continuous_size)).astype(np.float32)
    if grid_masks:
        allowed = ~decisions.action_mask[0]
        discrete = np.array([[rng.choice(np.flatnonzero(a))] for a in allowed], np.int32)
    else:
        discrete = np.array([[rng.integers(b) for b in spec.discrete_branches] for _ in range(n)],
                            np.int32).reshape(n, len(spec.discrete_branches))
    action = ActionTuple(continuous=continuous, discrete=discrete)
    env.set_actions(behavior, action)
    return action


def test_composite_announces_each_behavior_with_its_own_specs():
    with standin_env(scene="3DBall+Basic") as (env, standin):
        env.reset()
        assert sorted(env.behavior_specs) == [BALL, BASIC]
        ball, basic = env.behavior_specs[BALL], env.behavior_specs[BASIC]
        assert [o.shape for o in ball.observation_specs] == [(8,)]
        assert ball.action_spec.continuous_size == 2 and ball.action_spec.discrete_branches == ()
        assert [o.shape for o in basic.observation_specs] == [(SIZE,)]
        assert basic.action_spec.continuous_size == 0 and basic.action_spec.discrete_branches == (3,)
        # Both decide at academy step 0: 12 balls and the Basic agent at its start.
        assert len(env.get_steps(BALL)[0]) == 12
        (basic_obs,) = env.get_steps(BASIC)[0].obs
        np.testing.assert_array_equal(basic_obs, np.eye(SIZE, dtype=np.float32)[[START]])
        assert [p.behavior for p in standin.parts] == ["3DBall", "Basic"]
        assert set(standin.scenes) == {"3DBall", "Basic"}
        with pytest.raises(AttributeError, match="several scenes"):
            standin.scene


def test_each_behavior_at_its_own_cadence_with_its_episodes_and_actions():
    """400 physics steps of random actions: 3DBall decides on every 5th, Basic on every one;
    Basic's agent moves as its JAX env says under the actions sent to it (and ends episodes at
    the goals with a new agent id); 3DBall's balls fall under random tilts."""
    rng = np.random.default_rng(0)
    steps = 400
    with standin_env(scene="3DBall+Basic") as (env, standin):
        env.reset()
        ball_decisions, basic_decisions, ball_ends, basic_ends = [], 0, 0, 0
        position, basic_id = START, int(env.get_steps(BASIC)[0].agent_id[0])
        for t in range(1, steps + 1):
            act_randomly(env, rng, BALL)
            (move,) = act_randomly(env, rng, BASIC).discrete[0]
            env.step()
            decisions, terminals = env.get_steps(BALL)
            if len(decisions):
                assert len(decisions) == 12
                ball_decisions.append(t)
            ball_ends += len(terminals)
            decisions, terminals = env.get_steps(BASIC)
            assert len(decisions) == 1  # Basic decides every step, its new agent included
            basic_decisions += 1
            position = int(np.clip(position + {0: 0, 1: -1, 2: 1}[int(move)], 0, SIZE))
            if position in (SMALL_GOAL, LARGE_GOAL):
                # The episode ended at the goal: terminal at the goal, then a new agent at START.
                assert list(terminals.agent_id) == [basic_id]
                np.testing.assert_array_equal(terminals.obs[0][0], np.eye(SIZE)[position])
                assert terminals.reward[0] == pytest.approx(
                    -0.01 + (1.0 if position == LARGE_GOAL else 0.1))
                assert decisions.agent_id[0] != basic_id
                basic_id, position = int(decisions.agent_id[0]), START
                basic_ends += 1
            else:
                assert len(terminals) == 0 and decisions.agent_id[0] == basic_id
                assert decisions.reward[0] == pytest.approx(-0.01)
            np.testing.assert_array_equal(decisions.obs[0][0], np.eye(SIZE)[position])
        assert ball_decisions == list(range(5, steps + 1, 5))
        assert basic_decisions == steps
        assert basic_ends > 3 and ball_ends > 0
        assert standin.physics_steps == steps
        assert standin.messages == 2 + 1 + steps  # initialization, the reset's answer, a frame each
        # The answers to the frames 0..steps-1 (the last frame's waits on Python): Basic's 400
        # actions and 3DBall's 12 on each of its 80 decisions.
        assert standin.actions_received == steps + 12 * (steps // 5)
        assert standin.masked_actions == 0


def test_actions_reach_the_ball_agents_of_their_behavior():
    """One 3DBall decision with +1 tilts for the first six agents and -1 for the others: their
    platforms turn in opposite directions over the 5 frames, whatever Basic is told."""
    with standin_env(scene="3DBall+Basic") as (env, standin):
        env.reset()
        before = env.get_steps(BALL)[0].obs[0][:, :2].copy()
        sign = np.repeat([1.0, -1.0], 6).astype(np.float32)
        env.set_actions(BALL, ActionTuple(continuous=np.stack([sign, sign], 1)))
        for _ in range(5):
            env.set_actions(BASIC, ActionTuple(discrete=np.array([[2]], np.int32)))
            env.step()
        decisions, terminals = env.get_steps(BALL)
        assert len(decisions) == 12 and len(terminals) == 0
        turned = decisions.obs[0][:, :2] - before
        # 2 degrees a frame for 5 frames about z and x: q grows by about sin(5 deg) each way.
        np.testing.assert_allclose(turned * sign[:, None], np.sin(np.deg2rad(5.0)), atol=0.01)


def test_gridworld_masks_reach_python_inside_a_composite():
    """GridWorld+3DBall: every GridWorld request carries its wall mask (the agent's cell read
    from its observation), random allowed moves are never counted as masked, and 3DBall keeps
    its 5-step cadence next to it."""
    rng = np.random.default_rng(1)
    top = 4  # GridWorld's 5 x 5 grid
    with standin_env(scene="GridWorld+3DBall") as (env, standin):
        env.reset()
        assert env.behavior_specs[GRID].action_spec.discrete_branches == (5,)
        walls_seen, ball_steps = 0, []
        for t in range(1, 151):
            act_randomly(env, rng, GRID, grid_masks=True)
            act_randomly(env, rng, BALL)
            env.step()
            decisions, _ = env.get_steps(GRID)
            assert len(decisions) == 9
            x, z = np.rint(decisions.obs[0][:, :2] * top).astype(int).T
            allowed = np.stack([np.ones(9, bool), z != top, z != 0, x != 0, x != top], 1)
            np.testing.assert_array_equal(decisions.action_mask[0], ~allowed)
            walls_seen += int((~allowed).sum())
            if len(env.get_steps(BALL)[0]):
                ball_steps.append(t)
        assert walls_seen > 0
        assert ball_steps == list(range(5, 151, 5))
        assert standin.masked_actions == 0
        # A forbidden move is counted: the stand-in reads the same masks it sent.
        decisions, _ = env.get_steps(GRID)
        forbidden = np.argmax(decisions.action_mask[0], axis=1)
        wrong = decisions.action_mask[0].any(axis=1)
        env.set_actions(GRID, ActionTuple(discrete=forbidden[:, None].astype(np.int32)))
        env.step()
        assert standin.masked_actions == int(wrong.sum()) > 0


def test_side_channels_and_reset_reach_every_part():
    params, engine = EnvironmentParametersChannel(), EngineConfigurationChannel()
    with standin_env(scene="3DBall+Basic", side_channels=[params, engine]) as (env, standin):
        engine.set_configuration_parameters(time_scale=20.0)
        params.set_float_parameter("scale", 2.0)
        env.reset()
        for scene in standin.scenes.values():
            assert scene.engine_config == {"time_scale": 20.0}
            assert len(scene.params.received) == 1
        for _ in range(7):
            for behavior in (BALL, BASIC):
                decisions, _ = env.get_steps(behavior)
                if len(decisions):
                    spec = env.behavior_specs[behavior].action_spec
                    env.set_actions(behavior, spec.empty_action(len(decisions)))
            env.step()
        assert len(env.get_steps(BALL)[0]) == 0  # academy step 7
        env.reset()  # every part restarts, and the academy clock with them
        assert len(env.get_steps(BALL)[0]) == 12
        np.testing.assert_array_equal(env.get_steps(BASIC)[0].obs[0][0], np.eye(SIZE)[START])
        np.testing.assert_array_equal(np.asarray(standin.scenes["3DBall"].carry.scale), 2.0)
        cadence = []
        for t in range(1, 11):
            env.set_actions(BASIC, ActionTuple(discrete=np.zeros((1, 1), np.int32)))
            env.step()
            cadence.append(len(env.get_steps(BALL)[0]))
        assert cadence == [0, 0, 0, 0, 12] * 2


def test_agent_counts_per_part_and_named_parts():
    # (4+1 through UnityEnvironment: test_launched_composite_...)
    standin = StandIn(1, scene="3DBall+Basic", agents="4+1")
    assert [p.scene.n for p in standin.parts] == [4, 1]
    assert [p.scene.n for p in StandIn(1, scene="GridWorld+3DBall").parts] == [9, 12]
    with standin_env(scene="Basic:Left+Basic:Right", agents=[1, 2]) as (env, standin):
        env.reset()
        assert sorted(env.behavior_specs) == ["Left?team=0", "Right?team=0"]
        assert len(env.get_steps("Left?team=0")[0]) == 1
        assert len(env.get_steps("Right?team=0")[0]) == 2
        assert [p.name for p in standin.parts] == ["Basic", "Basic"]


def test_max_step_per_part():
    """``max_step="5000+3"``: Basic's agent is interrupted after 3 decisions, 3DBall plays on."""
    with standin_env(scene="3DBall+Basic", max_step="5000+3") as (env, standin):
        env.reset()
        ends = []
        for _ in range(6):
            decisions, _ = env.get_steps(BALL)
            if len(decisions):
                env.set_actions(BALL, ActionTuple(continuous=np.zeros((12, 2), np.float32)))
            env.set_actions(BASIC, ActionTuple(discrete=np.zeros((1, 1), np.int32)))  # stay
            env.step()
            _, terminals = env.get_steps(BASIC)
            ends.append(list(terminals.interrupted))
        assert ends == [[], [], [True], [], [], [True]]
        assert standin.scenes["3DBall"].max_step == 5000


def test_sensor_faults_shape_the_first_part_only():
    with standin_env(scene="3DBall+Basic", fault="two-behaviors") as (env, _):
        env.reset()
        assert sorted(env.behavior_specs) == sorted(["3DBallCopy?team=0", BALL, BASIC])
    with standin_env(scene="Basic+3DBall", fault="bad-shape") as (env, _):
        env.reset()
        assert env.behavior_specs[BASIC].observation_specs[0].shape == (SIZE - 1,)
        assert env.behavior_specs[BALL].observation_specs[0].shape == (8,)


@pytest.mark.parametrize("scene, agents, message", [
    ("Basic+Basic", None, "names behavior 'Basic' twice; give each part its own name as SCENE:NAME"),
    ("3DBall+Nope", None, "unknown scene 'Nope' in '3DBall+Nope'"),
    ("3DBall+Basic", "4", "--agents 4: 1 value(s) for 2 scene(s)"),
    ("3DBall+Basic", "4+x", "--agents '4+x': a number, or one per scene joined by '+'"),
    ("3DBall+Basic", "0+1", "--agents 0+1: each must be at least 1"),
])
def test_composite_mistakes_are_refused_in_one_sentence(scene, agents, message):
    with pytest.raises(ValueError, match=message.replace("+", r"\+").replace("(", r"\(")
                       .replace(")", r"\)")):
        StandIn(1, scene=scene, agents=agents)


def test_cli_refuses_a_bad_composite_with_exit_2():
    result = subprocess.run([sys.executable, "-m", "jppo.standin", "--port", "1", "--scene",
                             "Basic+Basic"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "names behavior 'Basic' twice" in result.stderr and "Traceback" not in result.stderr


def test_per_part_values():
    assert per_part(None, 2, "--agents") == [None, None]
    assert per_part(7, 1, "--agents") == [7]
    assert per_part("4+1", 2, "--agents") == [4, 1]
    assert split_parts("3DBall+Basic:B") == [("3DBall", "3DBall"), ("Basic", "B")]


def test_launched_composite_plays_with_per_part_agents_and_closes_cleanly():
    """``launch(port, scene="3DBall+Basic", agents=[4, 1])``: the process the trainer starts."""
    port = free_port()
    proc = launch(port, scene="3DBall+Basic", agents=[4, 1], seed=1, connect_timeout=120,
                  stderr=subprocess.PIPE, text=True)
    try:
        env = UnityEnvironment(file_name=None, base_port=port, worker_id=0, timeout_wait=120)
        env.reset()
        assert len(env.get_steps(BALL)[0]) == 4 and len(env.get_steps(BASIC)[0]) == 1
        env.set_actions(BALL, ActionTuple(continuous=np.zeros((4, 2), np.float32)))
        env.set_actions(BASIC, ActionTuple(discrete=np.array([[2]], np.int32)))
        env.step()
        np.testing.assert_array_equal(env.get_steps(BASIC)[0].obs[0][0], np.eye(SIZE)[START + 1])
        env.close()
        assert proc.wait(30) == 0
        # One answered decision of 4 balls and one Basic agent; the next message was closed.
        assert "closed by Python after 4 messages; 5 actions received, 0 of them masked" \
            in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_wire_every_behavior_listed_and_brain_parameters_with_its_first_agents():
    """As RpcCommunicator.cs: each subscribed behavior has its agent list in every message
    (empty when it has nothing this frame), and its BrainParametersProto rides on the first
    message whose list for it is not empty."""
    standin = StandIn(1, scene="3DBall+Basic", seed=0)
    for part in standin.parts:
        part.scene.reset_all(mid_step=False)

    def message(deciding):
        out = UnityMessageProto.FromString(standin._step_message(deciding)).unity_output
        lists = {name: len(infos.value) for name, infos in out.rl_output.agentInfos.items()}
        brains = [b.brain_name for b in out.rl_initialization_output.brain_parameters]
        return lists, brains

    assert message([False, True]) == ({BALL: 0, BASIC: 1}, [BASIC])
    assert message([False, True]) == ({BALL: 0, BASIC: 1}, [])
    assert message([True, True]) == ({BALL: 12, BASIC: 1}, [BALL])
    assert message([True, False]) == ({BALL: 12, BASIC: 0}, [])
