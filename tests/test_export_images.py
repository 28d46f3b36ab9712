"""``vis_encode_type`` read from a YAML; a checkpoint of a policy over an image sensor: it saves
and loads (the image's empty normalizer state included), and ONNX export refuses it in one
sentence, from the CLI and at a run's end, until image encoders are exported."""
import types

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
REFUSAL = "ONNX export of image encoders is not implemented yet; sensor 0 of shape (20, 20, 1)"


def image_run(tmp_path):
    config = jppo.PPOConfig(hidden_units=8, num_layers=1, normalize=True)
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


def test_the_export_cli_refuses_an_image_policy_in_one_sentence(tmp_path, capsys):
    image_run(tmp_path)
    assert export.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert REFUSAL in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not list(tmp_path.glob("*.onnx"))


def test_a_runs_end_skips_the_export_of_an_image_policy_with_a_note(tmp_path):
    image_run(tmp_path)
    messages = []
    display = types.SimpleNamespace(message=messages.append)
    settings = types.SimpleNamespace(num_seeds=1, behavior="Camera", seed=0)
    folder = types.SimpleNamespace(path=tmp_path)
    assert report.export_models(settings, folder, display) == []
    assert len(messages) == 1 and messages[0].startswith("ONNX export skipped: " + REFUSAL)
    assert not list(tmp_path.glob("*.onnx"))


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
