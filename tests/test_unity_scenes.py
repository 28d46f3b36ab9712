"""python -m jppo.train --env editor against stand-ins playing the scenes beyond 3DBall, through
the real ``UnityEnvironment``: 3DBallHard's two stacking sensors, GridWorld (two sensors, masks),
Reach (hybrid actions, two branches, masks) and Basic (a new agent every episode) train end to
end and export their models; the stand-in counts every masked action it receives (none); scenes
with a sensor jppo cannot train are refused in one sentence before anything is written."""
import contextlib
import re
import time

import numpy as np
import onnx
import pytest
import yaml

from jppo.runs import checkpoint
from jppo.standin.server import launch
from jppo.train import main
from test_unity_training import consecutive_free_ports, one_line_error

pytestmark = pytest.mark.slow


def config(folder, behavior, max_steps, batch=64, buffer=640, time_horizon=32):
    data = {"behaviors": {behavior: {
        "trainer_type": "ppo",
        "hyperparameters": {"batch_size": batch, "buffer_size": buffer, "learning_rate": 3e-4,
                            "beta": 5e-3, "epsilon": 0.2, "lambd": 0.95, "num_epoch": 2},
        "network_settings": {"normalize": True, "hidden_units": 32, "num_layers": 2},
        "reward_signals": {"extrinsic": {"gamma": 0.99, "strength": 1.0}},
        "max_steps": max_steps, "time_horizon": time_horizon, "summary_freq": buffer,
        "checkpoint_interval": buffer, "keep_checkpoints": 2}},
        "jppo": {"timeout_wait": 20}}
    path = folder / f"{behavior}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@contextlib.contextmanager
def standin(folder, scene, fault=None, agents=None):
    """One stand-in playing ``scene``; yields (port, process, log path) once it is connecting."""
    port = consecutive_free_ports(1)
    log = folder / f"standin-{scene}.log"
    with open(log, "w") as out:
        proc = launch(port, scene=scene, seed=1, fault=fault, agents=agents, connect_timeout=120,
                      stderr=out)
    try:
        deadline = time.monotonic() + 120
        while "connecting" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the stand-in did not start"
            time.sleep(0.1)
        yield port, proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def train(folder, config_path, port, *args):
    return main([config_path, "--env", "editor", "--base-port", str(port), "--results-dir",
                 str(folder / "results"), "--run-id", "scene", "--quiet", *args])


def actions_seen(log) -> tuple[int, int]:
    """(actions received, masked ones) from the stand-in's exit line."""
    found = re.search(r"(\d+) actions received, (\d+) of them masked", log.read_text())
    assert found, log.read_text()
    return int(found.group(1)), int(found.group(2))


SCENES = {  # scene: (behavior, max steps, sensor shapes, action spec meta, agents)
    "3DBallHard": ("3DBallHard", 2400, [[27], [18]], ["continuous", 2], None),
    "GridWorld": ("GridWorld", 1500, [[6], [2]], ["discrete", 5], None),
    "Reach": ("Reach", 1500, [[4], [3]], {"continuous": 2, "discrete": [3, 2]}, None),
    "Basic": ("Basic", 700, 20, ["discrete", 3], 4),
}


@pytest.mark.parametrize("scene", list(SCENES))
def test_scene_trains_end_to_end_and_never_sends_a_masked_action(tmp_path, scene):
    behavior, max_steps, sizes, spec, agents = SCENES[scene]
    path = config(tmp_path, behavior, max_steps)
    with standin(tmp_path, scene, agents=agents) as (port, proc, log):
        assert train(tmp_path, path, port) == 0
        assert proc.wait(timeout=30) == 0
    received, masked = actions_seen(log)
    assert received >= max_steps and masked == 0
    run = tmp_path / "results" / "scene"
    meta, state = checkpoint.read(checkpoint.list_checkpoints(run)[-1])
    assert meta["observation_size"] == sizes and meta["action_spec"] == spec
    assert meta["unity_behavior"] == f"{behavior}?team=0" and meta["steps"] >= max_steps
    normalizer = state["train"]["normalizer"]
    if isinstance(sizes, list):  # one running normalizer per sensor
        assert [len(normalizer[str(i)]["mean"]) for i in range(len(sizes))] == [s[0] for s in sizes]
        assert all(float(normalizer[str(i)]["count"]) > 0 for i in range(len(sizes)))
    rows = (run / "progress.csv").read_text().splitlines()[1:]
    assert len(rows) >= 2
    model = onnx.load(str(run / f"{behavior}.onnx"))
    widths = [sizes] if isinstance(sizes, int) else [s[0] for s in sizes]
    inputs = [(i.name, i.type.tensor_type.shape.dim[1].dim_value) for i in model.graph.input]
    masks = [("action_masks", 5 if scene != "Basic" else 3)] if scene != "3DBallHard" else []
    assert inputs == [(f"obs_{k}", w) for k, w in enumerate(widths)] + masks


@pytest.mark.parametrize("fault, sensor, kind, shape", [
    ("image-sensor", "CameraSensor", "an image (visual observation)", "(8, 8, 3)"),
    ("buffer-sensor", "BufferSensor_size6", "a variable-length buffer sensor", "(4, 6)")])
def test_a_sensor_jppo_cannot_train_is_refused_in_one_sentence(tmp_path, capsys, fault, sensor,
                                                              kind, shape):
    with standin(tmp_path, "GridWorld", fault=fault) as (port, proc, log):
        assert train(tmp_path, config(tmp_path, "GridWorld", 1000), port) == 2
    assert one_line_error(capsys) == (
        f"behavior 'GridWorld?team=0' has sensor '{sensor}' of shape {shape}, {kind}; jppo trains "
        "vector sensors (any number, stacked or not) with continuous actions, discrete branches "
        "(with action masks) or both.")
    run = tmp_path / "results" / "scene"
    assert not (run / "configuration.yaml").exists() and not checkpoint.list_checkpoints(run)


def test_several_behaviors_are_refused_in_one_sentence(tmp_path, capsys):
    with standin(tmp_path, "Reach", fault="two-behaviors") as (port, proc, log):
        assert train(tmp_path, config(tmp_path, "Reach", 1000), port) == 2
    assert one_line_error(capsys) == (
        "the environment has 2 behaviors (Reach?team=0, ReachCopy?team=0); the configuration "
        "trains 'Reach' alone, so add a section under 'behaviors' for each of the others (jppo "
        "trains them together), or give them a model or Heuristic Only in Behavior Parameters.")
    assert not (tmp_path / "results" / "scene" / "configuration.yaml").exists()


def test_observations_of_any_rank_reach_the_refusal_without_a_traceback():
    """What a worker reports is never reshaped: an image or a buffer sensor's arrays pass through
    ``to_agent_steps`` as they are, for ``pick_behaviors`` to name."""
    from jppo.host_loop.unity_env import non_finite, to_agent_steps

    image = np.zeros((3, 8, 8, 3), np.float32)
    buffer = np.full((3, 4, 6), np.nan, np.float32)  # BufferSensor pads with NaN, as Unity
    payload = (np.arange(3), [np.ones((3, 6), np.float32), image], np.zeros(3), np.arange(0),
               [np.zeros((0, 6), np.float32), np.zeros((0, 8, 8, 3), np.float32)], np.zeros(0),
               np.zeros(0, bool), np.ones((3, 5), bool))
    steps = to_agent_steps(payload)
    assert [o.shape for o in steps.decision_obs] == [(3, 6), (3, 8, 8, 3)]
    assert non_finite(steps) is None
    steps = to_agent_steps(payload[:1] + ([buffer],) + payload[2:4] + ([np.zeros((0, 4, 6))],)
                           + payload[5:])
    assert steps.decision_obs.shape == (3, 4, 6) and non_finite(steps) == "NaN observations"
