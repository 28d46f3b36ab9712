"""A Unity 3DBall player stand-in that speaks ML-Agents' gRPC protocol (API 1.5.0, release 19).

``mlagents_envs.environment.UnityEnvironment`` is the gRPC server; Unity is the client and calls
``UnityToExternalProto/Exchange`` once per message, each call pending until Python answers. This
process plays Unity's part, message for message (RpcCommunicator.cs, Academy.cs, Agent.cs,
DecisionRequester.cs):

1. ``rl_initialization_output`` (name, "1.5.0", package version, all capabilities); the answer
   carries Python's seed, which seeds the scene (``Random.InitState``) unless ``seed`` is given.
2. An empty message (no ``unity_output``); the answer is Python's first RESET with side channels.
3. One message per FixedUpdate in which some agent reported: on every 5th academy step all agents
   request decisions (``academyStepCount % 5 == 0``), and an agent whose episode ended in a frame
   (a fall, or MaxStep) is reported as terminal at the start of the next frame, alone or in front
   of the decision requests; the same id then appears as terminal and as deciding. Brain
   parameters ride on the first message with agents. Actions are applied to the agents that
   requested a decision, in order, and repeated every frame until the next decision; an agent
   that ended acts with zeros until then. A RESET answer resets every agent (no terminal infos)
   and restarts the academy clock, so the next message is a decision after one physics step.
4. An answer with header status 400 (``close()``) or a QUIT command ends the process with code 0.

Run ``python -m jppo.standin --port P [--agents 12] [--seed S] [--fault F]``; faults
for tests: ``silent-after=N``, ``die-after=N``, ``bad-shape``, ``nan-after=N``, ``two-behaviors``
(N counts messages sent, the two initialization messages included).
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import struct
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

from jppo.standin.scenes import OBS_SIZE, Scene

BEHAVIOR = "3DBall?team=0"
SECOND_BEHAVIOR = "3DBallCopy?team=0"  # the two-behaviors fault: the second half of the agents
API_VERSION = "1.5.0"
PACKAGE_VERSION = "2.2.1-exp.1"  # com.unity.ml-agents in ML-Agents release 19
DECISION_PERIOD = 5
DIMENSION_NONE = 1  # DimensionProperty.None: VectorSensor's one dimension
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
    KINDS = ("silent-after", "die-after", "bad-shape", "nan-after", "two-behaviors")

    @staticmethod
    def parse(text: str | None) -> "Fault":
        """``None`` | ``"bad-shape"`` | ``"two-behaviors"`` | ``"<kind>=N"`` -> Fault."""
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


# ---------------------------------------------------------------- wire encoding
# The generated messages use protobuf's pure-Python implementation here (protobuf 3.20 has no
# compiled module for Python 3.11): building and serializing a 12-agent message that way costs
# more than the physics. Decision messages are therefore written directly in the
# protobuf wire format (tests check them against the generated classes); the rare messages
# (initialization, brain parameters) and Python's answers go through the generated classes.


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (sub-message, string, bytes, packed repeated)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


_HEADER_200 = _field(1, b"\x08" + _varint(200))  # UnityMessageProto.header{status: 200}


class InfoEncoder:
    """AgentInfoProto bytes with one VectorSensor ObservationProto; proto3 drops default values."""

    def __init__(self, obs_size: int):
        self._floats = struct.Struct(f"<{obs_size}f")
        self._shape = _field(1, _varint(obs_size))  # shape: [obs_size], packed
        # dimension_properties: [DimensionProperty.None], name: VectorSensor_size<N>
        self._tail = _field(6, _varint(DIMENSION_NONE)) + _field(8, f"VectorSensor_size{obs_size}".encode())

    def encode(self, agent_id: int, reward: float, done: bool, maxed: bool, obs) -> bytes:
        observation = self._shape + _field(4, _field(1, self._floats.pack(*obs))) + self._tail
        out = bytearray()
        if reward != 0.0:
            out += b"\x3d" + struct.pack("<f", reward)  # field 7, 32-bit
        if done:
            out += b"\x40\x01"  # field 8
        if maxed:
            out += b"\x48\x01"  # field 9
        if agent_id:
            out += b"\x50" + _varint(agent_id)  # field 10
        return bytes(out + _field(13, observation))


def encode_output(agent_infos: dict[str, list[bytes]], brains: list[bytes] = ()) -> bytes:
    """UnityMessageProto{header 200, unity_output{rl_output{agentInfos}, rl_initialization_output
    {brain_parameters}}} from encoded AgentInfoProtos and BrainParametersProtos."""
    entries = b"".join(
        _field(2, _field(1, name.encode()) + _field(2, b"".join(_field(1, i) for i in infos)))
        for name, infos in agent_infos.items())
    output = _field(1, entries)
    if brains:
        output += _field(2, b"".join(_field(5, b) for b in brains))
    return _HEADER_200 + _field(2, output)


def free_port() -> int:
    """A TCP port nothing listens on right now (for tests and benchmarks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


class StandIn:
    """The 3DBall player: ``run()`` connects to ``localhost:port`` and plays until Python closes.

    ``agents`` in the scene (12); ``seed`` overrides the seed Python sends;
    ``fault`` a Fault or its text; ``max_step`` is Agent.MaxStep in physics steps;
    ``connect_timeout`` bounds the wait for the server; ``hard_exit`` makes ``die-after`` end
    the whole process (the CLI), otherwise ``run`` just drops the connection and returns.
    ``run`` returns the exit code; ``exit_reason``, ``messages`` (sent),
    ``physics_steps`` and ``scene`` (engine configuration, parameters) tell tests what happened.
    """

    def __init__(self, port: int, agents: int = 12, seed: int | None = None,
                 fault: Fault | str | None = None, max_step: int = 5000,
                 connect_timeout: float = 60.0, hard_exit: bool = False):
        self.port, self.seed, self.connect_timeout = port, seed, connect_timeout
        self.fault = fault if isinstance(fault, Fault) else Fault.parse(fault)
        self.hard_exit = hard_exit
        # (behavior, first agent, end): the two-behaviors fault gives the second half of the
        # agents another behavior name (the agent count, and so the compiled physics, stay).
        half = agents // 2 if self.fault.kind == "two-behaviors" else agents
        self.groups = [(BEHAVIOR, 0, half)] + ([(SECOND_BEHAVIOR, half, agents)] if half < agents else [])
        self.scene = Scene(agents, seed=seed or 0, max_step=max_step)
        self.obs_size = OBS_SIZE - 1 if self.fault.kind == "bad-shape" else OBS_SIZE
        self._encoder = InfoEncoder(self.obs_size)
        self.messages = self.physics_steps = 0
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
        self.scene.reset_all(mid_step=False)
        self.scene.advance(DECISION_PERIOD)
        self.scene.discard_lookahead()
        self.scene.carry = None

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

    def _infos(self, ids, obs: np.ndarray, rewards, done: bool, maxed) -> list[bytes]:
        """Encoded AgentInfoProtos; the nan-after fault replaces the observations."""
        obs = obs[:, :self.obs_size]
        if self.fault.kind == "nan-after" and self.messages >= self.fault.after:
            obs = np.full_like(obs, np.nan)
        encode = self._encoder.encode
        return [encode(int(a), float(r), done, bool(m), o)
                for a, r, m, o in zip(ids, rewards, maxed, obs.tolist())]

    def _step_message(self, terminal: np.ndarray | None, decision: bool) -> bytes:
        """The batch of one frame: per behavior the terminal infos queued in the previous frame,
        then (on a decision step) every agent's decision request."""
        agent_infos, brains = {}, []
        for behavior, lo, hi in self.groups:
            infos = []  # every subscribed behavior has its list, empty or not
            if terminal is not None:
                ended = np.flatnonzero(terminal[lo:hi, OBS_SIZE + 1:OBS_SIZE + 3].any(axis=1)) + lo
                rows = terminal[ended]
                infos += self._infos(ended, rows[:, :OBS_SIZE], rows[:, OBS_SIZE], True,
                                     rows[:, OBS_SIZE + 2] > 0)
            if decision:
                infos += self._infos(range(lo, hi), self.scene.obs[lo:hi], self.scene.reward[lo:hi],
                                     False, np.zeros(hi - lo, bool))
            agent_infos[behavior] = infos
            if infos and behavior not in self._brains_sent:
                # Brain parameters ride on the first message that has this behavior's agents.
                brains.append(BrainParametersProto(
                    brain_name=behavior, is_training=True,
                    action_spec=ActionSpecProto(num_continuous_actions=2)).SerializeToString())
                self._brains_sent.add(behavior)
        return encode_output(agent_infos, brains)

    # ------------------------------------------------------------ the game loop

    def _actions(self, rl_input) -> np.ndarray:
        """float32 [n, 2]: the i-th action of a behavior goes to its i-th requesting agent; an
        agent that got none (behavior missing, list short) acts with zeros, as in Unity."""
        actions = np.zeros((self.scene.n, 2), np.float32)
        for behavior, lo, hi in self.groups:
            if behavior not in rl_input.agent_actions:
                continue
            given = rl_input.agent_actions[behavior].value
            if len(given) != hi - lo:
                _LOG.warning("%s: %d actions for %d agents", behavior, len(given), hi - lo)
            for i, action in enumerate(given[:hi - lo]):
                values = list(action.continuous_actions or action.vector_actions_deprecated)[:2]
                actions[lo + i, :len(values)] = values
        return actions

    def _play(self) -> None:
        """Academy.EnvironmentStep, one FixedUpdate per iteration."""
        step, terminal = 0, None  # the academy step count at AgentPreStep
        while True:
            decision = step % DECISION_PERIOD == 0
            reset = False
            if decision or terminal is not None:
                rl_input = self._exchange(self._step_message(terminal, decision)).rl_input
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
                    self.scene.set_actions(self._actions(rl_input))
            horizon = 1 if reset else DECISION_PERIOD - step % DECISION_PERIOD
            host = self.scene.advance(horizon)
            self.physics_steps += 1
            terminal = host if host[:, OBS_SIZE + 1:OBS_SIZE + 3].any() else None
            step = 0 if reset else step + 1


# ---------------------------------------------------------------- processes


def launch(port: int, *, agents: int = 12, seed: int | None = None, fault: str | None = None,
           max_step: int | None = None, connect_timeout: float = 60.0, **popen) -> subprocess.Popen:
    """Start ``python -m jppo.standin`` for ``port``; ``popen`` goes to Popen."""
    command = [sys.executable, "-m", "jppo.standin", "--port", str(port),
               "--agents", str(agents), "--connect-timeout", str(connect_timeout)]
    for flag, value in (("--seed", seed), ("--fault", fault), ("--max-step", max_step)):
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
    parser.add_argument("--agents", type=int, default=12)
    parser.add_argument("--seed", type=int, default=None, help="default: the seed Python sends")
    parser.add_argument("--fault", default=None, help=", ".join(Fault.KINDS))
    parser.add_argument("--max-step", type=int, default=5000)
    parser.add_argument("--connect-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    _use_compilation_cache()
    handler = logging.StreamHandler()  # the stand-in's own lines only, not JAX's start-up notes
    handler.setFormatter(logging.Formatter("unity_standin: %(message)s"))
    _LOG.addHandler(handler)
    _LOG.setLevel(logging.INFO)
    standin = StandIn(args.port, agents=args.agents, seed=args.seed, fault=args.fault,
                      max_step=args.max_step, connect_timeout=args.connect_timeout, hard_exit=True)
    standin.warm_up()
    _LOG.info("compiled; connecting to localhost:%d", args.port)
    code = standin.run()
    _LOG.info("exit %d: %s after %d messages", code, standin.exit_reason, standin.messages)
    return code


if __name__ == "__main__":
    sys.exit(main())
