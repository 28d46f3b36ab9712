"""The host driver's update (Unity, Gymnasium) over 2 forced CPU devices equals one device's,
with minibatches split across the devices or with the buffer gathered and the update replicated.

``jppo.host_loop.meeting`` hands each device a segment of the buffer that ends at a trajectory's end;
GAE then runs per device and every minibatch is split across the devices. On the same buffer
the agent must equal the one-device update's up to the order of float sums (atol and rtol
1e-6: the argument is in test_scale_devices.py). Then ``--devices 2`` trains Gymnasium's
CartPole end to end. XLA_FLAGS must be set before JAX starts: a subprocess.
"""
import json

import numpy as np
import pytest
import yaml

from test_scale_devices import assert_same_leaves, leaves, run_with_devices

pytest.importorskip("gymnasium")

SCRIPT = r"""
import json, re, sys
import jax, numpy as np, yaml
from jppo import distributed
from jppo.host_loop import sharded_update
from jppo.core.config import PPOConfig
from jppo.core.networks import ActionSpec
from jppo.core.buffer_update import FlatBuffer
from jppo.train import main
from jppo.core.update import init_train_state

out_dir = sys.argv[1]
config = PPOConfig(batch_size=32, buffer_size=256, learning_rate=1e-3, beta=1e-3, num_epoch=2,
                   normalize=True, hidden_units=16, num_layers=1, gamma=0.99, lambd=0.95)
spec = ActionSpec.continuous(2)
n, d = config.buffer_size, 5

def buffer(seed):
    rng = np.random.default_rng(seed)
    dones = (rng.random(n) < 0.05).astype(np.float32)
    truncations = ((rng.random(n) < 0.05) & (dones == 0)).astype(np.float32)
    for end in (n // 2 - 1, n - 1):  # each device's half ends a trajectory
        truncations[end] = 1.0 - dones[end]
    return FlatBuffer(rng.normal(2.0, 3.0, (n, d)).astype(np.float32),
                      rng.normal(size=(n, 2)).astype(np.float32),
                      rng.normal(-1.5, 0.3, (n, 2)).astype(np.float32),
                      rng.normal(size=n).astype(np.float32), dones, truncations,
                      rng.normal(size=(n, d)).astype(np.float32) * truncations[:, None])

report = {"device_count": jax.device_count()}
for name, devices, split in (("1", 1, True), ("2", 2, True), ("2-replicated", 2, False)):
    mesh = distributed.make_mesh(devices)
    layout = sharded_update.make_layout(mesh, config, split)
    state = distributed.place_replicated(
        mesh, jax.device_get(init_train_state(jax.random.PRNGKey(0), config, d, spec)))
    update = sharded_update.make_update(layout, config, spec, config.total_adam_steps(n),
                                   split_minibatches=split)
    compiled = update.lower(state, sharded_update.abstract_buffer(layout, d, spec)).compile()
    for seed in (1, 2, 3):
        flat = buffer(seed)
        parts = [FlatBuffer(*(None if x is None else x[i * layout.segment:(i + 1) * layout.segment]
                              for x in flat))
                 for i in range(layout.local_segments)]
        state, metrics = compiled(state, sharded_update.global_buffer(layout, parts))
    text = compiled.as_text()
    report[name] = {
        "segments": [layout.segments, layout.local_segments, layout.segment],
        "params_replicated": all(x.sharding.is_fully_replicated
                                 for x in jax.tree_util.tree_leaves(state.params)),
        "all_reduces": len(re.findall(r" all-reduce(-start)?\(", text)),
        "all_gathers": len(re.findall(r" all-gather(-start)?\(", text)),
        "dot_shapes": sorted(set(re.findall(r"= (f32\[[0-9,]*\])\{[0-9,]*\} dot\(", text))),
        "metrics": {k: float(v) for k, v in jax.device_get(metrics).items()},
    }
    np.savez(f"{out_dir}/host-{name}.npz",
             *[np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(state))])

# The command line: Gymnasium's CartPole with the update over 2 devices, replicated and split;
# a batch that does not split, and a buffer.
config_path = out_dir + "/cartpole.yaml"
with open(config_path, "w") as f:
    yaml.safe_dump({"behaviors": {"CartPole": {
        "trainer_type": "ppo",
        "hyperparameters": {"batch_size": 64, "buffer_size": 512, "num_epoch": 2},
        "network_settings": {"hidden_units": 16, "num_layers": 1},
        "max_steps": 1024, "time_horizon": 64, "summary_freq": 512}}}, f)
common = ["--env", "gymnasium:CartPole-v1", "--num-envs", "2", "--results-dir",
          out_dir + "/results", "--quiet", "--no-export"]
report["cli"] = [main([config_path, *common, "--run-id", "two", "--devices", "2"]),
                 main([config_path, *common, "--run-id", "split", "--devices", "2",
                       "--split-minibatches"]),
                 main([config_path, *common, "--run-id", "odd", "--devices", "2",
                       "--split-minibatches", "--set", "batch_size=63"]),
                 main([config_path, *common, "--run-id", "odd", "--devices", "2",
                       "--set", "buffer_size=511"])]
print("REPORT " + json.dumps(report))
"""


def test_host_update_over_two_devices(tmp_path):
    report, stderr = run_with_devices(SCRIPT, 2, tmp_path)
    one, two, whole = report["1"], report["2"], report["2-replicated"]
    assert one["segments"] == [1, 1, 256] and two["segments"] == whole["segments"] == [2, 2, 128]

    # The same agent after three updates on the same buffers.
    for other, report_of in (("2", two), ("2-replicated", whole)):
        assert_same_leaves(leaves(tmp_path / "host-1.npz"), leaves(tmp_path / f"host-{other}.npz"))
        for name, value in one["metrics"].items():
            np.testing.assert_allclose(report_of["metrics"][name], value, rtol=1e-5, atol=1e-6)

    # Each device differentiates half of every minibatch of 32; XLA sums the halves.
    assert two["params_replicated"]
    assert one["all_reduces"] == 0 and "f32[32,16]" in one["dot_shapes"]
    assert two["all_reduces"] > 0 and "f32[16,16]" in two["dot_shapes"]
    # Replicated: the buffer is gathered, then every device runs whole minibatches.
    assert whole["params_replicated"] and whole["all_gathers"] > 0
    assert "f32[32,16]" in whole["dot_shapes"] and "f32[16,16]" not in whole["dot_shapes"]

    # End to end on Gymnasium; a batch that cannot be split is refused before any write.
    assert report["cli"] == [0, 0, 2, 2]
    for run, split in (("two", False), ("split", True)):
        info = json.loads((tmp_path / "results" / run / "run_info.json").read_text())
        assert info["complete"] and info["devices"] == 2 and info["steps"] >= 1024
        rows = info["processes"]
        assert len(rows) == 1 and rows[0]["envs"] == 2 and rows[0]["steps"] == info["steps"]
        config = yaml.safe_load((tmp_path / "results" / run / "configuration.yaml").read_text())
        record = config["jppo"]["run_record"]
        assert record["split_minibatches"] is split and record["devices"] == 2
    assert ("jppo: error: batch_size = 63 cannot be split evenly over 2 devices; give a "
            "batch_size that is a multiple of 2.") in stderr
    assert ("jppo: error: buffer_size = 511 cannot be split evenly over 2 devices; give a "
            "buffer_size that is a multiple of 2.") in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "results" / "odd").exists()
