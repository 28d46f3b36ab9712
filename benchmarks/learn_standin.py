"""Scenes learned through the Unity bridge: an ML-Agents config on Unity stand-ins, with the host
driver and the real ``UnityEnvironment``.

    cd benchmarks && python learn_standin.py [--workers 3] [--max-steps 500000] [--seed 0]
    cd benchmarks && python learn_standin.py --workers 2 --processes 2 --name learn_standin_2proc
    cd benchmarks && python learn_standin.py --scene 3DBallHard --seeds 5 --name learn_standin_3dballhard
    cd benchmarks && python learn_standin.py --scene GridWorld --workers 1 --agents 32 --name learn_standin_gridworld

Starts ``--workers`` stand-ins playing ``--scene`` (``--agents`` each, default the scene's) on
consecutive free ports, runs ``python -m jppo.train configs/<scene>.yaml --env editor --base-port
P --num-envs N`` on them in a temporary results folder, once per seed (``--seeds``, one after
the other), and writes results/<name>.json (per seed: the curve, the final and best mean reward,
the first step at which the mean reward reached the scene's goal, timings) and results/<name>.png
(every seed's curve). Goals: 3DBall 95 (published ML-Agents runs reach 100 by about 500k
steps), 3DBallHard 99.9 (its maximum, 100), Basic 0.9114 (0.93 within 2%), GridWorld 0.8787
(0.9 of its best mean reward). ``--processes N`` trains with N driver processes joined by
jax.distributed on 127.0.0.1 (gloo), each serving its own ``workers / N`` stand-ins.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import machine
from bench_bridge import ROOT, start_standins, stop
from jppo.standin.server import free_port

GOALS = {"3DBall": 95.0, "3DBallHard": 99.9, "Basic": 0.9114, "GridWorld": 0.8787, "Reach": 0.9}


def one_run(args, seed: int) -> dict:
    """Train one seed on fresh stand-ins; its curve and figures."""
    with tempfile.TemporaryDirectory(prefix="jppo-learn-") as tmp:
        folder = pathlib.Path(tmp)
        port, standins = start_standins(args.workers, folder, args.scene, args.agents)
        load = os.getloadavg()
        started = time.perf_counter()
        command = [sys.executable, "-m", "jppo.train", str(ROOT / "configs" / f"{args.scene}.yaml"),
                   "--env", "editor", "--base-port", str(port), "--num-envs", str(args.workers),
                   "--seed", str(seed), "--set", f"max_steps={args.max_steps}", "--run-id",
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
    curve = [[int(r["step"]), round(float(r["cumulative_reward"]), 4),
              round(float(r["episode_length"]), 1)] for r in rows
             if not math.isnan(float(r["cumulative_reward"]))]
    goal = GOALS[args.scene]
    return {"seed": seed, "final_mean_reward": curve[-1][1] if curve else math.nan,
            "best_mean_reward": max((r for _, r, _ in curve), default=math.nan),
            "first_step_at_goal": next((step for step, reward, _ in curve if reward >= goal), None),
            "steps": info["steps"], "wall_s": round(wall, 1), "train_s": info["train_s"],
            "compile_s": info["compile_s"], "steps_per_second": info["steps_per_second"],
            "processes": info.get("processes"), "load_average_1_5_15": [round(x, 2) for x in load],
            "curve_step_reward_length": curve}


def plot(runs: list, goal: float, title: str, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for run in runs:
        steps, rewards, _ = zip(*run["curve_step_reward_length"])
        ax.plot(steps, rewards, lw=1, label=f"seed {run['seed']}")
    ax.axhline(goal, color="k", ls="--", lw=1, label=f"goal {goal:g}")
    ax.set_xlabel("steps (agent decisions)")
    ax.set_ylabel("mean episode reward")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", default="3DBall", choices=list(GOALS))
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--agents", type=int, help="agents per stand-in (default: the scene's)")
    parser.add_argument("--max-steps", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=1, help="seeds seed..seed+N-1, one by one")
    parser.add_argument("--processes", type=int, default=1,
                        help="driver processes (jax.distributed on 127.0.0.1), workers split evenly")
    parser.add_argument("--name", default="learn_standin", help="results/<name>.json and .png")
    args = parser.parse_args()

    goal = GOALS[args.scene]
    runs = []
    for seed in range(args.seed, args.seed + args.seeds):
        runs.append(one_run(args, seed))
        r = runs[-1]
        print(f"seed {seed}: final mean reward {r['final_mean_reward']:.3f} (goal {goal}), first "
              f"reached at step {r['first_step_at_goal']}, {r['steps']} steps in {r['wall_s']:.0f} s",
              flush=True)
    what = (f"python -m jppo.train configs/{args.scene}.yaml --env editor --num-envs "
            f"{args.workers} on stand-ins playing {args.scene}"
            + (f" ({args.agents} agents each)" if args.agents else "")
            + (f", {args.processes} processes (jax.distributed, gloo)" if args.processes > 1 else ""))
    png = machine.RESULTS / f"{args.name}.png"
    machine.RESULTS.mkdir(parents=True, exist_ok=True)
    reached = [r["first_step_at_goal"] for r in runs]
    plot(runs, goal, f"{what}: {sum(s is not None for s in reached)}/{len(runs)} seeds reach "
                     f"{goal:g}", png)
    payload = {"benchmark": what, "settings": vars(args), "goal": f"mean reward >= {goal}",
               "seeds_reaching_goal": sum(s is not None for s in reached),
               "first_step_at_goal_per_seed": reached,
               "final_mean_reward_per_seed": [r["final_mean_reward"] for r in runs],
               "curve_png": str(png.relative_to(machine.RESULTS.parent)), "runs": runs}
    if len(runs) == 1:  # the single-run fields earlier results have
        payload.update({k: runs[0][k] for k in ("final_mean_reward", "best_mean_reward",
                                                 "first_step_at_goal", "steps", "wall_s",
                                                 "curve_step_reward_length")})
    path = machine.write(args.name, payload)
    print(f"{sum(s is not None for s in reached)}/{len(runs)} seeds reached {goal:g} -> {path}")


if __name__ == "__main__":
    main()
