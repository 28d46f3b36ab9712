"""Unity scenes as a ``VecEnv``: one worker process per Unity instance, over ``mlagents_envs``.

    env = UnityVecEnv(file_name="builds/3DBall.x86_64", num_workers=4)   # or None: the editor
    reports = env.reset()          # [ {"3DBall?team=0": AgentSteps} per worker ]
    env.send({0: actions}); ready = env.receive()   # {worker: {behavior: AgentSteps}}

Worker i is a ``UnityEnvironment`` in its own process (``jppo/unity_worker.py``): for a build,
``worker_id=i`` on ``base_port`` (default 5005), so Unity i listens on ``base_port + i``; for
the editor (``file_name=None``) mlagents-envs only allows ``worker_id=0``, so worker i serves
``base_port + i`` itself (default 5004): one editor, or several stand-ins or editor clones.

Why processes and not threads: the Python half of every step (protobuf in pure Python, as
protobuf 3.20 has no compiled module for Python 3.11, plus a pickling ``multiprocessing.Pipe``
inside ``UnityEnvironment``) holds the GIL; only the wait for Unity releases it. Threads would
serialize the protobuf work of all workers with the trainer's; processes scale with cores (as
ML-Agents' ``SubprocessEnvManager`` does) and leave the trainer free to run the policy and the
update.

Workers step independently: ``send`` starts the given workers' next step, ``receive`` returns
every worker that has answered (at least one), so a slow or terminal-only step of one worker
does not hold the others. The figures behind both choices are in benchmarks/README.md.

The policy's raw Gaussian sample is what the trainer stores and scores; Unity receives
``clamp(a, -3, 3) / 3``. Discrete actions go as ``[n, branches]`` int32; hybrid actions as both.
Observations arrive per sensor: one array for a behavior with one sensor, else a tuple in the
scene's order; action masks (``DecisionSteps.action_mask``) come with every report.

A build that fails while stepping (it exited or crashed, Unity timed out, the communicator
stopped: ``jppo.host_loop.restarts`` has ML-Agents' list and quota) is restarted: that worker
alone, on its port and worker id, with its seed and the environment parameters sent so far; its
first report comes back through ``receive`` like any other, and ``take_restarted`` tells the
caller to forget the worker's unfinished experience (the new Unity reuses agent ids). Past the
quota, or when the restarted build fails before its first report, the failure is raised as
before. The editor (``file_name=None``) is never restarted: jppo did not start it and cannot
start it again, and its Stop button is how a user ends an editor run. (mlagents-learn release 19
does restart it, waiting for Play to be pressed again; its users reported that as a bug,
Unity-Technologies/ml-agents#5931.)

Each worker's gRPC server, which Unity connects to, listens on ``bind`` (localhost unless the
user asks otherwise: mlagents-envs listens on every interface, an unauthenticated service open
to the network). Every wait for the workers looks at ``jppo.interrupts`` a few times a second,
so Ctrl-C and SIGTERM stop a run that waits for Unity at once.
"""
from __future__ import annotations

import pathlib
import signal
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection, wait
from typing import Mapping

import numpy as np

from jppo import interrupts
from jppo.host_loop import restarts
from jppo.host_loop.vec_env import (Actions, AgentSteps, BehaviorSpec, EnvFault, Restart, VecEnv,
                                    order_actions, to_unit_range)

WORKER_SCRIPT = pathlib.Path(__file__).with_name("unity_worker.py")
EDITOR_PORT = 5004  # UnityEnvironment.DEFAULT_EDITOR_PORT
BUILD_PORT = 5005  # UnityEnvironment.BASE_ENVIRONMENT_PORT
# A worker's own timeouts (UnityEnvironment's timeout_wait) come first; these margins only
# catch a worker process that hangs outside them (then the sentence says how long it was
# waited for). Starting includes the worker's import of mlagents-envs (seconds on a busy
# machine); a step's answer is on its way within a second of Unity's.
_START_GRACE_S = 30.0
_STEP_GRACE_S = 5.0
# How often a wait for the workers looks for Ctrl-C or SIGTERM.
_POLL_S = 0.2
# A worker answers "close" within milliseconds unless it is inside one of Unity's waits.
_CLOSE_WAIT_S = 2.0
# How long a restarted worker waits for its port, which the failed worker frees as it closes.
_PORT_WAIT_S = 10.0


class _Worker:
    """The trainer's end of one worker process."""

    def __init__(self, index: int, port: int, settings: dict):
        self.index, self.port = index, port
        parent, child = socket.socketpair()
        self.process = subprocess.Popen([sys.executable, str(WORKER_SCRIPT), str(child.fileno())],
                                        pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL)
        child.close()
        self.conn = Connection(parent.detach())
        self.conn.send(settings)
        self.decision_ids: dict[str, np.ndarray] = {}
        self.deadline: float | None = None  # set while a step is outstanding
        self.sent_at = time.monotonic()  # when the outstanding step was asked for
        self.alive = True
        self.frozen = False  # it stopped answering: not waited for on close
        self.reported = False  # it has sent its first report

    def ask_to_close(self) -> None:
        """Ask the worker to close its UnityEnvironment (after any step in flight) and exit; a
        frozen worker is killed at once."""
        if self.frozen:
            self.process.kill()
        elif self.alive:
            try:
                self.conn.send(("close",))
            except OSError:
                pass

    def closed(self) -> bool:
        """Whether the worker has said it closed (or is gone); reads what it sends meanwhile."""
        if not self.alive or self.frozen:
            return True
        try:
            while self.conn.poll(0):
                if self.conn.recv()[0] in ("closed", "error"):
                    self.alive = False
        except (OSError, EOFError):
            self.alive = False
        return not self.alive

    def close_now(self) -> None:
        """A worker still inside one of Unity's waits (connecting, a step) reads "close" only
        once the wait ends, up to --timeout-wait later: SIGUSR1 ends the wait and the worker."""
        if self.alive and not self.frozen and self.process.poll() is None:
            self.process.send_signal(getattr(signal, "SIGUSR1", signal.SIGTERM))
        self.alive = False

    def end(self, deadline: float) -> None:
        self.conn.close()
        try:
            self.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class UnityVecEnv(VecEnv):
    """``num_workers`` Unity instances (a build started per worker, or ``None``: connect to
    editors/players already running). ``timeout_wait`` bounds every wait for Unity.
    ``first_worker`` numbers this set's workers from there (worker id, port, seed), so the
    processes of one multi-process run on one machine do not compete for ports.
    ``environment_parameters``: constants ``{name: value}``, or the EnvironmentParametersChannel
    calls ``(method, name, *arguments)`` of ``jppo.runs.environment_parameters.channel_calls``
    (samplers as mlagents-learn sends them). ``limits``: when a failed build is restarted
    (``restarts.Limits``, ML-Agents' defaults)."""

    def __init__(self, file_name: str | None, num_workers: int = 1, base_port: int | None = None, *,
                 seed: int = 0, no_graphics: bool = False, timeout_wait: float = 60.0,
                 time_scale: float = 20.0, environment_parameters: dict | list | None = None,
                 log_folder: str | None = None, first_worker: int = 0, bind: str = "localhost",
                 limits: restarts.Limits = restarts.Limits()):
        self.first_worker = first_worker
        self.file_name = None if file_name is None else str(file_name)
        self.num_workers = num_workers
        self.base_port = base_port if base_port is not None else (
            BUILD_PORT if file_name else EDITOR_PORT)
        self.timeout_wait = timeout_wait
        self.description = "Unity editor" if file_name is None else "Unity"
        self.specs: dict[str, BehaviorSpec] = {}
        if isinstance(environment_parameters, dict):  # constants
            environment_parameters = [("set_float_parameter", k, float(v))
                                      for k, v in environment_parameters.items()]
        self._settings = dict(file_name=self.file_name, no_graphics=no_graphics, time_scale=time_scale,
                              timeout_wait=int(max(1, round(timeout_wait))),
                              environment_parameters=list(environment_parameters or []),
                              log_folder=log_folder, bind=bind)
        self._parameter_calls: dict[int, list] = {}  # worker -> calls to send with its next step
        self._seed = seed
        self._workers: list[_Worker] = []
        self._restarts = restarts.Restarts(limits, num_workers)
        self._restarted: list[Restart] = []  # not yet taken by the caller
        self._retired: list[_Worker] = []  # failed workers, ending on their own

    def port(self, worker: int) -> int:
        return self.base_port + self.first_worker + worker

    def _where(self, worker: int) -> str:
        return f"Unity worker {self.first_worker + worker} (port {self.port(worker)})"

    # ------------------------------------------------------------------ lifecycle

    def reset(self) -> list[dict[str, AgentSteps]]:
        if self._workers:
            raise RuntimeError("UnityVecEnv.reset: the workers are running already")
        # Starting: UnityEnvironment waits timeout_wait for Unity to connect, then as long
        # again for the answer to the first reset.
        self._workers = [self._start(i) for i in range(self.num_workers)]
        got: dict[int, dict[str, AgentSteps]] = {}
        while len(got) < self.num_workers:
            got.update(self._receive(starting=True))
        return [got[w] for w in range(self.num_workers)]

    def _start(self, i: int, port_wait: float = 0.0) -> _Worker:
        """Worker i's process, started; its first report due within the start's deadline."""
        editor = self.file_name is None
        number = self.first_worker + i
        settings = dict(self._settings, seed=self._seed + number, port_wait=port_wait,
                        worker_id=0 if editor else number,
                        base_port=self.port(i) if editor else self.base_port)
        worker = _Worker(i, self.port(i), settings)
        worker.deadline = time.monotonic() + 2 * self.timeout_wait + _START_GRACE_S
        return worker

    def set_environment_parameters(self, calls: list) -> None:
        """EnvironmentParametersChannel calls ``(method, name, *arguments)`` every worker makes
        before its next step (a curriculum's new lesson, as mlagents-learn sends it)."""
        self._settings["environment_parameters"].extend(calls)  # a restarted worker's, in order
        for w in range(self.num_workers):
            self._parameter_calls.setdefault(w, []).extend(calls)

    def take_restarted(self) -> list[Restart]:
        restarted, self._restarted = self._restarted, []
        return restarted

    def send(self, actions: Mapping[int, dict[str, Actions]]) -> None:
        for w, per_behavior in actions.items():
            worker = self._workers[w]
            payload = {}
            for name, ids in worker.decision_ids.items():
                if len(ids) == 0 or name not in per_behavior:
                    continue  # UnityEnvironment sends zeros for a behavior given no actions
                values = order_actions(per_behavior[name], ids, worker.index, name)
                payload[name] = to_unity_actions(self.specs[name], values, len(ids))
            try:
                calls = self._parameter_calls.pop(w, None)
                worker.conn.send(("step", payload) + ((calls,) if calls else ()))
            except OSError:
                pass  # a dead worker is reported by receive, with its cause
            worker.sent_at = time.monotonic()
            worker.deadline = worker.sent_at + self.timeout_wait + _STEP_GRACE_S

    def receive(self) -> dict[int, dict[str, AgentSteps]]:
        return self._receive(starting=False)

    def close(self) -> None:
        """Every worker is asked to close at once; those still busy in a wait for Unity after
        ``_CLOSE_WAIT_S`` are told to stop it; after 10 s, what is left is killed."""
        started = time.monotonic()
        for worker in self._workers:
            worker.ask_to_close()
        while not all(w.closed() for w in self._workers) and \
                time.monotonic() - started < _CLOSE_WAIT_S:
            wait([w.conn for w in self._workers if w.alive], timeout=0.05)
        for worker in self._workers:
            worker.close_now()
        for worker in self._workers + self._retired:
            worker.end(started + 10.0)
        self._workers, self._retired = [], []

    # ------------------------------------------------------------------ messages

    def _receive(self, starting: bool) -> dict[int, dict[str, AgentSteps]]:
        """Reports of the stepping workers that have answered, waiting for at least one or for a
        restart (then possibly none: the caller learns of it at once, from ``take_restarted``,
        and the restarted worker's first report comes later, as one of these); a worker's
        failure is raised as soon as its answer (or its end) arrives, unless it is restarted."""
        out: dict[int, dict[str, AgentSteps]] = {}
        restarted = len(self._restarted)
        while not out and len(self._restarted) == restarted:
            pending = {w.conn: w for w in self._workers if w.deadline is not None}
            if not pending:
                raise RuntimeError("UnityVecEnv.receive: no worker is stepping")
            for conn in self._ready(pending, starting):
                worker = pending[conn]
                worker.deadline = None
                try:
                    reply = conn.recv()
                except (EOFError, OSError):
                    worker.alive = False
                    code = worker.process.wait()
                    self._failed(worker, "exited", f"worker process exit code {code}", starting,
                                 exceptions=("UnityCommunicationException",))
                    continue
                if reply[0] == "error":
                    worker.alive = False
                    self._failed(worker, reply[1], reply[2], starting,
                                 exceptions=reply[3] if len(reply) > 3 else ())
                    continue
                _, specs, data = reply
                if specs is not None:
                    self._check_specs(worker.index, specs)
                out[worker.index] = self._to_steps(worker, data)
                worker.reported = True
        return out

    def _ready(self, pending: dict, starting: bool) -> list:
        """The connections of ``pending`` with something to read, waiting for one; a worker
        past its deadline has failed."""
        while True:
            interrupts.check()
            first = min(w.deadline for w in pending.values())
            ready = wait(list(pending), timeout=min(_POLL_S, max(0.0, first - time.monotonic())))
            if ready:
                return ready
            late = [w for w in pending.values() if w.deadline <= time.monotonic()]
            if late:
                late[0].alive, late[0].frozen, late[0].deadline = False, True, None
                self._failed(late[0], "timeout", "no reply from the worker process", starting,
                             waited=time.monotonic() - late[0].sent_at,
                             exceptions=("UnityTimeOutException",))
                return []  # restarted

    def _failed(self, worker: _Worker, kind: str, text: str, starting: bool,
                waited: float | None = None, exceptions=()) -> None:
        """A worker failed: restarted if it is a build that failed while stepping in a way
        ML-Agents restarts after and its quota allows, else its fault raised."""
        i, restarted = worker.index, self._restarts.counts[worker.index] > 0
        fault = self._fault(i, kind, text, starting or not worker.reported, waited)
        if not worker.reported and restarted:
            raise EnvFault(kind, f"{fault} after a restart", i)
        if starting or self.file_name is None or not restarts.restartable(exceptions):
            raise fault
        if not self._restarts.allowed(i):
            if self._restarts.limits.any:
                raise EnvFault(kind, f"{fault}, and {self._restarts.refusal(i)}", i)
            raise fault
        self._restarts.record(i)
        self._keep_log(i)
        if worker.frozen:  # hung: it will not close itself
            worker.process.kill()
        for ended in [w for w in self._retired if w.process.poll() is not None]:
            ended.conn.close()
            self._retired.remove(ended)
        self._retired.append(worker)  # ending on its own (its Unity closed first)
        self._parameter_calls.pop(i, None)  # the new worker starts with every call so far
        self._workers[i] = self._start(i, port_wait=_PORT_WAIT_S)
        self._restarted.append(Restart(i, f"{fault}; restarting it ({self._restarts.left(i)} "
                                          f"for this worker)"))

    def _keep_log(self, i: int) -> None:
        """The failed build's Player-<worker>.log, which its successor would overwrite, kept as
        Player-<worker>.failed-<restart>.log (the crash is told there)."""
        folder = self._settings["log_folder"]
        log = pathlib.Path(folder or ".") / f"Player-{self.first_worker + i}.log"
        if folder and log.exists():
            log.replace(log.with_suffix(f".failed-{self._restarts.counts[i]}.log"))

    def _check_specs(self, worker: int, specs: tuple) -> None:
        for name, shapes, continuous, branches, names, properties in specs:
            spec = BehaviorSpec(name, tuple(tuple(s) for s in shapes), continuous, tuple(branches),
                                tuple(names), tuple(tuple(p) for p in properties))
            known = self.specs.get(name)
            if known is None:
                self.specs[name] = spec
            elif known != spec:
                raise EnvFault("shape", f"{self._where(worker)} declares behavior {name!r} with "
                               f"observations {list(spec.observation_shapes)} and "
                               f"{spec.describe_actions()} actions, but another worker declared "
                               f"{list(known.observation_shapes)} and {known.describe_actions()}; "
                               "every worker must run the same scene.", worker)

    def _to_steps(self, worker: _Worker, data: dict) -> dict[str, AgentSteps]:
        out = {}
        for name, payload in data.items():
            steps = to_agent_steps(payload)
            bad = non_finite(steps)
            if bad:
                raise EnvFault("nan", f"{self._where(worker.index)} sent {bad} for behavior "
                               f"{name!r}.", worker.index)
            worker.decision_ids[name] = steps.decision_ids
            out[name] = steps
        return out

    def _fault(self, worker: int, kind: str, text: str, starting: bool,
               waited: float | None = None) -> EnvFault:
        """The sentence for a worker's failure. ``waited``: how long the trainer itself waited
        for a worker that never answered (its own timeout_wait did not fire), said as it is."""
        where = self._where(worker)
        wait_s = f"{self.timeout_wait:g} s" if waited is None else f"{waited:.0f} s"
        if kind == "timeout" and starting:
            if self.file_name is None:
                message = (f"nothing connected on port {self.port(worker)} within {wait_s}: start "
                           "the Unity player or press Play in the editor after this message, or "
                           "check --base-port and --timeout-wait")
            else:
                message = (f"{where} did not answer within {wait_s} after starting "
                           f"{self.file_name!r}: check that it is a build of a scene with "
                           "ML-Agents, or raise --timeout-wait")
        elif kind == "timeout" and waited is not None:
            message = (f"{where} stopped answering for {wait_s}: its worker process hung (Unity's "
                       f"own {self.timeout_wait:g} s timeout never fired)")
        elif kind == "timeout":
            message = (f"{where} stopped answering for {wait_s}: Unity crashed, froze or was "
                       "closed")
        elif kind == "in_use":
            message = (f"port {self.port(worker)} is already in use (another training run or "
                       "Unity environment holds it): stop it or pass another --base-port")
        elif kind == "exited":
            message = f"{where} ended unexpectedly ({text.rstrip('.')})"
        elif kind == "nan":
            message = f"{where} sent invalid data: {text.rstrip('.')}"
        else:
            message = f"{where} failed: {text.strip().splitlines()[-1] if text.strip() else kind}"
        return EnvFault(kind, message, worker)


def to_unity_actions(spec: BehaviorSpec, values: np.ndarray, n: int):
    """What ``ActionTuple`` takes for ``n`` agents from the policy's actions in their array form:
    continuous ``clamp(a, -3, 3) / 3`` float32 ``[n, A]``, discrete int32 ``[n, B]``, or both."""
    c = spec.continuous_size
    if not spec.discrete_branches:
        return to_unit_range(values)
    discrete = np.asarray(values[:, c:] if c else values, np.int32).reshape(n, -1)
    return (to_unit_range(values[:, :c]), discrete) if c else discrete


def to_agent_steps(payload: tuple) -> AgentSteps:
    """An ``AgentSteps`` from a worker's report of one behavior (see
    ``jppo.host_loop.unity_worker``): ``(decision ids, [obs per sensor], rewards, terminal ids,
    [obs per sensor], rewards, interrupted, allowed)``. One sensor's observations stay one
    array, several are a tuple in the scene's order; nothing is reshaped or concatenated, so
    whatever a sensor sends reaches the trainer as it is (``connect.checked_behavior`` has checked
    that every sensor is one jppo trains)."""
    d_ids, d_obs, d_rew, t_ids, t_obs, t_rew, interrupted, allowed = payload
    per_sensor = lambda obs: (np.asarray(obs[0], np.float32) if len(obs) == 1
                              else tuple(np.asarray(o, np.float32) for o in obs))
    return AgentSteps(np.asarray(d_ids), per_sensor(d_obs), np.asarray(d_rew, np.float32),
                      np.asarray(t_ids), per_sensor(t_obs), np.asarray(t_rew, np.float32),
                      np.asarray(interrupted, bool),
                      None if allowed is None else np.asarray(allowed, bool))


def non_finite(steps: AgentSteps) -> str | None:
    """What is wrong with ``steps`` ("NaN observations", "Inf rewards", ...), or None.
    mlagents-envs 0.28 raises on NaN and Inf itself; this guards what reaches the trainer."""
    sensors = lambda obs: obs if isinstance(obs, tuple) else (obs,)
    for what, values in ([("observations", o) for o in sensors(steps.decision_obs)]
                         + [("observations", o) for o in sensors(steps.terminal_obs)]
                         + [("rewards", steps.decision_rewards),
                            ("rewards", steps.terminal_rewards)]):
        if not np.isfinite(values).all():
            return f"{'NaN' if np.isnan(values).any() else 'Inf'} {what}"
    return None
