"""A roofline for one PPO Adam step: what XLA says it costs, what this machine can do, how far off we are.

For CartPole (configs/CartPole.yaml, PureJaxRL's configuration: minibatch 128, 64 x 64 tanh) and
3DBall (configs/3DBall.yaml, ML-Agents': minibatch 64, 128 x 128 Swish, normalize on):

1. **Cost.** The update is compiled on exactly one minibatch for one epoch
   (``make_train_on_batch``), so ``compiled.cost_analysis()`` reports one Adam step's FLOPs and
   bytes accessed (with that minibatch's gather and one permutation, which the real update also
   pays once per epoch). The optimized HLO's dots are listed with their M, K, N.
2. **This machine's peak for those dots.** Each dot shape is timed alone inside a
   ``lax.fori_loop`` (a chain ``X <- X + 1e-9 * mean(X @ W)``, so nothing is hoisted out of the
   loop; the mean and the add are part of the price of a dot that small), giving GFLOP/s per
   shape; a large square dot gives the core's dot peak; a 1 MB array streamed in a loop gives
   the bandwidth at the step's working-set size (parameters, Adam moments and a minibatch: under a MB).
3. **Floors.** ``dot floor`` = sum over the step's dots of FLOPs / that shape's measured rate;
   ``flop floor`` = all FLOPs at the large-dot peak; ``memory floor`` = bytes / bandwidth. The
   step's floor is the larger of the dot floor and the memory floor.
4. **Measured.** The real update (the config's whole buffer, every epoch) timed after
   compilation, divided by its Adam steps; the ratio measured / floor is the headroom left.

    python benchmarks/roofline.py [--repeats 7] [--quick] [--device-label h200]

writes results/roofline_<label>.json. ``--quick``: small buffers and few repeats, a smoke run
(numbers not meaningful). Run it on an otherwise idle machine: the ratios move with load.
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
import math
import statistics
import time

import jax
import jax.extend
import jax.numpy as jnp

import jppo
from jppo.core.update import make_train_on_batch, prepare_batch
from jppo.jax_loop.setup import make_env
from jppo.jax_loop.trainer import Trainer
from jppo.runs.settings import load
from machine import write

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = {"CartPole": ROOT / "configs" / "CartPole.yaml", "3DBall": ROOT / "configs" / "3DBall.yaml"}
# Samples per update as the configs collect them (4 envs x 128; 12 agents x 1000).
UNROLL = 10
SAMPLES = {"CartPole": 512, "3DBall": 12000}
def _jaxprs(value):
    """The jaxprs held in an equation parameter (scan/pjit bodies, custom rules, cond branches)."""
    if isinstance(value, jax.extend.core.ClosedJaxpr):
        return [value.jaxpr]
    if isinstance(value, jax.extend.core.Jaxpr):
        return [value]
    if isinstance(value, (tuple, list)):
        return [j for v in value for j in _jaxprs(v)]
    return []


def dots_of(jaxpr, times: int = 1) -> list[tuple[int, int, int]]:
    """(M, K, N) of every matrix product the program runs (batch dimensions folded into M; a
    scan's body counted ``length`` times), read off the traced program."""
    shapes = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (lc, rc), (lb, _rb) = eqn.params["dimension_numbers"]
            lhs, rhs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
            k = math.prod(lhs[d] for d in lc)
            m = math.prod(lhs[d] for d in range(len(lhs)) if d not in lc)
            n = math.prod(rhs[d] for d in range(len(rhs)) if d not in rc and d not in _rb)
            shapes += [(m, k, n)] * times
        inner = times * eqn.params.get("length", 1)
        for name, value in eqn.params.items():
            for sub in _jaxprs(value):
                shapes += dots_of(sub, inner)
    return shapes


def cost(compiled) -> dict:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):  # older jax: one dict per computation
        analysis = analysis[0]
    return {"flops": float(analysis.get("flops", 0.0)),
            "bytes": float(analysis.get("bytes accessed", 0.0))}


def median_seconds(fn, repeats: int) -> float:
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def dot_rate(m: int, k: int, n: int, repeats: int, iterations: int) -> float:
    """GFLOP/s of an (M,K) x (K,N) product chained ``iterations`` times in one program."""
    x = jax.random.normal(jax.random.PRNGKey(0), (m, k))
    w = jax.random.normal(jax.random.PRNGKey(1), (k, n)) / jnp.sqrt(k)

    @jax.jit
    def chain(x, w):
        # Unrolled: the loop's own per-iteration cost would otherwise dominate a tiny dot.
        return jax.lax.fori_loop(0, iterations, lambda _, x: x + 1e-9 * jnp.mean(x @ w), x,
                                 unroll=UNROLL)

    seconds = median_seconds(lambda: chain(x, w), repeats)
    return 2.0 * m * k * n * iterations / seconds / 1e9


def bandwidth(repeats: int, kilobytes: int, iterations: int) -> float:
    """GB/s of ``x <- x * 0.5 + 0.5`` over a float32 array of ``kilobytes``, read and written
    ``iterations`` times in one program: a streaming rate at a working set that size."""
    x = jnp.ones((kilobytes * 1024 // 4,), jnp.float32)

    @jax.jit
    def stream(x):
        return jax.lax.fori_loop(0, iterations, lambda _, x: x * 0.5 + 0.5, x)

    seconds = median_seconds(lambda: stream(x), repeats)
    return 2.0 * x.size * 4 * iterations / seconds / 1e9


def rollout_for(config, env, state, samples: int, key) -> jppo.Rollout:
    """Random observations with actions, log-probs and values from the initial policy."""
    envs = min(samples, 64)
    steps = samples // envs
    obs_key, act_key, done_key = jax.random.split(key, 3)
    obs = jax.random.normal(obs_key, (steps, envs, env.observation_size))
    policy = jppo.make_policy(config, env.action_spec)
    actions, log_probs, values = jax.jit(policy.act)(state.params, state.normalizer, obs, act_key)
    return jppo.Rollout(obs=obs, actions=actions, log_probs=log_probs, values=values,
                        rewards=jnp.full((steps, envs), 0.1),
                        dones=(jax.random.uniform(done_key, (steps, envs)) < 0.01)
                        .astype(jnp.float32),
                        last_value=jnp.zeros(envs))


def measure(name: str, repeats: int, iterations: int, peak: float, gbps: float,
            quick: bool) -> dict:
    settings = load(CONFIGS[name])
    config = settings.ppo
    env = Trainer(config, make_env(settings.env, {}), None, 1)  # for its sizes and action spec
    env = Trainer(config, env.env, env.env.default_params, 1)
    samples = 4 * config.batch_size if quick else SAMPLES[name]
    state = jppo.init_train_state(jax.random.PRNGKey(0), config, env.observation_size,
                                  env.action_spec)
    rollout = rollout_for(config, env, state, samples, jax.random.PRNGKey(1))

    # One Adam step: the update on one minibatch, one epoch.
    one = dataclasses.replace(config, num_epoch=1)
    batch = prepare_batch(one, rollout)
    first = jax.tree_util.tree_map(lambda x: x[:config.batch_size], batch)
    step_fn = jax.jit(make_train_on_batch(one, env.action_spec, 1000))
    compiled_step = step_fn.lower(state, first).compile()
    step_cost = cost(compiled_step)
    shapes = dots_of(jax.make_jaxpr(step_fn)(state, first).jaxpr)
    rates = {}
    for shape in sorted(set(shapes)):
        rates[shape] = dot_rate(*shape, repeats, iterations)
    dot_flops = sum(2.0 * m * k * n for m, k, n in shapes)
    dot_floor = sum(2.0 * m * k * n / (rates[(m, k, n)] * 1e9) for m, k, n in shapes)
    memory_floor = step_cost["bytes"] / (gbps * 1e9)
    floor = max(dot_floor, memory_floor)

    # The real update: the whole buffer, every epoch.
    update = jppo.make_update(config, env.action_spec, config.total_adam_steps(samples))
    compiled = update.lower(state, rollout).compile()
    box = [state]

    def run():
        box[0], metrics = compiled(box[0], rollout)
        return box[0], metrics

    update_s = median_seconds(run, repeats)
    adam_steps = config.adam_steps_per_update(samples)
    per_step = update_s / adam_steps
    return {"samples": samples, "batch_size": config.batch_size, "num_epoch": config.num_epoch,
            "adam_steps_per_update": adam_steps, "hidden": [config.hidden_units] * config.num_layers,
            "network": config.network,
            "per_adam_step": {
                "xla_flops": step_cost["flops"], "xla_bytes": step_cost["bytes"],
                "dot_flops": dot_flops,
                "dots": [{"m": m, "k": k, "n": n, "count": shapes.count((m, k, n)),
                          "gflops_measured": round(rates[(m, k, n)], 2)}
                         for m, k, n in sorted(set(shapes))],
                "dot_floor_us": dot_floor * 1e6,
                "flop_floor_at_peak_us": step_cost["flops"] / (peak * 1e9) * 1e6,
                "memory_floor_us": memory_floor * 1e6,
                "floor_us": floor * 1e6,
                "measured_us": per_step * 1e6,
                "measured_over_floor": per_step / floor,
                "achieved_gflops": step_cost["flops"] / per_step / 1e9}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="a smoke run; numbers not meaningful")
    parser.add_argument("--device-label", default=None,
                        help="names the result file (default: JAX's backend)")
    args = parser.parse_args()
    repeats = 2 if args.quick else args.repeats
    iterations = 50 if args.quick else 2000  # multiples of UNROLL
    size = 256 if args.quick else 1024
    peak = dot_rate(size, size, size, repeats, 5 if args.quick else 20)
    # The step's working set (parameters, Adam moments, one minibatch) is well under a MB.
    gbps = bandwidth(repeats, 1024, 20 if args.quick else 500)
    print(f"large dot {size}^3: {peak:.1f} GFLOP/s; streaming {gbps:.1f} GB/s over 1 MB", flush=True)
    cases = {}
    for name in CONFIGS:
        cases[name] = measure(name, repeats, iterations, peak, gbps, args.quick)
        s = cases[name]["per_adam_step"]
        print(f"{name}: {s['xla_flops'] / 1e6:.2f} MFLOP, {s['xla_bytes'] / 1e6:.2f} MB per Adam "
              f"step; floor {s['floor_us']:.1f} us (dots {s['dot_floor_us']:.1f}, memory "
              f"{s['memory_floor_us']:.1f}); measured {s['measured_us']:.1f} us = "
              f"{s['measured_over_floor']:.2f}x the floor", flush=True)
    label = (args.device_label or jax.default_backend()) + ("-quick" if args.quick else "")
    path = write(f"roofline_{label}", {
        "benchmark": "per Adam step: XLA's cost analysis, this machine's measured dot rates and "
                     "bandwidth, the floor they imply, and the measured update",
        "large_dot": {"size": size, "gflops": peak}, "stream_gbps_1mb": gbps,
        "settings": {"repeats": repeats, "dot_chain_iterations": iterations}, "cases": cases})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
