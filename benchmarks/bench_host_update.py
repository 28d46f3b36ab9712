"""The host driver's update (Unity, Gymnasium) in one process and shared by 2 processes.

    python benchmarks/bench_host_update.py            # ~3 min on 2 CPU cores -> results/host_update_cpu.json
    python benchmarks/bench_host_update.py --quick    # ~1 min -> results/host_update_cpu-quick.json

configs/3DBall.yaml's update (buffer 12,000, minibatch 64, 3 epochs: 561 Adam steps; 8
observations, 2 continuous actions) on random experience, as ``jppo.host_loop.meeting`` runs it:

- ``1 process``: the plain one-device program (what a one-process Unity run uses);
- ``2 processes, split minibatches``: jax.distributed on 127.0.0.1 (gloo), each process's
  6,000 experiences its shard of the buffer, every minibatch split across the 2 devices and
  the gradient all-reduced once per Adam step (``--split-minibatches``);
- ``2 processes, replicated``: the buffer all-gathered once per update, then every process
  runs the whole update on its device (the default).

Each setting compiles apart, warms up once, then times ``--repeats`` updates (the median is
reported). The processes of a setting share this machine's cores with each other; on two
machines each would have its own.
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
CONFIG = ROOT / "configs" / "3DBall.yaml"
OBS, ACTIONS = 8, 2


def measure(split: bool, repeats: int) -> dict:
    """Inside one process of a setting (jax.distributed already joined, or a lone process)."""
    import jax
    import numpy as np

    from jppo import distributed
    from jppo.host_loop import sharded_update
    from jppo.core.networks import ActionSpec
    from jppo.runs.settings import load
    from jppo.core.buffer_update import FlatBuffer
    from jppo.core.update import init_train_state

    config = load(CONFIG).ppo
    spec = ActionSpec.continuous(ACTIONS)
    mesh = distributed.make_mesh(1)
    layout = sharded_update.make_layout(mesh, config, split)
    state = distributed.place_replicated(mesh, jax.device_get(
        init_train_state(jax.random.PRNGKey(0), config, OBS, spec)))
    update = sharded_update.make_update(layout, config, spec, config.total_adam_steps(config.buffer_size),
                                   split_minibatches=split)
    start = time.perf_counter()
    compiled = update.lower(state, sharded_update.abstract_buffer(layout, OBS, spec)).compile()
    compile_s = time.perf_counter() - start
    rng = np.random.default_rng(jax.process_index())
    n = layout.segment
    parts = []
    for _ in range(layout.local_segments):
        ends = np.zeros(n, np.float32)
        ends[::1000] = 1.0
        ends[-1] = 1.0
        parts.append(FlatBuffer(rng.normal(size=(n, OBS)).astype(np.float32),
                                rng.normal(size=(n, ACTIONS)).astype(np.float32),
                                np.full((n, ACTIONS), -1.4, np.float32),
                                rng.normal(size=n).astype(np.float32), ends,
                                np.zeros(n, np.float32), np.zeros((n, OBS), np.float32)))
    buffer = sharded_update.global_buffer(layout, parts)

    def one():
        nonlocal state
        state, metrics = compiled(state, buffer)
        distributed.fetch_replicated(metrics)  # waits for the update

    one()  # first call: allocation, not compilation
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        one()
        times.append(time.perf_counter() - t)
    text = compiled.as_text()
    return {"compile_s": round(compile_s, 2), "update_s_median": round(statistics.median(times), 4),
            "update_s_all": [round(t, 4) for t in times],
            "steps_per_second_update_only": round(config.buffer_size / statistics.median(times), 1),
            "adam_steps_per_update": config.num_epoch * (config.buffer_size // config.batch_size),
            "all_reduce_ops": text.count("all-reduce("), "all_gather_ops": text.count("all-gather("),
            "params_sha256": distributed.params_digest(state.params)}


def worker(args) -> None:
    if args.processes > 1:
        from jppo import distributed

        distributed.initialize(args.coordinator, args.processes, args.process_id)
    result = measure(args.split, args.repeats)
    if args.process_id == 0:
        print("RESULT " + json.dumps(result), flush=True)


def run_setting(processes: int, split: bool, repeats: int) -> dict:
    from jppo.standin.server import free_port

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    coordinator = f"127.0.0.1:{free_port()}"
    procs = [subprocess.Popen(
        [sys.executable, __file__, "--worker", "--processes", str(processes), "--process-id",
         str(i), "--coordinator", coordinator, "--repeats", str(repeats)]
        + (["--split"] if split else []),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for i in range(processes)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs):
        if p.returncode != 0:
            raise SystemExit(f"a benchmark process failed ({p.returncode}): {err[-2000:]}")
    line = [l for l in outs[0][0].splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--processes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--coordinator", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--split", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    import machine

    repeats = args.repeats or (3 if args.quick else 7)
    rows = []
    for processes, split, label in ((1, False, "1 process"),
                                    (2, True, "2 processes, split minibatches"),
                                    (2, False, "2 processes, replicated")):
        result = run_setting(processes, split, repeats)
        rows.append({"setting": label, "processes": processes, "split_minibatches": split, **result})
        print(f"{label:32s} update {result['update_s_median'] * 1000:8.1f} ms "
              f"(compile {result['compile_s']:.1f} s; all-reduces {result['all_reduce_ops']}, "
              f"all-gathers {result['all_gather_ops']})", flush=True)
    base = rows[0]["update_s_median"]
    for row in rows:
        row["time_vs_1_process"] = round(row["update_s_median"] / base, 2)
    name = "host_update_cpu" + ("-quick" if args.quick else "")
    path = machine.write(name, {
        "benchmark": "configs/3DBall.yaml's host-driver update (buffer 12000, minibatch 64, "
                     "3 epochs) in 1 process and shared by 2 processes (jax.distributed, gloo, "
                     "127.0.0.1); random experience",
        "repeats": repeats, "rows": rows})
    print(f"-> {path}")


if __name__ == "__main__":
    main()
