"""What a Unity run says and where it listens, seen from outside the trainer's process (its
whole stderr, its sockets): a port in use is one sentence with no mlagents traceback before it;
a worker process that hangs is reported with the time really waited, and killed; the gRPC
servers Unity connects to listen on localhost unless --bind says otherwise, as does process 0's
jax.distributed coordinator; Ctrl-C while waiting for Unity stops at once; SIGTERM to the whole
process group (Slurm's time limit) saves the run."""
import ipaddress
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml

from jppo.runs import checkpoint
from jppo.standin.server import free_port, launch

pytest.importorskip("mlagents_envs")
pytestmark = pytest.mark.slow

BALL = {
    "behaviors": {"3DBall": {
        "trainer_type": "ppo",
        "hyperparameters": {"batch_size": 120, "buffer_size": 1200, "num_epoch": 1},
        "network_settings": {"normalize": True, "hidden_units": 16, "num_layers": 1},
        "max_steps": 10**7, "time_horizon": 100, "summary_freq": 1200,
        "checkpoint_interval": 1200}},
}


def trainer(tmp_path, port, *args, **popen) -> subprocess.Popen:
    config = tmp_path / "ball.yaml"
    config.write_text(yaml.safe_dump(BALL))
    return subprocess.Popen([sys.executable, "-m", "jppo.train", str(config), "--env", "editor",
                             "--base-port", str(port), "--results-dir", str(tmp_path / "results"),
                             "--run-id", "ball", "--no-export", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **popen)


def listeners(port: int) -> set:
    """The local addresses of sockets listening on TCP ``port`` (Linux's /proc/net/tcp{,6}),
    IPv4-mapped IPv6 addresses (gRPC's) shown as IPv4."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                hex_address, hex_port = local.split(":")
                if state != "0A" or int(hex_port, 16) != port:
                    continue
                # The kernel prints each 32-bit word of the address in host (little-endian) order.
                raw = b"".join(bytes.fromhex(hex_address[i:i + 8])[::-1]
                               for i in range(0, len(hex_address), 8))
                address = ipaddress.ip_address(raw)
                found.add(str(getattr(address, "ipv4_mapped", None) or address))
    return found


def loopback_only(addresses: set) -> bool:
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def every_interface(addresses: set) -> bool:
    return any(ipaddress.ip_address(a).is_unspecified for a in addresses)


def wait_for(predicate, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def stderr_of(proc, timeout=60) -> str:
    return proc.communicate(timeout=timeout)[1]


needs_proc_net = pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="Linux only")


@needs_proc_net
@pytest.mark.parametrize("bind, where", [(None, loopback_only), ("0.0.0.0", every_interface)])
def test_unity_grpc_listens_on_localhost_unless_bound_and_ctrl_c_stops_the_wait(tmp_path, bind, where):
    port = free_port()
    proc = trainer(tmp_path, port, "--timeout-wait", "120", *(["--bind", bind] if bind else []))
    wait_for(lambda: listeners(port), proc)
    assert where(listeners(port)), listeners(port)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    err = stderr_of(proc)
    took = time.monotonic() - started
    # Seconds, not the 120 s Unity's wait would take (generous for a loaded machine).
    assert proc.returncode == 130 and took < 40, (took, err)
    assert "jppo: interrupted before training began; nothing to save." in err
    assert "Traceback" not in err and not (tmp_path / "results" / "ball").exists()


def test_port_in_use_is_one_line_on_the_whole_stderr(tmp_path):
    with socket.socket() as holder:
        holder.bind(("localhost", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = trainer(tmp_path, port, "--timeout-wait", "5", "--quiet")
        err = stderr_of(proc)
    assert proc.returncode == 2
    assert err == (f"jppo: error: port {port} is already in use (another training run or Unity "
                   "environment holds it): stop it or pass another --base-port.\n")
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def worker_pids(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out if "unity_worker" in open(f"/proc/{p}/cmdline").read()]


@needs_proc_net
def test_a_hung_worker_is_reported_with_the_real_wait_and_killed(tmp_path):
    port = free_port()
    with open(tmp_path / "standin.log", "w") as log:
        standin = launch(port, connect_timeout=120, stderr=log)
    try:
        proc = trainer(tmp_path, port, "--timeout-wait", "2", "--quiet")
        run = tmp_path / "results" / "ball"
        wait_for(lambda: checkpoint.latest(run) is not None, proc)
        (worker,) = worker_pids(proc.pid)
        os.kill(worker, signal.SIGSTOP)
        stopped = time.monotonic()
        err = stderr_of(proc)
        took = time.monotonic() - stopped
    finally:
        standin.kill()
        standin.wait()
    match = re.fullmatch(rf"jppo: error: Unity worker 0 \(port {port}\) stopped answering for "
                         r"(\d+) s: its worker process hung \(Unity's own 2 s timeout never fired\); "
                         r"run 'ball' stopped at step (\d+), (saved there: continue with --resume once "
                         r"the environment works again|its last checkpoint \(step \2\) is intact: "
                         r"continue with --resume)\.\n", err)
    # The stop saves unless the worker froze just as a checkpoint of that very step was written.
    assert match and proc.returncode == 1, err
    waited = int(match.group(1))
    assert 6 <= waited <= took + 1 and took < waited + 10  # said as waited; no 10 s close on top
    assert not os.path.exists(f"/proc/{worker}") or "Z" in open(f"/proc/{worker}/stat").read().split()[2]


def test_sigterm_to_the_process_group_saves_a_unity_run(tmp_path):
    """Slurm signals every process of the job: the workers ignore SIGTERM, the trainer saves."""
    port = free_port()
    with open(tmp_path / "standin.log", "w") as log:
        standin = launch(port, connect_timeout=120, stderr=log, start_new_session=True)
    try:
        proc = trainer(tmp_path, port, "--timeout-wait", "10", start_new_session=True)
        run = tmp_path / "results" / "ball"
        wait_for(lambda: checkpoint.latest(run) is not None, proc)
        os.killpg(proc.pid, signal.SIGTERM)
        err = stderr_of(proc)
    finally:
        standin.kill()
        standin.wait()
    assert proc.returncode == 143, err
    flat = " ".join(err.split())
    match = re.search(r"terminated \(SIGTERM\) at step (\d+); (checkpoint saved|the checkpoint of "
                      r"step \d+ stands)", flat)
    assert match and "Traceback" not in err, err
    assert checkpoint.read(checkpoint.latest(run))[0]["steps"] == int(match.group(1))


COORDINATOR = r"""
import sys
from jppo import distributed
distributed.initialize(sys.argv[1], 1, 0, bind=sys.argv[2] or None)
print("ready", flush=True)
sys.stdin.read()
"""


@needs_proc_net
@pytest.mark.parametrize("bind, where", [("", loopback_only), ("0.0.0.0", every_interface)])
def test_the_coordinator_listens_where_it_is_told(bind, where):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", COORDINATOR, f"127.0.0.1:{port}", bind],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    try:
        assert proc.stdout.readline() == "ready\n", proc.stderr.read()
        assert where(listeners(port)), listeners(port)
    finally:
        proc.kill()
        proc.wait()
