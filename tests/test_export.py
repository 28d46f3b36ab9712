"""ONNX export: the graph Unity's ML-Agents inference expects, checked by running it in onnxruntime
against the JAX policy it came from."""
import math
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime as ort
import pytest

import jppo
from jppo import ActionSpec, PPOConfig, export, files
from jppo.core.normalizer import NormalizerState
from jppo.errors import UserError

OBS = 6
N_SAMPLES = 20_000
CONT = ActionSpec.continuous(2)
DISC = ActionSpec.discrete(4)
CONT_OUTPUTS = ["version_number", "memory_size", "continuous_actions",
                "continuous_action_output_shape", "deterministic_continuous_actions"]
DISC_OUTPUTS = ["version_number", "memory_size", "discrete_actions",
                "discrete_action_output_shape", "deterministic_discrete_actions"]


def stats(seed=1) -> NormalizerState:
    """Normalizer statistics far from the identity: means up to ~4, variances 0.1..4."""
    rng = np.random.default_rng(seed)
    count = 50.0
    mean = rng.normal(size=OBS) * 2.0
    var = rng.uniform(0.1, 4.0, OBS)
    return NormalizerState(jnp.float32(count), jnp.asarray(mean, jnp.float32),
                           jnp.asarray(var * count, jnp.float32))


def raw_obs(state: NormalizerState, n: int, seed=2) -> np.ndarray:
    """Raw observations whose normalized values span [-8, 8], so many hit the +-5 clip."""
    rng = np.random.default_rng(seed)
    std = np.sqrt(np.asarray(jppo.normalizer.variance(state)))
    return (np.asarray(state.mean) + std * rng.uniform(-8, 8, (n, OBS))).astype(np.float32)


def policy_setup(preset="mlagents", spec=CONT, normalize=True, hidden=16, layers=2):
    config = PPOConfig(network=preset, normalize=normalize, hidden_units=hidden, num_layers=layers)
    policy = jppo.make_policy(config, spec)
    params = jax.tree_util.tree_map(np.asarray, policy.init_params(jax.random.PRNGKey(0), OBS))
    if spec.is_continuous:
        params["params"]["log_std"] = np.array([-0.5, 0.25], np.float32)  # sigma 0.61, 1.28
    return config, policy, params, stats()


def export_to(tmp_path, config, params, state, spec, name="policy.onnx"):
    return export.export_onnx(tmp_path / name, params, state, config, spec, OBS)


def run(path_or_session, obs, masks=None) -> dict:
    session = path_or_session
    if not isinstance(session, ort.InferenceSession):
        session = ort.InferenceSession(str(path_or_session), providers=["CPUExecutionProvider"])
    feeds = {"obs_0": np.asarray(obs, np.float32)}
    if masks is not None:
        feeds["action_masks"] = np.asarray(masks, np.float32)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def set_head(params, kernel_scale=1.0, bias=None):
    head = params["params"]["policy_head"]
    head["kernel"] = head["kernel"] * np.float32(kernel_scale)
    if bias is not None:
        head["bias"] = np.asarray(bias, np.float32)


# --------------------------------------------------------------------------- the contract


def test_continuous_model_has_ml_agents_names_opset_and_constants(tmp_path):
    config, _, params, state = policy_setup()
    del params["params"]["critic"], params["params"]["value_head"]  # the critic is not needed
    path = export_to(tmp_path, config, params, state, CONT)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)

    assert [(o.domain, o.version) for o in model.opset_import] == [("", 9)]
    assert [i.name for i in model.graph.input] == ["obs_0"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert (dims[0].dim_param, dims[1].dim_value) == ("batch", OBS)
    assert [o.name for o in model.graph.output] == CONT_OUTPUTS
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in model.graph.output)

    out = run(path, np.zeros((1, OBS)))
    for name, value in [("version_number", [3.0]), ("memory_size", [0.0]),
                        ("continuous_action_output_shape", [2.0])]:
        assert out[name].dtype == np.float32 and out[name].shape == (1,)
        np.testing.assert_array_equal(out[name], value)


def test_discrete_model_has_ml_agents_names_and_constants(tmp_path):
    config, _, params, state = policy_setup(spec=DISC)
    path = export_to(tmp_path, config, params, state, DISC)
    model = onnx.load(str(path))
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 9)]
    assert [i.name for i in model.graph.input] == ["obs_0", "action_masks"]
    assert [o.name for o in model.graph.output] == DISC_OUTPUTS

    out = run(path, np.zeros((3, OBS)), np.ones((3, 4)))
    np.testing.assert_array_equal(out["version_number"], [3.0])
    np.testing.assert_array_equal(out["memory_size"], [0.0])
    shape = out["discrete_action_output_shape"]
    assert shape.dtype == np.float32 and shape.shape == (1, 1) and shape[0, 0] == 4.0
    for name in ("discrete_actions", "deterministic_discrete_actions"):
        assert out[name].dtype == np.int64 and out[name].shape == (3, 1)


@pytest.mark.parametrize("spec", [CONT, DISC], ids=["continuous", "discrete"])
def test_dynamic_batch_sizes_1_and_37(tmp_path, spec):
    config, _, params, state = policy_setup(spec=spec)
    path = export_to(tmp_path, config, params, state, spec)
    width = 2 if spec.is_continuous else 1
    for batch in (1, 37):
        masks = None if spec.is_continuous else np.ones((batch, 4))
        out = run(path, raw_obs(state, batch), masks)
        for name in (CONT_OUTPUTS if spec.is_continuous else DISC_OUTPUTS)[2::2]:
            assert out[name].shape == (batch, width), (name, batch)


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("preset,normalize", [("mlagents", True), ("seed", True),
                                              ("seed", False), ("cleanrl", True)])
def test_deterministic_actions_equal_the_jax_policy_mode(tmp_path, preset, normalize):
    config, policy, params, state = policy_setup(preset, normalize=normalize)
    obs = raw_obs(state, 37)
    if normalize:
        std = np.sqrt(np.asarray(jppo.normalizer.variance(state)))
        normed = (obs - np.asarray(state.mean)) / std
        assert np.mean(np.abs(normed) > 5.0) > 0.2  # the in-graph clip is exercised
    # Spread the means to std 3 so that the +-3 clamp bites on some entries.
    set_head(params, 3.0 / float(np.std(policy.mode(params, state, obs))))
    mode = np.asarray(policy.mode(params, state, obs))
    assert 0.1 < np.mean(np.abs(mode) > 3.0) < 0.9

    out = run(export_to(tmp_path, config, params, state, CONT), obs)
    np.testing.assert_allclose(out["deterministic_continuous_actions"],
                               np.clip(mode, -3, 3) / 3, rtol=0, atol=1e-5)


def clipped_normal_moments(mu, sigma, bound=3.0):
    """Mean and std of clip(N(mu, sigma), -bound, bound) / bound, and P(clipped)."""
    phi = lambda z: math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    cdf = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))
    a, b = (-bound - mu) / sigma, (bound - mu) / sigma
    inside = cdf(b) - cdf(a)
    m1 = -bound * cdf(a) + bound * (1 - cdf(b)) + mu * inside + sigma * (phi(a) - phi(b))
    m2 = (bound ** 2 * (cdf(a) + 1 - cdf(b)) + (mu ** 2 + sigma ** 2) * inside
          + 2 * mu * sigma * (phi(a) - phi(b)) + sigma ** 2 * (a * phi(a) - b * phi(b)))
    return m1 / bound, math.sqrt(m2 - m1 ** 2) / bound, 1 - inside


@pytest.mark.parametrize("preset", ["mlagents", "seed"])
def test_sampled_actions_have_the_policy_mean_and_std(tmp_path, preset):
    config, policy, params, state = policy_setup(preset)
    obs = raw_obs(state, 1)
    # Put the mean at (0.4, 0.8): with sigma (0.61, 1.28) about 4% of dim 1 is clamped at +3.
    dist, _ = policy.forward(params, state, obs)
    set_head(params, bias=params["params"]["policy_head"]["bias"] + (np.array([0.4, 0.8])
                                                                     - np.asarray(dist.mean[0])))
    dist, _ = policy.forward(params, state, obs)
    mu, sigma = np.asarray(dist.mean[0]), np.asarray(dist.std[0])
    np.testing.assert_allclose(mu, [0.4, 0.8], atol=1e-5)
    np.testing.assert_allclose(sigma, np.exp([-0.5, 0.25]), rtol=1e-6)

    session = ort.InferenceSession(str(export_to(tmp_path, config, params, state, CONT)),
                                   providers=["CPUExecutionProvider"])
    samples = run(session, np.repeat(obs, N_SAMPLES, axis=0))["continuous_actions"]
    assert np.all(np.abs(samples) <= 1.0)
    for d in range(2):
        mean, std, p_clip = clipped_normal_moments(float(mu[d]), float(sigma[d]))
        se_mean, se_std = std / math.sqrt(N_SAMPLES), std / math.sqrt(2 * N_SAMPLES)
        assert abs(samples[:, d].mean() - mean) < 5 * se_mean, d
        assert abs(samples[:, d].std() - std) < 5 * se_std, d
        clipped = np.mean(np.abs(samples[:, d]) == 1.0)
        assert abs(clipped - p_clip) < 5 * math.sqrt(p_clip * (1 - p_clip) / N_SAMPLES) + 1e-4, d
    # Fresh noise on every call (onnxruntime seeds each new session alike, so reuse this one).
    again = run(session, np.repeat(obs, 4, axis=0))["continuous_actions"]
    assert not np.allclose(again, samples[:4])


@pytest.mark.parametrize("preset", ["mlagents", "seed"])
def test_discrete_samples_follow_the_softmax_and_argmax_matches(tmp_path, preset):
    config, policy, params, state = policy_setup(preset, spec=DISC)
    set_head(params, kernel_scale=2.0, bias=[1.0, 0.0, -1.0, 0.5])
    path = export_to(tmp_path, config, params, state, DISC)

    obs = raw_obs(state, 37)
    out = run(path, obs, np.ones((37, 4)))
    np.testing.assert_array_equal(out["deterministic_discrete_actions"][:, 0],
                                  np.asarray(policy.mode(params, state, obs)))
    assert len(np.unique(out["deterministic_discrete_actions"])) > 1  # not a constant answer

    one = obs[:1]
    probs = np.asarray(policy.forward(params, state, one)[0].probs()[0], np.float64)
    assert probs.max() < 0.9 and probs.min() > 0.01
    for masks in (np.ones(4), (np.arange(4) != np.argmax(probs)).astype(np.float32)):
        expected = probs * masks / np.sum(probs * masks)
        tiled = np.repeat(masks[None], N_SAMPLES, axis=0)
        actions = run(path, np.repeat(one, N_SAMPLES, axis=0), tiled)["discrete_actions"][:, 0]
        assert actions.min() >= 0 and actions.max() < 4
        freq = np.bincount(actions, minlength=4) / N_SAMPLES
        se = np.sqrt(expected * (1 - expected) / N_SAMPLES)
        np.testing.assert_array_less(np.abs(freq - expected), 5 * se + 1e-12)


# --------------------------------------------------------------------------- writing


def test_failed_export_leaves_no_file(tmp_path, monkeypatch):
    config, _, params, state = policy_setup()
    target = tmp_path / "policy.onnx"
    with pytest.raises(ValueError, match="do not match the config"):
        export.export_onnx(target, params, state, config, CONT, OBS + 1)
    assert list(tmp_path.iterdir()) == []

    target.write_bytes(b"previous model")

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", failing_replace)  # the one atomic writer
    with pytest.raises(OSError):
        export.export_onnx(target, params, state, config, CONT, OBS)
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left behind
    assert target.read_bytes() == b"previous model"


# --------------------------------------------------------------------------- CLI


def fake_loader(calls, spec=CONT, behavior="3DBall"):
    config, _, params, state = policy_setup(spec=spec)

    def load_policy(run_dir, seed_index=0, steps=None, **choice):  # --checkpoint, --seed, --member
        calls.append(str(run_dir))
        return types.SimpleNamespace(config=config, action_spec=spec, observation_size=OBS,
                                     params=params, normalizer=state, behavior=behavior)

    return load_policy


def test_main_writes_run_dir_behavior_onnx_and_returns_0(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(export, "load_policy", fake_loader(calls))
    assert export.main([str(tmp_path)]) == 0
    assert calls == [str(tmp_path)]
    path = tmp_path / "3DBall.onnx"
    assert str(path) in capsys.readouterr().out
    assert run(path, np.zeros((2, OBS)))["continuous_actions"].shape == (2, 2)


@pytest.mark.parametrize("spec", [CONT, DISC], ids=["continuous", "discrete"])
def test_main_check_runs_the_model_and_prints_output_shapes(tmp_path, monkeypatch, capsys, spec):
    monkeypatch.setattr(export, "load_policy", fake_loader([], spec=spec))
    target = tmp_path / "out" / "model.onnx"
    target.parent.mkdir()
    assert export.main([str(tmp_path), "--output", str(target), "--check"]) == 0
    assert target.exists() and not (tmp_path / "3DBall.onnx").exists()
    printed = capsys.readouterr().out
    assert "version_number: shape [1] float32" in printed
    if spec.is_continuous:
        assert "continuous_actions: shape [1, 2] float32" in printed
    else:
        assert "discrete_actions: shape [1, 1] int64" in printed
        assert "discrete_action_output_shape: shape [1, 1] float32" in printed


def test_main_user_error_prints_one_sentence_and_exits_2(tmp_path, monkeypatch, capsys):
    message = f"run folder {str(tmp_path)!r} has no checkpoint; train it first."

    def missing(run_dir, seed_index=0, steps=None, **choice):
        raise UserError(message)

    monkeypatch.setattr(export, "load_policy", missing)
    assert export.main([str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: {message}\n" and captured.out == ""
    assert list(tmp_path.iterdir()) == []


def test_main_policy_inconsistent_with_its_config_is_a_user_error(tmp_path, monkeypatch, capsys):
    config, _, params, state = policy_setup()
    policy = types.SimpleNamespace(config=config, action_spec=CONT, observation_size=OBS + 2,
                                   params=params, normalizer=state, behavior="3DBall")
    monkeypatch.setattr(export, "load_policy", lambda run_dir, seed_index=0, steps=None, **choice: policy)
    assert export.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: the policy in {str(tmp_path)!r} cannot be exported: ")
    assert err.count("\n") == 1 and list(tmp_path.iterdir()) == []


def test_main_unwritable_output_is_a_user_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(export, "load_policy", fake_loader([]))
    target = tmp_path / "missing-folder" / "model.onnx"
    assert export.main([str(tmp_path), "--output", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write the model to") and err.count("\n") == 1
    assert "Traceback" not in err and list(tmp_path.iterdir()) == []


def test_main_exports_a_saved_checkpoint_end_to_end(tmp_path, capsys):
    from jppo.runs import checkpoint

    config, policy, params, state = policy_setup()
    train = jppo.init_train_state(jax.random.PRNGKey(3), config, OBS, CONT)
    train = train.replace(params=params, normalizer=state)
    checkpoint.save(tmp_path, 1000, {"train": train},
                    checkpoint.policy_meta(config, CONT, OBS, "Ball"))
    assert export.main([str(tmp_path), "--check"]) == 0
    assert "continuous_actions: shape [1, 2] float32" in capsys.readouterr().out
    obs = raw_obs(state, 5)
    out = run(tmp_path / "Ball.onnx", obs)
    np.testing.assert_allclose(out["deterministic_continuous_actions"],
                               np.clip(np.asarray(policy.mode(params, state, obs)), -3, 3) / 3,
                               atol=1e-5)


def test_module_entry_point_exits_2_with_one_line_for_a_missing_run(tmp_path):
    missing = tmp_path / "no-such-run"
    done = subprocess.run([sys.executable, "-m", "jppo.export", str(missing)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert str(missing) in done.stderr and "Traceback" not in done.stderr
