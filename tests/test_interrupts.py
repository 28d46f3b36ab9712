"""Ctrl-C and SIGTERM stop a run at its next safe point, never inside XLA's compile (with JAX
0.10.2 a Ctrl-C there segfaulted) and never swallowed by a JAX callback; a run that progressed
saves a checkpoint, and resumes from it exactly (the JAX loop) or from its train state (the host
loop). A kill -9 right after a checkpoint loses no summary up to it."""
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from jppo.runs import checkpoint
from jppo.train import main
from compile_cache import without_compilation_cache
from event_files import events
from tiny_config import tiny_cartpole

# The CLI in a child process whose checkpoint writes take half a second longer: a signal sent
# once a checkpoint file appears lands mid-run, however fast or loaded the machine.
SLOW_SAVES = r"""
import sys, time
from jppo import interrupts
interrupts.hold()  # as python -m jppo.train does
from jppo.runs import checkpoint
from jppo.train import main

real_save = checkpoint.save

def save(*args, **kwargs):
    path = real_save(*args, **kwargs)
    time.sleep(float(sys.argv[1]))
    return path

checkpoint.save = save
sys.exit(main(sys.argv[2:]))
"""
CRASHES = ("Traceback", "Fatal Python error", "Exception ignored", "Segmentation fault")


def write_config(tmp_path, data) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def start(tmp_path, data, *args, save_delay=0.0, module=False) -> subprocess.Popen:
    """The CLI as a user runs it (``module``: ``python -m jppo.train``, compiling for real: no
    persistent compilation cache, so that a signal sent during the compile lands in it), or with
    slow saves (and the test session's compilation cache: those signals come after a checkpoint)."""
    command = ([sys.executable, "-m", "jppo.train"] if module else
               [sys.executable, "-c", SLOW_SAVES, str(save_delay)])
    return subprocess.Popen(command + [write_config(tmp_path, data), "--results-dir",
                                       str(tmp_path / "results"), "--run-id", "r", "--no-export",
                                       *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=without_compilation_cache() if module else None)


def wait_until(predicate, proc, timeout=180):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def stopped(proc, timeout=60) -> tuple[int, str, float]:
    """``(exit code, stderr, seconds it took)`` once ``proc`` ends after a signal."""
    t = time.monotonic()
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err, time.monotonic() - t


# ------------------------------------------------------------------------- early Ctrl-C

RUN = tiny_cartpole(10**7, summary_freq=128, checkpoint_interval=256)


def catches_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has a handler for SIGTERM (Linux: /proc/<pid>/status SigCgt):
    python -m jppo.train sets it first thing, before it loads JAX."""
    with open(f"/proc/{pid}/status") as f:
        caught = next(line for line in f if line.startswith("SigCgt:")).split()[1]
    return bool(int(caught, 16) & (1 << (signal.SIGTERM - 1)))


@pytest.mark.parametrize("marker, after", [("handler", 0.0), (".jppo.lock", 0.0),
                                           ("configuration.yaml", 0.5)])
def test_ctrl_c_in_the_first_seconds_stops_cleanly(tmp_path, marker, after):
    """SIGINT while Python imports JAX (right after the CLI's handler is set), once the run
    folder is locked (the states are traced and initialized next) and while the chunk program
    compiles (its configuration is written just before): exit 130 once the compile is over, no
    crash or traceback; a checkpoint exactly when the run says it saved one."""
    if marker == "handler" and not os.path.exists("/proc/self/status"):
        pytest.skip("needs Linux's /proc to see when the handler is set")
    proc = start(tmp_path, RUN, module=True)
    run = tmp_path / "results" / "r"
    wait_until((lambda: catches_sigterm(proc.pid)) if marker == "handler" else
               (lambda: (run / marker).exists()), proc)
    time.sleep(after)
    proc.send_signal(signal.SIGINT)
    code, err, took = stopped(proc, timeout=120)
    assert code == 130, err
    assert not any(crash in err for crash in CRASHES), err
    assert "jppo: Ctrl-C: stopping at the next safe point" in err
    said = " ".join(err.split())
    saved = re.search(r"interrupted at step (\d+); checkpoint saved\. Continue with --resume\.", said)
    if saved:
        assert checkpoint.read(checkpoint.latest(run))[0]["steps"] == int(saved.group(1)) > 0
    else:
        assert re.search(r"interrupted at step 0, before training; nothing to save\.|jppo: "
                         r"interrupted before training began; nothing to save\.", said), err
        assert checkpoint.latest(run) is None


def test_a_second_ctrl_c_stops_at_once(tmp_path):
    proc = start(tmp_path, RUN, module=True)
    wait_until(lambda: (tmp_path / "results" / "r" / "configuration.yaml").exists(), proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    code, err, took = stopped(proc)
    assert code == 130 and took < 10 and "jppo: stopped at once, without a checkpoint." in err
    assert not any(crash in err for crash in CRASHES), err


# ------------------------------------------------------------------------- SIGTERM, resumed

EXACT = tiny_cartpole(2048, summary_freq=256, checkpoint_interval=512, keep_checkpoints=20)


def scalars(run: pathlib.Path, behavior="CartPole") -> dict:
    """``{(tag, step): value}`` as TensorBoard shows the run's event files: a SessionLog START
    at step S (written on resume) hides the events from S on that came before it."""
    shown: dict = {}
    for event in events(run / behavior):
        if event.HasField("session_log") and event.session_log.status == event.session_log.START:
            shown = {k: v for k, v in shown.items() if k[1] < event.step}
        for value in event.summary.value:
            if not value.tag.startswith("Performance/"):  # timings differ from run to run
                shown[(value.tag, event.step)] = value.simple_value
    return shown


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The run that never stopped."""
    tmp = tmp_path_factory.mktemp("straight")
    assert main([write_config(tmp, EXACT), "--results-dir", str(tmp / "results"), "--run-id", "r",
                 "--quiet", "--no-export"]) == 0
    return tmp / "results" / "r"


def final(run: pathlib.Path):
    meta, raw = checkpoint.read(checkpoint.latest(run))
    return meta["steps"], raw


def assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def saved_step(err: str) -> int:
    """The step of the checkpoint a SIGTERM'd run names in its last line: saved there, or (the
    signal came right after a checkpoint) the one that stands."""
    match = re.search(r"terminated \(SIGTERM\) at step (\d+); (checkpoint saved|the checkpoint "
                         r"of step (\d+) stands)\. Continue with --resume\.", " ".join(err.split()))
    assert match and match.group(3) in (None, match.group(1)), err
    assert err.count("terminated (SIGTERM) at step") == 1, err
    return int(match.group(1))


def resume(tmp_path) -> int:
    return main([write_config(tmp_path, EXACT), "--results-dir", str(tmp_path / "results"),
                 "--run-id", "r", "--quiet", "--no-export", "--resume"])


def terminated_after_a_checkpoint(tmp_path, data, *args) -> int:
    """Run the CLI, SIGTERM it once it has saved a checkpoint: exit 143, no crash, and the
    newest checkpoint is at the step its last line names; returns that step."""
    proc = start(tmp_path, data, *args, save_delay=0.5)
    run = tmp_path / "results" / "r"
    wait_until(lambda: checkpoint.latest(run) is not None, proc)
    proc.send_signal(signal.SIGTERM)
    code, err, took = stopped(proc)
    assert code == 143 and took < 30, err
    assert not any(crash in err for crash in CRASHES), err
    step = saved_step(err)
    assert checkpoint.read(checkpoint.latest(run))[0]["steps"] == step >= 512
    return step


def test_sigterm_saves_and_the_resumed_run_equals_a_straight_one(tmp_path, straight):
    assert terminated_after_a_checkpoint(tmp_path, EXACT) < 2048
    run = tmp_path / "results" / "r"
    assert resume(tmp_path) == 0
    (steps_a, a), (steps_b, b) = final(straight), final(run)
    assert steps_a == steps_b == 2048
    assert_same(a, b)
    assert scalars(run) == scalars(straight)


def test_kill_9_after_a_checkpoint_loses_no_summary(tmp_path, straight):
    """Summaries reach the disk before each checkpoint: after a SIGKILL, the event file and
    progress.csv hold every period up to the newest checkpoint, as the straight run shows
    them (resumed from there, the run shows exactly the straight run's points: the SIGTERM
    test above)."""
    proc = start(tmp_path, EXACT, save_delay=0.5)
    run = tmp_path / "results" / "r"
    wait_until(lambda: len(checkpoint.list_checkpoints(run)) >= 2, proc)
    proc.kill()
    proc.communicate()
    saved = checkpoint.read(checkpoint.latest(run))[0]["steps"]
    up_to = lambda points: {k: v for k, v in points.items() if k[1] <= saved}
    assert up_to(scalars(run)) == up_to(scalars(straight))
    assert {k[1] for k in up_to(scalars(run))} == set(range(256, saved + 1, 256))
    rows = (run / "progress.csv").read_text().splitlines()[1:]
    assert {int(r.split(",")[0]) for r in rows} >= set(range(256, saved + 1, 256))


@pytest.mark.slow
def test_sigterm_saves_a_host_run_that_resumes(tmp_path):
    pytest.importorskip("gymnasium")
    data = tiny_cartpole(4096, summary_freq=256, checkpoint_interval=512)
    terminated_after_a_checkpoint(tmp_path, data, "--env", "gymnasium:CartPole-v1")
    run = tmp_path / "results" / "r"
    assert main([write_config(tmp_path, data), "--results-dir", str(tmp_path / "results"),
                 "--run-id", "r", "--quiet", "--no-export", "--env", "gymnasium:CartPole-v1",
                 "--resume"]) == 0
    assert checkpoint.read(checkpoint.latest(run))[0]["steps"] >= 4096
