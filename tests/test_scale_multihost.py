"""Two processes on 127.0.0.1 share one update through jax.distributed (gloo on CPU).

Each process has one CPU device and steps its own half of the environments; the parameters
end identical on both (same digest), the steps of the two processes add up to the run's steps,
only process 0 writes, and the agent equals a one-process, one-device run up to the order of
float sums (atol 1e-6 and rtol 1e-6, as in test_scale_devices.py).
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import yaml

from jppo.runs import checkpoint
from jppo.train import main
from tiny_config import tiny_cartpole

TINY = tiny_cartpole(512)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_pair(command, timeout=240):
    """``command(pid, coordinator)`` (the arguments after ``python -m jppo.train``) for
    processes 0 and 1 of one run; ``[(exit code, stderr without gloo's lines)]`` of each."""
    coordinator = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [subprocess.Popen([sys.executable, "-m", "jppo.train", *command(pid, coordinator)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for pid in (0, 1)]
    outs = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        # gloo announces its connections on stderr ("[Gloo] Rank 0 is connected to 1 peer ...").
        outs.append((p.returncode, "".join(l for l in err.splitlines(True)
                                           if not l.startswith("[Gloo]"))))
    return outs


def start_pair(tmp, run_id, *extra):
    """Processes 0 and 1 of one run; process 1 is given its own --results-dir, which must stay
    unwritten."""
    return run_pair(lambda pid, coordinator: [
        str(tmp / "tiny.yaml"), "--run-id", run_id, "--results-dir",
        str(tmp / ("results" if pid == 0 else "results-1")), "--quiet", "--no-export",
        "--coordinator", coordinator, "--num-processes", "2", "--process-id", str(pid), *extra])


def flat(tree, prefix=""):
    if isinstance(tree, dict):
        return {k2: v2 for k, v in tree.items() for k2, v2 in flat(v, f"{prefix}/{k}").items()}
    return {prefix: np.asarray(tree)}


def test_two_processes_share_one_update(tmp_path):
    """Every check in one test: pytest-xdist would start a shared fixture once per worker."""
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    outs = start_pair(tmp_path, "pair")
    assert [rc for rc, _ in outs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    assert outs[1][1] == ""  # process 1 trains silently

    # Both processes end with the same parameters, and their steps add up.
    info = json.loads((tmp_path / "results" / "pair" / "run_info.json").read_text())
    assert info["devices"] == 2 and info["steps"] == 512 and info["complete"]
    procs = info["processes"]
    assert [p["process_id"] for p in procs] == [0, 1]
    assert [p["envs"] for p in procs] == [2, 2]  # each process steps its own 2 of the 4
    assert sum(p["steps"] for p in procs) == info["steps"]
    assert procs[0]["params_sha256"] == procs[1]["params_sha256"]
    # Only process 0 wrote.
    assert not (tmp_path / "results-1").exists()
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path / "results" / "pair")] == [
        "checkpoint-000000512.msgpack"]

    # A refusal on process 0 (the run exists) stops both, each with one sentence.
    outs = start_pair(tmp_path, "pair")
    assert [rc for rc, _ in outs] == [2, 2]
    assert outs[0][1] == (f"jppo: error: run 'pair' already exists in '{tmp_path / 'results'}'; "
                          "use --resume to continue it, --force to overwrite it, or another "
                          "--run-id.\n")
    assert outs[1][1] == ("jppo: error: process 0 refused to start the run (see its message); this "
                          "process stops too.\n")

    # The same agent as one process on one device.
    assert main([str(tmp_path / "tiny.yaml"), "--run-id", "one", "--results-dir",
                 str(tmp_path / "results"), "--quiet", "--no-export"]) == 0
    _, two = checkpoint.read(checkpoint.latest(tmp_path / "results" / "pair"))
    _, one = checkpoint.read(checkpoint.latest(tmp_path / "results" / "one"))
    a, b = flat(one), flat(two)
    assert a.keys() == b.keys()
    for name in a:
        if a[name].dtype.kind == "f":
            np.testing.assert_allclose(b[name], a[name], rtol=1e-6, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(b[name], a[name], err_msg=name)


def test_bad_process_flags_are_one_sentence_and_exit_2(tmp_path, capsys):
    assert main(["--env", "CartPole-v1", "--num-processes", "2", "--process-id", "2",
                 "--coordinator", "127.0.0.1:1"]) == 2
    assert capsys.readouterr().err == ("jppo: error: --process-id 2 is not allowed; give a number "
                                       "from 0 to --num-processes - 1.\n")
    assert main(["--env", "CartPole-v1", "--coordinator", "localhost", "--num-processes", "2",
                 "--process-id", "0"]) == 2
    assert capsys.readouterr().err == ("jppo: error: --coordinator 'localhost' is not of the form "
                                       "host:port, e.g. --coordinator 10.0.0.1:1234.\n")
