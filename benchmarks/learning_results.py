"""Full-length learning results of the shipped configs, many seeds in one compiled program.

For each environment: train N seeds (vmapped) for the config's max_steps, record the mean
episode return per summary period for every seed, then score each final policy on fresh
episodes (stochastic, as ML-Agents reports rewards). Writes, per environment,
results/learning_<env>.json and a curve PNG.

    python benchmarks/learning_results.py          # CartPole x10, Pendulum x5, 3DBall x5, ...
    python benchmarks/learning_results.py --only 3DBall --seeds 5

Goals: Basic, the C# example's best return (0.93: seven steps right, 7 x -0.01 + 1) within 2%;
GridWorld, 0.9 of the best mean reward (the expected optimum over the starts the scene draws,
``jppo.envs.gridworld.expected_optimal_return``: 0.976).
"""
from __future__ import annotations

import argparse
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

import jppo
from jppo.envs.basic import BEST_RETURN
from jppo.envs.gridworld import expected_optimal_return
from jppo.jax_loop.evaluate import episode_returns
from jppo.jax_loop.schedule import Schedule
from jppo.jax_loop.setup import check_sampled, make_env
from jppo.runs import environment_parameters
from jppo.runs.settings import load
from jppo.jax_loop.trainer import Trainer
from machine import RESULTS, write

ROOT = pathlib.Path(__file__).resolve().parent.parent
# env -> (config, seeds, goal, episodes to score, longest episode)
RUNS = {
    "CartPole-v1": ("CartPole.yaml", 10, 475.0, 100, 500),
    "Pendulum-v1": ("Pendulum.yaml", 5, -150.0, 1000, 200),  # returns spread 0..-400 by start
    "3DBall": ("3DBall.yaml", 5, 95.0, 48, 1000),
    # mass and scale drawn per episode (ML-Agents' 3DBall_randomize.yaml); scored at the
    # defaults (mass 1, scale 1) and at the far end of the ranges (mass 10, scale 3).
    "3DBall_randomize": ("3DBall_randomize.yaml", 5, 95.0, 48, 1000),
    "Basic": ("Basic.yaml", 5, round(0.98 * BEST_RETURN, 4), 100, 100),
    "GridWorld": ("GridWorld.yaml", 5, round(0.9 * expected_optimal_return(5), 4), 1000, 100),
}


def curves(metrics, steps_per_update: int, summary_updates: int):
    """Per seed, (step, mean return of the episodes that ended in each summary period)."""
    ret = np.asarray(metrics["return_sum"])
    eps = np.asarray(metrics["episodes"])
    seeds, updates = ret.shape
    periods = updates // summary_updates
    cut = lambda x: x[:, : periods * summary_updates].reshape(seeds, periods, summary_updates).sum(-1)
    r, e = cut(ret), cut(eps)
    steps = (np.arange(1, periods + 1) * summary_updates * steps_per_update).tolist()
    means = np.where(e > 0, r / np.maximum(e, 1), np.nan)
    return steps, means


# A run whose name is not its environment's.
ENV_OF = {"3DBall_randomize": "3DBall"}


def sampling(settings, env_name: str, env, seed: int) -> dict:
    """The Trainer's arguments for the config's sampled environment parameters (none: {})."""
    plan = environment_parameters.plan(settings.environment_parameters, seed)
    if not plan:
        return {}
    floors = check_sampled(env_name, env, {p.name: [(l.value.kind, l.value.numbers)
                                                     for l in p.lessons] for p in plan})
    schedule = Schedule([environment_parameters.Curriculum(plan)], tuple(p.name for p in plan),
                        floors)
    return {"sampled": schedule.sampled, "table": schedule.table(schedule.curricula[0])}


def run(name: str, seeds: int, seed: int):
    config_file, _, goal, episodes, longest = RUNS[name]
    env_name = ENV_OF.get(name, name)
    settings = load(ROOT / "configs" / config_file)
    env = make_env(env_name, {})
    trainer = Trainer(settings.ppo, env, env.default_params, settings.num_envs,
                      **sampling(settings, env_name, env, seed))
    states = trainer.init_seeds(seed, seeds)
    n = trainer.total_iterations
    start = time.perf_counter()
    program = trainer.chunk(n).lower(states, jnp.int32(n)).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    states, metrics = jax.block_until_ready(program(states, jnp.int32(n)))
    train_s = time.perf_counter() - start
    summary_updates = max(1, settings.summary_freq // trainer.steps_per_update)
    steps, means = curves(jax.device_get(metrics), trainer.steps_per_update, summary_updates)
    policy = jppo.make_policy(settings.ppo, trainer.action_spec)
    scores, greedy, far = [], [], []
    far_params = env.default_params._replace(mass=10.0, scale=3.0) if trainer.sampled else None
    for i in range(seeds):
        train = jax.tree_util.tree_map(lambda x: x[i], states.train)
        # Every seed faces the same start states, so scores differ by policy, not by luck.
        for out, deterministic, params in ((scores, False, env.default_params),
                                           (greedy, True, env.default_params),
                                           (far, False, far_params)):
            if params is None:
                continue
            returns, _ = episode_returns(env, params, policy, train.params,
                                         train.normalizer, jax.random.PRNGKey(10_000), episodes,
                                         longest, deterministic=deterministic)
            out.append(float(np.mean(returns)))
    first = [next((s for s, v in zip(steps, row) if v >= goal), None) for row in means]
    extra = {}
    if far:
        extra = {"environment_parameters": settings.environment_parameters,
                 "final_score_far_end_per_seed": [round(s, 2) for s in far],
                 "far_end": "mass 10, scale 3 (the ranges' far end), stochastic policy"}
    return {
        **extra, "env": env_name, "run": name, "config": f"configs/{config_file}",
        "seeds": list(range(seed, seed + seeds)),
        "max_steps": settings.ppo.max_steps, "steps_trained": n * trainer.steps_per_update,
        "goal": goal, "compile_s": round(compile_s, 2), "train_s": round(train_s, 2),
        "steps_per_second_all_seeds": round(seeds * n * trainer.steps_per_update / train_s),
        "final_score_per_seed": [round(s, 2) for s in scores],
        "final_score_mean": round(float(np.mean(scores)), 2),
        "seeds_meeting_goal": int(sum(s >= goal for s in scores)),
        # The goal is judged on the stochastic policy (what training reports); the mean action,
        # which Unity's deterministic output and most evaluations use, for comparison.
        "final_score_deterministic_per_seed": [round(s, 2) for s in greedy],
        "seeds_meeting_goal_deterministic": int(sum(s >= goal for s in greedy)),
        "first_step_summary_reaches_goal": first,
        "last_summary_mean_per_seed": [round(float(r[~np.isnan(r)][-1]), 2) for r in means],
        "scoring": f"mean return of the same {episodes} fresh episodes (start states) for every "
                   "seed, stochastic policy",
        "curve_steps": steps, "curve_mean_return": [[None if np.isnan(v) else round(float(v), 2)
                                                     for v in row] for row in means],
    }


def plot(result: dict, path: pathlib.Path, line: float | None = None, line_label: str = "",
         title: str = ""):
    """Every seed's curve, a horizontal line (default: the goal) and a title (default: seeds
    meeting the goal)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    steps = result["curve_steps"]
    for seed, row in zip(result["seeds"], result["curve_mean_return"]):
        ax.plot(steps, [np.nan if v is None else v for v in row], lw=1, alpha=0.8, label=f"seed {seed}")
    line = result["goal"] if line is None else line
    ax.axhline(line, color="k", ls="--", lw=1, label=line_label or f"goal {line:g}")
    ax.set_xlabel("steps (agent decisions)")
    ax.set_ylabel("mean episode return")
    ax.set_title(title or f"jppo on {result['env']} ({result['config']}): "
                 f"{result['seeds_meeting_goal']}/{len(result['seeds'])} seeds meet the goal",
                 fontsize=8 if title else None)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=list(RUNS), help="one environment")
    parser.add_argument("--seeds", type=int, help="override the number of seeds")
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    args = parser.parse_args()
    for env_name, (_, seeds, *_rest) in RUNS.items():
        if args.only and env_name != args.only:
            continue
        result = run(env_name, args.seeds or seeds, args.seed)
        slug = env_name.split("-")[0].lower()
        plot(result, RESULTS / f"learning_{slug}.png")
        path = write(f"learning_{slug}", {"benchmark": "full-length learning with the shipped config",
                                          "result": result})
        print(f"{env_name}: {result['seeds_meeting_goal']}/{len(result['seeds'])} seeds >= "
              f"{result['goal']:g}; final scores {result['final_score_per_seed']}; "
              f"{result['train_s']:.0f} s for all seeds; wrote {path}")


if __name__ == "__main__":
    main()
