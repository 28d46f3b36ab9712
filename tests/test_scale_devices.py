"""Data parallelism over local devices: 1, 2 and 4 (forced CPU) devices train the same agent.

XLA_FLAGS=--xla_force_host_platform_device_count=4 must be set before JAX starts, so the
multi-device part runs in a subprocess.

Tolerance: the devices run the same program on the same data in the same order; what differs
is how float32 sums are split (each device sums its share of a minibatch, then the shares are
all-reduced). That reorders additions, a few ulps (float32 eps = 1.2e-7) per gradient, and Adam
turns a gradient into a step of at most about learning_rate (1e-3 here) per coordinate, so after
a few updates the parameters (of order 1) agree to about 1e-7. Large accumulators (the
normalizer's sum of squares, ~300 here) agree to a relative 1e-7. So: atol 1e-6 plus rtol 1e-6,
room for rounding and none for a real difference (a wrong shard, a lost all-reduce or a
per-device advantage normalization moves the parameters by 1e-4 or more).
"""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import yaml

from jppo.train import main

SCRIPT = r"""
import json, re, sys
import jax, jax.numpy as jnp, numpy as np
from jppo import distributed
from jppo.jax_loop import sharding
from jppo.core.config import PPOConfig
from jppo.jax_loop.setup import make_env
from jppo.jax_loop.trainer import Trainer
from jppo.train import main

out_dir = sys.argv[1]
config = PPOConfig(batch_size=32, buffer_size=128, learning_rate=1e-3, beta=1e-3, num_epoch=2,
                   normalize=True, hidden_units=16, num_layers=1, max_steps=768, time_horizon=64)
env = make_env("CartPole-v1", {})
report = {"device_count": jax.device_count()}
for devices in (1, 2, 4):
    mesh = distributed.make_mesh(devices)
    trainer = Trainer(config, env, env.default_params, 8, mesh)
    states = sharding.place(mesh, jax.device_get(trainer.init_seeds(0, 1)))
    compiled = trainer.chunk(4).lower(states, jnp.int32(4)).compile()
    final, metrics = compiled(states, jnp.int32(4))
    obs = final.runner.obs
    text = compiled.as_text()
    report[devices] = {
        "mesh": None if mesh is None else list(mesh.shape.items()),
        "obs_spec": str(getattr(obs.sharding, "spec", None)),
        "obs_devices": len(obs.sharding.device_set),
        "obs_shards": sorted({tuple(s.data.shape) for s in obs.addressable_shards}),
        "env_state_shards": sorted({tuple(s.data.shape) for s in
                                    jax.tree_util.tree_leaves(final.runner.env_state)[0].addressable_shards}),
        "params_replicated": all(x.sharding.is_fully_replicated
                                 for x in jax.tree_util.tree_leaves(final.train.params)),
        "all_reduces": len(re.findall(r" all-reduce(-start)?\(", text)),
        "dot_shapes": sorted(set(re.findall(r"= (f32\[[0-9,]*\])\{[0-9,]*\} dot\(", text))),
        "updates": int(final.updates[0]),
        "episodes": float(np.sum(metrics["episodes"])),
    }
    np.savez(f"{out_dir}/final-{devices}.npz",
             *[np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(final))])
# The command line: the device count must divide the environments; no more devices than exist.
report["cli"] = [main(["--env", "CartPole-v1", "--num-envs", "6", "--devices", "4",
                       "--results-dir", out_dir + "/results", "--quiet"]),
                 main(["--env", "CartPole-v1", "--devices", "5", "--results-dir",
                       out_dir + "/results", "--quiet"])]
print("REPORT " + json.dumps(report))
"""


def leaves(path):
    data = np.load(path)
    return [data[f"arr_{i}"] for i in range(len(data.files))]


def run_with_devices(script: str, count: int, folder) -> tuple[dict, str]:
    """``script`` in a Python with ``count`` forced CPU devices, given ``folder``; its
    ``REPORT {json}`` line and its stderr."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={count}")
    out = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True,
                         text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    line = [l for l in out.stdout.splitlines() if l.startswith("REPORT ")][-1]
    report = json.loads(line[len("REPORT "):])
    assert report["device_count"] == count
    return report, out.stderr


def assert_same_leaves(one: list, other: list):
    """Float leaves equal to atol 1e-6 + rtol 1e-6 (see above); the rest exactly."""
    assert len(one) == len(other)
    for a, b in zip(one, other):
        assert a.shape == b.shape and a.dtype == b.dtype
        if a.dtype.kind == "f":
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)
        else:  # keys, counters, step counts: exactly equal
            np.testing.assert_array_equal(b, a)


def test_one_two_and_four_devices(tmp_path):
    """One subprocess (the expensive part) and every check on it, so that pytest-xdist does not
    start it twice."""
    report, stderr = run_with_devices(SCRIPT, 4, tmp_path)
    check_same_agent(tmp_path, report)
    check_split_envs_and_replicated_params(report)
    check_split_minibatches(report)
    check_cli_errors(report, stderr)


def check_same_agent(tmp, report):
    one = leaves(tmp / "final-1.npz")
    for devices in (2, 4):
        assert_same_leaves(one, leaves(tmp / f"final-{devices}.npz"))
    assert report["1"]["updates"] == report["2"]["updates"] == report["4"]["updates"] == 4
    assert report["1"]["episodes"] == report["2"]["episodes"] == report["4"]["episodes"] > 0


def check_split_envs_and_replicated_params(report):
    assert report["1"]["mesh"] is None  # one device: the plain program
    for devices in (2, 4):
        r = report[str(devices)]
        assert r["mesh"] == [["data", devices]]
        assert r["obs_spec"] == "P(None, 'data')"
        assert r["obs_devices"] == devices
        # [seeds, envs / devices, obs]: each device holds its own 8 / devices environments.
        assert r["obs_shards"] == [[1, 8 // devices, 4]]
        assert r["env_state_shards"] == [[1, 8 // devices]]
        assert r["params_replicated"]


def check_split_minibatches(report):
    """The minibatch of 32 is split: the first layer's forward matmul is [32 / devices, 16] per
    device, and the gradients are summed across devices by all-reduces."""
    assert report["1"]["all_reduces"] == 0 and "f32[32,16]" in report["1"]["dot_shapes"]
    for devices in (2, 4):
        r = report[str(devices)]
        assert r["all_reduces"] > 0
        assert f"f32[{32 // devices},16]" in r["dot_shapes"]


def check_cli_errors(report, stderr):
    assert report["cli"] == [2, 2]
    assert ("jppo: error: num_envs = 6 cannot be split evenly over 4 devices; give --num-envs a "
            "multiple of 4, or fewer --devices.") in stderr
    assert "jppo: error: --devices 5 is more than this process has: 4 CPU device(s)" in stderr
    assert "Traceback" not in stderr


def test_bad_devices_flag_is_one_sentence_and_exit_2(tmp_path, capsys):
    results = str(tmp_path / "results")
    assert main(["--env", "CartPole-v1", "--devices", "0", "--results-dir", results]) == 2
    assert capsys.readouterr().err == ("jppo: error: --devices 0 is not allowed; give a number of "
                                       "devices >= 1 or 'all'.\n")
    too_many = jax.local_device_count() + 1
    assert main(["--env", "CartPole-v1", "--devices", str(too_many), "--results-dir", results]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"jppo: error: --devices {too_many} is more than this process has: ")
    assert err.count("\n") == 1
    assert not (tmp_path / "results").exists()


def test_each_driver_refuses_the_other_drivers_flag(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"behaviors": {"CartPole": {"trainer_type": "ppo"}}}))
    results = tmp_path / "results"
    assert main([str(config), "--env", "gymnasium:CartPole-v1", "--sweep", "beta=1e-3,1e-2",
                 "--results-dir", str(results)]) == 2
    assert capsys.readouterr().err.startswith(
        "jppo: error: --sweep works with the JAX environments only (CartPole-v1, ")
    assert main(["--env", "CartPole-v1", "--split-minibatches", "--results-dir", str(results)]) == 2
    assert capsys.readouterr().err == (
        "jppo: error: --split-minibatches is for Unity and Gymnasium environments; the JAX "
        "environments always split their minibatches across --devices.\n")
    assert not results.exists()