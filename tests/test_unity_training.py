"""python -m jppo.train --env editor against Unity 3DBall stand-ins (real protocol, real
``UnityEnvironment``): a 2-worker training run end to end, a worker dying mid-run and the run
resumed, and each fault giving one sentence, its exit code and an intact checkpoint.

Stand-ins are separate processes on consecutive free ports P, P+1; the driver serves them as
the editor does (``file_name=None``, worker i on ``--base-port P`` + i).
"""
import contextlib
import hashlib
import json
import re
import socket
import time

import jax
import numpy as np
import pytest
import yaml

from jppo.runs import checkpoint
from jppo.standin.server import DIE_EXIT_CODE, free_port, launch
from jppo.host_loop.driver import HostState
from jppo.core.networks import ActionSpec
from jppo.runs.settings import load
from jppo.train import main
from jppo.core.update import init_train_state

pytestmark = pytest.mark.slow

BALL = {
    "behaviors": {"3DBall": {
        "trainer_type": "ppo",
        "hyperparameters": {"batch_size": 120, "buffer_size": 1200, "learning_rate": 3e-4,
                            "beta": 1e-3, "epsilon": 0.2, "lambd": 0.99, "num_epoch": 2},
        "network_settings": {"normalize": True, "hidden_units": 32, "num_layers": 2},
        "reward_signals": {"extrinsic": {"gamma": 0.99, "strength": 1.0}},
        "max_steps": 3000, "time_horizon": 100, "summary_freq": 1200, "keep_checkpoints": 3,
        "checkpoint_interval": 1200}},
    # Two 12-agent stand-ins answer in milliseconds; 10 s only matters when one fails.
    "jppo": {"timeout_wait": 10},
}


def write_config(folder, max_steps=3000) -> str:
    data = yaml.safe_load(yaml.safe_dump(BALL))
    data["behaviors"]["3DBall"]["max_steps"] = max_steps
    path = folder / f"ball-{max_steps}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("localhost", port))
        except OSError:
            return False
    return True


def consecutive_free_ports(n: int) -> int:
    for _ in range(100):
        port = free_port()
        if port + n < 65536 and all(_port_free(port + i) for i in range(1, n)):
            return port
    raise RuntimeError(f"no {n} consecutive free ports")


@contextlib.contextmanager
def standins(folder, faults):
    """One stand-in per entry of ``faults`` (None: healthy) on ports P, P+1, ...; yields
    ``(P, processes, log paths)`` once each has compiled and is trying to connect."""
    port = consecutive_free_ports(len(faults))
    logs = [folder / f"standin-{port + i}.log" for i in range(len(faults))]
    procs = []
    try:
        for i, fault in enumerate(faults):
            with open(logs[i], "w") as log:
                procs.append(launch(port + i, seed=i, fault=fault, connect_timeout=120, stderr=log))
        deadline = time.monotonic() + 120
        while not all("connecting" in log.read_text() for log in logs):
            assert all(p.poll() is None for p in procs), [log.read_text() for log in logs]
            assert time.monotonic() < deadline, "stand-ins did not start"
            time.sleep(0.1)
        yield port, procs, logs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def train(folder, config, port, *args):
    return main([config, "--env", "editor", "--base-port", str(port), "--results-dir",
                 str(folder / "results"), "--run-id", "ball", "--quiet", *args])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("jppo: error: ") and "Traceback" not in err, err
    return err[len("jppo: error: "):].rstrip("\n")


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_two_workers_train_3dball_end_to_end(tmp_path):
    """3000 steps of 3DBall on two stand-ins: the run folder, the step count, the model."""
    with standins(tmp_path, [None, None]) as (port, procs, logs):
        assert train(tmp_path, write_config(tmp_path), port, "--num-envs", "2") == 0
        exits = [p.wait(timeout=30) for p in procs]
    # Both stand-ins were closed by the trainer, not dropped.
    assert exits == [0, 0]
    assert all(re.search("closed by Python|connection lost", log.read_text()) for log in logs)
    run = tmp_path / "results" / "ball"
    info = json.loads((run / "run_info.json").read_text())
    # A step is one agent decision; an iteration adds at most one per agent (24 here).
    assert info["complete"] and 3000 <= info["steps"] < 3000 + 24 and info["num_envs"] == 2
    saved = checkpoint.list_checkpoints(run)
    assert 1 <= len(saved) <= 3  # keep_checkpoints
    meta, _ = checkpoint.read(saved[-1])
    assert meta["steps"] == info["steps"] and meta["driver"] == "host"
    assert meta["observation_size"] == 8 and meta["action_spec"] == ["continuous", 2]
    assert meta["unity_behavior"] == "3DBall?team=0" and meta["num_envs"] == 2
    config = yaml.safe_load((run / "configuration.yaml").read_text())
    record = config["jppo"]["run_record"]
    assert record["env"] == config["jppo"]["env"] == "editor" and record["num_envs"] == 2
    rows = [line.split(",") for line in (run / "progress.csv").read_text().splitlines()[1:]]
    steps = [int(r[0]) for r in rows]
    assert steps == sorted(steps) and steps[-1] == info["steps"] and len(rows) == 3
    assert 1200 <= steps[0] < 1224 and 2400 <= steps[1] < 2424
    header = (run / "progress.csv").read_text().splitlines()[0].split(",")
    rewards = [float(r[header.index("cumulative_reward")]) for r in rows]
    assert all(0.0 < r < 10.0 for r in rewards)  # random-ish play: ~1, at most 100
    # An update needs 1200 experiences in *finished* trajectories (cut at 100), so it comes a
    # little after each 1200 steps: a period without one logs no loss.
    losses = [float(r[header.index("policy_loss")]) for r in rows]
    assert np.isfinite(losses).sum() in (1, 2)
    events = list((run / "3DBall").glob("events.out.tfevents.*"))
    assert len(events) == 1 and b"Environment/Cumulative Reward" in events[0].read_bytes()
    assert (run / "learning_curve.png").stat().st_size > 0
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(run / "3DBall.onnx"))
    obs = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    out = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"obs_0": obs})))
    assert out["version_number"].tolist() == [3.0] and out["continuous_action_output_shape"].tolist() == [2.0]
    assert out["continuous_actions"].shape == (5, 2) and np.all(np.abs(out["continuous_actions"]) <= 1)
    assert np.all(np.abs(out["deterministic_continuous_actions"]) <= 1)


def test_standin_dying_mid_run_stops_with_a_resumable_checkpoint(tmp_path, capsys):
    config = write_config(tmp_path, max_steps=6000)
    run = tmp_path / "results" / "ball"
    # P and P+1 for the run, P+2 (started now, to overlap the start-ups) for its resumption.
    with standins(tmp_path, [None, "die-after=100", None]) as (port, procs, logs):
        assert train(tmp_path, config, port, "--num-envs", "2", "--timeout-wait", "3") == 1
        assert procs[1].wait(timeout=30) == DIE_EXIT_CODE
        message = one_line_error(capsys)
        match = re.fullmatch(
            rf"Unity worker 1 \(port {port + 1}\) stopped answering for 3 s: Unity crashed, froze "
            r"or was closed; run 'ball' stopped at step (\d+), (saved there: continue with --resume "
            r"once the environment works again|its last checkpoint \(step \1\) is intact: continue "
            r"with --resume)\.", message)  # (the second when the stop fell on a periodic one)
        assert match, message
        stopped = int(match.group(1))
        saved = checkpoint.list_checkpoints(run)
        # Worker 0 goes on while worker 1 is silent, until worker 1's 3 s are up: more steps
        # than worker 1's 100 messages (at most 1200 decisions) could hold. (A bound of 2400,
        # both workers' share at the death, failed under a loaded CI machine: 2364.)
        assert 1200 < stopped < 6000
        # The periodic ones (one per 1200 steps) and the one at the stop, the newest
        # keep_checkpoints = 3 of them; how many periodic ones came first depends on the timing.
        saved_steps = [checkpoint.read(path)[0]["steps"] for path in saved]
        assert saved_steps == sorted(set(saved_steps)) and saved_steps[-1] == stopped
        assert (len(saved) == 3) if stopped >= 3600 else (1 <= len(saved) <= 3)
        before = (run / "progress.csv").read_text().splitlines()
        # The environment restarts on resume, here with one worker.
        assert train(tmp_path, config, port + 2, "--resume") == 0
    info = json.loads((run / "run_info.json").read_text())
    assert info["complete"] and 6000 <= info["steps"] < 6000 + 12 and info["num_envs"] == 1
    # The rows written before the fault are kept as they were, the resumed run's follow.
    after = (run / "progress.csv").read_text().splitlines()
    assert after[:len(before)] == before and len(after) > len(before)
    steps = [int(line.split(",")[0]) for line in after[1:]]
    assert steps == sorted(steps) and steps[len(before) - 1] > stopped and steps[-1] == info["steps"]
    assert (run / "3DBall.onnx").exists()


def test_editor_with_nothing_listening_times_out(tmp_path, capsys):
    port = consecutive_free_ports(1)
    started = time.monotonic()
    assert train(tmp_path, write_config(tmp_path), port, "--timeout-wait", "1") == 2
    assert time.monotonic() - started < 30
    assert one_line_error(capsys) == (
        f"nothing connected on port {port} within 1 s: start the Unity player or press Play in "
        "the editor after this message, or check --base-port and --timeout-wait.")
    assert not checkpoint.list_checkpoints(tmp_path / "results" / "ball")
    assert not (tmp_path / "results" / "ball" / "configuration.yaml").exists()


def test_port_in_use(tmp_path, capsys):
    port = consecutive_free_ports(1)
    with socket.socket() as holder:
        holder.bind(("localhost", port))
        holder.listen()
        assert train(tmp_path, write_config(tmp_path), port, "--timeout-wait", "1") == 2
    assert one_line_error(capsys) == (
        f"port {port} is already in use (another training run or Unity environment holds it): "
        "stop it or pass another --base-port.")


def test_nan_observations_stop_the_run_with_a_checkpoint(tmp_path, capsys):
    with standins(tmp_path, ["nan-after=60"]) as (port, procs, logs):
        assert train(tmp_path, write_config(tmp_path), port) == 1
    message = one_line_error(capsys)
    match = re.fullmatch(
        rf"Unity worker 0 \(port {port}\) sent invalid data: The observations provided had NaN "
        r"values; run 'ball' stopped at step (\d+), saved there: continue with --resume once the "
        r"environment works again\.", message)
    assert match, message
    policy = checkpoint.load_policy(tmp_path / "results" / "ball")
    assert policy.steps == int(match.group(1)) > 0
    assert all(np.isfinite(x).all() for x in [*policy.normalizer] + [np.asarray(v) for v in
                                              __import__("jax").tree_util.tree_leaves(policy.params)])


def test_two_behaviors_are_refused_by_name(tmp_path, capsys):
    with standins(tmp_path, ["two-behaviors"]) as (port, procs, logs):
        assert train(tmp_path, write_config(tmp_path), port) == 2
    assert one_line_error(capsys) == (
        "the environment has 2 behaviors (3DBall?team=0, 3DBallCopy?team=0); the configuration "
        "trains '3DBall' alone, so add a section under 'behaviors' for each of the others (jppo "
        "trains them together), or give them a model or Heuristic Only in Behavior Parameters.")
    assert not checkpoint.list_checkpoints(tmp_path / "results" / "ball")


def host_checkpoint(run, observation_size=8, steps=1234):
    """A host run's checkpoint as the driver writes it, without a run."""
    config = load(write_config(run.parent.parent)).ppo
    spec = ActionSpec.continuous(2)
    state = HostState(init_train_state(jax.random.PRNGKey(0), config, observation_size, spec),
                      np.asarray(steps, np.int64), np.asarray(1, np.int64))
    meta = {**checkpoint.policy_meta(config, spec, observation_size, "3DBall"), "driver": "host",
            "env": "editor", "num_envs": 1, "unity_behavior": "3DBall?team=0", "seed": 0}
    return checkpoint.save(run, steps, state, meta)


def test_resuming_with_another_observation_size_is_refused(tmp_path, capsys):
    run = tmp_path / "results" / "ball"
    host_checkpoint(run)
    before = digest(run / "checkpoints")
    with standins(tmp_path, ["bad-shape"]) as (port, procs, logs):
        assert train(tmp_path, write_config(tmp_path), port, "--resume") == 2
    assert one_line_error(capsys) == (
        "cannot resume: the checkpoint was trained on 8 observations, but behavior "
        "'3DBall?team=0' sends 7 observations.")
    assert digest(run / "checkpoints") == before and sorted(p.name for p in run.iterdir()) == ["checkpoints"]
