"""End-to-end PPO training throughput: jppo's jitted loop against a CleanRL-style torch loop.

Both train the same environment with the same hyperparameters and the same initial weights:

- ``CartPole``: configs/CartPole.yaml (4 envs x 128 steps = 512 steps per update, 4 epochs of
  4 minibatches, 64 x 64 Tanh (the cleanrl preset), lr 2.5e-4 ...); ``--cartpole-updates`` (50) updates,
  25,600 steps. Goal (a benchmark figure, not a test): jppo at least 50 x the torch loop's
  steps per second.
- ``3DBall``: configs/3DBall.yaml (the JAX port, 12 envs x 1000 steps = 12,000 steps per update,
  3 epochs of batch 64, 128 x 2 Swish, normalize on); ``--ball-updates`` (5) updates, 60,000 steps.

A fixed number of updates, not a full training run: throughput, not learning, is measured
(the mean episode return at the end is recorded as a sanity check only).

jppo: ``Trainer.chunk(updates)`` (rollout by ``lax.scan`` over steps, update, all in one
program) compiled apart with ``.lower().compile()``, warmed up with one active update, then
timed ``max(--repeats, 10)`` times from the same initial state, each ended by
``jax.block_until_ready``.

torch: ``torch_cleanrl_loop.TorchPPOLoop``, eager PyTorch with a Python loop over steps and
minibatches. It steps the SAME JAX environment from the host, one jitted, vmapped
``auto_reset_step`` per step over all envs (numpy in, numpy out), so the environment dynamics
cost the same as inside jppo's scan; what the host adds per step (one dispatch, one transfer)
is measured and reported as ``env_step_share`` of the torch loop's time. The env's jit is
compiled once, apart. Per thread count in ``--torch-threads``: one warm-up update, then
``--repeats`` fresh loops of the same number of updates.

    python benchmarks/bench_e2e_vs_torch.py [--repeats 3] [--torch-threads 1,default]

writes results/e2e_vs_torch_<label>.json.
"""
from __future__ import annotations

import dataclasses
import pathlib
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import torch

import common
from jppo import envs as jenvs
from jppo.runs.settings import load
from jppo.jax_loop.trainer import Trainer
from torch_cleanrl_loop import HostEnvs, TorchPPOLoop

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"
SEED = 0


def cases(args) -> list[dict]:
    cart, ball = load(CONFIGS / "CartPole.yaml"), load(CONFIGS / "3DBall.yaml")
    if args.quick:
        return [dict(name="CartPole (quick)", settings=cart, updates=2, goal=None),
                dict(name="3DBall (quick: 240 steps, 1 epoch)", updates=1, goal=None,
                     settings=dataclasses.replace(ball, ppo=ball.ppo.replace(buffer_size=240,
                                                                             num_epoch=1)))]
    return [dict(name=f"CartPole, {args.cartpole_updates} updates", settings=cart,
                 updates=args.cartpole_updates, goal=50.0),
            dict(name=f"3DBall, {args.ball_updates} updates", settings=ball,
                 updates=args.ball_updates, goal=None)]


def mean_return(returns_sum, episodes) -> float:
    return float(np.sum(returns_sum) / max(np.sum(episodes), 1))


def bench_jppo(trainer: Trainer, states, updates: int, repeats: int) -> dict:
    chunk = trainer.chunk(updates)
    compiled, compile_s = common.timed(lambda: chunk.lower(states, jnp.int32(updates)).compile())
    _, warmup_s = common.timed(lambda: jax.block_until_ready(compiled(states, jnp.int32(1))))
    out = []

    def run():
        out[:] = [jax.block_until_ready(compiled(states, jnp.int32(updates)))]

    # A jppo run takes well under a second, so a short burst of load on a shared machine moves
    # a median of 3 a lot; ten cost little and steady it.
    timing = common.seconds(run, max(repeats, 10))
    metrics = out[0][1]
    last = slice(-max(1, updates // 5), None)  # the last fifth of the updates
    steps = updates * trainer.steps_per_update
    return {"compile_s": compile_s, "warmup_one_update_s": warmup_s, **timing, "steps": steps,
            "steps_per_s": steps / timing["median_s"],
            "mean_return_last_updates": mean_return(metrics["return_sum"][0, last],
                                                    metrics["episodes"][0, last])}


def host_envs(settings, env) -> tuple[HostEnvs, float]:
    """The torch loop's environments, their jit compiled (one reset, one step) and timed."""
    envs = HostEnvs(env, env.default_params, settings.num_envs, SEED)
    actions = jax.vmap(envs.space.sample)(jax.random.split(jax.random.PRNGKey(0), envs.num_envs))
    _, compile_s = common.timed(lambda: (envs.reset(), envs.step(np.asarray(actions))))
    return envs, compile_s


def bench_torch(settings, envs: HostEnvs, obs_size: int, params, updates: int, repeats: int,
                threads: int) -> dict:
    torch.set_num_threads(threads)
    new_loop = lambda: TorchPPOLoop(settings.ppo, envs, obs_size, SEED, params=params)
    _, warmup_s = common.timed(lambda: new_loop().run(1))
    runs = [new_loop() for _ in range(repeats)]
    results = [loop.run(updates) for loop in runs]
    median = lambda key: statistics.median(r[key] for r in results)
    returns = runs[-1].returns[-20:]
    return {"threads": threads, "warmup_one_update_s": warmup_s,
            "median_s": median("seconds"), "min_s": min(r["seconds"] for r in results),
            "repeats": repeats, "steps": results[0]["steps"],
            "steps_per_s": results[0]["steps"] / median("seconds"),
            "collect_s": median("collect_s"), "update_s": median("update_s"),
            "env_step_s": median("env_step_s"),
            "env_step_share": statistics.median(r["env_step_s"] / r["seconds"] for r in results),
            "mean_return_last_20_episodes": float(np.mean(returns)) if returns else None}


def main():
    p = common.parser(__doc__, repeats=3, threads="1,default")
    p.add_argument("--cartpole-updates", type=int, default=50)
    p.add_argument("--ball-updates", type=int, default=5)
    args = p.parse_args()
    repeats = 1 if args.quick else args.repeats
    results, rows = {}, []
    for case in cases(args):
        print(f"{case['name']} ...", flush=True)
        settings = case["settings"]
        env = jenvs.make(settings.env)
        trainer = Trainer(settings.ppo, env, env.default_params, settings.num_envs)
        states = trainer.init_seeds(SEED, 1)
        jppo_result = bench_jppo(trainer, states, case["updates"], repeats)
        params = jax.tree_util.tree_map(lambda x: x[0], states.train.params)
        envs, env_compile_s = host_envs(settings, env)
        obs_size = env.observation_space(env.default_params).shape[0]
        torch_results = {"env_compile_s": env_compile_s}
        for threads in common.thread_counts(args.torch_threads):
            t = bench_torch(settings, envs, obs_size, params, case["updates"], repeats, threads)
            torch_results[f"{threads} threads"] = t
            rows.append(common.row(case["name"], "steps/s", jppo_result["steps_per_s"],
                                   t["steps_per_s"],
                                   f"CleanRL-style loop, {common.thread_name(threads)}", threads,
                                   higher_is_better=True, goal=case["goal"],
                                   torch_env_step_share=t["env_step_share"]))
        results[case["name"]] = {
            "env": settings.env, "num_envs": settings.num_envs, "updates": case["updates"],
            "steps_per_update": trainer.steps_per_update,
            "adam_steps_per_update": settings.ppo.adam_steps_per_update(trainer.steps_per_update),
            "jppo": jppo_result, "torch": torch_results}
    common.write("e2e_vs_torch", args, {
        "benchmark": "end-to-end training steps/s: jppo's jitted loop against a CleanRL-style "
                     "torch loop stepping the same JAX environment from the host",
        "settings": {"repeats": repeats, "torch_threads": args.torch_threads, "seed": SEED},
        "cases": results}, rows)


if __name__ == "__main__":
    main()
