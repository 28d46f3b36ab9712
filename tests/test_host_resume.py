"""What a resumed host run (Gymnasium here; Unity alike) keeps, as the README states it:

- exact: the train state it continues from (parameters, optimizer, normalizer, bit for bit),
  its step and update counts, and its summaries up to the checkpoint;
- reproducible: resuming one checkpoint twice gives the same run, bit for bit;
- not kept: the environments (they restart from a reset) and the experiences collected since
  the checkpoint's last update, so it does not end equal to a run that never stopped.
"""
import copy
import dataclasses
import json
import shutil

import flax.serialization
import jax
import numpy as np
import pytest
import yaml

from jppo import distributed
from jppo.host_loop import driver
from jppo.runs import checkpoint
from jppo.runs.launch import Launch
from jppo.runs.settings import load
from jppo.train import main
from test_host_gym import CARTPOLE as GYM_CARTPOLE

pytest.importorskip("gymnasium")
pytestmark = pytest.mark.slow

GYM = "gymnasium:CartPole-v1"
# test_host_gym's CartPole, shorter, with a checkpoint every 1024 steps (all of them kept).
CARTPOLE = copy.deepcopy(GYM_CARTPOLE)
CARTPOLE["behaviors"]["CartPole"].update(max_steps=6000, summary_freq=1024, keep_checkpoints=10,
                                         checkpoint_interval=1024)
STOP = 2500


def run(tmp, run_id, *args) -> int:
    config = tmp / "cartpole.yaml"
    config.write_text(yaml.safe_dump(CARTPOLE))
    return main([str(config), "--env", GYM, "--results-dir", str(tmp / "results"), "--run-id",
                 run_id, "--quiet", "--no-export", *args])


def rows(folder) -> list[str]:
    """progress.csv without its timing columns (wall_time_s, steps_per_second)."""
    lines = (folder / "progress.csv").read_text().splitlines()
    return [",".join(r.split(",")[:2] + r.split(",")[3:-1]) for r in lines]


def leaves(folder):
    meta, raw = checkpoint.read(checkpoint.latest(folder))
    return meta["steps"], int(raw["updates"]), [np.asarray(x) for x in jax.tree_util.tree_leaves(raw)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("host")
    assert run(tmp, "straight") == 0
    assert run(tmp, "a", "--stop-after-steps", str(STOP)) == 0
    shutil.copytree(tmp / "results" / "a", tmp / "results" / "b")
    return tmp


def test_a_resumed_host_run_starts_from_its_checkpoint_exactly(runs):
    folder = runs / "results" / "b"
    steps, updates, _ = leaves(folder)
    saved = [np.asarray(x) for x in jax.tree_util.tree_leaves(
        checkpoint.read(checkpoint.latest(folder))[1]["train"])]
    settings = load(runs / "cartpole.yaml")
    settings = dataclasses.replace(settings, results_dir=str(runs / "results"), run_id="b")
    host = driver.HostRun(Launch(settings, GYM, resume=True), 1, None)
    try:
        host.setup()
        (learner,) = host.learners.values()
        assert (learner.steps, learner.updates, learner.start_step) == (steps, updates, steps)
        restored = jax.tree_util.tree_leaves(flax.serialization.to_state_dict(
            jax.device_get(distributed.local_replica(learner.state))))
        assert len(saved) == len(restored) > 10
        assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(saved, restored))
    finally:
        host.close()
        host.folder.release()


def test_summaries_up_to_the_checkpoint_are_the_straight_runs(runs):
    straight, stopped = rows(runs / "results" / "straight"), rows(runs / "results" / "a")
    before = [r for r in stopped[1:] if int(r.split(",")[0]) < STOP]
    assert before and before == [r for r in straight[1:] if int(r.split(",")[0]) < STOP]
    assert run(runs, "a", "--resume") == 0
    resumed = rows(runs / "results" / "a")
    assert resumed[:len(stopped)] == stopped  # the resumed run appends after the checkpoint


def test_resuming_one_checkpoint_twice_gives_the_same_run(runs):
    if not json.loads((runs / "results" / "a" / "run_info.json").read_text())["complete"]:
        assert run(runs, "a", "--resume") == 0
    assert run(runs, "b", "--resume") == 0
    steps_a, updates_a, a = leaves(runs / "results" / "a")
    steps_b, updates_b, b = leaves(runs / "results" / "b")
    assert steps_a == steps_b >= 6000 and updates_a == updates_b
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert rows(runs / "results" / "a") == rows(runs / "results" / "b")
    # ... and not the run that never stopped: the environments restarted at the checkpoint.
    _, _, straight = leaves(runs / "results" / "straight")
    assert not all(np.array_equal(x, y) for x, y in zip(a, straight))
