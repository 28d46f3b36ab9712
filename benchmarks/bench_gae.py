"""GAE over T = 1000 steps x 12 agents: jitted jppo.gae against two torch loops, µs per call.

- jppo: ``jax.jit(jppo.gae)``, a reverse ``lax.scan``; compiled apart (``.lower().compile()``),
  then timed with ``jax.block_until_ready``;
- torch reference: ``jppo.reference.torch_ppo.compute_gae``, seed 001's Python loop over time
  (a ``list.insert(0, ...)`` per step and a ``torch.stack`` at the end);
- torch loop: the fairer torch baseline: deltas and discounts computed vectorized over
  ``[T, 12]``, then one Python loop over time on tensors ``[12]`` writing into a preallocated
  output.

All three get the same float32 inputs (1% of steps are episode ends) and must agree to 1e-4.
Each repeat times enough calls to last about 0.2 s; the median over repeats is reported.

    python benchmarks/bench_gae.py [--repeats 7] [--torch-threads 1] [--device-label cpu]

writes results/gae_vs_torch_<label>.json.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import torch

import common
import jppo
from jppo.reference.torch_ppo import compute_gae

GAMMA, LAM = 0.99, 0.95


def torch_loop_gae(rewards, values, dones, last_value, gamma=GAMMA, lam=LAM):
    """GAE as one would write it in torch: vectorized deltas, a loop over time on ``[B]``."""
    masks = 1.0 - dones
    next_values = torch.cat([values[1:], last_value[None]])
    deltas = rewards + gamma * next_values * masks - values
    discounts = gamma * lam * masks
    advantages = torch.empty_like(rewards)
    gae = torch.zeros_like(last_value)
    for t in range(rewards.shape[0] - 1, -1, -1):
        gae = deltas[t] + discounts[t] * gae
        advantages[t] = gae
    return advantages, advantages + values


def inputs(steps: int, agents: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"rewards": rng.normal(size=(steps, agents)).astype(np.float32),
            "values": rng.normal(size=(steps, agents)).astype(np.float32),
            "dones": (rng.uniform(size=(steps, agents)) < 0.01).astype(np.float32),
            "last_value": rng.normal(size=agents).astype(np.float32)}


def main():
    args = common.parser(__doc__, repeats=7, threads="1").parse_args()
    steps, agents = (50, 12) if args.quick else (1000, 12)
    target = 0.01 if args.quick else 0.2
    data = inputs(steps, agents)
    j = {k: jnp.asarray(v) for k, v in data.items()}
    t = {k: torch.from_numpy(v) for k, v in data.items()}

    gae = jax.jit(functools.partial(jppo.gae, gamma=GAMMA, lam=LAM))
    compiled, compile_s = common.timed(
        lambda: gae.lower(j["rewards"], j["values"], j["dones"], j["last_value"]).compile())
    run_jax = lambda: jax.block_until_ready(
        compiled(j["rewards"], j["values"], j["dones"], j["last_value"]))
    run_ref = lambda: compute_gae(t["last_value"], t["rewards"], 1.0 - t["dones"], t["values"],
                                  GAMMA, LAM)
    run_loop = lambda: torch_loop_gae(t["rewards"], t["values"], t["dones"], t["last_value"])

    expected = np.asarray(run_jax()[0])
    errors = {name: float(np.max(np.abs(fn()[0].numpy() - expected)))
              for name, fn in (("reference", run_ref), ("loop", run_loop))}
    assert max(errors.values()) < 1e-4, f"torch GAE disagrees with jppo.gae: {errors}"

    jax_time = common.seconds(run_jax, args.repeats, common.calls_for(run_jax, target))
    rows, torch_times = [], {}
    for threads in common.thread_counts(args.torch_threads):
        torch.set_num_threads(threads)
        for variant, fn in (("reference compute_gae (seed loop)", run_ref),
                            ("torch loop over time on [12]", run_loop)):
            fn()  # warm-up
            timing = common.seconds(fn, args.repeats, common.calls_for(fn, target))
            torch_times[f"{variant}, {threads} threads"] = timing
            rows.append(common.row(f"T={steps} x {agents} agents", "µs per call",
                                   1e6 * jax_time["median_s"], 1e6 * timing["median_s"],
                                   f"{variant}, {common.thread_name(threads)}", threads,
                                   higher_is_better=False))
    common.write("gae_vs_torch", args, {
        "benchmark": "GAE, jitted jppo.gae against torch loops",
        "settings": {"steps": steps, "agents": agents, "gamma": GAMMA, "lambda": LAM,
                     "repeats": args.repeats},
        "jppo": {"compile_s": compile_s, **jax_time},
        "torch": torch_times,
        "max_abs_error_vs_jppo": errors,
    }, rows)


if __name__ == "__main__":
    main()
