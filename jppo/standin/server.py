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

A composite scene (``--scene 3DBall+Basic``) plays a Unity scene with several Behavior
Parameters: each part its own behavior, agents, sensors, actions, decision period, episode ends
and masks, on one academy clock; a message goes out in a frame in which any part decides or has
terminal infos, with every behavior's list (empty when it has nothing), and side channels and
RESET reach every part (``jppo.standin.composite``).

Run ``python -m jppo.standin --port P [--scene 3DBall|A+B] [--agents N|N+M] [--seed S] [--fault F]``
(scenes: ``jppo.standin.catalog``); faults for tests: ``silent-after=N``, ``die-after=N``,
``bad-shape``, ``nan-after=N``, ``two-behaviors``, ``image-sensor`` and ``buffer-sensor`` (an
extra sensor jppo does not train), ``uncompressed-images`` (cameras send raw floats, as a
CameraSensor with compression None, instead of PNG) (N counts messages sent, the two
initialization messages included).
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
from mlagents_envs.communicator_objects.capabilities_pb2 import UnityRLCapabilitiesProto
from mlagents_envs.communicator_objects.command_pb2 import QUIT, RESET, STEP
from mlagents_envs.communicator_objects.header_pb2 import HeaderProto
from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto

from jppo.standin.catalog import SCENES
from jppo.standin.composite import EXTRA_SENSORS, make_parts, seed_parts  # noqa: F401 (re-exported)
from jppo.standin.wire import HEADER_200 as _HEADER_200
from jppo.standin.wire import DIMENSION_NONE, InfoEncoder, encode_output  # noqa: F401 (re-exported)

BEHAVIOR = "3DBall?team=0"
SECOND_BEHAVIOR = "3DBallCopy?team=0"  # the two-behaviors fault: the second half of the agents
API_VERSION = "1.5.0"
PACKAGE_VERSION = "2.2.1-exp.1"  # com.unity.ml-agents in ML-Agents release 19
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
             "image-sensor", "buffer-sensor", "uncompressed-images")

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

    ``scene`` one of ``jppo.standin.catalog.SCENES`` (3DBall), or several joined by ``+``
    (``3DBall+Basic``: one behavior each, see ``jppo.standin.composite``); ``agents`` in the
    scene (the scene's own count by default; for a composite ``"4+1"`` or a list, one per
    part); ``seed`` overrides the seed Python sends; ``fault`` a Fault or its text (sensor
    faults shape a composite's first part); ``max_step`` is the scene's Agent.MaxStep (physics
    steps for 3DBall; per part like ``agents``); ``connect_timeout`` bounds the wait for the
    server; ``hard_exit`` makes ``die-after`` end the whole process (the CLI), otherwise ``run``
    just drops the connection and returns. ``run`` returns the exit code; ``exit_reason``,
    ``messages`` (sent), ``physics_steps``, ``actions_received`` and ``masked_actions``
    (discrete choices received that the agent's mask forbade; both summed over parts) tell
    tests what happened, with ``scene`` (a single scene: engine configuration, parameters) or,
    for any scene, ``parts`` (``composite.Part``: ``name``, ``behavior``, ``scene``) and
    ``scenes`` (scene by behavior name without the team suffix).
    """

    def __init__(self, port: int, agents: int | str | list | None = None, seed: int | None = None,
                 fault: Fault | str | None = None, max_step: int | str | list | None = None,
                 connect_timeout: float = 60.0, hard_exit: bool = False, scene: str = "3DBall"):
        self.port, self.seed, self.connect_timeout = port, seed, connect_timeout
        self.fault = fault if isinstance(fault, Fault) else Fault.parse(fault)
        self.hard_exit = hard_exit
        self.parts = make_parts(scene, agents, seed or 0, max_step, self.fault.kind)
        self.scenes = {part.behavior: part.scene for part in self.parts}
        self.messages = self.physics_steps = 0
        self.actions_received = self.masked_actions = 0  # see Part.count_masked
        self.exit_reason: str | None = None
        self._stop = threading.Event()
        self._channel: grpc.Channel | None = None

    @property
    def scene(self):
        """The scene of a single-scene stand-in (a composite has ``parts`` and ``scenes``)."""
        if len(self.parts) != 1:
            raise AttributeError("a composite stand-in has several scenes: read .parts or "
                                 ".scenes[behavior]")
        return self.parts[0].scene

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
        """Compile the jitted scenes before connecting, so Python's first reset does not wait."""
        for part in self.parts:
            part.scene.warm_up()

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
            seed_parts(self.parts, answer.rl_initialization_input.seed)
        # RpcCommunicator.Initialize's second call: a message without unity_output.
        answer = self._exchange(_HEADER_200)
        self._read_input(answer.rl_input)
        # RESET or not, the academy resets before its first step (m_HadFirstReset).
        for part in self.parts:
            part.scene.reset_all(mid_step=False)

    def _read_input(self, rl_input) -> int:
        """Side channels first (every part reads them), then the command, as
        UpdateEnvironmentWithInput does."""
        for part in self.parts:
            part.scene.on_side_channels(rl_input.side_channel)
        if rl_input.command == QUIT:
            raise _End("quit command")
        return rl_input.command

    def _step_message(self, deciding: list[bool]) -> bytes:
        """The batch of one frame: per behavior of every part, the terminal infos its last frame
        queued, then (on its decision step) every agent's decision request."""
        nan = self.fault.kind == "nan-after" and self.messages >= self.fault.after
        agent_infos, brains = {}, []
        for part, decision in zip(self.parts, deciding):
            infos, new = part.entries(decision, nan)
            agent_infos.update(infos)
            brains += new
        return encode_output(agent_infos, brains)

    # ------------------------------------------------------------ the game loop

    def _act(self, rl_input, deciding: list[bool]) -> None:
        """Each deciding part's agents get their behavior's actions, repeated until its next
        decision."""
        for part, decision in zip(self.parts, deciding):
            if decision:
                continuous, discrete = part.actions(rl_input.agent_actions, _LOG.warning)
                self.actions_received += len(discrete)
                self.masked_actions += part.count_masked(discrete)
                part.scene.set_actions(continuous, discrete)

    def _play(self) -> None:
        """Academy.EnvironmentStep, one FixedUpdate per iteration; one academy clock for all
        parts, each deciding on its own period."""
        step = 0  # the academy step count at AgentPreStep
        while True:
            deciding = [part.decides(step) for part in self.parts]
            reset = False
            if any(deciding) or any(part.ended is not None for part in self.parts):
                rl_input = self._exchange(self._step_message(deciding)).rl_input
                if rl_input.side_channel or rl_input.command != STEP:
                    for part in self.parts:  # computed assuming nothing would change
                        part.scene.discard_lookahead()
                reset = self._read_input(rl_input) == RESET
                if reset:
                    # ForcedFullReset inside this frame: the frame still acts (actions of a decision
                    # step are dropped, the repeated ones stay) and runs its physics.
                    for part, decision in zip(self.parts, deciding):
                        part.scene.reset_all(mid_step=True)
                        if decision:
                            part.scene.clear_actions()
                else:
                    self._act(rl_input, deciding)
            for part in self.parts:
                horizon = 1 if reset else part.period - step % part.period
                part.ended = part.scene.advance(horizon)
            self.physics_steps += 1
            step = 0 if reset else step + 1


# ---------------------------------------------------------------- processes


def launch(port: int, *, agents: int | str | list | None = None, seed: int | None = None,
           fault: str | None = None, max_step: int | str | list | None = None,
           connect_timeout: float = 60.0, scene: str = "3DBall", **popen) -> subprocess.Popen:
    """Start ``python -m jppo.standin`` for ``port``; ``popen`` goes to Popen. ``scene`` may be
    a composite (``"3DBall+Basic"``); ``agents`` and ``max_step`` then take one value per part
    (``"4+1"`` or ``[4, 1]``)."""
    command = [sys.executable, "-m", "jppo.standin", "--port", str(port), "--scene", scene,
               "--connect-timeout", str(connect_timeout)]
    for flag, value in (("--agents", agents), ("--seed", seed), ("--fault", fault),
                        ("--max-step", max_step)):
        if isinstance(value, (list, tuple)):
            value = "+".join(map(str, value))
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
    parser.add_argument("--scene", default="3DBall",
                        help=f"the scene to play (default 3DBall): one of {', '.join(SCENES)}, or "
                        "several joined by '+' (3DBall+Basic: one behavior each; SCENE:NAME "
                        "renames a part's behavior, so Basic:Left+Basic:Right plays Basic twice)")
    parser.add_argument("--agents", default=None,
                        help="agents in the scene (default: the scene's own); for a composite, "
                        "one count per part joined by '+' (e.g. 4+1), or none to keep each "
                        "part's own")
    parser.add_argument("--seed", type=int, default=None, help="default: the seed Python sends")
    parser.add_argument("--fault", default=None,
                        help=", ".join(Fault.KINDS) + " (sensor faults shape a composite's first "
                        "part)")
    parser.add_argument("--max-step", default=None,
                        help="Agent.MaxStep (default: the scene's); for a composite, one per "
                        "part joined by '+'")
    parser.add_argument("--connect-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    _use_compilation_cache()  # before the scenes touch JAX: the cache is set up once
    try:
        standin = StandIn(args.port, agents=args.agents, seed=args.seed, fault=args.fault,
                          max_step=args.max_step, connect_timeout=args.connect_timeout,
                          hard_exit=True, scene=args.scene)
    except ValueError as error:
        parser.error(str(error))  # one sentence, exit 2
    handler = logging.StreamHandler()  # the stand-in's own lines only, not JAX's start-up notes
    handler.setFormatter(logging.Formatter("unity_standin: %(message)s"))
    _LOG.addHandler(handler)
    _LOG.setLevel(logging.INFO)
    standin.warm_up()
    _LOG.info("compiled %s; connecting to localhost:%d", args.scene, args.port)
    code = standin.run()
    _LOG.info("exit %d: %s after %d messages; %d actions received, %d of them masked", code,
              standin.exit_reason, standin.messages, standin.actions_received,
              standin.masked_actions)
    return code


if __name__ == "__main__":
    sys.exit(main())
