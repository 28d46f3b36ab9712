"""Convolution layout for jppo's image encoders: NHWC against NCHW, forward and backward.

Each ML-Agents encoder's convolution stack (``jppo.core.encoders``; the dense layer and the
activations are layout-free and left out) runs as ``lax.conv_general_dilated`` with the
images, kernels and outputs in either layout: ``("NHWC", "HWIO", "NHWC")`` (Flax's
``nn.Conv``, channels last as mlagents_envs hands images over) or ``("NCHW", "OIHW",
"NCHW")`` (torch's and ML-Agents' layout, the input transposed once inside the program).
The timed program is ``jit(value_and_grad(sum of squares of the last feature map))`` with
respect to the kernels: one minibatch's convolution work, forward and backward. The median
over repeats is reported in ms.

    python benchmarks/bench_conv_layout.py [--quick] [--repeats 7] [--batch 64] [--size 84]

writes results/conv_layout_<label>.json.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import common
import machine

# (out_channels, kernel, stride, padding) per convolution, as jppo.core.encoders builds them.
STACKS = {
    "simple": [(16, 8, 4, 0), (32, 4, 2, 0)],
    "nature_cnn": [(32, 8, 4, 0), (64, 4, 2, 0), (64, 3, 1, 0)],
    "match3": [(35, 3, 1, 0), (144, 3, 1, 0)],
    # ResNet's first stack (before its first max-pool), at full resolution: the costly part.
    "resnet": [(16, 3, 1, 1), (16, 3, 1, 1), (16, 3, 1, 1)],
}
LAYOUTS = {"NHWC": ("NHWC", "HWIO", "NHWC"), "NCHW": ("NCHW", "OIHW", "NCHW")}


def kernels(stack, channels: int, layout: str, key):
    out = []
    for features, k, _, _ in stack:
        key, sub = jax.random.split(key)
        shape = (k, k, channels, features) if layout == "NHWC" else (features, channels, k, k)
        out.append(jax.random.normal(sub, shape, jnp.float32) * 0.05)
        channels = features
    return out


def program(stack, layout: str):
    numbers = LAYOUTS[layout]

    def loss(ws, images):  # images NHWC, as the encoders receive them
        x = images if layout == "NHWC" else jnp.transpose(images, (0, 3, 1, 2))
        for w, (_, _, stride, pad) in zip(ws, stack):
            x = jax.lax.conv_general_dilated(x, w, (stride, stride), [(pad, pad), (pad, pad)],
                                             dimension_numbers=numbers)
            x = jax.nn.leaky_relu(x)
        return jnp.sum(jnp.square(x))

    return jax.jit(jax.value_and_grad(loss))


def main():
    p = common.parser(__doc__, repeats=7, threads="1")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=84)
    args = p.parse_args()
    batch, size = (8, 36) if args.quick else (args.batch, args.size)
    images = jnp.asarray(np.random.default_rng(0).uniform(size=(batch, size, size, 3)),
                         jnp.float32)
    rows = []
    for name, stack in STACKS.items():
        times = {}
        for layout in LAYOUTS:
            ws = kernels(stack, 3, layout, jax.random.PRNGKey(0))
            fn = program(stack, layout)
            jax.block_until_ready(fn(ws, images))
            inner = common.calls_for(lambda: jax.block_until_ready(fn(ws, images)), 0.2)
            times[layout] = common.seconds(lambda: jax.block_until_ready(fn(ws, images)),
                                           args.repeats, inner)["median_s"] * 1e3
        row = {"encoder": name, "batch": batch, "image": [size, size, 3], "unit": "ms",
               "NHWC": round(times["NHWC"], 3), "NCHW": round(times["NCHW"], 3),
               "NCHW_over_NHWC": round(times["NCHW"] / times["NHWC"], 3)}
        rows.append(row)
        print(f"{name:12s} NHWC {row['NHWC']:9.3f} ms   NCHW {row['NCHW']:9.3f} ms   "
              f"NCHW/NHWC {row['NCHW_over_NHWC']:.2f}")
    path = machine.write(f"conv_layout_{common.device_label(args)}", {
        "what": "conv stack forward+backward (value_and_grad), median ms per call",
        "command": "python benchmarks/bench_conv_layout.py" + (" --quick" if args.quick else ""),
        "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
