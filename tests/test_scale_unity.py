"""Two processes on 127.0.0.1 train one 3DBall agent, each stepping its own Unity stand-in
(real protocol, real ``UnityEnvironment``), sharing one update through jax.distributed (gloo).

Process i serves worker i on ``--base-port P`` + i (the editor path: the stand-ins are already
listening). Both must end with the same parameters (digest), their steps must add up to the
run's, only process 0 writes; a stand-in dying under process 1 must stop both processes with
one sentence each, process 0 keeping a checkpoint both can resume from.
"""
import json
import re

import pytest

from jppo.runs import checkpoint
from jppo.standin.server import DIE_EXIT_CODE
from test_scale_multihost import run_pair
from test_unity_training import standins, write_config

pytestmark = pytest.mark.slow


def start_pair(tmp, config, port, *extra):
    """Processes 0 and 1 of one run over stand-ins on ``port`` and ``port + 1``; process 1 is
    given its own --results-dir, which must stay unwritten. Returns ``[(code, stderr)] * 2``."""
    return run_pair(lambda pid, coordinator: [
        config, "--env", "editor", "--base-port", str(port), "--num-envs", "2", "--run-id",
        "ball", "--results-dir", str(tmp / ("results" if pid == 0 else "results-1")), "--quiet",
        "--coordinator", coordinator, "--num-processes", "2", "--process-id", str(pid), *extra],
        timeout=300)


def progress_steps(run):
    return [int(line.split(",")[0]) for line in (run / "progress.csv").read_text().splitlines()[1:]]


def test_two_processes_each_with_its_own_unity_worker(tmp_path):
    config = write_config(tmp_path, max_steps=3000)
    with standins(tmp_path, [None, None]) as (port, procs, logs):
        outs = start_pair(tmp_path, config, port)
        assert [code for code, _ in outs] == [0, 0], outs[0][1][-3000:] + outs[1][1][-3000:]
        exits = [p.wait(timeout=30) for p in procs]
    assert outs[1][1] == ""  # process 1 trains silently
    # Each stand-in served its own process and was closed by it.
    assert exits == [0, 0]
    assert all(re.search("closed by Python|connection lost", log.read_text()) for log in logs)
    run = tmp_path / "results" / "ball"
    info = json.loads((run / "run_info.json").read_text())
    # Both processes end with the same parameters, and their steps add up to the run's. The
    # processes agree on the step count when they meet, once per update: the run ends at the
    # first update past max_steps (each process adds 600 of the 1200 experiences per update).
    rows = info["processes"]
    assert [r["process_id"] for r in rows] == [0, 1] and [r["envs"] for r in rows] == [1, 1]
    assert rows[0]["params_sha256"] == rows[1]["params_sha256"]
    assert sum(r["steps"] for r in rows) == info["steps"]
    assert all(r["steps"] >= 600 * 3 for r in rows)  # 3 updates at least, 600 each
    assert info["complete"] and 3000 <= info["steps"] < 3000 + 1200 + 24
    assert info["devices"] == 2 and info["num_envs"] == 2
    saved = checkpoint.list_checkpoints(run)
    meta, _ = checkpoint.read(saved[-1])
    assert meta["steps"] == info["steps"] and meta["num_envs"] == 2
    # Summaries hold both processes' episodes, written by process 0 alone.
    steps = progress_steps(run)
    assert steps == sorted(steps) and steps[-1] == info["steps"] and steps[0] >= 1200
    assert (run / "3DBall.onnx").exists()
    assert not (tmp_path / "results-1").exists()


def test_a_worker_dying_under_process_1_stops_both_resumably(tmp_path):
    config = write_config(tmp_path, max_steps=6000)
    run = tmp_path / "results" / "ball"
    # P, P+1 for the run; P+2, P+3 (started now, to overlap the start-ups) for its resumption.
    with standins(tmp_path, [None, "die-after=100", None, None]) as (port, procs, logs):
        outs = start_pair(tmp_path, config, port, "--timeout-wait", "3")
        assert procs[1].wait(timeout=30) == DIE_EXIT_CODE
        assert [code for code, _ in outs] == [1, 1], outs
        for _, err in outs:
            assert err.count("\n") == 1 and err.startswith("jppo: error: ") and "Traceback" not in err
        cause = (rf"Unity worker 1 \(port {port + 1}\) stopped answering for 3 s: Unity crashed, "
                 r"froze or was closed")
        tail = (r"; run 'ball' stopped at step (\d+), saved there: continue with --resume once "
                r"the environment works again\.")
        first = re.fullmatch(rf"jppo: error: process 1 of 2: {cause}{tail}\n", outs[0][1])
        second = re.fullmatch(rf"jppo: error: {cause}{tail}\n", outs[1][1])
        assert first and second, outs
        stopped = int(first.group(1))
        assert int(second.group(1)) == stopped
        saved = checkpoint.list_checkpoints(run)
        assert checkpoint.read(saved[-1])[0]["steps"] == stopped and 1200 <= stopped < 6000
        before = (run / "progress.csv").read_text().splitlines()
        # Both processes resume from process 0's checkpoint, on fresh stand-ins.
        outs = start_pair(tmp_path, config, port + 2, "--resume")
        assert [code for code, _ in outs] == [0, 0], outs[0][1][-3000:] + outs[1][1][-3000:]
    info = json.loads((run / "run_info.json").read_text())
    assert info["complete"] and 6000 <= info["steps"] < 6000 + 1200 + 24
    rows = info["processes"]
    assert rows[0]["params_sha256"] == rows[1]["params_sha256"]
    assert stopped + sum(r["steps"] for r in rows) == info["steps"]
    after = (run / "progress.csv").read_text().splitlines()
    assert after[:len(before)] == before and len(after) > len(before)
    assert not (tmp_path / "results-1").exists()


def test_a_process_that_cannot_connect_stops_both_before_training(tmp_path):
    """Nothing listens on process 1's port: both processes stop with one sentence (process 0
    naming process 1), exit 2, and no checkpoint is written."""
    config = write_config(tmp_path, max_steps=3000)
    with standins(tmp_path, [None]) as (port, procs, logs):
        outs = start_pair(tmp_path, config, port, "--timeout-wait", "3")
        assert procs[0].wait(timeout=30) == 0  # process 0 closed its stand-in
    cause = (rf"nothing connected on port {port + 1} within 3 s: start the Unity player or press "
             r"Play in the editor[^;]*")
    tail = r"; every process stopped before training\.\n"
    assert [code for code, _ in outs] == [2, 2], outs
    assert re.fullmatch(rf"jppo: error: process 1 of 2: {cause}{tail}", outs[0][1]), outs[0][1]
    assert re.fullmatch(rf"jppo: error: {cause}{tail}", outs[1][1]), outs[1][1]
    assert checkpoint.list_checkpoints(tmp_path / "results" / "ball") == []
    assert not (tmp_path / "results-1").exists()
