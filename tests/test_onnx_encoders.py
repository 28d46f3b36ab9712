"""ONNX export of the image encoders: each ``vis_encode_type`` in onnxruntime against the JAX
encoder and the JAX policy (1e-5), the visual inputs named and laid out as ML-Agents' exporter
writes them (``obs_i`` ``[batch, C, H, W]``), and only opset-9 ops Unity's importers accept.

Images are small and not square (H != W, C > 1, so a swapped axis or a wrong flattening order
shows) at or just above each encoder's minimum resolution; match3 in particular is tested at
5x7 (its minimum is 5): at 84x84 its dense layer alone has 118M parameters."""
import jax
import numpy as np
import onnx
import onnxruntime as ort
import pytest

import jppo
from jppo import ActionSpec, PPOConfig, export
from jppo.core import normalizer
from jppo.core.encoders import MIN_RESOLUTION, ImageEncoder
from jppo.onnx import actor
from jppo.onnx.encoders import image_encoder, nchw
from jppo.onnx.graph import BATCH, FLOAT, GraphBuilder, value_info

# One small, non-square HWC image per encoder, at or near its minimum resolution.
IMAGES = {
    "simple": (20, 23, 2),
    "nature_cnn": (36, 39, 2),
    "resnet": (15, 18, 3),
    "match3": (5, 7, 2),
    "fully_connected": (3, 4, 2),
}
assert all(min(s[:2]) >= MIN_RESOLUTION[k] for k, s in IMAGES.items())
# Ops of opset <= 9 that Unity's Barracuda and Sentis importers take; an exported graph uses
# nothing else.
ALLOWED_OPS = {"Conv", "MaxPool", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Mul", "Add", "Sub",
               "Div", "Sqrt", "ReduceMean", "Clip", "Gemm", "Reshape", "Concat", "Slice",
               "Constant", "RandomNormalLike", "Multinomial", "ArgMax"}
VECTOR = 3
HIDDEN = 8
rng = np.random.default_rng(0)


def images(shape, n, seed=0):
    return np.random.default_rng(seed).random((n,) + tuple(shape)).astype(np.float32)


def random_leaf(leaf) -> np.ndarray:
    shape = leaf.shape
    scale = np.sqrt(2.0 / np.prod(shape[:-1])) if len(shape) > 1 else 0.1
    return rng.normal(0.0, scale, shape).astype(np.float32)


def session_of(model: onnx.ModelProto) -> ort.InferenceSession:
    onnx.checker.check_model(model, full_check=True)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("kind", sorted(IMAGES))
def test_each_encoder_in_onnx_equals_the_flax_encoder_on_nchw_input(kind):
    shape = IMAGES[kind]
    module = ImageEncoder(kind, HIDDEN, shape)
    x = images(shape, 6) * 2 - 1  # signed, so every activation sees both signs
    # Random params of the encoder's shapes (kernels He-scaled, biases away from zero); from
    # eval_shape, so only the forward pass is compiled (Flax's init of a conv stack compiles slowly).
    abstract = jax.eval_shape(module.init, jax.random.PRNGKey(1), x[:1])["params"]
    params = jax.tree_util.tree_map(random_leaf, abstract)
    want = np.asarray(jax.jit(module.apply)({"params": params}, x))
    g = GraphBuilder()
    out = image_encoder(g, "image", params, kind, shape, HIDDEN, "enc")
    g.op("Identity", out, out="encoding")
    model = g.model([value_info("image", FLOAT, [BATCH, *nchw(shape)])],
                    [value_info("encoding", FLOAT, [BATCH, HIDDEN])], "enc", "test")
    got = session_of(model).run(["encoding"], {"image": x.transpose(0, 3, 1, 2)})[0]
    assert got.shape == (6, HIDDEN) and np.abs(want).max() > 0.1
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # The same pixels fed channels-last (reinterpreted as NCHW) give another answer: the
    # check above sees the layout.
    wrong = session_of(model).run(["encoding"], {"image": x.reshape((6,) + nchw(shape))})[0]
    assert np.abs(wrong - want).max() > 1e-3


def policy(kind, spec, sizes, seed=0):
    """(config, policy, params, normalizer) of a random image policy: random params of the
    policy's tree (as the encoder test's), vector statistics away from the identity, so the
    normalizer is in the check too."""
    config = PPOConfig(hidden_units=HIDDEN, num_layers=1, vis_encode_type=kind, normalize=True)
    pol = jppo.make_policy(config, spec, sizes)
    abstract = jax.eval_shape(lambda key: pol.init_params(key, sizes), jax.random.PRNGKey(seed))
    params = jax.tree_util.tree_map(random_leaf, abstract)
    norm = tuple(s if len(shape) == 3 else s._replace(
        count=np.float32(50.0), mean=rng.normal(size=shape).astype(np.float32),
        m2=(rng.uniform(0.2, 3.0, shape) * 50).astype(np.float32))
        for s, shape in zip(normalizer.init(sizes), sizes))
    return config, pol, params, norm


def feeds_for(sizes, n, mask_size=0, seed=2):
    r = np.random.default_rng(seed)
    obs = tuple(images(s, n, seed + i) if len(s) == 3 else r.normal(0, 2, (n,) + s)
                .astype(np.float32) for i, s in enumerate(sizes))
    feeds = {f"obs_{i}": o.transpose(0, 3, 1, 2) if o.ndim == 4 else o for i, o in enumerate(obs)}
    masks = None
    if mask_size:
        masks = (r.random((n, mask_size)) < 0.7).astype(np.float32)
        masks[:, 0] = 1.0  # never a branch all masked
        feeds["action_masks"] = masks
    return feeds, obs, masks


HEADS = {"continuous": ActionSpec.continuous(2), "discrete": ActionSpec.discrete(4)}


@pytest.mark.parametrize("head", sorted(HEADS))
@pytest.mark.parametrize("kind", sorted(IMAGES))
def test_an_image_and_vector_policy_exports_with_the_jax_policys_deterministic_actions(
        tmp_path, kind, head):
    spec = HEADS[head]
    sizes = (IMAGES[kind], (VECTOR,))
    config, pol, params, norm = policy(kind, spec, sizes)
    path = export.export_onnx(tmp_path / "m.onnx", params, norm, config, spec, sizes)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    n = 32
    feeds, obs, masks = feeds_for(sizes, n, spec.mask_size)
    mode = np.asarray(pol.mode(params, norm, obs, masks))
    if spec.continuous_size:
        got = session.run(["deterministic_continuous_actions"], feeds)[0]
        want = np.clip(mode, -3, 3) / 3
        assert np.ptp(want) > 0.1 and (np.abs(want) < 1).mean() > 0.5  # spread, mostly unclamped
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    else:
        got = session.run(["deterministic_discrete_actions"], feeds)[0]
        np.testing.assert_array_equal(got, np.asarray(spec.split(mode)[1]))
        assert len(np.unique(got)) > 1
        assert (np.take_along_axis(masks, got, axis=1) == 1).all()


def test_two_cameras_a_vector_and_a_hybrid_action_export_in_sensor_order(tmp_path):
    """Sensors (vector, image, image) in that order: inputs obs_0..obs_2 as the scene's order,
    and the hybrid action's deterministic outputs as the JAX policy's."""
    spec = ActionSpec.hybrid(2, (3, 2))
    sizes = ((VECTOR,), (20, 21, 1), (22, 20, 3))
    config, pol, params, norm = policy("simple", spec, sizes, seed=4)
    model = export.build_model(params, norm, config, spec, sizes)
    assert [(i.name, dims(i)) for i in model.graph.input] == [
        ("obs_0", ["batch", VECTOR]), ("obs_1", ["batch", 1, 20, 21]),
        ("obs_2", ["batch", 3, 22, 20]), ("action_masks", ["batch", 5])]
    session = session_of(model)
    feeds, obs, masks = feeds_for(sizes, 24, spec.mask_size)
    names = ["deterministic_continuous_actions", "deterministic_discrete_actions"]
    cont, disc = session.run(names, feeds)
    continuous, discrete = spec.split(pol.mode(params, norm, obs, masks))
    np.testing.assert_allclose(cont, np.clip(np.asarray(continuous), -3, 3) / 3, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_array_equal(disc, np.asarray(discrete))


def dims(value: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.mark.parametrize("kind", sorted(IMAGES))
def test_inputs_and_outputs_are_ml_agents_and_only_opset_9_ops_unity_accepts(kind):
    """ML-Agents' ModelSerializer: ``obs_i`` with the (H, W, C) sensor as [batch, C, H, W]
    (``_get_onnx_shape``), dynamic batch; the outputs of a discrete actor, in order."""
    spec = ActionSpec.discrete(3)
    h, w, c = IMAGES[kind]
    sizes = ((h, w, c), (VECTOR,))
    config, _, params, norm = policy(kind, spec, sizes)
    model = export.build_model(params, norm, config, spec, sizes)
    assert [(i.name, dims(i)) for i in model.graph.input] == [
        ("obs_0", ["batch", c, h, w]), ("obs_1", ["batch", VECTOR]), ("action_masks", ["batch", 3])]
    assert [o.name for o in model.graph.output] == [
        "version_number", "memory_size", "discrete_actions", "discrete_action_output_shape",
        "deterministic_discrete_actions"]
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 9)]
    ops = {n.op_type for n in model.graph.node}
    assert ops <= ALLOWED_OPS, ops - ALLOWED_OPS
    for op in ops:  # each exists at opset 9 (not only in a later one)
        assert onnx.defs.get_schema(op, 9, "").since_version <= 9
    # The graph runs at batch 1 and 5 (the batch is dynamic), with the constants Unity reads.
    session = session_of(model)
    for n in (1, 5):
        feeds, _, _ = feeds_for(sizes, n, 3)
        out = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
        assert out["deterministic_discrete_actions"].shape == (n, 1)
        assert out["version_number"].tolist() == [3.0] and out["memory_size"].tolist() == [0.0]


def test_an_image_only_policy_has_one_nchw_input_and_no_normalizer():
    """A camera alone (``((H, W, C),)``): one input, no Sub/Clip of a normalizer in the graph
    even with ``normalize`` on (ML-Agents normalizes vectors only)."""
    spec = ActionSpec.continuous(1)
    sizes = ((20, 24, 1),)
    config, pol, params, norm = policy("simple", spec, sizes)
    model = export.build_model(params, norm, config, spec, sizes)
    assert [(i.name, dims(i)) for i in model.graph.input] == [("obs_0", ["batch", 1, 20, 24])]
    assert not [n for n in model.graph.node if n.op_type == "Sub"]
    feeds, obs, _ = feeds_for(sizes, 8)
    got = session_of(model).run(["deterministic_continuous_actions"], feeds)[0]
    np.testing.assert_allclose(got, np.clip(np.asarray(pol.mode(params, norm, obs)), -3, 3) / 3,
                               rtol=1e-5, atol=1e-5)


def test_params_of_another_encoder_are_refused_naming_the_parameter():
    spec = ActionSpec.discrete(2)
    sizes = ((36, 36, 1), (VECTOR,))
    config, _, params, norm = policy("simple", spec, sizes)
    with pytest.raises(ValueError, match=r"parameter actor_encoder.sensor_0.conv0.kernel has "
                       r"shape \(8, 8, 1, 16\), expected \(8, 8, 1, 32\)"):
        export.build_model(params, norm, config.replace(vis_encode_type="nature_cnn"), spec, sizes)
    config, _, params, norm = policy("fully_connected", spec, sizes)
    with pytest.raises(ValueError, match="the params have no entry 'conv0'"):
        export.build_model(params, norm, config.replace(vis_encode_type="simple"), spec, sizes)
    bigger = ((40, 36, 1), (VECTOR,))
    with pytest.raises(ValueError, match=r"actor_encoder.sensor_0.Dense_0.kernel has shape"):
        export.build_model(params, norm, config, spec, bigger)


def test_a_sensor_of_another_rank_is_still_refused_by_name():
    sentence = actor.not_exportable(((4, 5), (3,)))
    assert sentence == ("sensor 0 has shape (4, 5); jppo exports policies over vector sensors "
                        "(rank 1) and HWC images (rank 3) only.")
    assert actor.not_exportable(((20, 20, 3), (3,))) is None and actor.not_exportable(8) is None
