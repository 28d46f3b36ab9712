"""Training throughput of jppo's jitted loop: compile time, steps/s, and the rollout-only ceiling.

For CartPole, Pendulum and 3DBall (the shipped configs) it times, after compilation:
- training: ``Trainer.chunk`` over a fixed number of rollout+update iterations;
- rollout only: the same rollouts (policy + environment, no learning), the ceiling.

With ``--purejaxrl DIR`` (a checkout's ``purejaxrl/`` folder holding ppo.py and wrappers.py,
with gymnax 0.0.x importable) it also runs PureJaxRL's ppo.py on its own CartPole-v1 config in
the same process, interleaved with jppo on the same configuration, so both see the same
machine state. No PureJaxRL code is part of jppo; the path is yours.

    python benchmarks/bench_train.py [--repeats 3] [--purejaxrl ~/purejaxrl/purejaxrl]
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time
import types

import jax
import jax.numpy as jnp

import jppo
from jppo.jax_loop.setup import make_env
from jppo.jax_loop.rollout import make_collect
from jppo.runs.settings import load
from jppo.jax_loop.trainer import Trainer
from machine import write

ROOT = pathlib.Path(__file__).resolve().parent.parent
# PureJaxRL's ppo.py CartPole-v1 configuration, which configs/CartPole.yaml reproduces.
PUREJAXRL_CONFIG = {"LR": 2.5e-4, "NUM_STEPS": 128, "TOTAL_TIMESTEPS": 5e5, "UPDATE_EPOCHS": 4,
                    "NUM_MINIBATCHES": 4, "GAMMA": 0.99, "GAE_LAMBDA": 0.95, "CLIP_EPS": 0.2,
                    "ENT_COEF": 0.01, "VF_COEF": 0.5, "MAX_GRAD_NORM": 0.5, "ACTIVATION": "tanh",
                    "ENV_NAME": "CartPole-v1", "ANNEAL_LR": True, "DEBUG": False}


def best_of(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times), out


def jppo_programs(config_file: str, env_name: str, num_envs: int | None, updates: int | None):
    """Compiled training and rollout-only programs for a shipped config."""
    settings = load(ROOT / "configs" / config_file)
    num_envs = num_envs or settings.num_envs
    config = settings.ppo
    if num_envs != settings.num_envs:  # keep steps per env and minibatches per epoch fixed
        steps = config.buffer_size // settings.num_envs
        per_epoch = config.buffer_size // config.batch_size
        config = config.replace(buffer_size=steps * num_envs,
                                batch_size=steps * num_envs // per_epoch)
    env = make_env(env_name, {})
    trainer = Trainer(config, env, env.default_params, num_envs)
    n = updates or trainer.total_iterations
    states = trainer.init_seeds(30, 1)
    start = time.perf_counter()
    train = trainer.chunk(n).lower(states, jnp.int32(n)).compile()
    train_compile = time.perf_counter() - start
    policy = jppo.make_policy(config, trainer.action_spec)
    collect = make_collect(env, env.default_params, policy, trainer.num_steps, config.time_horizon)
    single = jax.tree_util.tree_map(lambda x: x[0], states)

    def rollouts(state):
        def body(runner, _):
            runner, rollout, _ = collect(state.train.params, state.train.normalizer, runner)
            return runner, rollout.rewards.sum()
        return jax.lax.scan(body, state.runner, None, length=n)

    start = time.perf_counter()
    rollout = jax.jit(rollouts).lower(single).compile()
    rollout_compile = time.perf_counter() - start
    return dict(train=lambda: train(states, jnp.int32(n)), rollout=lambda: rollout(single),
                train_compile=train_compile, rollout_compile=rollout_compile,
                steps=n * trainer.steps_per_update, updates=n, num_envs=num_envs, config=config)


def final_return(metrics, last: int = 20) -> float:
    episodes = metrics["episodes"][0, -last:].sum()
    return float(metrics["return_sum"][0, -last:].sum() / max(int(episodes), 1))


def load_purejaxrl(path: str):
    """PureJaxRL's make_train from a checkout; stubs the Brax/Navix imports CartPole never uses."""
    for name in ("brax", "brax.envs", "brax.envs.wrappers", "brax.envs.wrappers.training", "navix"):
        module = sys.modules.setdefault(name, types.ModuleType(name))
        for attr in ("envs", "EpisodeWrapper", "AutoResetWrapper"):
            setattr(module, attr, object)
    if not hasattr(jax, "tree_map"):  # gymnax 0.0.x calls the pre-0.6 name
        jax.tree_map = jax.tree.map
    sys.path.insert(0, str(pathlib.Path(path).expanduser()))
    from ppo import make_train  # noqa: E402  (PureJaxRL's module, from the user's checkout)

    return make_train


def bench_purejaxrl(make_train, num_envs: int, repeats: int, jppo_run, jppo_steps: int) -> dict:
    config = dict(PUREJAXRL_CONFIG, NUM_ENVS=num_envs)
    rng = jax.random.PRNGKey(30)
    start = time.perf_counter()
    program = jax.jit(make_train(config)).lower(rng).compile()
    compile_s = time.perf_counter() - start
    steps = int(config["TOTAL_TIMESTEPS"]) // (128 * num_envs) * 128 * num_envs
    best = {"purejaxrl": 1e9, "jppo": 1e9}
    for _ in range(repeats):  # interleaved, so both see the same machine state
        t, out = best_of(lambda: program(rng), 1)
        best["purejaxrl"] = min(best["purejaxrl"], t)
        t, _ = best_of(jppo_run, 1)
        best["jppo"] = min(best["jppo"], t)
    metrics = out["metrics"]
    done = metrics["returned_episode"][-20:]
    ret = float((metrics["returned_episode_returns"][-20:] * done).sum() / done.sum())
    return {"num_envs": num_envs, "compile_s": round(compile_s, 2),
            "steps_per_second": round(steps / best["purejaxrl"]),
            "jppo_steps_per_second_interleaved": round(jppo_steps / best["jppo"]),
            "ratio_jppo_over_purejaxrl": round(jppo_steps / best["jppo"] / (steps / best["purejaxrl"]), 3),
            "final_return": round(ret, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--purejaxrl", help="path to a PureJaxRL checkout's purejaxrl/ folder")
    parser.add_argument("--quick", action="store_true", help="a few updates each: a smoke test")
    parser.add_argument("--name", default=f"train_{jax.default_backend()}")
    args = parser.parse_args()
    cases = [("CartPole.yaml", "CartPole-v1", None), ("CartPole.yaml", "CartPole-v1", 64),
             ("Pendulum.yaml", "Pendulum-v1", None), ("3DBall.yaml", "3DBall", None)]
    make_train = load_purejaxrl(args.purejaxrl) if args.purejaxrl else None
    rows = []
    for config_file, env_name, envs in cases:
        updates = 4 if args.quick else (None if env_name == "CartPole-v1" else 40)
        p = jppo_programs(config_file, env_name, envs, updates)
        train_s, (_, metrics) = best_of(p["train"], args.repeats)
        rollout_s, _ = best_of(p["rollout"], args.repeats)
        row = {"env": env_name, "config": config_file, "num_envs": p["num_envs"],
               "updates": p["updates"], "steps": p["steps"],
               "compile_s": round(p["train_compile"], 2), "run_s": round(train_s, 3),
               "steps_per_second": round(p["steps"] / train_s),
               "rollout_only_steps_per_second": round(p["steps"] / rollout_s),
               "rollout_only_compile_s": round(p["rollout_compile"], 2),
               "training_over_rollout_only": round(rollout_s / train_s, 3),
               "final_return": round(final_return(metrics), 1)}
        if make_train is not None and env_name == "CartPole-v1":
            row["purejaxrl"] = bench_purejaxrl(make_train, p["num_envs"], args.repeats, p["train"], p["steps"])
        rows.append(row)
        print(row)
    path = write(args.name + ("-quick" if args.quick else ""), {
        "benchmark": "jppo training throughput: fully jitted rollout+update loop vs rollout only",
        "notes": "steps are agent decisions summed over envs; compile excluded from run times; "
                 "best of repeats; purejaxrl rows ran in the same process, interleaved with jppo",
        "results": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
