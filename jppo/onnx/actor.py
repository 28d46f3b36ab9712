"""Export a trained actor as an ONNX model Unity's ML-Agents inference runs (model API version 3).

    export_onnx(path, params, normalizer, config, action_spec, observation_size) -> path

(``python -m jppo.export RUN_DIR`` exports a run folder's policy with it.)

The graph (opset 9, built with ``onnx.helper``) reproduces what ML-Agents' ``SimpleActor.forward``
exports (``mlagents/trainers/torch/networks.py``, ``action_model.py``, ``distributions.py``,
``model_serialization.py``), input and output names and order included:

- inputs ``obs_0``, ``obs_1``, ... one per sensor in the scene's order: a vector sensor
  ``[batch, D_i]`` (raw observations: its normalizer is folded into the graph as constants), an
  (H, W, C) image sensor ``[batch, C, H, W]`` (NCHW, as ML-Agents' ``_get_onnx_shape``; not
  normalized, through its ``vis_encode_type`` encoder: ``jppo.onnx.encoders``); the encodings
  are concatenated before the body; ``action_masks`` ``[batch, sum(branches)]`` (1
  allowed, 0 masked) when there are discrete branches;
- ``version_number`` = [3.], ``memory_size`` = [0.]: float32 ``[1]`` (torch ``Tensor([..])``;
  Unity reads them as ``Tensor<float>``);
- continuous: ``continuous_actions`` ``[batch, A]`` = clip(mu + sigma * noise, -3, 3) / 3 with
  the noise drawn in the graph (``RandomNormalLike``), ``continuous_action_output_shape`` = [A.]
  float32 ``[1]``, ``deterministic_continuous_actions`` = clip(mu, -3, 3) / 3;
- discrete: per branch the logits masked as ML-Agents' ``_mask_branch`` does,
  ``logits * mask - 1e8 * (mask * -1 + 1)`` (``-1 * mask + 1`` rather than ``1 - mask``: Unity's
  inference engine may swap the inputs of a constant-first ``Sub``); ``discrete_actions``
  ``[batch, branches]`` int64 sampled per branch with ``Multinomial`` (torch.multinomial),
  ``discrete_action_output_shape`` = [[b0., b1., ...]] float32 ``[1, branches]``,
  ``deterministic_discrete_actions`` ``[batch, branches]`` int64 argmax per branch;
- a hybrid action has both sets, continuous first, as ML-Agents writes them.

The critic is not exported.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from jppo.core import encoders
from jppo.core import normalizer as obs_norm
from jppo.core import observations
from jppo.core.config import PPOConfig
from jppo.core.distributions import MASKED_LOGIT, branch_slices
from jppo.core.networks import ActionSpec
from jppo.onnx.encoders import image_encoder, nchw
from jppo.onnx.graph import (BATCH, FLOAT, INT64, GraphBuilder, check_shape, clamp_to_unit,
                             dense, layer_norm, normalize, swish, value_info)
from jppo.files import write_atomic
from jppo.version import __version__

MODEL_API_VERSION = 3  # ML-Agents' SimpleActor.MODEL_EXPORT_VERSION (ModelApiVersion.MLAgents2_0)
OBS_INPUT = "obs_0"
MASK_INPUT = "action_masks"
_LAYER_NORM_EPS = 1e-5  # networks.MLP's LayerNorm epsilon ("seed" preset)
_VAR_FLOOR = 1e-8  # normalizer's floor on the variance


def obs_input(i: int) -> str:
    """ML-Agents' TensorNames.get_observation_name: the i-th sensor's input."""
    return f"obs_{i}"


# --------------------------------------------------------------------------- graph pieces


def _to_numpy(tree) -> dict:
    """A nested mapping of arrays as nested dicts of float32 numpy arrays."""
    return {k: _to_numpy(v) if hasattr(v, "keys") else np.asarray(v, np.float32)
            for k, v in tree.items()}


def _actor_body(g: GraphBuilder, x: str, actor: dict, config: PPOConfig, in_size: int) -> str:
    """The hidden stack ``[B, in_size] -> [B, hidden_units]`` of ``networks.MLP``."""
    width = config.hidden_units
    for i in range(config.num_layers):
        dense_p = actor[f"Dense_{i}"]
        check_shape(f"actor.Dense_{i}.kernel", dense_p["kernel"], (in_size, width))
        x = dense(g, x, dense_p["kernel"], dense_p["bias"], f"actor.Dense_{i}")
        if config.network == "seed":
            ln = actor[f"LayerNorm_{i}"]
            x = g.op("Tanh", layer_norm(g, x, ln["scale"], ln["bias"], _LAYER_NORM_EPS,
                                        f"actor.LayerNorm_{i}"))
        elif config.network == "cleanrl":
            x = g.op("Tanh", x)
        else:
            x = swish(g, x)
        in_size = width
    return x


def _normalizer_constants(state: obs_norm.NormalizerState) -> tuple[np.ndarray, np.ndarray]:
    """``(mean[D], 1 / sqrt(max(var, 1e-8))[D])`` as ``normalizer.apply`` uses them."""
    var = np.asarray(obs_norm.variance(state), np.float64)
    inv_std = 1.0 / np.sqrt(np.maximum(var, _VAR_FLOOR))
    return np.asarray(state.mean, np.float32), inv_std.astype(np.float32)


def _continuous_head(g: GraphBuilder, mu: str, log_std: np.ndarray, size: int) -> list:
    """Outputs of a state-independent Gaussian ``N(mu[B, A], exp(log_std)[A])``."""
    sigma = g.const("sigma", np.exp(np.asarray(log_std, np.float64)))
    # No seed attribute: the runtime's generator gives fresh noise per call, as torch.randn_like.
    noise = g.op("RandomNormalLike", mu, dtype=FLOAT, mean=0.0, scale=1.0)
    sample = g.op("Add", mu, g.op("Mul", noise, sigma))
    clamp_to_unit(g, sample, out="continuous_actions")
    g.constant_output("continuous_action_output_shape", [size])
    clamp_to_unit(g, mu, out="deterministic_continuous_actions")
    return [value_info("continuous_actions", FLOAT, [BATCH, size]),
            value_info("continuous_action_output_shape", FLOAT, [1]),
            value_info("deterministic_continuous_actions", FLOAT, [BATCH, size])]


def _discrete_head(g: GraphBuilder, logits: str, branches: tuple) -> list:
    """Outputs of one masked categorical per branch over ``logits[B, sum(branches)]``."""
    # ML-Agents' _mask_branch: logits * mask - 1e8 * block, block = mask * -1 + 1 (no
    # constant-first Sub, whose inputs Unity's importer may swap; no Where op).
    block = g.op("Add", g.op("Mul", MASK_INPUT, g.const("minus_one", -1.0)), g.const("one", 1.0))
    masked = g.op("Sub", g.op("Mul", logits, MASK_INPUT),
                  g.op("Mul", block, g.const("mask_penalty", -MASKED_LOGIT)))
    samples, modes = [], []
    for i, part in enumerate(branch_slices(branches)):
        branch = (masked if len(branches) == 1 else
                  g.op("Slice", masked, axes=[1], starts=[part.start], ends=[part.stop]))
        # Multinomial takes unnormalized log-probabilities, so the masked logits go in as
        # they are (a masked choice, at -1e8, is never drawn).
        samples.append(g.op("Multinomial", branch, dtype=INT64, sample_size=1))
        modes.append(g.op("ArgMax", branch, axis=1, keepdims=1))
    g.op("Concat", *samples, out="discrete_actions", axis=1)
    g.constant_output("discrete_action_output_shape", [list(branches)])  # [1, branches], as torch
    g.op("Concat", *modes, out="deterministic_discrete_actions", axis=1)
    n = len(branches)
    return [value_info("discrete_actions", INT64, [BATCH, n]),
            value_info("discrete_action_output_shape", FLOAT, [1, n]),
            value_info("deterministic_discrete_actions", INT64, [BATCH, n])]


def build_model(params, normalizer, config: PPOConfig, action_spec: ActionSpec,
                observation_size) -> onnx.ModelProto:
    """The actor as an unchecked ONNX model (see the module docstring for inputs and outputs);
    ``observation_size`` is an int (one sensor) or one shape per sensor, ``normalizer`` of the
    same form. ``ValueError`` when the params do not fit the config, action spec and
    observation size."""
    # Accept the variables of ``model.init`` ({"params": ...}) or the bare params.
    p = _to_numpy(params.get("params", params))
    try:
        return _build(p, normalizer, config, action_spec, observation_size)
    except KeyError as err:
        raise ValueError(f"the params have no entry {err}; they are not the params of a "
                         f"{config.network!r} actor-critic.") from None


def _build(p: dict, normalizer, config: PPOConfig, action_spec: ActionSpec,
           observation_size) -> onnx.ModelProto:
    """``build_model`` on params already converted to nested numpy dicts."""
    g = GraphBuilder()
    shapes = observations.sensor_shapes(observation_size)
    refusal = not_exportable(observation_size)
    if refusal:
        raise ValueError(refusal)
    stats = [normalizer] if observations.is_single(observation_size) else list(normalizer)
    if len(stats) != len(shapes):
        raise ValueError(f"{len(stats)} normalizer(s) for {len(shapes)} sensor(s).")
    inputs = [value_info(obs_input(i), FLOAT, [BATCH, *_onnx_shape(shape)])
              for i, shape in enumerate(shapes)]
    outputs = [value_info("version_number", FLOAT, [1]), value_info("memory_size", FLOAT, [1])]
    g.constant_output("version_number", [MODEL_API_VERSION])
    g.constant_output("memory_size", [0])

    encoded, width = [], 0
    for i, (shape, state) in enumerate(zip(shapes, stats)):
        x = obs_input(i)
        if encoders.is_image(shape):
            # Images are not normalized (their normalizer state is empty), as in training.
            x = image_encoder(g, x, p["actor_encoder"][f"sensor_{i}"], config.vis_encode_type,
                              shape, config.hidden_units, f"actor_encoder.sensor_{i}")
            width += config.hidden_units
        else:
            if config.normalize:
                mean, inv_std = _normalizer_constants(state)
                check_shape(f"normalizer {i} mean", mean, shape)
                x = normalize(g, x, mean, inv_std, config.obs_clip)
            width += shape[0]  # a vector sensor's encoder is the identity
        encoded.append(x)
    x = encoded[0] if len(encoded) == 1 else g.op("Concat", *encoded, axis=1)
    hidden = _actor_body(g, x, p["actor"], config, width)

    c, branches = action_spec.continuous_size, action_spec.discrete_branches
    if c:
        head = p["policy_head"]
        check_shape("policy_head.kernel", head["kernel"], (config.hidden_units, c))
        check_shape("log_std", p["log_std"], (c,))
        mu = dense(g, hidden, head["kernel"], head["bias"], "policy_head")
        outputs += _continuous_head(g, mu, p["log_std"], c)
    if branches:
        name = "discrete_head" if c else "policy_head"
        head = p[name]
        check_shape(f"{name}.kernel", head["kernel"], (config.hidden_units, sum(branches)))
        inputs.append(value_info(MASK_INPUT, FLOAT, [BATCH, sum(branches)]))
        logits = dense(g, hidden, head["kernel"], head["bias"], name)
        outputs += _discrete_head(g, logits, branches)
    return g.model(inputs, outputs, "jppo_actor", __version__)


def _onnx_shape(shape) -> tuple:
    """A sensor's input shape after the batch: a vector's size, an (H, W, C) image as NCHW."""
    return nchw(shape) if encoders.is_image(shape) else tuple(shape)


def not_exportable(observation_size) -> str | None:
    """The one sentence refusing to export a policy over ``observation_size``, or None: vector
    sensors and HWC images are exported; a sensor of another rank has no encoder in jppo."""
    for i, shape in enumerate(observations.sensor_shapes(observation_size)):
        if len(shape) not in observations.ENCODERS:
            return (f"sensor {i} has shape {shape}; jppo exports policies over vector sensors "
                    "(rank 1) and HWC images (rank 3) only.")
    return None


# --------------------------------------------------------------------------- writing


def export_onnx(path, params, normalizer, config: PPOConfig, action_spec: ActionSpec,
                observation_size) -> Path:
    """Build, check (``onnx.checker`` with shape inference) and atomically write the actor of
    ``params`` as an ONNX model at ``path``; returns the path. Raises before touching ``path``
    when the params do not fit the config or the graph does not check."""
    _check_finite(params, normalizer)
    model = build_model(params, normalizer, config, action_spec, observation_size)
    onnx.checker.check_model(model, full_check=True)
    # Written atomically, so Unity's importer never sees a half-written model, with the
    # permissions the user's umask gives. The folder must exist: an --output typo is not created.
    return write_atomic(Path(path), model.SerializeToString(), make_parents=False)


def _check_finite(params, normalizer) -> None:
    """``ValueError`` when a parameter or the normalizer (one, or one per sensor) holds NaN or
    Inf: such a model would load in Unity and act NaN (its mean action and its samples alike)."""
    norms = (normalizer._asdict() if isinstance(normalizer, obs_norm.NormalizerState)
             else {f"obs_{i}": n._asdict() for i, n in enumerate(normalizer)})
    for where, tree in (("params", params.get("params", params)), ("normalizer", norms)):
        for name, leaf in _leaves(tree, where):
            if not np.isfinite(np.asarray(leaf, np.float64)).all():
                raise ValueError(f"{name} holds NaN or Inf (the training diverged); there is no "
                                 "policy to export from it.")


def _leaves(tree, prefix: str):
    for key, value in tree.items():
        if hasattr(value, "items"):
            yield from _leaves(value, f"{prefix}.{key}")
        else:
            yield f"{prefix}.{key}", value


# --------------------------------------------------------------------------- running it


def check_inputs(session, batch: int = 1) -> dict:
    """Feeds for an onnxruntime ``session``: zero observations, every action allowed."""
    feeds = {}
    for inp in session.get_inputs():
        shape = [batch] + [int(d) for d in inp.shape[1:]]
        feeds[inp.name] = (np.ones if inp.name == MASK_INPUT else np.zeros)(shape, np.float32)
    return feeds


def run_model(path, feeds: dict | None = None) -> dict:
    """Run the model at ``path`` once with onnxruntime: ``{output name: array}``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = feeds if feeds is not None else check_inputs(session)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


__all__ = ["MASK_INPUT", "MODEL_API_VERSION", "OBS_INPUT", "build_model", "check_inputs",
           "not_exportable", "export_onnx", "obs_input", "run_model"]
