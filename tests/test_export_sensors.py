"""ONNX export of several sensors, several discrete branches with masks, and hybrid actions:
the interface of the models ML-Agents ships (names, order, types, shapes), the mask as ML-Agents
applies it, and the outputs against the JAX policy in onnxruntime."""
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime as ort
import pytest

import jppo
from jppo import ActionSpec, PPOConfig, export
from jppo.core.normalizer import NormalizerState
from jppo.runs import checkpoint

SHIPPED = json.loads((pathlib.Path(__file__).parent / "data" / "mlagents_models.json").read_text())
TYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.INT64: "int64"}
# The shipped models' sensors and actions (from their inputs and outputs).
SHIPPED_SPECS = {
    "3DBall": (8, ActionSpec.continuous(2)),
    "Basic": (20, ActionSpec.discrete(3)),
    "PushBlock": ([105, 105], ActionSpec.discrete(7)),
    "Pyramids": ([56, 56, 56, 4], ActionSpec.discrete(5)),
    "Striker": ([231, 63], ActionSpec.discrete(3, 3, 3)),
    "Goalie": (738, ActionSpec.discrete(3, 3, 3)),
    "BigWallJump": ([210, 210, 24], ActionSpec.discrete(3, 3, 3, 2)),
    "Worm": (64, ActionSpec.continuous(9)),
}


def stats_for(sizes, seed=1):
    """Normalizer statistics far from the identity, one per sensor."""
    rng = np.random.default_rng(seed)
    one = lambda d: NormalizerState(jnp.float32(50.0), jnp.asarray(rng.normal(size=d) * 2, jnp.float32),
                                    jnp.asarray(rng.uniform(0.1, 4.0, d) * 50, jnp.float32))
    return one(sizes) if isinstance(sizes, int) else tuple(one(d) for d in sizes)


def setup(sizes, spec, normalize=True, hidden=16):
    config = PPOConfig(normalize=normalize, hidden_units=hidden, num_layers=2)
    policy = jppo.make_policy(config, spec)
    params = jax.tree_util.tree_map(np.asarray, policy.init_params(jax.random.PRNGKey(0), sizes))
    for head in ("policy_head", "discrete_head"):  # spread the logits and means
        if head in params["params"]:
            params["params"][head]["kernel"] = params["params"][head]["kernel"] * 30.0
    return config, policy, params, stats_for(sizes)


def interface(model: onnx.ModelProto, inputs=True) -> list:
    init = {i.name for i in model.graph.initializer}
    values = [v for v in (model.graph.input if inputs else model.graph.output) if v.name not in init]
    dims = lambda v: [d.dim_param and "batch" or d.dim_value for d in v.type.tensor_type.shape.dim]
    return [{"name": v.name, "type": TYPES[v.type.tensor_type.elem_type], "shape": dims(v)}
            for v in values]


@pytest.mark.parametrize("scene", sorted(SHIPPED_SPECS))
def test_interface_matches_the_models_ml_agents_ships(tmp_path, scene):
    sizes, spec = SHIPPED_SPECS[scene]
    config, _, params, state = setup(sizes, spec)
    path = export.export_onnx(tmp_path / "m.onnx", params, state, config, spec, sizes)
    model = onnx.load(str(path))
    shipped = SHIPPED["models"][scene]
    assert [o.version for o in model.opset_import] == shipped["opset"] == [9]
    assert interface(model, inputs=True) == shipped["inputs"]
    assert interface(model, inputs=False) == shipped["outputs"]
    # Unity reads the constants by running the model.
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = dict(zip([o.name for o in session.get_outputs()],
                   session.run(None, export.check_inputs(session, batch=2))))
    if spec.discrete_branches:
        np.testing.assert_array_equal(out["discrete_action_output_shape"],
                                      [list(spec.discrete_branches)])
        assert out["discrete_actions"].shape == (2, spec.num_branches)


def test_masks_are_applied_as_ml_agents_does_mask_times_minus_one_plus_one(tmp_path):
    config, _, params, state = setup(6, ActionSpec.discrete(3, 2))
    model = export.build_model(params, state, config, ActionSpec.discrete(3, 2), 6)
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes = list(model.graph.node)
    uses_mask = [n for n in nodes if "action_masks" in n.input]
    flip = next(n for n in uses_mask if n.op_type == "Mul" and any(
        consts.get(i) is not None and float(consts[i]) == -1.0 for i in n.input))
    add = next(n for n in nodes if n.op_type == "Add" and flip.output[0] in n.input)
    other = [i for i in add.input if i != flip.output[0]][0]
    assert float(consts[other]) == 1.0
    # No Sub has a constant as its first input (Unity's importer may swap a Sub's inputs).
    assert not [n for n in nodes if n.op_type == "Sub" and n.input[0] in consts]


CASES = {
    "two sensors, continuous": ([5, 3], ActionSpec.continuous(2)),
    "two branches, masked": (7, ActionSpec.discrete(4, 3)),
    "hybrid, two sensors": ([4, 3], ActionSpec.hybrid(2, (3, 2))),
}


def feeds_for(sizes, state, masks, n, seed=2):
    rng = np.random.default_rng(seed)
    sizes = [sizes] if isinstance(sizes, int) else sizes
    states = [state] if isinstance(state, NormalizerState) else list(state)
    obs = [np.asarray(s.mean) + np.sqrt(np.asarray(s.m2) / 50) * rng.uniform(-8, 8, (n, d))
           for d, s in zip(sizes, states)]
    feeds = {f"obs_{i}": o.astype(np.float32) for i, o in enumerate(obs)}
    if masks is not None:
        feeds["action_masks"] = masks.astype(np.float32)
    return feeds, obs


def random_masks(spec, n, seed=3):
    if not spec.mask_size:
        return None
    rng = np.random.default_rng(seed)
    masks = rng.random((n, spec.mask_size)) < 0.5
    offsets = np.cumsum((0,) + spec.discrete_branches)[:-1]
    masks[np.arange(n), offsets[rng.integers(0, spec.num_branches, n)]] = True
    for start, size in zip(offsets, spec.discrete_branches):  # never a branch all masked
        empty = ~masks[:, start:start + size].any(1)
        masks[empty, start + rng.integers(0, size, empty.sum())] = True
    return masks


@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_equal_the_jax_policy_and_masked_choices_are_never_drawn(tmp_path, case):
    sizes, spec = CASES[case]
    config, policy, params, state = setup(sizes, spec)
    n = 64
    masks = random_masks(spec, n)
    feeds, obs = feeds_for(sizes, state, masks, n)
    path = export.export_onnx(tmp_path / "m.onnx", params, state, config, spec, sizes)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    out = dict(zip(names, session.run(names, feeds)))
    jax_obs = obs[0] if isinstance(sizes, int) else tuple(obs)
    mode = np.asarray(policy.mode(params, state, jax_obs, masks))
    continuous, discrete = spec.split(jnp.asarray(mode))
    if spec.continuous_size:
        np.testing.assert_allclose(out["deterministic_continuous_actions"],
                                   np.clip(np.asarray(continuous), -3, 3) / 3, atol=1e-5)
    if spec.discrete_branches:
        np.testing.assert_array_equal(out["deterministic_discrete_actions"], np.asarray(discrete))
        assert len(np.unique(out["deterministic_discrete_actions"][:, 0])) > 1
        # Many draws under the masks: a masked choice never comes out.
        reps = 200
        tiled = {k: np.repeat(v, reps, axis=0) for k, v in feeds.items()}
        drawn = session.run(["discrete_actions"], tiled)[0]
        offsets = np.cumsum((0,) + spec.discrete_branches)[:-1]
        allowed = np.take_along_axis(np.repeat(masks, reps, 0), offsets + drawn, axis=1)
        assert allowed.all() and drawn.shape == (n * reps, spec.num_branches)
        assert len(np.unique(drawn[:, 0])) > 1


def test_old_3dball_checkpoints_still_export(tmp_path, capsys):
    """A checkpoint as jppo wrote them before several sensors and branches: meta
    ``observation_size`` an int, ``action_spec`` ["continuous", 2], one normalizer."""
    config, policy, params, state = setup(8, ActionSpec.continuous(2))
    train = jppo.init_train_state(jax.random.PRNGKey(3), config, 8, ActionSpec.continuous(2))
    train = train.replace(params=params, normalizer=state)
    meta = {"ppo": config.__dict__, "action_spec": ["continuous", 2], "observation_size": 8,
            "behavior": "3DBall"}
    assert checkpoint.policy_meta(config, ActionSpec.continuous(2), 8, "3DBall") == meta
    checkpoint.save(tmp_path, 1000, {"train": train}, meta)
    saved = checkpoint.load_policy(tmp_path)
    assert saved.observation_size == 8 and saved.action_spec == ActionSpec.continuous(2)
    assert isinstance(saved.normalizer, NormalizerState)
    assert export.main([str(tmp_path)]) == 0
    model = onnx.load(str(tmp_path / "3DBall.onnx"))
    assert [i.name for i in model.graph.input] == ["obs_0"]


def test_two_sensor_checkpoints_export_one_input_per_sensor(tmp_path):
    spec = ActionSpec.hybrid(2, (3, 2))
    config, policy, params, state = setup([4, 3], spec)
    train = jppo.init_train_state(jax.random.PRNGKey(3), config, [4, 3], spec)
    train = train.replace(params=params, normalizer=state)
    checkpoint.save(tmp_path, 1000, {"train": train},
                    checkpoint.policy_meta(config, spec, [4, 3], "Reach"))
    saved = checkpoint.load_policy(tmp_path)
    assert saved.observation_size == ((4,), (3,)) and saved.action_spec == spec
    np.testing.assert_array_equal(saved.normalizer[1].mean, state[1].mean)
    assert export.main([str(tmp_path)]) == 0
    model = onnx.load(str(tmp_path / "Reach.onnx"))
    assert [i.name for i in model.graph.input] == ["obs_0", "obs_1", "action_masks"]
    assert [o.name for o in model.graph.output] == [
        "version_number", "memory_size", "continuous_actions", "continuous_action_output_shape",
        "deterministic_continuous_actions", "discrete_actions", "discrete_action_output_shape",
        "deterministic_discrete_actions"]


def test_resuming_a_one_array_3dballhard_checkpoint_on_the_two_sensor_port_is_refused(tmp_path,
                                                                                      capsys):
    """3DBallHard's JAX port used to concatenate its two stacks into 45 floats; a checkpoint of
    that layout is refused by what changed, in one sentence, and left as it was."""
    from jppo.runs.settings import DEFAULT_CONFIG
    from jppo.train import main

    run = tmp_path / "results" / "hard"
    config = PPOConfig()
    meta = {**checkpoint.policy_meta(config, ActionSpec.continuous(2), 45, "3DBallHard"),
            "env": "3DBallHard", "num_envs": 12, "num_seeds": 1, "seed": 0}
    path = checkpoint.save(run, 12000, {"train": {"step": np.zeros(())}}, meta)
    before = path.read_bytes()
    config_file = str(DEFAULT_CONFIG.parent / "3DBallHard.yaml")
    assert main([config_file, "--resume", "--run-id", "hard", "--results-dir",
                 str(tmp_path / "results"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == ("jppo: error: cannot resume: the checkpoint was trained on 45 observations, "
                   "but 3DBallHard sends sensors of shapes (27,), (18,); start it again with "
                   "--force.\n")
    assert path.read_bytes() == before and sorted(p.name for p in run.iterdir()) == ["checkpoints"]
