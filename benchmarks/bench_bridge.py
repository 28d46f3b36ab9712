"""The host driver's throughput against Unity 3DBall stand-ins, and its overhead over the stand-ins
stepped alone with random actions through ``UnityEnvironment``, with the same number of workers.

    cd benchmarks && python bench_bridge.py [--workers 2] [--steps 60000] [--baseline-steps 2000]

For each worker count N, on N fresh stand-ins (one process each, 12 agents):

- baseline: N processes, each a ``UnityEnvironment`` driving its own stand-in with uniform random
  actions exactly as ``bench_standin.py`` does, all started together after a warm-up; agent
  decisions per second summed over the N. The driver's workers are processes too, so this is
  the same shape of parallelism without the trainer (and without lock-step between workers).
- driver: ``python -m jppo.train`` with configs/3DBall.yaml (ML-Agents' hyperparameters:
  buffer 12000, batch 64, 3 epochs, 128 x 2) on ``--env editor --num-envs N``, stopped after
  ``--steps``; its steady rate is read from progress.csv from the first summary after the
  first update to the one before the stop (start-up and compilation excluded, updates
  included). The update's own time is measured here on the same config and subtracted for a
  second figure: the bridge alone.

Overhead = 1 - driver rate / baseline rate; the goal is <= 10%. On a shared machine the rates
swing with other jobs, so the CPU time per agent decision of every process involved (stand-ins,
UnityEnvironment processes, the trainer) is compared too; ``--repeats`` interleaves baseline and
driver runs and reports medians. Writes results/bridge.json (``--name``).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np
import yaml

import machine
from jppo.standin.server import free_port, launch

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "3DBall.yaml"


def consecutive_ports(n: int) -> int:
    import socket

    def free(port):
        with socket.socket() as s:
            try:
                s.bind(("localhost", port))
                return True
            except OSError:
                return False

    for _ in range(100):
        port = free_port()
        if all(free(port + i) for i in range(1, n)):
            return port
    raise RuntimeError("no consecutive free ports")


def start_standins(n: int, folder: pathlib.Path, scene: str = "3DBall", agents: int | None = None):
    port = consecutive_ports(n)
    logs = [folder / f"standin-{port + i}.log" for i in range(n)]
    procs = []
    for i in range(n):
        with open(logs[i], "w") as log:
            procs.append(launch(port + i, seed=i, connect_timeout=300, stderr=log, scene=scene,
                                agents=agents))
    while not all("connecting" in log.read_text() for log in logs):
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a stand-in did not start: " + " ".join(l.read_text() for l in logs))
        time.sleep(0.1)
    return port, procs


def stop(procs):
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# ---------------------------------------------------------------------- baseline


def baseline_worker(port: int, steps: int, warmup: int, seed: int) -> None:
    """One UnityEnvironment with random actions (bench_standin's loop); waits for 'go' on stdin
    after the warm-up, prints its counts as JSON."""
    from mlagents_envs.environment import UnityEnvironment

    from bench_standin import drive

    env = UnityEnvironment(file_name=None, base_port=port, worker_id=0, timeout_wait=300)
    env.reset()
    rng = np.random.default_rng(seed)
    drive(env, warmup, rng, os.getpid())
    print("ready", flush=True)
    sys.stdin.readline()
    run = drive(env, steps, rng, os.getpid())
    env.close()
    print(json.dumps(run), flush=True)


def baseline(n: int, steps: int, warmup: int, folder: pathlib.Path) -> dict:
    port, standins = start_standins(n, folder)
    workers = [subprocess.Popen([sys.executable, __file__, "--baseline-worker", str(port + i),
                                 str(steps), str(warmup), str(i)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, cwd=pathlib.Path(__file__).parent)
               for i in range(n)]
    for w in workers:
        assert w.stdout.readline().strip() == "ready"
    load = os.getloadavg()
    for w in workers:
        w.stdin.write("go\n")
        w.stdin.flush()
    runs = [json.loads(w.stdout.readline()) for w in workers]
    for w in workers:
        w.wait()
    stop(standins)
    rates = [r["agent_decisions"] / r["seconds"] for r in runs]
    cpu = sum(r["standin_cpu_seconds"] + r["python_cpu_seconds"] for r in runs)
    return {"workers": n, "agent_decisions_per_second": round(sum(rates), 1),
            "cpu_ms_per_decision": round(1e3 * cpu / sum(r["agent_decisions"] for r in runs), 4),
            "per_worker": [round(r, 1) for r in rates], "runs": runs,
            "load_average_1_5_15": [round(x, 2) for x in load]}


# ---------------------------------------------------------------------- driver


def update_seconds(repeats: int = 3) -> float:
    """One update of configs/3DBall.yaml on a full buffer (12000 x 8), compiled beforehand."""
    import jax

    from jppo.core.networks import ActionSpec
    from jppo.runs.settings import load
    from jppo.core.buffer_update import FlatBuffer, make_buffer_update
    from jppo.core.update import init_train_state

    config = load(CONFIG).ppo
    spec = ActionSpec.continuous(2)
    update = jax.jit(make_buffer_update(config, spec, config.total_adam_steps(config.buffer_size)))
    state = init_train_state(jax.random.PRNGKey(0), config, 8, spec)
    n, rng = config.buffer_size, np.random.default_rng(0)
    ends = (rng.random(n) < 0.02).astype(np.float32)
    ends[-1] = 1
    flat = FlatBuffer(rng.normal(size=(n, 8)).astype(np.float32),
                      rng.normal(size=(n, 2)).astype(np.float32), np.full((n, 2), -1.4, np.float32),
                      np.full(n, 0.1, np.float32), ends, np.zeros(n, np.float32),
                      np.zeros((n, 8), np.float32))
    jax.block_until_ready(update(state, flat))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        state, metrics = update(state, flat)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def _cpu_seconds(pid: int) -> float:
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux /proc/<pid>/task/<tid>/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in pathlib.Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return out


def driver(n: int, steps: int, summary_freq: int, folder: pathlib.Path) -> dict:
    """The driver on n stand-ins; its rate and its CPU time per decision (stand-ins, trainer
    and worker processes together) between summary rows, sampled as the rows appear."""
    data = yaml.safe_load(CONFIG.read_text())
    data["behaviors"]["3DBall"]["summary_freq"] = summary_freq
    config = folder / f"3DBall-summary{summary_freq}.yaml"
    config.write_text(yaml.safe_dump(data))
    port, standins = start_standins(n, folder)
    load = os.getloadavg()
    run = folder / "results" / f"bridge{n}"
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "jppo.train", str(config), "--env", "editor",
                             "--base-port", str(port), "--num-envs", str(n), "--run-id", f"bridge{n}",
                             "--results-dir", str(folder / "results"), "--force", "--quiet",
                             "--no-export", "--stop-after-steps", str(steps)],
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    samples = []  # (row index, wall time, cpu seconds of every process involved)
    while proc.poll() is None:
        try:
            rows = len((run / "progress.csv").read_text().splitlines()) - 1
        except OSError:
            rows = -1
        if rows > 0 and (not samples or samples[-1][0] != rows):
            pids = _tree(proc.pid) + [p.pid for p in standins]
            samples.append((rows, time.perf_counter(), sum(_cpu_seconds(p) for p in pids)))
        time.sleep(0.05)
    wall = time.perf_counter() - started
    stop(standins)
    if proc.returncode != 0:
        raise RuntimeError(f"the driver failed: {proc.stderr.read()}")
    with (run / "progress.csv").open() as f:
        rows = [(int(r["step"]), float(r["wall_time_s"]), float(r["policy_loss"]))
                for r in csv.DictReader(f)]
    info = json.loads((run / "run_info.json").read_text())
    # The window opens at the first summary after the first update: by then the update is
    # compiled (in the background until then) and every import is done. The last row is
    # written on the stop, with the checkpoint, so the window closes one row before.
    first = next((i for i, r in enumerate(rows) if r[2] == r[2]), 0)
    last = max(first + 1, len(rows) - 2)
    (s0, t0, _), (s1, t1, _) = rows[first], rows[last]
    cpu = {i: c for i, _, c in samples}
    cpu_ms = (1e3 * (cpu[last + 1] - cpu[first + 1]) / (s1 - s0)
              if first + 1 in cpu and last + 1 in cpu else None)
    return {"workers": n, "steps": info["steps"], "process_wall_s": round(wall, 2),
            "compile_s": info["compile_s"], "window_steps": s1 - s0, "window_s": round(t1 - t0, 3),
            "agent_decisions_per_second": round((s1 - s0) / (t1 - t0), 1) if t1 > t0 else None,
            "cpu_ms_per_decision": round(cpu_ms, 4) if cpu_ms else None,
            "load_average_1_5_15": [round(x, 2) for x in load]}


def compare(base: dict, drv: dict, t_update: float) -> dict:
    """Overheads of one driver run over one baseline run."""
    rate, base_rate = drv["agent_decisions_per_second"], base["agent_decisions_per_second"]
    updates = drv["window_steps"] / 12000
    bridge_s = drv["window_s"] - updates * t_update
    bridge_rate = drv["window_steps"] / bridge_s if bridge_s > 0 else None
    out = {"updates_in_window": round(updates, 2),
           "driver_rate_without_updates": round(bridge_rate, 1) if bridge_rate else None,
           "overhead_percent": round(100 * (1 - rate / base_rate), 1) if rate else None,
           "overhead_without_updates_percent":
               round(100 * (1 - bridge_rate / base_rate), 1) if bridge_rate else None}
    if drv["cpu_ms_per_decision"]:
        # CPU time per decision of every process involved: what the driver adds, however busy
        # the machine is (a shared machine makes the rates above noisy).
        update_ms = 1e3 * t_update * updates / drv["window_steps"]
        out["cpu_overhead_percent"] = round(
            100 * (drv["cpu_ms_per_decision"] / base["cpu_ms_per_decision"] - 1), 1)
        out["cpu_overhead_without_updates_percent"] = round(
            100 * ((drv["cpu_ms_per_decision"] - update_ms) / base["cpu_ms_per_decision"] - 1), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--steps", type=int, default=60000, help="driver steps per run")
    parser.add_argument("--summary-freq", type=int, default=6000)
    parser.add_argument("--baseline-steps", type=int, default=2000, help="step calls per worker")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2,
                        help="baseline/driver pairs per worker count, interleaved; medians reported")
    parser.add_argument("--name", default="bridge", help="results/<name>.json")
    args = parser.parse_args()

    t_update = update_seconds()
    print(f"one update (buffer 12000): {t_update:.3f} s", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="jppo-bridge-") as tmp:
        folder = pathlib.Path(tmp)
        for n in args.workers:
            pairs = []
            for _ in range(args.repeats):
                base = baseline(n, args.baseline_steps, args.warmup, folder)
                drv = driver(n, args.steps, args.summary_freq, folder)
                pairs.append({"baseline": base, "driver": drv, **compare(base, drv, t_update)})
                print(f"{n} worker(s): baseline {base['agent_decisions_per_second']}, driver "
                      f"{drv['agent_decisions_per_second']} decisions/s; CPU ms per decision "
                      f"{base['cpu_ms_per_decision']} vs {drv['cpu_ms_per_decision']}", flush=True)
            median = lambda key: float(np.median([p[key] for p in pairs if p.get(key) is not None])) \
                if any(p.get(key) is not None for p in pairs) else None
            results.append({"workers": n, "runs": pairs, **{k: median(k) for k in (
                "overhead_percent", "overhead_without_updates_percent", "cpu_overhead_percent",
                "cpu_overhead_without_updates_percent")}})
    payload = {
        "benchmark": "python -m jppo.train --env editor on unity_standin workers (configs/3DBall.yaml) "
                     "vs the same stand-ins stepped alone with random actions through UnityEnvironment",
        "settings": vars(args), "update_seconds": round(t_update, 4), "results": results,
        "goal": "overhead_percent <= 10",
    }
    path = machine.write(args.name, payload)
    for r in results:
        print(f"{r['workers']} worker(s): overhead {r['overhead_percent']}% of the rate "
              f"({r['overhead_without_updates_percent']}% without the updates), "
              f"{r['cpu_overhead_percent']}% of the CPU time ({r['cpu_overhead_without_updates_percent']}%)")
    print("->", path)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--baseline-worker":
        baseline_worker(*(int(x) for x in sys.argv[2:6]))
    else:
        main()
