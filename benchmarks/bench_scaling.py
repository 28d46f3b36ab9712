"""Throughput of jppo's jitted training loop over devices and over seeds vmapped in one program.

    python benchmarks/bench_scaling.py            # ~6 min on 2 CPU cores -> results/scaling_cpu.json
    python benchmarks/bench_scaling.py --quick    # a smoke run of ~2 min -> results/scaling_cpu-quick.json

Two sweeps, on CartPole (configs/CartPole.yaml: 4 envs x 128 steps per update) and 3DBall
(configs/3DBall.yaml: 12 envs x 1000 steps per update):

- devices: 1, 2 and 4 devices (``--devices``), the environments split over them, one shared
  update (``jppo.distributed``). Each setting runs in its own process, started with
  ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` on a CPU (the flag must be set before
  JAX starts); on a GPU or TPU machine pass ``--real-devices`` to use the real ones instead.
- seeds: 1, 2, 4 and 8 independent agents vmapped in one program on one device.

Reported per setting: compile time (apart), steps per second per agent and summed over all
agents (a step is one agent decision). Forced CPU devices share the same physical cores, so on
a small CPU more devices cannot be faster: the devices rows say what the sharding costs there
(collectives between devices, smaller kernels), and that it works; speedups need real devices.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = {"CartPole": ROOT / "configs" / "CartPole.yaml", "3DBall": ROOT / "configs" / "3DBall.yaml"}
DEVICES = (1, 2, 4)
SEEDS = (1, 2, 4, 8)


def measure(env_name: str, devices: int, seeds: int, updates: int, repeats: int) -> dict:
    """Runs inside a worker process: compile the chunk of ``updates`` updates apart, warm it up
    once, then time ``repeats`` calls from the same state."""
    import jax
    import jax.numpy as jnp

    from jppo import distributed
    from jppo.jax_loop import sharding
    from jppo.jax_loop.setup import make_env
    from jppo.runs.settings import load

    settings = load(CONFIGS[env_name])
    env = make_env(settings.env, {})
    mesh = distributed.make_mesh(devices)
    from jppo.jax_loop.trainer import Trainer

    trainer = Trainer(settings.ppo, env, env.default_params, settings.num_envs, mesh)
    states = sharding.place(mesh, jax.device_get(trainer.init_seeds(0, seeds)))
    start = time.perf_counter()
    run = trainer.chunk(updates).lower(states, jnp.int32(updates)).compile()
    compile_s = time.perf_counter() - start
    out = run(states, jnp.int32(updates))  # first call: allocation, not compilation
    jax.block_until_ready(out)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = run(states, jnp.int32(updates))
        jax.block_until_ready(out)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    steps = updates * trainer.steps_per_update
    obs = out[0].runner.obs
    return {"env": env_name, "devices": distributed.device_count(mesh), "seeds": seeds,
            "num_envs": settings.num_envs, "envs_per_device": settings.num_envs // max(1, distributed.device_count(mesh)),
            "sharding": (str(obs.sharding.spec) if mesh is not None else "one device, not split"),
            "updates_timed": updates, "steps_per_update": trainer.steps_per_update,
            "compile_s": round(compile_s, 3), "run_s_median": round(median, 4),
            "run_s_min": round(min(times), 4), "repeats": repeats,
            "steps_per_second_per_agent": round(steps / median, 1),
            "steps_per_second_total": round(seeds * steps / median, 1)}


def worker(args):
    result = measure(args.env, args.devices, args.seeds, args.updates, args.repeats)
    print("RESULT " + json.dumps(result), flush=True)


def run_worker(env_name: str, devices: int, seeds: int, updates: int, repeats: int,
               real_devices: bool) -> dict:
    env = dict(os.environ)
    if not real_devices:
        flags = [f for f in env.get("XLA_FLAGS", "").split() if "force_host_platform_device_count" not in f]
        env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    cmd = [sys.executable, __file__, "--worker", "--env", env_name, "--devices", str(devices),
           "--seeds", str(seeds), "--updates", str(updates), "--repeats", str(repeats)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"worker {env_name} devices={devices} seeds={seeds} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="few updates, one repeat: a smoke run")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (median reported)")
    p.add_argument("--envs", default="CartPole,3DBall", help="comma-separated: CartPole, 3DBall")
    p.add_argument("--real-devices", action="store_true",
                   help="use the machine's own devices (GPU, TPU) instead of forced CPU devices")
    p.add_argument("--name", default=None, help="result file name (default scaling_<backend>)")
    # worker mode (internal)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--env", help=argparse.SUPPRESS)
    p.add_argument("--devices", type=int, help=argparse.SUPPRESS)
    p.add_argument("--seeds", type=int, help=argparse.SUPPRESS)
    p.add_argument("--updates", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    import jax

    from machine import write

    updates = {"CartPole": 5 if args.quick else 50, "3DBall": 1 if args.quick else 5}
    repeats = 1 if args.quick else args.repeats
    cores = os.cpu_count()
    backend = jax.default_backend()
    rows = {"devices": [], "seeds": []}
    for env_name in [e.strip() for e in args.envs.split(",") if e.strip()]:
        for d in DEVICES:
            r = run_worker(env_name, d, 1, updates[env_name], repeats, args.real_devices)
            rows["devices"].append(r)
            print(f"{env_name:<9} devices {d}: {r['steps_per_second_total']:>10,.0f} steps/s "
                  f"(compile {r['compile_s']:.1f} s, {r['envs_per_device']} envs per device, "
                  f"env axis {r['sharding']})", flush=True)
        for s in SEEDS:
            r = run_worker(env_name, 1, s, updates[env_name], repeats, args.real_devices)
            rows["seeds"].append(r)
            print(f"{env_name:<9} seeds {s}:   {r['steps_per_second_total']:>10,.0f} steps/s in all, "
                  f"{r['steps_per_second_per_agent']:,.0f} per agent (compile {r['compile_s']:.1f} s)",
                  flush=True)
    note = (f"Forced CPU devices share this machine's {cores} cores: more devices cannot run "
            "faster here; the devices rows measure what splitting the environments and the "
            "update costs (collectives, smaller kernels), not a speedup. Real GPUs or TPUs "
            "(--real-devices) add compute with each device."
            if backend == "cpu" and not args.real_devices else
            "Real devices: each adds its own compute.")
    print(note)
    name = args.name or f"scaling_{backend}" + ("-quick" if args.quick else "")
    path = write(name, {"benchmark": "jppo training loop throughput over devices and vmapped seeds",
                        "quick": args.quick, "forced_cpu_devices": not args.real_devices,
                        "updates_timed": updates, "note": note, "devices": rows["devices"],
                        "seeds": rows["seeds"]})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
