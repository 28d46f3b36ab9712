"""Times jppo's jitted update on the 3DBall configuration, compile apart from run.

3DBall (ML-Agents config/ppo/3DBall.yaml): buffer 12000, batch 64, 3 epochs, 8 inputs,
2 continuous actions, 128 x 2 hidden units, normalize on: 561 Adam steps per update.

    python benchmarks/bench_update.py [--repeats 10] [--name update_cpu]
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

import jppo
from machine import write

CONFIG = jppo.PPOConfig(batch_size=64, buffer_size=12000, learning_rate=3e-4, beta=1e-3,
                        epsilon=0.2, lambd=0.99, num_epoch=3, normalize=True, hidden_units=128,
                        num_layers=2, gamma=0.99, time_horizon=1000, max_steps=500_000)
AGENTS = 12


def rollout(key, samples: int, obs_size: int = 8, actions: int = 2) -> jppo.Rollout:
    """Random experience shaped like 3DBall's: 12 agents x samples/12 decisions."""
    t = samples // AGENTS
    k = jax.random.split(key, 5)
    return jppo.Rollout(
        obs=jax.random.normal(k[0], (t, AGENTS, obs_size)),
        actions=jax.random.normal(k[1], (t, AGENTS, actions)),
        log_probs=jnp.full((t, AGENTS, actions), -1.42),
        values=jax.random.normal(k[2], (t, AGENTS)),
        rewards=jnp.full((t, AGENTS), 0.1),
        dones=(jax.random.uniform(k[3], (t, AGENTS)) < 0.005).astype(jnp.float32),
        last_value=jnp.zeros(AGENTS))


def time_update(config: jppo.PPOConfig, samples: int, repeats: int, obs_size=8, actions=2) -> dict:
    spec = jppo.ActionSpec.continuous(actions)
    state = jppo.init_train_state(jax.random.PRNGKey(0), config, obs_size, spec)
    data = rollout(jax.random.PRNGKey(1), samples, obs_size, actions)
    update = jppo.make_update(config, spec, config.total_adam_steps(samples))
    start = time.perf_counter()
    compiled = update.lower(state, data).compile()
    compile_s = time.perf_counter() - start
    state, _ = compiled(state, data)  # first call: allocation, not compilation
    jax.block_until_ready(state)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state, metrics = compiled(state, data)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - start)
    steps = config.adam_steps_per_update(samples)
    median = statistics.median(times)
    return {"samples": samples, "adam_steps": steps, "compile_s": round(compile_s, 3),
            "update_s_median": round(median, 5), "update_s_min": round(min(times), 5),
            "ms_per_minibatch": round(1000 * median / steps, 4), "repeats": repeats}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--name", default=f"update_{jax.default_backend()}")
    args = parser.parse_args()
    result = time_update(CONFIG, 12000, args.repeats)
    print(f"3DBall update: compile {result['compile_s']:.2f} s, run {result['update_s_median']*1000:.1f} ms "
          f"({result['ms_per_minibatch']:.3f} ms per minibatch of 64)")
    path = write(args.name, {"benchmark": "jppo update, 3DBall configuration",
                             "config": {"buffer_size": 12000, "batch_size": 64, "num_epoch": 3,
                                        "obs": 8, "actions": 2, "hidden": [128, 128]},
                             "result": result})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
