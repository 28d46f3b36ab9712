"""Environment parameters drawn per episode inside the jitted loop (ML-Agents' samplers).

Unity's ``EnvironmentParameters.GetWithDefault`` draws a sampled parameter anew at every read,
and its agents read theirs when an episode begins (3DBall's ``SetResetParameters`` in
``OnEpisodeBegin``); here each environment copy draws its values at each reset and keeps them
for the episode. The samplers are *data*, a ``SamplerTable`` carried in the loop state, so the
host can move a curriculum to its next lesson between chunks without recompiling:

    kind     int32 [P]        0 constant, 1 ranges (uniform, multirangeuniform), 2 gaussian
    numbers  float32 [P, 2]   constant (value, -), gaussian (mean, st_dev)
    ranges   float32 [P, K, 2] the intervals, padded with empty ones; an interval is picked in
                              proportion to its width, then a point in it (Unity's
                              MultiRangeUniform; a uniform sampler is one interval)
    floor    float32 [P]      draws are clamped here (0 for a parameter that must be >= 0,
                              -inf otherwise), a guard: the run's checks keep a gaussian there
    lesson   int32 [P], smoothed float32 [P]   the host's curriculum state, in the checkpoint

The values come from JAX's PRNG, so they are not the draws C#'s ``System.Random`` would make
from the same seed; the distributions are the same.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

CONSTANT, RANGES, GAUSSIAN = 0, 1, 2


@flax.struct.dataclass
class SamplerTable:
    kind: jax.Array
    numbers: jax.Array
    ranges: jax.Array
    floor: jax.Array
    lesson: jax.Array
    smoothed: jax.Array


def make_table(samplers: list[tuple[str, tuple]], floors: list[float], max_ranges: int,
               lessons=None, smoothed=None) -> SamplerTable:
    """A host (numpy) table from ``(kind, numbers)`` pairs in
    ``jppo.runs.environment_parameters.Sampler``'s form; ``max_ranges`` fixes the padded
    interval count so every lesson of a run fits one compiled shape."""
    count = len(samplers)
    kind = np.zeros(count, np.int32)
    numbers = np.zeros((count, 2), np.float32)
    ranges = np.zeros((count, max(1, max_ranges), 2), np.float32)
    for i, (name, values) in enumerate(samplers):
        if name == "constant":
            kind[i], numbers[i] = CONSTANT, (values[0], values[0])
        elif name == "gaussian":
            kind[i], numbers[i] = GAUSSIAN, values
        else:
            pairs = np.asarray(values, np.float32).reshape(-1, 2)
            kind[i] = RANGES
            ranges[i, :] = pairs[-1, 1]  # empty intervals at the last maximum: never picked
            ranges[i, :len(pairs)] = pairs
    lessons = np.zeros(count, np.int32) if lessons is None else np.asarray(lessons, np.int32)
    smoothed = np.zeros(count, np.float32) if smoothed is None else np.asarray(smoothed, np.float32)
    return SamplerTable(kind, numbers, ranges, np.asarray(floors, np.float32), lessons, smoothed)


def draw(table: SamplerTable, key: jax.Array) -> jax.Array:
    """One value per parameter, float32 [P]."""
    count = table.kind.shape[0]
    k_uniform, k_normal = jax.random.split(key)
    u = jax.random.uniform(k_uniform, (count,), jnp.float32)
    n = jax.random.normal(k_normal, (count,), jnp.float32)
    low, high = table.ranges[..., 0], table.ranges[..., 1]
    width = high - low
    ends = jnp.cumsum(width, axis=-1)
    pos = u * ends[:, -1]
    # The interval holding pos (pos < total width, so padding is never reached unless every
    # interval is empty, when all of them sit at the same point).
    index = jnp.minimum(jnp.sum(ends <= pos[:, None], axis=-1), width.shape[-1] - 1)
    pick = lambda x: jnp.take_along_axis(x, index[:, None], axis=-1)[:, 0]
    ranged = jnp.clip(pick(low) + pos - (pick(ends) - pick(width)), pick(low), pick(high))
    gaussian = table.numbers[:, 0] + table.numbers[:, 1] * n
    value = jnp.where(table.kind == CONSTANT, table.numbers[:, 0],
                      jnp.where(table.kind == GAUSSIAN, gaussian, ranged))
    return jnp.maximum(value, table.floor)


def with_values(params: Any, names: tuple[str, ...], values: jax.Array) -> Any:
    """``params`` (a NamedTuple or a flax struct) with ``names`` set from ``values`` [P], each
    in the dtype of the field it replaces; the other fields stay as they are (static)."""
    updates = {name: values[i].astype(jnp.result_type(getattr(params, name)))
               for i, name in enumerate(names)}
    return params._replace(**updates) if hasattr(params, "_replace") else params.replace(**updates)


__all__ = ["CONSTANT", "GAUSSIAN", "RANGES", "SamplerTable", "draw", "make_table", "with_values"]
