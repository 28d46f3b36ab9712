"""A tiny builder for opset-9 ONNX graphs, and the layers jppo's actor is made of.

Only ``onnx.helper`` is used (no torch). Every layer here works on rank-2 tensors ``[batch,
width]`` with a symbolic batch (the image encoders' NCHW layers are in ``jppo.onnx.encoders``),
and uses only ops that exist in opset 9, the opset Unity's inference engines (Barracuda,
Sentis) import ML-Agents models at.
"""
from __future__ import annotations

import itertools

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from jppo.core.policy import ACTION_CLAMP

OPSET = 9
BATCH = "batch"  # the symbolic (dynamic) batch dimension


class GraphBuilder:
    """Collects nodes and initializers; every value gets a unique, readable name."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._ids = itertools.count()

    def _fresh(self, hint: str) -> str:
        return f"{hint}_{next(self._ids)}"

    def const(self, hint: str, value, dtype=np.float32) -> str:
        """An initializer holding ``value`` (cast to ``dtype``); returns its name."""
        name = self._fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs) -> str:
        """Append one node with a single output (``out`` or a fresh name); returns the output."""
        out = out or self._fresh(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out],
                                           name=self._fresh(op_type), **attrs))
        return out

    def constant_output(self, name: str, value, dtype=np.float32) -> str:
        """A ``Constant`` node producing graph output ``name``. ML-Agents exposes its metadata
        (version, memory size, action shapes) as outputs, which Unity reads by running the model."""
        tensor = numpy_helper.from_array(np.asarray(value, dtype), name + "_value")
        return self.op("Constant", out=name, value=tensor)

    def model(self, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
              graph_name: str, producer_version: str) -> onnx.ModelProto:
        """The finished model at opset 9 and the lowest IR version that carries it."""
        graph = helper.make_graph(self.nodes, graph_name, inputs, outputs, self.initializers)
        opset = helper.make_opsetid("", OPSET)
        # The lowest IR version for opset 9 keeps older importers (Barracuda) able to read it.
        return helper.make_model(graph, opset_imports=[opset], producer_name="jppo",
                                 producer_version=producer_version,
                                 ir_version=helper.find_min_ir_version_for([opset]))


def value_info(name: str, dtype: int, shape: list) -> onnx.ValueInfoProto:
    """A typed graph input/output; a string in ``shape`` is a symbolic dimension."""
    return helper.make_tensor_value_info(name, dtype, shape)


FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64


def check_shape(name: str, array: np.ndarray, shape: tuple):
    """``ValueError`` unless parameter ``name`` has ``shape``: params from another config."""
    if array.shape != tuple(shape):
        raise ValueError(f"parameter {name} has shape {array.shape}, expected {tuple(shape)}; the "
                         "params do not match the config, action spec and observation size.")


def dense(g: GraphBuilder, x: str, kernel: np.ndarray, bias: np.ndarray, hint: str) -> str:
    """``x[B, in] @ kernel[in, out] + bias[out] -> [B, out]`` (flax's kernel layout is Gemm's B)."""
    return g.op("Gemm", x, g.const(hint + ".kernel", kernel), g.const(hint + ".bias", bias))


def swish(g: GraphBuilder, x: str) -> str:
    """``x * sigmoid(x)``: opset 9 has no Swish/SiLU op."""
    return g.op("Mul", x, g.op("Sigmoid", x))


def layer_norm(g: GraphBuilder, x: str, scale: np.ndarray, bias: np.ndarray, eps: float,
               hint: str) -> str:
    """LayerNorm over the last axis of ``x[B, H]`` from opset-9 ops (LayerNormalization is
    opset 17): ``(x - mean) / sqrt(var + eps) * scale + bias`` with the population variance."""
    # axes=[1], not [-1]: negative axes in ReduceMean arrive only in opset 11.
    centred = g.op("Sub", x, g.op("ReduceMean", x, axes=[1], keepdims=1))
    var = g.op("ReduceMean", g.op("Mul", centred, centred), axes=[1], keepdims=1)
    std = g.op("Sqrt", g.op("Add", var, g.const(hint + ".eps", eps)))
    normed = g.op("Div", centred, std)
    return g.op("Add", g.op("Mul", normed, g.const(hint + ".scale", scale)),
                g.const(hint + ".bias", bias))


def normalize(g: GraphBuilder, x: str, mean: np.ndarray, inv_std: np.ndarray,
              clip: float) -> str:
    """``clip((x - mean) * inv_std, -clip, clip)`` for ``x[B, D]`` with folded statistics."""
    scaled = g.op("Mul", g.op("Sub", x, g.const("normalizer.mean", mean)),
                  g.const("normalizer.inv_std", inv_std))
    # Opset 9's Clip takes its bounds as attributes (inputs only from opset 11).
    return g.op("Clip", scaled, min=-float(clip), max=float(clip))


def clamp_to_unit(g: GraphBuilder, x: str, out: str) -> str:
    """``clip(x, -3, 3) / 3`` into output ``out``: ML-Agents' mapping of Gaussian actions to
    [-1, 1] in the exported model."""
    return g.op("Div", g.op("Clip", x, min=-ACTION_CLAMP, max=ACTION_CLAMP),
                g.const("three", ACTION_CLAMP), out=out)
