"""Learning results on gymnax environments jppo does not ship, through the public API.

Each environment is made by ``jppo.envs.make("gymnax:<id>")`` (gymnax as it is, through
``jppo.envs.GymnaxEnv``) and trained by ``jppo.make_train`` with ``num_seeds`` agents in one
compiled program, with gymnax-blines' PPO hyperparameters (configs/Acrobot.yaml,
configs/MountainCarContinuous.yaml). Curves are the mean return of the episodes that ended in
each summary period; each final policy is then scored on the same fresh episodes, stochastic
and deterministic. Writes results/learning_gymnax_<env>.json and .png, beside gymnax's published
PPO returns (gymnax's README, "Ckpt (Return)": Acrobot-v1 -80, MountainCarContinuous-v0 92,
from gymnax-blines' agents).

    python benchmarks/learning_gymnax.py                   # both, 5 seeds (pip install gymnax)
    python benchmarks/learning_gymnax.py --only Acrobot-v1 --seeds 2
"""
from __future__ import annotations

import os

# XLA:CPU (jax 0.10.2) deadlocks on this program for Acrobot-v1 with 5 seeds (every thread
# waiting, no CPU used) unless its concurrency-optimized scheduler is off; 2 seeds, or the state
# initialised outside the program (as python -m jppo.train does), run either way. Set before JAX
# starts.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_cpu_enable_concurrency_optimized_scheduler=false").strip()

import argparse  # noqa: E402
import importlib.metadata  # noqa: E402
import pathlib  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

import jppo  # noqa: E402
from jppo.jax_loop.evaluate import episode_returns  # noqa: E402
from jppo.jax_loop.make_train import make_trainer  # noqa: E402
from jppo.runs.settings import load  # noqa: E402
from learning_results import plot  # noqa: E402
from machine import RESULTS, write  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
# env -> (config, published PPO return, where it is published, longest episode)
RUNS = {
    "Acrobot-v1": ("Acrobot.yaml", -80.0, 500),
    "MountainCarContinuous-v0": ("MountainCarContinuous.yaml", 92.0, 999),
}
SOURCE = ("gymnax README (gymnax 1.0.1 on PyPI), table 'Implemented Accelerated Environments', "
          "column 'Ckpt (Return)': PPO and ES checkpoints of gymnax-blines "
          "(github.com/RobertTLange/gymnax-blines, agents/<env>/ppo.yaml)")
EPISODES = 100


def run(env_id: str, seeds: int, seed: int) -> dict:
    config_file, published, longest = RUNS[env_id]
    settings = load(ROOT / "configs" / config_file)
    env = jppo.envs.make(f"gymnax:{env_id}")
    trainer = make_trainer(settings.ppo, env, num_envs=settings.num_envs)
    train = jppo.make_train(settings.ppo, env, num_envs=settings.num_envs, num_seeds=seeds)
    key = jax.random.PRNGKey(seed)
    start = time.perf_counter()
    program = jax.jit(train).lower(key).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    state, metrics = jax.block_until_ready(program(key))
    train_s = time.perf_counter() - start
    metrics = jax.device_get(metrics)
    per = max(1, settings.summary_freq // trainer.steps_per_update)
    periods = trainer.total_iterations // per
    cut = lambda x: np.asarray(x)[:, : periods * per].reshape(seeds, periods, per).sum(-1)
    r, e = cut(metrics["return_sum"]), cut(metrics["episodes"])
    means = np.where(e > 0, r / np.maximum(e, 1), np.nan)
    steps = (np.arange(1, periods + 1) * per * trainer.steps_per_update).tolist()
    policy = jppo.make_policy(settings.ppo, trainer.action_spec)
    scores = {False: [], True: []}
    for i in range(seeds):
        agent = jax.tree_util.tree_map(lambda x: x[i], state.train)
        for deterministic in scores:
            returns, _ = episode_returns(env, env.default_params, policy, agent.params,
                                         agent.normalizer, jax.random.PRNGKey(10_000), EPISODES,
                                         longest, deterministic=deterministic)
            scores[deterministic].append(float(np.mean(returns)))
    return {
        "env": f"gymnax:{env_id}", "config": f"configs/{config_file}",
        "seeds": list(range(seeds)), "key": seed, "max_steps": settings.ppo.max_steps,
        "steps_trained": trainer.total_iterations * trainer.steps_per_update,
        "published_ppo_return": published, "published_source": SOURCE,
        "compile_s": round(compile_s, 2), "train_s": round(train_s, 2),
        "steps_per_second_all_seeds": round(seeds * trainer.total_iterations
                                            * trainer.steps_per_update / train_s),
        "final_score_per_seed": [round(s, 2) for s in scores[False]],
        "final_score_mean": round(float(np.mean(scores[False])), 2),
        "final_score_deterministic_per_seed": [round(s, 2) for s in scores[True]],
        "final_score_deterministic_mean": round(float(np.mean(scores[True])), 2),
        "scoring": f"mean return of the same {EPISODES} fresh episodes for every seed",
        "last_summary_mean_per_seed": [round(float(row[~np.isnan(row)][-1]), 2)
                                       if np.any(~np.isnan(row)) else None for row in means],
        "curve_steps": steps,
        "curve_mean_return": [[None if np.isnan(v) else round(float(v), 2) for v in row]
                              for row in means],
        "gymnax": importlib.metadata.version("gymnax"),
    }


def plot_result(result: dict, path: pathlib.Path) -> None:
    plot(result, path, result["published_ppo_return"],
         f"gymnax-blines PPO {result['published_ppo_return']:g}",
         f"jppo on {result['env']} ({result['config']}): final {result['final_score_mean']:g} "
         f"stochastic, {result['final_score_deterministic_mean']:g} deterministic")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=list(RUNS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="the key the seeds are split from")
    args = parser.parse_args()
    for env_id in RUNS:
        if args.only and env_id != args.only:
            continue
        result = run(env_id, args.seeds, args.seed)
        slug = env_id.split("-")[0].lower()
        plot_result(result, RESULTS / f"learning_gymnax_{slug}.png")
        path = write(f"learning_gymnax_{slug}", {
            "benchmark": "learning on a gymnax environment through jppo.make_train",
            "result": result})
        print(f"{env_id}: final {result['final_score_per_seed']} (stochastic), "
              f"{result['final_score_deterministic_per_seed']} (deterministic); published PPO "
              f"{result['published_ppo_return']}; {result['train_s']:.0f} s; wrote {path}")


if __name__ == "__main__":
    main()
