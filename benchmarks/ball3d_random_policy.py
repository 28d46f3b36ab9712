"""How long a random policy keeps the ball on jppo's 3DBall, to compare with Unity.

Measures decisions until the ball falls over many episodes (fixed seed) for two policies:

- ``uniform``: actions ~ U(-1, 1)^2 every decision;
- ``mlagents_initial``: what an untrained ML-Agents PPO policy sends, clamp(N(0, 1), -3, 3) / 3
  (mean head ~0 at initialisation, log-std 0). Its mean episode reward, 0.1 (N - 1) - 1, compares
  with the first summary line of ``mlagents-learn config/ppo/3DBall.yaml`` runs that users have
  published (Mean Reward 1.14-1.22, Std 0.67-0.73 at step 12000, before the first update;
  ML-Agents versions of 2020-2025, the Unity build not ours to rerun).

    python benchmarks/ball3d_random_policy.py [--episodes 1000] [--seed 0]

writes benchmarks/results/ball3d_random_policy.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jppo.envs.ball3d import Ball3D

POLICIES = {
    "uniform": lambda key, n: jax.random.uniform(key, (n, 2), minval=-1.0, maxval=1.0),
    "mlagents_initial": lambda key, n: jnp.clip(jax.random.normal(key, (n, 2)), -3.0, 3.0) / 3.0,
}


def decisions_until_fall(policy, episodes: int, seed: int, max_decisions: int = 1000):
    """int32 [episodes] decisions per episode and bool [episodes] whether it ended in a fall."""
    env = Ball3D()

    @jax.jit
    def run(key):
        k_reset, k_act = jax.random.split(key)
        _, state = jax.vmap(env.reset)(jax.random.split(k_reset, episodes))
        step = jax.vmap(env.step, in_axes=(None, 0, 0))

        def body(carry):
            s, done, fell, n, k = carry
            k, k_now = jax.random.split(k)
            _, s_next, _, te, tr, _ = step(k_now, s, policy(k_now, episodes))
            keep = lambda a, b: jnp.where(done.reshape((-1,) + (1,) * (a.ndim - 1)), b, a)
            s = jax.tree_util.tree_map(keep, s_next, s)
            return s, done | te | tr, fell | (te & ~done), n + (~done).astype(jnp.int32), k

        no = jnp.zeros(episodes, bool)
        carry = (state, no, no, jnp.zeros(episodes, jnp.int32), k_act)
        carry = jax.lax.while_loop(lambda c: ~c[1].all() & (c[3].max() < max_decisions), body, carry)
        return carry[3], carry[2]

    n, fell = run(jax.random.PRNGKey(seed))
    return np.asarray(n), np.asarray(fell)


def summary(n: np.ndarray, fell: np.ndarray) -> dict:
    reward = 0.1 * (n - 1) - 1.0  # +0.1 per surviving decision, -1 for the falling one
    return {
        "decisions_mean": float(n.mean()),
        "decisions_median": float(np.median(n)),
        "decisions_std": float(n.std()),
        "decisions_min": int(n.min()),
        "decisions_max": int(n.max()),
        "decisions_p10_p90": [float(np.percentile(n, 10)), float(np.percentile(n, 90))],
        "decisions_mean_standard_error": float(n.std() / np.sqrt(len(n))),
        "physics_steps_mean": float(5 * n.mean()),
        "episode_reward_mean": float(reward.mean()),
        "episode_reward_std": float(reward.std()),
        "fraction_fell": float(fell.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "ball3d_random_policy.json")
    args = parser.parse_args()

    results, started = {}, time.perf_counter()
    for name, policy in POLICIES.items():
        results[name] = summary(*decisions_until_fall(policy, args.episodes, args.seed))
    report = {
        "environment": "jppo 3DBall (jppo.envs.ball3d.Ball3D, default params)",
        "measure": "decisions (5 physics steps each) until the ball falls, one episode from each reset",
        "episodes": args.episodes,
        "seed": args.seed,
        "policies": results,
        "unity_reference": {
            "source": ("users' published mlagents-learn 3DBall logs (ML-Agents 2020-2025), first summary "
                       "line: step 12000, untrained policy. In Unity an episode after a fall runs 1-5 "
                       "zero-action physics steps before its first decision, so its ball lands about "
                       "0.6 decisions sooner than here"),
            "episode_reward_mean_range": [1.14, 1.22],
            "episode_reward_std_range": [0.67, 0.73],
            "implied_decisions_mean_range": [22.4, 23.2],
        },
        "wall_seconds": round(time.perf_counter() - started, 2),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "jax": jax.__version__,
            "jax_devices": [str(d) for d in jax.devices()],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["policies"], indent=2))


if __name__ == "__main__":
    main()
