"""The README's two-process example on one CPU machine against the same run in one process.

    cd benchmarks && python bench_two_processes.py [--steps 51200] [--repeats 2]

Runs ``python -m jppo.train configs/CartPole.yaml --num-envs 8`` for ``--steps`` steps
(``--stop-after-steps``), once in one process and once as the README's pair of processes joined
by jax.distributed on 127.0.0.1 (gloo), alternating, ``--repeats`` times each, and writes
results/two_processes_cpu.json: each run's steps per second (run_info.json's, the whole run,
compile excluded), wall time and the load average, and the ratio of the medians.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import machine
from jppo.standin.server import free_port

ROOT = pathlib.Path(__file__).resolve().parent.parent


def one_run(processes: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="jppo-pair-") as tmp:
        command = [sys.executable, "-m", "jppo.train", "configs/CartPole.yaml", "--num-envs", "8",
                   "--stop-after-steps", str(steps), "--run-id", "pair", "--results-dir", tmp,
                   "--quiet", "--no-export"]
        if processes > 1:
            command += ["--coordinator", f"127.0.0.1:{free_port()}", "--num-processes",
                        str(processes)]
        load = os.getloadavg()[0]
        started = time.perf_counter()
        procs = [subprocess.Popen(command + (["--process-id", str(i)] if processes > 1 else []),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                  cwd=ROOT) for i in range(processes)]
        errors = [(p.communicate()[1], p.returncode) for p in procs]
        wall = time.perf_counter() - started
        for err, code in errors:
            if code != 0:
                raise SystemExit(f"a run failed ({code}): {err[-2000:]}")
        info = json.loads((pathlib.Path(tmp) / "pair" / "run_info.json").read_text())
        return {"processes": processes, "steps": info["steps"],
                "steps_per_second": info["steps_per_second"], "compile_s": info["compile_s"],
                "wall_s": round(wall, 1), "load_before": round(load, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=51_200)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    runs = []
    for _ in range(args.repeats):
        for processes in (1, 2):
            runs.append(one_run(processes, args.steps))
            print(runs[-1], flush=True)
    median = {n: statistics.median(r["steps_per_second"] for r in runs if r["processes"] == n)
              for n in (1, 2)}
    ratio = round(median[1] / median[2], 1)
    path = machine.write("two_processes_cpu", {
        "command": "python -m jppo.train configs/CartPole.yaml --num-envs 8 (one process; two "
                   "processes with --coordinator 127.0.0.1:<port> --num-processes 2)",
        "runs": runs, "median_steps_per_second": median, "one_over_two": ratio})
    print(f"one process {median[1]:,.0f} steps/s, two processes {median[2]:,.0f} steps/s: "
          f"{ratio}x; wrote {path}")


if __name__ == "__main__":
    main()
