"""Training throughput of two source trees side by side: ``bench_train.py`` run alternately in a
base tree (for example a checkout of main) and in this one, the same machine state for both.

    cd benchmarks && python bench_ab.py --base /tmp/main-base [--rounds 2] [--repeats 3]

Each round runs ``bench_train.py`` once per tree (in that tree, with that tree's ``jppo`` first
on the path); per case the best steps/s over the rounds is kept, and the ratio this tree / base
is written to results/train_ab_<backend>.json with the machine described. Use it to check that
a change costs the jitted loop nothing beyond noise.
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


def run_tree(tree: pathlib.Path, repeats: int, tag: str) -> list[dict]:
    """One ``bench_train.py`` run inside ``tree``; its result rows."""
    name = f"ab-{tag}"
    env = {**os.environ, "PYTHONPATH": str(tree), "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    subprocess.run([sys.executable, "bench_train.py", "--repeats", str(repeats), "--name", name],
                   cwd=tree / "benchmarks", env=env, check=True, stdout=subprocess.DEVNULL)
    out = next((tree / "benchmarks" / "results").glob(f"{name}.json"))
    rows = json.loads(out.read_text())["results"]
    out.unlink()  # a scratch file of this script
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the other source tree (repository root)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    trees = {"base": pathlib.Path(args.base).resolve(), "this": HERE}
    best: dict = {}
    for r in range(args.rounds):
        for tag, tree in trees.items():
            for row in run_tree(tree, args.repeats, f"{tag}-{r}"):
                key = (row["env"], row["num_envs"])
                entry = best.setdefault(key, {"env": row["env"], "num_envs": row["num_envs"],
                                              "steps": row["steps"]})
                entry.setdefault(tag, []).append(row["steps_per_second"])
    rows = []
    for entry in best.values():
        base, this = max(entry["base"]), max(entry["this"])
        rows.append({**entry, "base_best_steps_per_second": base,
                     "this_best_steps_per_second": this, "ratio_this_over_base": round(this / base, 3)})
        print(f"{entry['env']} x{entry['num_envs']}: base {base} steps/s, this {this} steps/s, "
              f"ratio {this / base:.3f}")
    path = write(f"train_ab_{os.environ.get('JAX_PLATFORMS', 'cpu')}", {
        "benchmark": "bench_train.py alternately in two source trees (best steps/s per case)",
        "base": str(trees["base"]), "rounds": args.rounds, "repeats": args.repeats,
        "results": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
