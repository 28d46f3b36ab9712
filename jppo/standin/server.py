"""A Unity player stand-in that speaks ML-Agents' gRPC protocol (API 1.5.0, release 19).

``mlagents_envs.environment.UnityEnvironment`` is the gRPC server; Unity is the client and calls
``UnityToExternalProto/Exchange`` once per message, each call pending until Python answers. This
process plays Unity's part, message for message (RpcCommunicator.cs, Academy.cs, Agent.cs,
DecisionRequester.cs):

1. ``rl_initialization_output`` (name, "1.5.0", package version, all capabilities); the answer
   carries Python's seed, which seeds the scene (``Random.InitState``) unless ``seed`` is given.
2. An empty message (no ``unity_output``); the answer is Python's first RESET with side channels.
3. One message per FixedUpdate in which some agent reported: on every decision step all agents
   request decisions (3DBall: ``academyStepCount % 5 == 0``; Basic, GridWorld, Reach: every
   step), and an agent whose episode ended in a frame (a fall, a goal, or MaxStep) is reported
   as terminal at the start of the next frame, alone or in front of the decision requests; the
   same id then appears as terminal and as deciding (Basic: a new id, the scene reloads). Each
   agent sends one ObservationProto per sensor and, where some discrete choice is masked, its
   action mask. Brain parameters ride on the first message with agents. Actions are applied to
   the agents that requested a decision, in order, and repeated every frame until the next
   decision; an agent that ended acts with zeros until then. A RESET answer resets every agent
   (no terminal infos) and restarts the academy clock.
4. An answer with header status 400 (``close()``) or a QUIT command ends the process with code 0.

Run ``python -m jppo.standin --port P [--scene 3DBall] [--agents N] [--seed S] [--fault F]``
(scenes: ``jppo.standin.catalog``); faults for tests: ``silent-after=N``, ``die-after=N``,
``bad-shape``, ``nan-after=N``, ``two-behaviors``, ``image-sensor`` and ``buffer-sensor`` (an
extra sensor jppo does not train) (N counts messages sent, the two initialization messages
included).
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass

import grpc
import jax
import numpy as np
from mlagents_envs.communicator_objects.brain_parameters_pb2 import ActionSpecProto, BrainParametersProto
from mlagents_envs.communicator_objects.capabilities_pb2 import UnityRLCapabilitiesProto
from mlagents_envs.communicator_objects.command_pb2 import QUIT, RESET, STEP
from mlagents_envs.communicator_objects.header_pb2 import HeaderProto
from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto

from jppo.standin.catalog import SCENES, make_scene
from jppo.standin.scenes import Sensor
from jppo.standin.wire import HEADER_200 as _HEADER_200
from jppo.standin.wire import DIMENSION_NONE, InfoEncoder, encode_output  # noqa: F401 (re-exported)

BEHAVIOR = "3DBall?team=0"
SECOND_BEHAVIOR = "3DBallCopy?team=0"  # the two-behaviors fault: the second half of the agents
API_VERSION = "1.5.0"
PACKAGE_VERSION = "2.2.1-exp.1"  # com.unity.ml-agents in ML-Agents release 19
# The extra sensors of the image-sensor and buffer-sensor faults: a small camera, and a
# BufferSensor of up to 4 entities of 6 floats (DimensionProperty VariableSize, None).
EXTRA_SENSORS = {"image-sensor": Sensor("CameraSensor", (8, 8, 3), 0, (2, 2, 1)),
                 "buffer-sensor": Sensor("BufferSensor_size6", (4, 6), 0, (4, 1))}
DIE_EXIT_CODE = 3
_NO_SERVER_EXIT_CODE = 2
EXCHANGE = "/communicator_objects.UnityToExternalProto/Exchange"  # the one RPC of UnityToExternalProtoStub
_LOG = logging.getLogger("jppo.unity_standin")
_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
              ("grpc.max_reconnect_backoff_ms", 500)]  # gRPC's default backoff grows to 120 s


@dataclass(frozen=True)
class Fault:
    """A misbehaviour for tests: ``kind`` one of KINDS, ``after`` a message count."""

    kind: str | None = None
    after: int = 0
    KINDS = ("silent-after", "die-after", "bad-shape", "nan-after", "two-behaviors",
             "image-sensor", "buffer-sensor")

    @staticmethod
    def parse(text: str | None) -> "Fault":
        """``None`` | ``"bad-shape"`` | ``"two-behaviors"`` | ... | ``"<kind>=N"`` -> Fault."""
        if not text:
            return Fault()
        kind, _, count = text.partition("=")
        if kind not in Fault.KINDS or (kind.endswith("-after") != bool(count)):
            raise ValueError(f"unknown fault {text!r}; expected one of {', '.join(Fault.KINDS)} "
                             "(the *-after ones as kind=N)")
        return Fault(kind, int(count) if count else 0)


class _End(Exception):
    """Leaves the protocol loop: ``reason`` for the log, ``code`` for the process."""

    def __init__(self, reason: str, code: int = 0):
        super().__init__(reason)
        self.reason, self.code = reason, code


def free_port() -> int:
    """A TCP port nothing listens on right now (for tests and benchmarks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


class StandIn:
    """A Unity player: ``run()`` connects to ``localhost:port`` and plays until Python closes.

    ``scene`` one of ``jppo.standin.catalog.SCENES`` (3DBall); ``agents`` in the scene (the
    scene's own count by default); ``seed`` overrides the seed Python sends; ``fault`` a Fault
    or its text; ``max_step`` is the scene's Agent.MaxStep (physics steps for 3DBall);
    ``connect_timeout`` bounds the wait for the server; ``hard_exit`` makes ``die-after`` end
    the whole process (the CLI), otherwise ``run`` just drops the connection and returns.
    ``run`` returns the exit code; ``exit_reason``, ``messages`` (sent), ``physics_steps``,
    ``actions_received``, ``masked_actions`` (discrete choices received that the agent's mask
    forbade) and ``scene`` (engine configuration, parameters) tell tests what happened.
    """

    def __init__(self, port: int, agents: int | None = None, seed: int | None = None,
                 fault: Fault | str | None = None, max_step: int | None = None,
                 connect_timeout: float = 60.0, hard_exit: bool = False, scene: str = "3DBall"):
        self.port, self.seed, self.connect_timeout = port, seed, connect_timeout
        self.fault = fault if isinstance(fault, Fault) else Fault.parse(fault)
        self.hard_exit = hard_exit
        self.scene, name = make_scene(scene, agents, seed or 0, max_step)
        n = self.scene.n
        # (behavior, first agent, end): the two-behaviors fault gives the second half of the
        # agents another behavior name (the agent count, and so the compiled physics, stay).
        half = n // 2 if self.fault.kind == "two-behaviors" else n
        self.groups = ([(f"{name}?team=0", 0, half)]
                       + ([(f"{name}Copy?team=0", half, n)] if half < n else []))
        sensors = list(self.scene.sensors)
        if self.fault.kind == "bad-shape":  # the first sensor one float short
            size = sensors[0].shape[0] - 1
            name = f"VectorSensor_size{size}" if sensors[0].name.startswith("VectorSensor_size") \
                else sensors[0].name
            sensors[0] = sensors[0]._replace(name=name, shape=(size,))
        if self.fault.kind in EXTRA_SENSORS:
            sensors.append(EXTRA_SENSORS[self.fault.kind])
        self.sensors = sensors
        self._encoder = InfoEncoder(sensors)
        self.messages = self.physics_steps = 0
        self.actions_received = self.masked_actions = 0  # see _count_masked
        self._allowed = None  # the masks of the last decision requests
        self.exit_reason: str | None = None
        self._brains_sent: set[str] = set()
        self._stop = threading.Event()
        self._channel: grpc.Channel | None = None

    # ------------------------------------------------------------ lifecycle

    def run(self) -> int:
        """Play until Python closes the connection; returns the process exit code."""
        self._channel = grpc.insecure_channel(f"localhost:{self.port}", options=_RECONNECT)
        # The stub's method with a pass-through request serializer: InfoEncoder writes the bytes.
        self._call = self._channel.unary_unary(EXCHANGE, request_serializer=None,
                                               response_deserializer=UnityMessageProto.FromString)
        try:
            self._initialize()
            self._play()
        except _End as end:
            self.exit_reason = end.reason
            return end.code
        finally:
            self._channel.close()
        return 0

    def stop(self) -> None:
        """Ends ``run`` from another thread: cancels a pending call, wakes a silent fault."""
        self._stop.set()
        if self._channel is not None:
            self._channel.close()

    def warm_up(self) -> None:
        """Compile the jitted scene before connecting, so Python's first reset does not wait."""
        self.scene.warm_up()

    # ------------------------------------------------------------ messages out

    def _exchange(self, message: bytes):
        """One Exchange call; returns the answer's ``unity_input``. Applies the message faults."""
        if self.fault.kind == "silent-after" and self.messages >= self.fault.after:
            # Unity frozen: the connection stays open, nothing more is sent.
            self._stop.wait()
            raise _End("stopped while silent")
        if self.fault.kind == "die-after" and self.messages >= self.fault.after:
            if self.hard_exit:
                os._exit(DIE_EXIT_CODE)
            self._channel.close()
            raise _End("died", DIE_EXIT_CODE)
        first = self.messages == 0
        self.messages += 1
        try:
            # Only the first call waits for the server (and not forever): later calls wait on
            # Python, which may train for minutes between steps.
            answer = self._call(message, wait_for_ready=first or None,
                                timeout=self.connect_timeout if first else None)
        except grpc.RpcError as error:
            if self._stop.is_set():
                raise _End("stopped") from None
            if first:
                raise _End(f"no server on port {self.port}: {error.code()}", _NO_SERVER_EXIT_CODE) from None
            # Unity quits when the trainer vanishes (RpcCommunicator.Exchange's catch).
            raise _End(f"connection lost: {error.code()}") from None
        if answer.header.status != 200:
            raise _End("closed by Python")  # close() answers status 400
        return answer.unity_input

    def _initialize(self) -> None:
        """Messages 1 and 2; the answer to the second is Python's first reset."""
        init = UnityMessageProto(header=HeaderProto(status=200))
        out = init.unity_output.rl_initialization_output
        out.name, out.communication_version, out.package_version = (
            "AcademySingleton", API_VERSION, PACKAGE_VERSION)
        out.capabilities.CopyFrom(UnityRLCapabilitiesProto(
            baseRLCapabilities=True, concatenatedPngObservations=True, compressedChannelMapping=True,
            hybridActions=True, trainingAnalytics=True, variableLengthObservation=True,
            multiAgentGroups=True))
        answer = self._exchange(init.SerializeToString())
        if self.seed is None:
            self.scene.seed(answer.rl_initialization_input.seed)
        # RpcCommunicator.Initialize's second call: a message without unity_output.
        answer = self._exchange(_HEADER_200)
        self._read_input(answer.rl_input)
        # RESET or not, the academy resets before its first step (m_HadFirstReset).
        self.scene.reset_all(mid_step=False)

    def _read_input(self, rl_input) -> int:
        """Side channels first, then the command, as UpdateEnvironmentWithInput does."""
        self.scene.on_side_channels(rl_input.side_channel)
        if rl_input.command == QUIT:
            raise _End("quit command")
        return rl_input.command

    def _infos(self, ids, obs: list, rewards, done: bool, maxed, allowed=None) -> list[bytes]:
        """Encoded AgentInfoProtos of several agents (``obs``: one array per scene sensor);
        the faults' sensors are shaped here, and nan-after replaces the observations."""
        m = len(ids)
        obs = [np.asarray(o, np.float32).reshape(m, int(np.prod(np.shape(o)[1:]))) for o in obs]
        obs[0] = obs[0][:, :int(np.prod(self.sensors[0].shape))]  # bad-shape
        obs += [np.zeros((m, int(np.prod(s.shape))), np.float32)
                for s in self.sensors[len(obs):]]
        if self.fault.kind == "nan-after" and self.messages >= self.fault.after:
            obs = [np.full_like(o, np.nan) for o in obs]
        encode = self._encoder.encode
        rows = [[o[i].tolist() for o in obs] for i in range(m)]
        masks = [None] * m if allowed is None else [None if a.all() else ~a for a in allowed]
        return [encode(int(a), float(r), done, bool(x), values, mask)
                for a, r, x, values, mask in zip(ids, rewards, maxed, rows, masks)]

    def _step_message(self, ended, decision: bool) -> bytes:
        """The batch of one frame: per behavior the terminal infos queued in the previous frame
        (``ended``, or None), then (on a decision step) every agent's decision request."""
        terminals = self.scene.terminals(ended) if ended is not None else None
        decisions = self.scene.decisions() if decision else None
        if decisions is not None:
            self._allowed = decisions.masks
        agent_infos, brains = {}, []
        for behavior, lo, hi in self.groups:
            infos = []  # every subscribed behavior has its list, empty or not
            if terminals is not None:
                pick = (terminals.rows >= lo) & (terminals.rows < hi)
                infos += self._infos(terminals.ids[pick], [o[pick] for o in terminals.obs],
                                     terminals.reward[pick], True, terminals.maxed[pick])
            if decisions is not None:
                pick = (decisions.rows >= lo) & (decisions.rows < hi)
                infos += self._infos(decisions.ids[pick], [o[pick] for o in decisions.obs],
                                     decisions.reward[pick], False, np.zeros(pick.sum(), bool),
                                     None if decisions.masks is None else decisions.masks[pick])
            agent_infos[behavior] = infos
            if infos and behavior not in self._brains_sent:
                # Brain parameters ride on the first message that has this behavior's agents.
                branches = list(self.scene.discrete_branches)
                spec = ActionSpecProto(num_continuous_actions=self.scene.continuous_size,
                                       num_discrete_actions=len(branches),
                                       discrete_branch_sizes=branches)
                brains.append(BrainParametersProto(brain_name=behavior, is_training=True,
                                                   action_spec=spec).SerializeToString())
                self._brains_sent.add(behavior)
        return encode_output(agent_infos, brains)

    # ------------------------------------------------------------ the game loop

    def _actions(self, rl_input) -> tuple[np.ndarray, np.ndarray]:
        """(continuous float32 [n, c], discrete int32 [n, branches]): the i-th action of a
        behavior goes to its i-th requesting agent; an agent that got none (behavior missing,
        list short) acts with zeros, as in Unity."""
        n, c, b = self.scene.n, self.scene.continuous_size, len(self.scene.discrete_branches)
        continuous, discrete = np.zeros((n, c), np.float32), np.zeros((n, b), np.int32)
        for behavior, lo, hi in self.groups:
            if behavior not in rl_input.agent_actions:
                continue
            given = rl_input.agent_actions[behavior].value
            if len(given) != hi - lo:
                _LOG.warning("%s: %d actions for %d agents", behavior, len(given), hi - lo)
            for i, action in enumerate(given[:hi - lo]):
                values = list(action.continuous_actions or action.vector_actions_deprecated)[:c]
                continuous[lo + i, :len(values)] = values
                choices = list(action.discrete_actions)[:b]
                discrete[lo + i, :len(choices)] = choices
        return continuous, discrete

    def _count_masked(self, discrete: np.ndarray) -> None:
        """Count the discrete actions Python chose although the agent's mask forbade them (Unity
        would carry them out; the tests assert that jppo never sends one)."""
        self.actions_received += len(discrete)
        if self._allowed is None or not discrete.shape[1]:
            return
        offsets = np.cumsum([0] + list(self.scene.discrete_branches))[:-1]
        chosen = self._allowed[np.arange(len(discrete))[:, None], offsets + discrete]
        self.masked_actions += int((~chosen).sum())

    def _play(self) -> None:
        """Academy.EnvironmentStep, one FixedUpdate per iteration."""
        period = self.scene.decision_period
        step, ended = 0, None  # the academy step count at AgentPreStep
        while True:
            decision = step % period == 0
            reset = False
            if decision or ended is not None:
                rl_input = self._exchange(self._step_message(ended, decision)).rl_input
                if rl_input.side_channel or rl_input.command != STEP:
                    self.scene.discard_lookahead()  # computed assuming nothing would change
                reset = self._read_input(rl_input) == RESET
                if reset:
                    # ForcedFullReset inside this frame: the frame still acts (actions of a decision
                    # step are dropped, the repeated ones stay) and runs its physics.
                    self.scene.reset_all(mid_step=True)
                    if decision:
                        self.scene.clear_actions()
                elif decision:
                    continuous, discrete = self._actions(rl_input)
                    self._count_masked(discrete)
                    self.scene.set_actions(continuous, discrete)
            horizon = 1 if reset else period - step % period
            ended = self.scene.advance(horizon)
            self.physics_steps += 1
            step = 0 if reset else step + 1


# ---------------------------------------------------------------- processes


def launch(port: int, *, agents: int | None = None, seed: int | None = None,
           fault: str | None = None, max_step: int | None = None, connect_timeout: float = 60.0,
           scene: str = "3DBall", **popen) -> subprocess.Popen:
    """Start ``python -m jppo.standin`` for ``port``; ``popen`` goes to Popen."""
    command = [sys.executable, "-m", "jppo.standin", "--port", str(port), "--scene", scene,
               "--connect-timeout", str(connect_timeout)]
    for flag, value in (("--agents", agents), ("--seed", seed), ("--fault", fault),
                        ("--max-step", max_step)):
        if value is not None:
            command += [flag, str(value)]
    env = {**os.environ, **popen.pop("env", {})}
    env.setdefault("JAX_PLATFORMS", "cpu")
    return subprocess.Popen(command, env=env, **popen)


def _use_compilation_cache() -> None:
    """Keep the compiled physics on disk between stand-in processes (a test suite starts several;
    compiling takes seconds, loading well under one). ``JPPO_STANDIN_JAX_CACHE`` names the folder,
    empty turns it off; a cache the user configured already wins."""
    folder = os.environ.get("JPPO_STANDIN_JAX_CACHE",
                            os.path.join(tempfile.gettempdir(), "jppo-standin-jax-cache"))
    if folder and not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jppo.standin",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--scene", default="3DBall", choices=list(SCENES),
                        help="the scene to play (default 3DBall)")
    parser.add_argument("--agents", type=int, default=None, help="default: the scene's own")
    parser.add_argument("--seed", type=int, default=None, help="default: the seed Python sends")
    parser.add_argument("--fault", default=None, help=", ".join(Fault.KINDS))
    parser.add_argument("--max-step", type=int, default=None,
                        help="Agent.MaxStep (default: the scene's)")
    parser.add_argument("--connect-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    _use_compilation_cache()
    handler = logging.StreamHandler()  # the stand-in's own lines only, not JAX's start-up notes
    handler.setFormatter(logging.Formatter("unity_standin: %(message)s"))
    _LOG.addHandler(handler)
    _LOG.setLevel(logging.INFO)
    standin = StandIn(args.port, agents=args.agents, seed=args.seed, fault=args.fault,
                      max_step=args.max_step, connect_timeout=args.connect_timeout, hard_exit=True,
                      scene=args.scene)
    standin.warm_up()
    _LOG.info("compiled %s; connecting to localhost:%d", args.scene, args.port)
    code = standin.run()
    _LOG.info("exit %d: %s after %d messages; %d actions received, %d of them masked", code,
              standin.exit_reason, standin.messages, standin.actions_received,
              standin.masked_actions)
    return code


if __name__ == "__main__":
    sys.exit(main())
