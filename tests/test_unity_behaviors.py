"""Several behaviors in one run (a Unity scene with several agent types), through the Unity
stand-in's real protocol: one policy, update, checkpoints, summaries and ONNX model per
behavior, trained together from the same workers; each behavior stops learning at its own
max_steps; the run resumes; what cannot be trained is one sentence."""
import collections
import contextlib
import json
import time
import warnings

import pytest
import yaml

from jppo.core.config import ConfigWarning
from jppo.core.networks import ActionSpec
from jppo.errors import UserError
from jppo.runs import checkpoint, environment_parameters as ep
from jppo.runs.settings import parse
from jppo.runs.summaries import read_curve
from jppo.standin.server import free_port, launch
from event_files import scalars  # tests/
from test_unity_training import one_line_error, standins, train

pytestmark = pytest.mark.slow


def section(buffer: int, max_steps: int, hidden: int = 32) -> dict:
    return {"trainer_type": "ppo",
            "hyperparameters": {"batch_size": buffer // 5, "buffer_size": buffer,
                                "learning_rate": 3e-4, "beta": 5e-3, "epsilon": 0.2,
                                "lambd": 0.95, "num_epoch": 2},
            "network_settings": {"normalize": True, "hidden_units": hidden, "num_layers": 2},
            "reward_signals": {"extrinsic": {"gamma": 0.99, "strength": 1.0}},
            "max_steps": max_steps, "time_horizon": 50, "summary_freq": buffer,
            "checkpoint_interval": buffer, "keep_checkpoints": 2}


# The stand-in's composite scene of two agent types: 12 3DBall agents (a vector of 8, two
# continuous actions, a decision every 5 physics steps) and one Basic agent (a vector of 20, one
# discrete branch of 3, a decision every step), each its own behavior with its own settings:
# other network widths, buffers and max_steps.
MIXED = {"behaviors": {"3DBall": section(300, 1200), "Basic": section(100, 400, hidden=16)},
         "jppo": {"timeout_wait": 10}}
# The stand-in's 3DBall with its two-behaviors fault: agents 0-5 are "3DBall", 6-11
# "3DBallCopy", announced as two behaviors of the same shapes.
TWO = {"behaviors": {"3DBall": section(300, 1200), "3DBallCopy": section(240, 600, hidden=16)},
       "jppo": {"timeout_wait": 10}}


def write(folder, data, name="two.yaml") -> str:
    path = folder / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


@contextlib.contextmanager
def composite(folder, scene="3DBall+Basic"):
    port = free_port()
    log_path = folder / "standin.log"
    with open(log_path, "w") as log:
        proc = launch(port, scene=scene, seed=0, connect_timeout=120, stderr=log)
    try:
        deadline = time.monotonic() + 120
        while "connecting" not in log_path.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        yield port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_two_agent_types_train_together_each_with_its_own_policy_and_files(tmp_path, capsys):
    from jppo.train import main

    with composite(tmp_path) as port:
        assert main([write(tmp_path, MIXED), "--env", "editor", "--base-port", str(port),
                     "--results-dir", str(tmp_path / "results"), "--run-id", "ball"]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "results" / "ball"
    info = json.loads((run / "run_info.json").read_text())
    assert set(info["behaviors"]) == {"3DBall", "Basic"}
    for name, hidden, max_steps, size, spec in (
            ("3DBall", 32, 1200, 8, ActionSpec.continuous(2)),
            ("Basic", 16, 400, 20, ActionSpec.discrete(3))):
        folder = run / name
        policy = checkpoint.load_policy(folder)
        # Its own network, observations, actions and step count, stopped at its own
        # max_steps: once past it the behavior acts on but neither counts nor learns.
        assert (policy.behavior, policy.config.hidden_units) == (name, hidden)
        assert (policy.observation_size, policy.action_spec) == (size, spec)
        assert max_steps <= policy.steps < max_steps + 100, (name, policy.steps)
        assert info["behaviors"][name]["steps"] == policy.steps
        assert info["behaviors"][name]["complete"]
        assert info["behaviors"][name]["models"] == [str(run / f"{name}.onnx")]
        assert (run / f"{name}.onnx").stat().st_size > 1000
        meta, _ = checkpoint.read(checkpoint.latest(folder))
        assert meta["unity_behavior"] == f"{name}?team=0" and meta["driver"] == "host"
        curve = read_curve(folder / "progress.csv")[0]
        assert [s for s, _ in curve][-1] == policy.steps and len(curve) >= 2
        # TensorBoard events in the behavior's own folder, as ML-Agents writes them.
        assert scalars(folder)["Environment/Cumulative Reward"]
        assert f"[INFO] {name}. Step: " in out
        assert (folder / "learning_curve.png").stat().st_size > 1000
    assert info["steps"] == sum(info["behaviors"][n]["steps"] for n in info["behaviors"])
    # The run folder names its behaviors where a single policy is asked of it.
    with pytest.raises(UserError, match="trained several behaviors \\(3DBall, Basic\\)"):
        checkpoint.load_policy(run)
    # jppo's configuration.yaml holds both behaviors and reads back to the run's settings.
    saved = yaml.safe_load((run / "configuration.yaml").read_text())
    assert set(saved["behaviors"]) == {"3DBall", "Basic"}
    assert saved["jppo"]["run_record"]["behaviors"]["Basic"]["observation_size"] == 20
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        again, first = parse(saved), parse(MIXED)
    assert [again.for_behavior(n).ppo for n in again.behavior_names] == [
        first.for_behavior(n).ppo for n in first.behavior_names]


def test_each_behavior_resumes_runs_and_starts_others_from_its_own_checkpoint(tmp_path, capsys):
    data = yaml.safe_load(yaml.safe_dump(TWO))
    with standins(tmp_path, ["two-behaviors"]) as (port, procs, logs):
        assert train(tmp_path, write(tmp_path, data), port, "--no-export",
                     "--stop-after-steps", "500") == 0
    run = tmp_path / "results" / "ball"
    stopped = {n: checkpoint.load_policy(run / n).steps for n in ("3DBall", "3DBallCopy")}
    assert all(0 < s < 600 for s in stopped.values()), stopped
    capsys.readouterr()
    with standins(tmp_path, ["two-behaviors"]) as (port, procs, logs):
        assert train(tmp_path, write(tmp_path, data), port, "--no-export", "--resume") == 0
    for name, max_steps in (("3DBall", 1200), ("3DBallCopy", 600)):
        rows = read_curve(run / name / "progress.csv")[0]
        steps = [s for s, _ in rows]
        assert steps == sorted(steps) and steps[-1] >= max_steps  # appended after the checkpoint
        assert checkpoint.load_policy(run / name).steps >= max_steps
    done = {n: checkpoint.load_policy(run / n).steps for n in ("3DBall", "3DBallCopy")}
    files = sorted(p for p in run.rglob("*") if p.is_file())
    capsys.readouterr()
    # --inference runs each behavior's own trained policy and writes nothing.
    with standins(tmp_path, ["two-behaviors"]) as (port, procs, logs):
        assert train(tmp_path, write(tmp_path, data), port, "--inference", "--resume",
                     "--stop-after-steps", "200") == 0
    assert sorted(p for p in run.rglob("*") if p.is_file()) == files
    # --initialize-from starts each behavior of a new run from its own policy in that run.
    from jppo.train import main

    with standins(tmp_path, ["two-behaviors"]) as (port, procs, logs):
        assert main([write(tmp_path, data), "--env", "editor", "--base-port", str(port),
                     "--results-dir", str(tmp_path / "results"), "--run-id", "tuned",
                     "--initialize-from", "ball", "--stop-after-steps", "200", "--no-export"]) == 0
    out = capsys.readouterr().out
    for name in ("3DBall", "3DBallCopy"):
        source = checkpoint.latest(run / name)
        assert f"initialized from {str(source)!r} (trained {done[name]:,} steps)" in out
        assert checkpoint.load_policy(tmp_path / "results" / "tuned" / name).steps < 400


def test_a_behavior_the_configuration_does_not_name_is_one_sentence(tmp_path, capsys):
    data = yaml.safe_load(yaml.safe_dump(TWO))
    data["behaviors"]["Other"] = data["behaviors"].pop("3DBallCopy")
    with standins(tmp_path, ["two-behaviors"]) as (port, procs, logs):
        assert train(tmp_path, write(tmp_path, data), port) == 2
    assert one_line_error(capsys) == (
        "the scene has behavior '3DBallCopy', which the configuration does not train (3DBall, "
        "Other); add a section for it under 'behaviors', or give it a model or Heuristic Only "
        "in Behavior Parameters.")
    assert not checkpoint.newest_anywhere(tmp_path / "results" / "ball")


@pytest.mark.parametrize("args, message", [
    (["--env", "3DBall"], "the configuration trains 2 behaviors (3DBall, 3DBallCopy); several "
     "behaviors train together through Unity only (a scene with several agent types): give "
     "--env a build or 'editor', or keep one behavior for --env 3DBall."),
    (["--env", "editor", "--devices", "2"], "--devices is not supported with several behaviors "
     "(3DBall, 3DBallCopy); a run of several behaviors trains in one process on one device."),
])
def test_what_several_behaviors_cannot_do_is_refused_by_name(tmp_path, capsys, args, message):
    from jppo.train import main

    assert main([write(tmp_path, TWO), "--results-dir", str(tmp_path / "r"), *args]) == 2
    assert one_line_error(capsys) == message
    assert not (tmp_path / "r").exists()


def test_a_lesson_reads_its_own_behaviors_rewards_and_progress():
    """ML-Agents' EnvironmentParameterManager: a lesson's criteria read the named behavior's
    reward buffer and steps / max_steps; a change clears every behavior's buffer."""
    value = {"wall": {"curriculum": [
        {"name": "low", "value": 1.0, "completion_criteria": {
            "measure": "reward", "behavior": "Big", "threshold": 0.5, "min_lesson_length": 2,
            "signal_smoothing": False}},
        {"name": "high", "value": 2.0}]},
        "gap": {"curriculum": [
            {"name": "near", "value": 1.0, "completion_criteria": {
                "measure": "progress", "behavior": "Small", "threshold": 0.25}},
            {"name": "far", "value": 3.0}]}}
    curriculum = ep.Curriculum(ep.plan(ep.normalize(value), 0))
    curriculum.add_rewards([1.0, 1.0], "Small")  # the other behavior's rewards do not count
    assert curriculum.update({"Big": 0.9, "Small": 0.1}) == ([], False)
    curriculum.add_rewards([0.4, 0.8], "Big")  # mean 0.6 > 0.5, two episodes
    assert curriculum.update({"Big": 0.0, "Small": 0.2}) == (["wall"], False)
    assert all(not buffer for buffer in curriculum.rewards.values())
    assert curriculum.update({"Big": 0.0, "Small": 0.3}) == (["gap"], False)
    assert curriculum.lesson_numbers() == {"wall": 1, "gap": 1}
    counts = collections.Counter(curriculum.samplers()[n].numbers[0] for n in ("wall", "gap"))
    assert counts == {2.0: 1, 3.0: 1}
