"""``vis_encode_type`` read from a YAML; a checkpoint of a policy over an image sensor: it saves
and loads (the image's empty normalizer state included), and exports to ONNX from the CLI and
at a run's end (the graph itself: tests/test_onnx_encoders.py)."""
import types

import onnx

import jax
import numpy as np
import yaml

import jppo
from jppo import export
from jppo.core.distributions import ActionSpec
from jppo.runs import checkpoint, report
from jppo.runs.settings import load
from jppo.train import main
from tiny_config import tiny_cartpole

SENSORS = ((20, 20, 1), (3,))


def state_config():
    return jppo.PPOConfig(hidden_units=8, num_layers=1, normalize=True)


def image_run(tmp_path):
    config = state_config()
    spec = ActionSpec.discrete(2)
    state = jppo.init_train_state(jax.random.PRNGKey(0), config, SENSORS, spec)
    meta = checkpoint.policy_meta(config, spec, SENSORS, "Camera")
    checkpoint.save(tmp_path, 100, {"train": state}, meta)
    return state


def test_an_image_policy_checkpoint_loads_as_saved(tmp_path):
    state = image_run(tmp_path)
    saved = checkpoint.load_policy(tmp_path)
    assert saved.observation_size == SENSORS and saved.config.vis_encode_type == "simple"
    assert saved.normalizer[0].mean.shape == (0,) and saved.normalizer[1].mean.shape == (3,)
    for x, y in zip(jax.tree_util.tree_leaves(saved.params),
                    jax.tree_util.tree_leaves(state.params)):
        np.testing.assert_array_equal(x, y)


def test_the_export_cli_writes_an_image_policy_checked_against_jax(tmp_path, capsys):
    state = image_run(tmp_path)
    assert export.main([str(tmp_path), "--check"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'Camera.onnx'}" in out
    assert "deterministic_discrete_actions: shape [1, 1] int64" in out
    model = onnx.load(str(tmp_path / "Camera.onnx"))
    assert [i.name for i in model.graph.input] == ["obs_0", "obs_1", "action_masks"]
    rng = np.random.default_rng(0)
    image, vector = rng.random((16, 20, 20, 1), np.float32), rng.normal(size=(16, 3))
    feeds = {"obs_0": image.transpose(0, 3, 1, 2), "obs_1": vector.astype(np.float32),
             "action_masks": np.ones((16, 2), np.float32)}
    got = export.run_model(tmp_path / "Camera.onnx", feeds)["deterministic_discrete_actions"]
    policy = jppo.make_policy(state_config(), ActionSpec.discrete(2), SENSORS)
    want = policy.mode(state.params, state.normalizer, (image, vector.astype(np.float32)))
    np.testing.assert_array_equal(got[:, 0], np.asarray(want))


def test_a_runs_end_exports_an_image_policy(tmp_path):
    image_run(tmp_path)
    messages = []
    display = types.SimpleNamespace(message=messages.append)
    settings = types.SimpleNamespace(num_seeds=1, behavior="Camera", seed=0)
    folder = types.SimpleNamespace(path=tmp_path)
    assert report.export_models(settings, folder, display) == [tmp_path / "Camera.onnx"]
    assert messages == [f"exported {tmp_path / 'Camera.onnx'}"]
    model = onnx.load(str(tmp_path / "Camera.onnx"))
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]] == [1, 20, 20]


def test_network_settings_vis_encode_type_is_honoured_and_checked(tmp_path, capsys):
    data = tiny_cartpole(512)
    data["behaviors"]["CartPole"]["network_settings"]["vis_encode_type"] = "resnet"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load(str(path)).ppo.vis_encode_type == "resnet"
    data["behaviors"]["CartPole"]["network_settings"]["vis_encode_type"] = "alexnet"
    path.write_text(yaml.safe_dump(data))
    assert main([str(path), "--results-dir", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "'alexnet'" in err and "'fully_connected'" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()
