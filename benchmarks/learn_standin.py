"""3DBall learned through the Unity bridge: configs/3DBall.yaml (ML-Agents' hyperparameters,
500k steps) on Unity 3DBall stand-ins, with the host driver and the real ``UnityEnvironment``.

    cd benchmarks && python learn_standin.py [--workers 3] [--max-steps 500000] [--seed 0]
    cd benchmarks && python learn_standin.py --workers 2 --processes 2 --name learn_standin_2proc

Starts ``--workers`` stand-ins (12 agents each) on consecutive free ports, runs
``python -m jppo.train configs/3DBall.yaml --env editor --base-port P --num-envs N`` on them in
a temporary results folder, and writes results/learn_standin.json (the curve, the final and
best mean reward, the first step at which the mean reward reached the goal of 95, timings) and
results/learn_standin.png (the driver's learning curve). Published ML-Agents runs reach 100 by
about 500k steps. ``--processes N`` trains with N driver processes joined by jax.distributed on
127.0.0.1 (gloo), each serving its own ``workers / N`` stand-ins and sharing every update.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import machine
from bench_bridge import ROOT, start_standins, stop
from jppo.standin.server import free_port

GOAL = 95.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, default=1,
                        help="driver processes (jax.distributed on 127.0.0.1), workers split evenly")
    parser.add_argument("--name", default="learn_standin", help="results/<name>.json and .png")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="jppo-learn-") as tmp:
        folder = pathlib.Path(tmp)
        port, standins = start_standins(args.workers, folder)
        load = os.getloadavg()
        started = time.perf_counter()
        command = [sys.executable, "-m", "jppo.train", str(ROOT / "configs" / "3DBall.yaml"),
                   "--env", "editor", "--base-port", str(port), "--num-envs", str(args.workers),
                   "--seed", str(args.seed), "--set", f"max_steps={args.max_steps}", "--run-id",
                   "learn", "--results-dir", str(folder / "results"), "--quiet"]
        if args.processes > 1:
            coordinator = f"127.0.0.1:{free_port()}"
            command += ["--coordinator", coordinator, "--num-processes", str(args.processes)]
        drivers = [subprocess.Popen(
            command + (["--process-id", str(i)] if args.processes > 1 else []),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
            for i in range(args.processes)]
        outs = [(d.communicate()[1], d.returncode) for d in drivers]
        wall = time.perf_counter() - started
        stop(standins)
        for err, code in outs:
            if code != 0:
                raise SystemExit(f"the driver failed ({code}): {err}")
        run = folder / "results" / "learn"
        with (run / "progress.csv").open() as f:
            rows = list(csv.DictReader(f))
        info = json.loads((run / "run_info.json").read_text())
        curve = [[int(r["step"]), round(float(r["cumulative_reward"]), 3),
                  round(float(r["episode_length"]), 1)] for r in rows
                 if not math.isnan(float(r["cumulative_reward"]))]
        png = machine.RESULTS / f"{args.name}.png"
        machine.RESULTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run / "learning_curve.png", png)
    reached = next((step for step, reward, _ in curve if reward >= GOAL), None)
    final = curve[-1][1] if curve else math.nan
    payload = {
        "benchmark": f"python -m jppo.train configs/3DBall.yaml --env editor --num-envs "
                     f"{args.workers} on unity_standin players (12 agents each)"
                     + (f", {args.processes} processes (jax.distributed, gloo)"
                        if args.processes > 1 else ""),
        "settings": vars(args),
        "goal": f"mean reward >= {GOAL}",
        "final_mean_reward": final,
        "best_mean_reward": max((r for _, r, _ in curve), default=math.nan),
        "first_step_at_goal": reached,
        "goal_met": bool(final >= GOAL),
        "steps": info["steps"], "wall_s": round(wall, 1), "train_s": info["train_s"],
        "compile_s": info["compile_s"], "steps_per_second": info["steps_per_second"],
        "processes": info.get("processes"),
        "curve_step_reward_length": curve, "curve_png": str(png.relative_to(machine.RESULTS.parent)),
        "load_average_1_5_15": [round(x, 2) for x in load],
    }
    path = machine.write(args.name, payload)
    print(f"final mean reward {final:.2f} (goal {GOAL}), first reached at step {reached}, "
          f"{info['steps']} steps in {wall:.0f} s -> {path}")


if __name__ == "__main__":
    main()
