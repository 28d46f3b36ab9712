"""VisualGridWorld's rollout speed: env steps per second of a jitted rollout (``lax.scan`` over
steps of ``vmap``-ed ``auto_reset_step``, random allowed actions, the observation carried from
step to step so every image is rendered) at 1, 64 and 256 areas, for the vector GridWorld, the
visual one at ML-Agents' camera resolution (84 x 64 x 3) and at 84 x 84 x 3; and the camera
render alone (µs per image, ``vmap``-ed). No policy: this is the environment's cost.

Each case compiles once (``.lower().compile()``), then each repeat times enough calls to last
about 0.5 s; the median over repeats is reported. An auto-reset step renders twice (the step's
image and the reset's, selected where the episode ended), as ``jppo.jax_loop`` steps do.

    python benchmarks/bench_visual_gridworld.py [--repeats 5] [--quick]

writes results/visual_gridworld_<backend>.json.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp

import machine
from jppo.envs.base import auto_reset_step
from jppo.envs.gridworld import GridWorld
from jppo.envs.visual_gridworld import VisualGridWorld

STEPS = 32  # steps per rollout call


def rollout(env, n: int):
    """A jitted ``key -> (states, obs)`` of STEPS steps of n areas."""
    def run(key):
        obs, states = jax.vmap(env.reset)(jax.random.split(key, n))

        def body(carry, k):
            states, _ = carry
            k_act, k_step = jax.random.split(k)
            masks = jax.vmap(env.action_mask)(states)
            actions = jax.random.categorical(k_act, jnp.where(masks, 0.0, -jnp.inf))
            out = jax.vmap(lambda kk, s, a: auto_reset_step(env, kk, s, a))(
                jax.random.split(k_step, n), states, actions)
            return (out.state, out.obs), None
        return jax.lax.scan(body, (states, obs), jax.random.split(key, STEPS))[0]
    return jax.jit(run).lower(jax.random.PRNGKey(0)).compile()


def timed(fn, arg, repeats: int, target: float) -> float:
    """Median seconds per call."""
    jax.block_until_ready(fn(arg))
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < target / 5 or calls < 2:
        jax.block_until_ready(fn(arg))
        calls += 1
    per = (time.perf_counter() - start) / calls
    batch = max(1, int(target / per))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batch):
            jax.block_until_ready(fn(arg))
        times.append((time.perf_counter() - start) / batch)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="1 repeat, short; not meaningful")
    args = p.parse_args()
    repeats, target = (1, 0.05) if args.quick else (args.repeats, 0.5)
    cases = {"GridWorld (vector)": GridWorld(),
             "VisualGridWorld 84x64x3 (ML-Agents')": VisualGridWorld(),
             "VisualGridWorld 84x84x3": VisualGridWorld(width=84, height=84)}
    rows, load_before = [], os.getloadavg()
    for name, env in cases.items():
        for n in (1, 64, 256):
            seconds = timed(rollout(env, n), jax.random.PRNGKey(1), repeats, target)
            row = {"case": name, "areas": n, "steps_per_s": n * STEPS / seconds,
                   "us_per_step": seconds / (n * STEPS) * 1e6}
            if isinstance(env, VisualGridWorld):
                _, states = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(2), n))
                render = jax.jit(jax.vmap(env.render_camera)).lower(states).compile()
                row["render_us_per_image"] = timed(render, states, repeats, target) / n * 1e6
            rows.append(row)
            print(f"{name:40s} {n:4d} areas: {row['steps_per_s']:>11,.0f} steps/s "
                  f"({row['us_per_step']:.2f} µs/step)"
                  + (f", render {row['render_us_per_image']:.2f} µs/image"
                     if "render_us_per_image" in row else ""))
    # Other processes share the cores: the load averages say how much of them this run had.
    path = machine.write(f"visual_gridworld_{jax.default_backend()}",
                         {"steps_per_rollout": STEPS, "repeats": repeats, "rows": rows,
                          "load_average_before": load_before, "load_average_after": os.getloadavg()})
    print(path)


if __name__ == "__main__":
    main()
