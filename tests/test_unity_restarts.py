"""Unity worker restarts (env_settings.max_lifetime_restarts, restarts_rate_limit_n,
restarts_rate_limit_period_s): the quota against a plain reading of ML-Agents' rules on a fake
clock, which failures restart, what a restart does to UnityVecEnv and to the experience of the
restarted worker's agents, the settings; and, end to end through the stand-in started as a
"build", a run whose build dies mid-run and is restarted, and one whose limit is 0."""
import dataclasses
import json
import os
import random
import re
import stat
import subprocess
import sys
import types

import numpy as np
import pytest
import yaml

from jppo.core.networks import ActionSpec
from jppo.errors import UserError
from jppo.host_loop import unity_env
from jppo.host_loop.restarts import Limits, Restarts, restartable
from jppo.host_loop.trajectories import TrajectoryAssembler
from jppo.host_loop.unity_env import UnityVecEnv
from jppo.host_loop.vec_env import AgentSteps, EnvFault
from jppo.runs import checkpoint
from jppo.runs.settings import parse, validate_run


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


# ------------------------------------------------------------------ the quota


class MLAgentsQuota:
    """subprocess_env_manager.py of mlagents 0.28.0, read plainly: per worker a restart count
    and the restart times; before a restart the times older than the period are dropped, then
    the restart is allowed if count < max (or max == -1) and len(times) < n (or n == -1)."""

    def __init__(self, max_restarts, n, period, workers, clock):
        self.max, self.n, self.period, self.clock = max_restarts, n, period, clock
        self.counts = [0] * workers
        self.times = [[] for _ in range(workers)]

    def can_restart(self, w):
        self.times[w] = [t for t in self.times[w] if t > self.clock() - self.period]
        return ((self.max == -1 or self.counts[w] < self.max)
                and (self.n == -1 or len(self.times[w]) < self.n))

    def restart(self, w):
        self.times[w].append(self.clock())
        self.counts[w] += 1


def test_defaults_restart_once_a_minute_ten_times():
    clock = Clock()
    quota = Restarts(Limits(), 1, clock)
    assert Limits() == Limits(10, 1, 60)
    assert quota.allowed(0)
    quota.record(0)
    assert quota.left(0) == "9 restarts left"
    clock.now += 59.9  # a second failure within the minute: refused
    assert not quota.allowed(0)
    assert quota.refusal(0) == ("it was restarted once in the last 60 s, restarts_rate_limit_n = 1 "
                                "per restarts_rate_limit_period_s = 60")
    clock.now += 0.2
    assert quota.allowed(0)
    for _ in range(9):
        quota.record(0)
        clock.now += 61
    assert quota.counts == [10] and quota.left(0) == "no restart left"
    assert not quota.allowed(0)
    assert quota.refusal(0) == "it was restarted 10 times already, max_lifetime_restarts = 10"


def test_minus_one_turns_each_limit_off_and_zero_means_never():
    clock = Clock()
    unlimited = Restarts(Limits(-1, -1, 60), 1, clock)
    for _ in range(100):
        assert unlimited.allowed(0)
        unlimited.record(0)
    assert unlimited.left(0) == "no limit on restarts"
    for limits in (Limits(0, 1, 60), Limits(10, 0, 60)):
        assert not Restarts(limits, 1, clock).allowed(0) and not limits.any
    # Three restarts a second, at most five over the run.
    burst = Restarts(Limits(5, 3, 1), 1, clock)
    for _ in range(3):
        assert burst.allowed(0)
        burst.record(0)
    assert not burst.allowed(0)


def test_counts_are_per_worker():
    clock = Clock()
    quota = Restarts(Limits(1, 1, 60), 3, clock)
    quota.record(1)
    assert [quota.allowed(w) for w in range(3)] == [True, False, True]


@pytest.mark.parametrize("seed", range(20))
def test_quota_equals_ml_agents_rules_on_random_failures(seed):
    rng = random.Random(seed)
    limits = Limits(rng.choice([-1, 0, 1, 2, 5]), rng.choice([-1, 0, 1, 2, 3]),
                    rng.choice([0, 1, 10, 60]))
    workers = rng.randint(1, 3)
    clock = Clock()
    ours = Restarts(limits, workers, clock)
    theirs = MLAgentsQuota(*dataclasses.astuple(limits), workers, clock)
    decisions = []
    for _ in range(60):
        clock.now += rng.choice([0.0, 0.5, 1.0, 5.0, 30.0, 61.0])
        w = rng.randrange(workers)
        allowed = ours.allowed(w)
        assert allowed == theirs.can_restart(w), (limits, decisions)
        decisions.append(allowed)
        if allowed:
            ours.record(w)
            theirs.restart(w)
    assert ours.counts == theirs.counts


def test_the_failures_ml_agents_restarts_after():
    # The names of an exception's classes, its own first (what the worker sends).
    assert restartable(("UnityTimeOutException", "UnityException", "Exception"))
    assert restartable(("UnityEnvironmentException", "UnityException"))  # exited, crashed
    assert restartable(("UnityCommunicatorStoppedException", "UnityException"))
    assert restartable(("UnityCommunicationException", "UnityException"))
    assert not restartable(("UnityWorkerInUseException", "UnityException", "Exception"))
    assert not restartable(("UnityObservationException", "UnityException"))
    assert not restartable(("RuntimeError", "Exception"))  # NaN observations
    assert not restartable(())


def test_the_worker_names_the_exception_classes(monkeypatch):
    mlagents = pytest.importorskip("mlagents_envs.exception")
    from jppo.host_loop import unity_worker

    class Conn:
        sent = []

        def recv(self):
            return {"file_name": None}  # settings _make_env cannot start with

        def send(self, message):
            self.sent.append(message)

    def fail(settings):
        raise mlagents.UnityEnvironmentException("Environment shut down with return code 3.")

    monkeypatch.setattr(unity_worker, "_make_env", fail)
    assert unity_worker.serve(Conn()) == 1
    (message,) = Conn.sent
    assert message[:3] == ("error", "exited", "Environment shut down with return code 3.")
    assert message[3][:2] == ("UnityEnvironmentException", "UnityException")
    assert restartable(message[3])


# ------------------------------------------------------------------ what a restart does


class _Process:
    def __init__(self):
        self.killed = False

    def poll(self):
        return 0

    def kill(self):
        self.killed = True


def _worker(i, reported=True):
    return types.SimpleNamespace(index=i, reported=reported, frozen=False, process=_Process(),
                                 conn=types.SimpleNamespace(close=lambda: None))


def _env(file_name="build/3DBall.x86_64", limits=Limits(), workers=2, log_folder=None):
    env = UnityVecEnv(file_name, workers, 5005, timeout_wait=5, limits=limits,
                      environment_parameters={"mass": 2.0}, log_folder=log_folder)
    env._workers = [_worker(i) for i in range(workers)]
    started = []
    env._start = lambda i, port_wait=0.0: started.append((i, port_wait)) or _worker(i, False)
    env._restarts.clock = clock = Clock()
    return env, started, clock


EXITED = ("UnityEnvironmentException", "UnityException", "Exception", "BaseException", "object")
SHUT_DOWN = "Environment shut down with return code 3."


def test_a_failed_build_is_restarted_alone_and_the_caller_told(tmp_path):
    env, started, clock = _env(log_folder=str(tmp_path))
    (tmp_path / "Player-1.log").write_text("the crash")
    old = env._workers[1]
    env._parameter_calls[1] = [("set_float_parameter", "mass", 3.0)]
    env.set_environment_parameters([("set_float_parameter", "mass", 4.0)])
    env._failed(old, "exited", SHUT_DOWN, starting=False, exceptions=EXITED)
    assert started == [(1, unity_env._PORT_WAIT_S)]
    assert env._workers[1] is not old and env._workers[0].index == 0
    assert env._retired == [old]
    assert (tmp_path / "Player-1.failed-1.log").read_text() == "the crash"
    assert not (tmp_path / "Player-1.log").exists()
    # The new worker starts with every parameter call so far, in order; none is queued for it.
    assert env._settings["environment_parameters"] == [("set_float_parameter", "mass", 2.0),
                                                       ("set_float_parameter", "mass", 4.0)]
    assert 1 not in env._parameter_calls and 0 in env._parameter_calls
    (restart,) = env.take_restarted()
    assert restart.worker == 1
    assert restart.notice == ("Unity worker 1 (port 5006) ended unexpectedly (Environment shut "
                              "down with return code 3); restarting it (9 restarts left for this "
                              "worker)")
    assert env.take_restarted() == []
    # Again within the minute: ML-Agents' rate limit stops the run, saying why.
    env._workers[1].reported = True
    with pytest.raises(EnvFault) as fault:
        env._failed(env._workers[1], "exited", SHUT_DOWN, starting=False, exceptions=EXITED)
    assert str(fault.value) == (
        "Unity worker 1 (port 5006) ended unexpectedly (Environment shut down with return code "
        "3), and it was restarted once in the last 60 s, restarts_rate_limit_n = 1 per "
        "restarts_rate_limit_period_s = 60")
    assert fault.value.kind == "exited" and fault.value.worker == 1


def test_a_restarted_build_that_fails_before_its_first_report_stops_the_run():
    env, started, clock = _env()
    env._failed(env._workers[0], "exited", SHUT_DOWN, starting=False, exceptions=EXITED)
    clock.now += 120  # the rate limit would allow it: ML-Agents' reset after a restart raises
    with pytest.raises(EnvFault) as fault:
        env._failed(env._workers[0], "timeout", "...", starting=False,
                    exceptions=("UnityTimeOutException",))
    assert str(fault.value) == (
        "Unity worker 0 (port 5005) did not answer within 5 s after starting "
        "'build/3DBall.x86_64': check that it is a build of a scene with ML-Agents, or raise "
        "--timeout-wait after a restart")
    assert len(started) == 1


@pytest.mark.parametrize("file_name, kind, exceptions, starting, limits", [
    (None, "exited", ("UnityCommunicatorStoppedException",), False, Limits()),  # the editor
    ("b.x86_64", "nan", ("RuntimeError", "Exception"), False, Limits()),
    ("b.x86_64", "exited", EXITED, True, Limits()),  # while starting the run
    ("b.x86_64", "exited", EXITED, False, Limits(0, 1, 60)),  # restarts off
    ("b.x86_64", "exited", EXITED, False, Limits(10, 0, 60)),
])
def test_no_restart_keeps_todays_sentence(file_name, kind, exceptions, starting, limits):
    env, started, _ = _env(file_name, limits)
    with pytest.raises(EnvFault) as fault:
        env._failed(env._workers[0], kind, "text", starting, exceptions=exceptions)
    assert str(fault.value) == str(env._fault(0, kind, "text", starting))
    assert started == [] and env.take_restarted() == []


def test_a_hung_worker_process_is_killed_and_restarted():
    env, started, _ = _env()
    old = env._workers[0]
    old.frozen = True
    env._failed(old, "timeout", "no reply from the worker process", False, waited=10.2,
                exceptions=("UnityTimeOutException",))
    assert old.process.killed and started == [(0, unity_env._PORT_WAIT_S)]
    assert env.take_restarted()[0].notice.startswith(
        "Unity worker 0 (port 5005) stopped answering for 10 s: its worker process hung")


def _steps(ids, rewards, terminal=()):
    """Agents ``ids`` deciding after ``rewards``; ``terminal`` ended (reward 1, really done)."""
    n, m = len(ids), len(terminal)
    return AgentSteps(np.array(ids, np.int64), np.ones((n, 2), np.float32),
                      np.array(rewards, np.float32), np.array(terminal, np.int64),
                      np.ones((m, 2), np.float32), np.ones(m, np.float32), np.zeros(m, bool))


def test_forget_drops_the_restarted_workers_unfinished_experience_only():
    asm = TrajectoryAssembler(100, 2, ActionSpec.continuous(1))
    for w in (0, 1):
        for step in range(3):
            asm.observe(w, _steps([0, 1], [1.0, 1.0]))
            asm.act(w, np.array([0, 1]), np.zeros((2, 1), np.float32), np.zeros((2, 1), np.float32))
    assert asm.agents == 4
    asm.forget(1)
    assert asm.agents == 2
    # Worker 1's new Unity reuses ids 0 and 1 and ends agent 0's episode at once: nothing of
    # the old episode is emitted or counted (its first decision has no experience yet).
    trajectories, episodes, experiences = asm.observe(1, _steps([1], [5.0], terminal=[0]))
    assert (trajectories, episodes, experiences) == ([], [], 0)
    # Worker 0's agents go on: their third action completes, and ending agent 0 emits all
    # three of its experiences.
    trajectories, episodes, experiences = asm.observe(0, _steps([1], [2.0], terminal=[0]))
    assert experiences == 2 and [len(t) for t in trajectories] == [3]
    assert episodes[0].length == 3 and episodes[0].reward == pytest.approx(3.0)


# ------------------------------------------------------------------ settings

KEYS = ("max_lifetime_restarts", "restarts_rate_limit_n", "restarts_rate_limit_period_s")


def test_env_settings_restarts_are_honoured_and_written_back():
    settings = parse({"behaviors": {"B": {}}, "env_settings": {
        "max_lifetime_restarts": -1, "restarts_rate_limit_n": 3, "restarts_rate_limit_period_s": 5}})
    assert [getattr(settings, k) for k in KEYS] == [-1, 3, 5]
    written = settings.to_yaml_dict()["env_settings"]
    assert [written[k] for k in KEYS] == [-1, 3, 5]
    assert parse(yaml.safe_load(yaml.safe_dump(settings.to_yaml_dict()))) == settings
    defaults = parse({"behaviors": {"B": {}}})
    assert [getattr(defaults, k) for k in KEYS] == [10, 1, 60]


@pytest.mark.parametrize("key", KEYS)
def test_restart_values_are_checked(key):
    flag = "--" + key.replace("_", "-")
    with pytest.raises(UserError, match=rf"^{key} = -2 is not allowed; env_settings.{key} \({flag}\) "
                                        r"must be an integer >= -1 \(-1: no limit\)\.$"):
        parse({"behaviors": {"B": {}}, "env_settings": {key: -2}})
    with pytest.raises(UserError, match=rf"^env_settings.{key} = 'ten' has the wrong type"):
        parse({"behaviors": {"B": {}}, "env_settings": {key: "ten"}})
    with pytest.raises(UserError, match=rf"^env_settings.{key} = 1.5 is not a whole number"):
        parse({"behaviors": {"B": {}}, "env_settings": {key: 1.5}})


def test_the_command_line_sets_them_as_mlagents_learn_does():
    from jppo.train import build_parser, resolve

    args = build_parser().parse_args(["--max-lifetime-restarts", "3", "--restarts-rate-limit-n",
                                      "-1", "--restarts-rate-limit-period-s", "10"])
    settings = resolve(args).settings
    assert [getattr(settings, k) for k in KEYS] == [3, -1, 10]
    with pytest.raises(UserError, match="max_lifetime_restarts = -5 is not allowed"):
        resolve(build_parser().parse_args(["--max-lifetime-restarts", "-5"]))
    assert validate_run(settings) is settings


# ------------------------------------------------------------------ end to end

BALL = {
    "behaviors": {"3DBall": {
        "trainer_type": "ppo",
        "hyperparameters": {"batch_size": 120, "buffer_size": 1200, "num_epoch": 1},
        "network_settings": {"normalize": True, "hidden_units": 16, "num_layers": 1},
        "max_steps": 2400, "time_horizon": 100, "summary_freq": 1200,
        "checkpoint_interval": 1200}},
}

# A "build" UnityEnvironment can start: it reads the arguments mlagents-envs gives a Unity
# player (``--mlagents-port P``, ``-logFile F``) and runs the stand-in on that port, its lines
# in the player log. Only its first start on a port dies, after DIE messages.
BUILD = """#!{python}
import os, sys
args = sys.argv[1:]
port = args[args.index("--mlagents-port") + 1]
log = args[args.index("-logFile") + 1] if "-logFile" in args else os.devnull
starts = os.path.join(os.path.dirname(os.path.abspath(__file__)), "starts-" + port)
first = not os.path.exists(starts)
with open(starts, "a") as f:
    f.write("start\\n")
fault = ["--fault", "die-after={die}"] if first else []
with open(log, "a") as f:
    os.dup2(f.fileno(), 2)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.execv(sys.executable, [sys.executable, "-m", "jppo.standin", "--port", port,
                          "--connect-timeout", "120"] + fault)
"""


def make_build(folder, die: int):
    path = folder / "Ball.x86_64"
    path.write_text(BUILD.format(python=sys.executable, die=die))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def train(tmp_path, build, port, *args):
    config = tmp_path / "ball.yaml"
    config.write_text(yaml.safe_dump(BALL))
    return subprocess.run(
        [sys.executable, "-m", "jppo.train", str(config), "--env", str(build), "--base-port",
         str(port), "--results-dir", str(tmp_path / "results"), "--run-id", "ball", "--no-export",
         "--timeout-wait", "60", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu"})


def starts(tmp_path, port) -> int:
    return (tmp_path / f"starts-{port}").read_text().count("start")


@pytest.mark.slow
def test_a_build_that_dies_mid_run_is_restarted_and_training_reaches_max_steps(tmp_path):
    pytest.importorskip("mlagents_envs")
    from jppo.standin.server import free_port

    port = free_port()
    proc = train(tmp_path, make_build(tmp_path, die=60), port)
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "results" / "ball"
    assert starts(tmp_path, port) == 2
    warnings = [line for line in proc.stderr.splitlines() if "restarting" in line]
    assert warnings == [f"jppo: warning: Unity worker 0 (port {port}) ended unexpectedly "
                        "(Environment shut down with return code 3); restarting it (9 restarts "
                        "left for this worker)."], proc.stderr
    assert "Traceback" not in proc.stderr
    # The first Unity died after 60 messages (at most 696 decisions of its 12 agents); the
    # run went on with the second to max_steps.
    # The dead build's log is kept; its successor's is the usual Player-0.log.
    failed = (run / "run_logs" / "Player-0.failed-1.log").read_text()
    assert failed.count("connecting") == 1 and "exit" not in failed
    player = (run / "run_logs" / "Player-0.log").read_text()
    assert player.count("connecting") == 1 and player.count("exit 0: closed by Python") == 1
    info = json.loads((run / "run_info.json").read_text())
    assert info["complete"] and 2400 <= info["steps"] < 2400 + 12
    saved = [checkpoint.read(p)[0]["steps"] for p in checkpoint.list_checkpoints(run)]
    assert saved[-1] == info["steps"] and len(saved) >= 2
    rows = (run / "progress.csv").read_text().splitlines()[1:]
    steps = [int(r.split(",")[0]) for r in rows]
    assert steps == sorted(steps) and steps[-1] == info["steps"] and len(steps) >= 2


@pytest.mark.slow
def test_past_the_limit_the_run_stops_with_its_checkpoint(tmp_path):
    pytest.importorskip("mlagents_envs")
    from jppo.standin.server import free_port

    port = free_port()
    proc = train(tmp_path, make_build(tmp_path, die=60), port, "--max-lifetime-restarts", "0")
    assert proc.returncode == 1
    match = re.fullmatch(
        rf"jppo: error: Unity worker 0 \(port {port}\) ended unexpectedly \(Environment shut down "
        r"with return code 3\); run 'ball' stopped at step (\d+), (saved there: continue with "
        r"--resume once the environment works again|its last checkpoint \(step \1\) is intact: "
        r"continue with --resume)\.\n", proc.stderr)
    assert match, proc.stderr
    assert starts(tmp_path, port) == 1
    stopped = int(match.group(1))
    assert 0 < stopped <= 58 * 12  # 58 step messages of at most 12 decisions
    run = tmp_path / "results" / "ball"
    assert checkpoint.read(checkpoint.latest(run))[0]["steps"] == stopped
