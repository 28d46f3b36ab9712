"""Throughput of the Unity 3DBall stand-in driven by the real ``UnityEnvironment``, random actions.

The stand-in runs as its own process (as a Unity player would) on a free port; this process is
``mlagents_envs``' gRPC server and sends uniform random actions in [-1, 1] to every agent that
requests a decision. This is the floor any bridge built on ``UnityEnvironment`` stands on.

    cd benchmarks && python bench_standin.py [--steps 3000] [--warmup 200] [--seed 0]

writes results/standin_random.json: ``env.step()`` calls per second, decision messages per
second, agent decisions per second (decision messages x 12 agents), physics steps per second.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import time

import numpy as np
from mlagents_envs.base_env import ActionTuple
from mlagents_envs.environment import UnityEnvironment

import machine
from jppo.standin.server import BEHAVIOR, free_port, launch


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drive(env: UnityEnvironment, steps: int, rng: np.random.Generator, pid: int) -> dict:
    """``steps`` env.step() calls with random actions; counts what came back and the CPU time
    each side used (robust where other jobs share the machine and wall time is not)."""
    calls = decision_messages = agent_decisions = terminals = 0
    standin_cpu, python_cpu = cpu_seconds(pid), time.process_time()
    started = time.perf_counter()
    for _ in range(steps):
        decisions, _ = env.get_steps(BEHAVIOR)
        if len(decisions):
            env.set_actions(BEHAVIOR, ActionTuple(
                continuous=rng.uniform(-1, 1, (len(decisions), 2)).astype(np.float32)))
        env.step()
        calls += 1
        decisions, ended = env.get_steps(BEHAVIOR)
        decision_messages += len(decisions) > 0
        agent_decisions += len(decisions)
        terminals += len(ended)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "standin_cpu_seconds": cpu_seconds(pid) - standin_cpu,
            "python_cpu_seconds": time.process_time() - python_cpu,
            "step_calls": calls, "decision_messages": decision_messages,
            "terminal_only_messages": calls - decision_messages, "agent_decisions": agent_decisions,
            "episodes_ended": terminals}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    port, rng = free_port(), np.random.default_rng(args.seed)
    proc = launch(port, seed=args.seed, stderr=subprocess.DEVNULL)
    try:
        env = UnityEnvironment(file_name=None, base_port=port, worker_id=0, timeout_wait=120)
        env.reset()
        drive(env, args.warmup, rng, proc.pid)
        load_before = os.getloadavg()
        run = drive(env, args.steps, rng, proc.pid)
        env.close()
        exit_code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    seconds = run["seconds"]
    figures = {
        "step_calls_per_second": run["step_calls"] / seconds,
        "decision_messages_per_second": run["decision_messages"] / seconds,
        "agent_decisions_per_second": run["agent_decisions"] / seconds,
        "physics_steps_per_second": 5 * run["decision_messages"] / seconds,
        "standin_cpu_ms_per_step_call": 1e3 * run["standin_cpu_seconds"] / run["step_calls"],
        "python_cpu_ms_per_step_call": 1e3 * run["python_cpu_seconds"] / run["step_calls"],
    }
    payload = {
        "benchmark": "jppo.standin.server (own process) + mlagents_envs.UnityEnvironment, "
                     "uniform random actions, 12 agents, decision period 5",
        "settings": vars(args),
        "run": run,
        "figures": {k: round(v, 2) for k, v in figures.items()},
        "standin_exit_code": exit_code,
        # Other jobs share this machine; the load average says how much of it this run had.
        "load_average_1_5_15": [round(x, 2) for x in load_before],
    }
    path = machine.write("standin_random", payload)
    print(payload["figures"], "->", path)


if __name__ == "__main__":
    main()
