"""Parameters both ways between ``jppo.ActorCritic``'s Flax pytree and the torch reference.

Names correspond one to one::

    Flax  params/actor/Dense_{i}/kernel  [in, out]   torch  actor.dense{i}.weight  [out, in]
          params/actor/Dense_{i}/bias                       actor.dense{i}.bias
          params/actor/LayerNorm_{i}/scale                  actor.norm{i}.weight
          params/actor/LayerNorm_{i}/bias                   actor.norm{i}.bias
          (the same under critic), policy_head/*, value_head/*, log_std
          params/actor_encoder/sensor_{i}/conv{j}/kernel    actor_encoder.sensor_{i}.conv{j}.weight
                [kh, kw, in, out]  (HWIO)                           [out, in, kh, kw]  (OIHW)
          params/actor_encoder/sensor_{i}/Dense_0/*         actor_encoder.sensor_{i}.dense0.*
          (the same under critic_encoder; an image sensor's encoder, ``jppo.core.encoders``)

Only kernels change layout: Dense kernels are transposed, convolution kernels go HWIO <-> OIHW
(both sides flatten a feature map channel-major, so an encoder's dense kernel is only
transposed). The functions work on any pytree of that
structure, so gradients and Adam moments transfer the same way as parameters.
"""
from __future__ import annotations

from collections import OrderedDict

import jax.numpy as jnp
import numpy as np
import torch

_TO_TORCH_MODULE = {"Dense": "dense", "LayerNorm": "norm"}
_TO_FLAX_MODULE = {v: k for k, v in _TO_TORCH_MODULE.items()}
_HWIO_TO_OIHW, _OIHW_TO_HWIO = (3, 2, 0, 1), (2, 3, 1, 0)


def _torch_name(path: tuple) -> str:
    names = []
    for i, part in enumerate(path):
        if "_" in part and part.rsplit("_", 1)[0] in _TO_TORCH_MODULE:
            kind, index = part.rsplit("_", 1)
            names.append(_TO_TORCH_MODULE[kind] + index)
        elif i == len(path) - 1 and part in ("kernel", "scale"):
            names.append("weight")
        else:
            names.append(part)
    return ".".join(names)


def _flax_path(name: str, is_dense: bool) -> tuple:
    parts = name.split(".")
    path = []
    for i, part in enumerate(parts):
        kind = part.rstrip("0123456789")
        if kind in _TO_FLAX_MODULE and kind != part:
            path.append(f"{_TO_FLAX_MODULE[kind]}_{part[len(kind):]}")
        elif i == len(parts) - 1 and part == "weight":
            path.append("kernel" if is_dense else "scale")
        else:
            path.append(part)
    return tuple(path)


def _walk(tree: dict, prefix: tuple = ()):
    for key, value in tree.items():
        if isinstance(value, dict) or hasattr(value, "items"):
            yield from _walk(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def flax_to_torch(params) -> "OrderedDict[str, torch.Tensor]":
    """A ``state_dict`` for ``ActorCritic`` from Flax params (with or without the outer
    ``{"params": ...}``); float32 copies."""
    params = params.get("params", params)
    state = OrderedDict()
    for path, leaf in _walk(params):
        array = np.array(leaf, dtype=np.float32)
        if path[-1] == "kernel":
            array = np.transpose(array, _HWIO_TO_OIHW) if array.ndim == 4 else array.T
        state[_torch_name(path)] = torch.from_numpy(np.ascontiguousarray(array))
    return state


def torch_to_flax(state_dict) -> dict:
    """Flax params ``{"params": {...}}`` (jax arrays) from a ``state_dict`` or any mapping with
    its keys, e.g. ``{name: p.grad for name, p in model.named_parameters()}``."""
    tree: dict = {}
    for name, tensor in state_dict.items():
        module = name.rsplit(".", 1)[0] if "." in name else ""
        is_dense = module.rsplit(".", 1)[-1].startswith("dense") or module.endswith("_head")
        array = tensor.detach().cpu().numpy().astype(np.float32)
        path = _flax_path(name, is_dense or array.ndim == 4)
        if path[-1] == "kernel":
            array = np.transpose(array, _OIHW_TO_HWIO) if array.ndim == 4 else array.T
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = jnp.asarray(array)
    return {"params": tree}


def load_flax_params(model: torch.nn.Module, params) -> torch.nn.Module:
    """Copy Flax params into ``model`` (every tensor must match: strict)."""
    model.load_state_dict(flax_to_torch(params), strict=True)
    return model


def grads_to_flax(model: torch.nn.Module) -> dict:
    """The gradients in ``.grad`` as a Flax-shaped pytree."""
    return torch_to_flax({name: p.grad for name, p in model.named_parameters()})
