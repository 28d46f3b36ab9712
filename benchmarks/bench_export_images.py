"""The ONNX models of image policies: file size, export time, and one inference in onnxruntime.

The policy is VisualGridWorld's (configs/VisualGridWorld.yaml, ML-Agents' GridWorld.yaml: the
camera's 64x84x3 image and the 2-float goal vector, one discrete branch of 5 with its mask,
hidden_units 128, num_layers 1), freshly initialised (the size and the time do not depend on
training), for each ``vis_encode_type`` (``simple`` is the config's; match3 only with
``--match3``: at 64x84 its dense layer holds 88M parameters). Timed: ``jppo.export.export_onnx``
(graph building, ``onnx.checker`` full check, atomic write), median of ``--repeats``; and one
``python -m jppo.export RUN_DIR`` of a saved checkpoint of the simple policy, start to exit
(interpreter, imports and checkpoint loading included), as a user runs it. Also the median time
of one onnxruntime run of the written model at batch 1 and 8 (CPU provider).

    python benchmarks/bench_export_images.py [--repeats 5] [--match3]

writes results/export_images.json.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import onnxruntime as ort

import machine

import jppo
from jppo import ActionSpec, export
from jppo.runs import checkpoint

SENSORS = ((64, 84, 3), (2,))  # VisualGridWorld's camera and goal
SPEC = ActionSpec.discrete(5)
KINDS = ("simple", "nature_cnn", "resnet", "fully_connected")


def config(kind: str) -> jppo.PPOConfig:
    return jppo.PPOConfig(hidden_units=128, num_layers=1, normalize=False, vis_encode_type=kind)


def actor_parameters(params) -> int:
    p = params["params"]
    return int(sum(np.size(leaf) for name in ("actor_encoder", "actor", "policy_head")
                   for leaf in jax.tree_util.tree_leaves(p[name])))


def inference_ms(path: Path, batch: int, repeats: int) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = export.check_inputs(session, batch)
    session.run(None, feeds)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def measure(kind: str, folder: Path, repeats: int) -> dict:
    state = jppo.init_train_state(jax.random.PRNGKey(0), config(kind), SENSORS, SPEC)
    path = folder / f"{kind}.onnx"
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        export.export_onnx(path, state.params, state.normalizer, config(kind), SPEC, SENSORS)
        times.append(time.perf_counter() - start)
    row = {"vis_encode_type": kind, "actor_parameters": actor_parameters(state.params),
           "file_bytes": path.stat().st_size, "export_s": statistics.median(times),
           "export_s_all": times}
    for batch in (1, 8):
        row[f"onnxruntime_ms_batch{batch}"] = inference_ms(path, batch, 5 * repeats)
    print(f"{kind}: {row['actor_parameters']:,} actor parameters, {row['file_bytes']:,} bytes, "
          f"export {row['export_s']:.3f} s, onnxruntime {row['onnxruntime_ms_batch1']:.2f} ms "
          "(batch 1)", flush=True)
    return row


def cli_export_s(folder: Path) -> float:
    """Wall time of ``python -m jppo.export`` on a saved simple VisualGridWorld checkpoint."""
    state = jppo.init_train_state(jax.random.PRNGKey(0), config("simple"), SENSORS, SPEC)
    run = folder / "run"
    checkpoint.save(run, 1000, {"train": state},
                    checkpoint.policy_meta(config("simple"), SPEC, SENSORS, "GridWorld"))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "jppo.export", str(run)], check=True,
                   env={**os.environ, "JAX_PLATFORMS": "cpu"})
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--match3", action="store_true", help="also match3 (88M parameters)")
    args = parser.parse_args()
    kinds = KINDS + (("match3",) if args.match3 else ())
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(kind, Path(tmp), args.repeats) for kind in kinds]
        cli = cli_export_s(Path(tmp))
    print(f"python -m jppo.export (simple): {cli:.1f} s")
    path = machine.write("export_images", {
        "policy": "VisualGridWorld: sensors (64, 84, 3) + (2,), discrete (5,), hidden 128 x 1",
        "repeats": args.repeats, "rows": rows, "cli_export_simple_s": cli})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
