"""Training throughput of two source trees side by side: ``bench_train.py``'s jitted loop on the
same configs, in a base tree (for example a checkout of main) and in this one, interleaved case
by case so that both see the same machine state.

    cd benchmarks && python bench_ab.py --base /tmp/main-base [--rounds 4] [--repeats 5]

Per round and case, each tree runs once in its own process (its ``jppo`` first on the path,
``bench_train.jppo_programs`` of that tree, best of ``--repeats`` after compiling), timed two
ways: wall-clock steps/s, and steps per CPU second of the process (``time.process_time``, all
its threads), which other programs on a shared machine disturb far less. Per case the best of
the rounds is kept, and the ratios this tree / base are written to
results/train_ab_<backend>.json with every round's figures and the machine described. Use it to
check that a change costs the jitted loop nothing beyond noise.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys

from machine import write

HERE = pathlib.Path(__file__).resolve().parent.parent
# (config, env, envs, updates): bench_train.py's CartPole (4 and 64 envs) and 3DBall cases.
CASES = [("CartPole.yaml", "CartPole-v1", None, None), ("CartPole.yaml", "CartPole-v1", 64, None),
         ("3DBall.yaml", "3DBall", None, 40)]
_SNIPPET = """
import json, sys, time
import jax
sys.path.insert(0, {bench!r})
from bench_train import jppo_programs
p = jppo_programs({config!r}, {env!r}, {envs!r}, {updates!r})
wall, cpu = [], []
for _ in range({repeats}):
    w, c = time.perf_counter(), time.process_time()
    jax.block_until_ready(p["train"]())
    wall.append(time.perf_counter() - w)
    cpu.append(time.process_time() - c)
print(json.dumps({{"steps_per_second": p["steps"] / min(wall),
                  "steps_per_cpu_second": p["steps"] / min(cpu), "num_envs": p["num_envs"],
                  "steps": p["steps"]}}))
"""


def run_case(tree: pathlib.Path, case: tuple, repeats: int) -> dict:
    config, env_name, envs, updates = case
    code = _SNIPPET.format(bench=str(tree / "benchmarks"), config=config, env=env_name, envs=envs,
                           updates=updates, repeats=repeats)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tree / "benchmarks", env=env,
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the other source tree (repository root)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--case", type=int, action="append",
                        help="only CASES[i] (repeatable): 0 CartPole x4, 1 CartPole x64, 2 3DBall")
    parser.add_argument("--name", default=None, help="results/<name>.json")
    args = parser.parse_args()
    trees = {"base": pathlib.Path(args.base).resolve(), "this": HERE}
    rows = []
    for case in [CASES[i] for i in args.case] if args.case else CASES:
        wall = {"base": [], "this": []}
        cpu = {"base": [], "this": []}
        for _ in range(args.rounds):
            for tag, tree in trees.items():
                got = run_case(tree, case, args.repeats)
                wall[tag].append(round(got["steps_per_second"]))
                cpu[tag].append(round(got["steps_per_cpu_second"]))
        ratio = lambda d: round(max(d["this"]) / max(d["base"]), 3)
        rows.append({"env": case[1], "num_envs": got["num_envs"], "steps": got["steps"],
                     "steps_per_second": wall, "steps_per_cpu_second": cpu,
                     "ratio_this_over_base_wall": ratio(wall),
                     "ratio_this_over_base_cpu": ratio(cpu)})
        print(f"{case[1]} x{got['num_envs']}: wall steps/s base {wall['base']} this {wall['this']}"
              f" (best ratio {ratio(wall):.3f}); steps per CPU second base {cpu['base']} this "
              f"{cpu['this']} (best ratio {ratio(cpu):.3f})", flush=True)
    path = write(args.name or f"train_ab_{os.environ.get('JAX_PLATFORMS', 'cpu')}", {
        "benchmark": "bench_train.py's jitted loop in two source trees, interleaved per case "
                     "(each round: best of repeats; wall-clock and per CPU second of the process)",
        "base": str(trees["base"]), "rounds": args.rounds, "repeats": args.repeats,
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()], "results": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
