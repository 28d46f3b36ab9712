"""NaN never trains silently: a run whose train state turns NaN or Inf stops with one sentence
and its last (finite) checkpoint intact, on both loops; a NaN state is never saved; a
checkpoint holding NaN is neither resumed nor exported; ``export_onnx`` refuses NaN params."""
import hashlib
import pathlib
import re
import shutil

import flax.serialization
import jax
import numpy as np
import pytest
import yaml

import jppo
from jppo import export
from jppo.runs import checkpoint
from jppo.train import main
from tiny_config import tiny_cartpole


def digest(folder: pathlib.Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_sentence(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("jppo: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err[len("jppo: error: "):-1]


def cli(tmp_path, data, *args) -> int:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data))
    return main([str(config), "--results-dir", str(tmp_path / "results"), "--run-id", "r",
                 "--quiet", "--no-export", *args])


DATA = tiny_cartpole(2048)


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> pathlib.Path:
    """A run stopped with a checkpoint at step 512; tests work on copies of its folder."""
    tmp = tmp_path_factory.mktemp("stopped")
    assert cli(tmp, DATA, "--stop-after-steps", "512") == 0
    return tmp / "results"


def copy_of(stopped: pathlib.Path, tmp_path) -> pathlib.Path:
    shutil.copytree(stopped, tmp_path / "results")
    return tmp_path / "results" / "r"


def test_jax_loop_stops_when_training_diverges_and_keeps_its_last_checkpoint(tmp_path, capsys,
                                                                             stopped):
    data = DATA
    run = copy_of(stopped, tmp_path)
    before = digest(run / "checkpoints")
    # A learning rate of 1e30 makes the first update's parameters NaN or Inf.
    assert cli(tmp_path, data, "--resume", "--set", "learning_rate=1e30") == 1
    assert one_sentence(capsys) == (
        "training diverged: the policy became NaN or Inf between steps 512 and 768 (lower the "
        "learning rate, or check the environment parameters); run 'r' stopped at step 768, its "
        "last checkpoint (step 512) is intact: continue with --resume.")
    assert digest(run / "checkpoints") == before  # the finite checkpoint to go on from


def test_physics_that_blow_up_stop_the_run_naming_the_seed(tmp_path, capsys):
    """A parameter inside float32's range can still overflow the physics (a 1e37 N push): the
    run stops at the chunk where a seed's train state turned NaN or Inf, and names it."""
    data = tiny_cartpole(1024)
    data["environment_parameters"] = {"force_mag": 1.0e37}
    assert cli(tmp_path, data, "--num-seeds", "2", "--seed", "7") == 1
    assert re.fullmatch(
        r"training diverged: seed [78] became NaN or Inf between steps (\d+) and \d+ \(lower the "
        r"learning rate, or check the environment parameters\); run 'r' stopped at step \d+, its "
        r"last checkpoint \(step \1\) is intact: continue with --resume\.|.*stopped before its "
        r"first checkpoint: start it again with --force\.", one_sentence(capsys))


@pytest.mark.slow
def test_host_loop_stops_when_training_diverges_and_keeps_its_last_checkpoint(tmp_path, capsys):
    pytest.importorskip("gymnasium")
    data = tiny_cartpole(2048)
    gym = ["--env", "gymnasium:CartPole-v1"]
    assert cli(tmp_path, data, *gym, "--stop-after-steps", "512") == 0
    run = tmp_path / "results" / "r"
    before = digest(run / "checkpoints")
    assert cli(tmp_path, data, *gym, "--resume", "--set", "learning_rate=1e30") == 1
    assert re.fullmatch(
        r"training diverged: update \d+ \(at step (\d+)\) made the policy NaN or Inf \(lower the "
        r"learning rate, or check the rewards and observations\); run 'r' stopped at step \1, its "
        r"last checkpoint \(step 512\) is intact: continue with --resume\.", one_sentence(capsys))
    assert digest(run / "checkpoints") == before


# ------------------------------------------------------------------------- saved and read

def small_state(bad: float | None = None):
    config = jppo.PPOConfig(hidden_units=8, num_layers=1, normalize=True)
    spec = jppo.ActionSpec.continuous(2)
    state = jppo.init_train_state(jax.random.PRNGKey(0), config, 4, spec)
    if bad is not None:
        kernel = state.params["params"]["actor"]["Dense_0"]["kernel"]
        params = {"params": {**state.params["params"], "actor": {"Dense_0": {
            **state.params["params"]["actor"]["Dense_0"], "kernel": kernel.at[0, 0].set(bad)}}}}
        state = state.replace(params=params)
    return config, spec, state


def test_save_refuses_a_non_finite_state_and_writes_nothing(tmp_path):
    config, spec, state = small_state(np.nan)
    with pytest.raises(checkpoint.NonFiniteState, match="holds NaN or Inf; it is not saved"):
        checkpoint.save(tmp_path, 10, {"train": state}, checkpoint.policy_meta(config, spec, 4, "B"))
    assert not list(tmp_path.rglob("*.msgpack")) and not list(tmp_path.rglob("*.tmp"))


def write_raw(run: pathlib.Path, state, meta: dict):
    """A checkpoint as an older version or a hand could have written it (no finite check)."""
    import json

    payload = {"meta": json.dumps({"format": checkpoint.FORMAT, "steps": 512, **meta}),
               "state": flax.serialization.to_state_dict(jax.device_get(state))}
    path = checkpoint.directory(run) / "checkpoint-000000512.msgpack"
    path.parent.mkdir(parents=True)
    path.write_bytes(flax.serialization.msgpack_serialize(payload))
    return path


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_export_refuses_a_nan_checkpoint(tmp_path, capsys, bad):
    config, spec, state = small_state(bad)
    path = write_raw(tmp_path, {"train": state}, checkpoint.policy_meta(config, spec, 4, "Ball"))
    before = digest(tmp_path)
    assert export.main([str(tmp_path), "--check"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: checkpoint '{path}' holds NaN or Inf (a diverged run); delete it to "
                   "resume from an earlier one, or start again with --force.\n")
    assert digest(tmp_path) == before


def test_resume_refuses_a_nan_checkpoint(tmp_path, capsys, stopped):
    data = DATA
    run = copy_of(stopped, tmp_path)
    last = checkpoint.latest(run)
    meta, raw = checkpoint.read(last)
    dense = raw["train"]["params"]["params"]["actor"]["Dense_0"]
    dense["kernel"] = np.array(dense["kernel"])
    dense["kernel"][0, 0] = np.nan
    payload = {"meta": __import__("json").dumps(meta), "state": raw}
    last.write_bytes(flax.serialization.msgpack_serialize(payload))
    before = digest(run)
    assert cli(tmp_path, data, "--resume") == 2
    assert one_sentence(capsys) == (f"checkpoint '{last}' holds NaN or Inf (a diverged run); "
                                    "delete it to resume from an earlier one, or start again "
                                    "with --force.")
    assert digest(run) == before


def test_export_onnx_refuses_nan_params(tmp_path):
    from jppo.onnx.actor import export_onnx

    config, spec, state = small_state(np.nan)
    with pytest.raises(ValueError, match=r"params\.actor\.Dense_0\.kernel holds NaN or Inf"):
        export_onnx(tmp_path / "m.onnx", state.params, state.normalizer, config, spec, 4)
    _, _, good = small_state()
    normalizer = good.normalizer._replace(mean=good.normalizer.mean.at[1].set(np.inf))
    with pytest.raises(ValueError, match=r"normalizer\.mean holds NaN or Inf"):
        export_onnx(tmp_path / "m.onnx", good.params, normalizer, config, spec, 4)
    assert list(tmp_path.iterdir()) == []
