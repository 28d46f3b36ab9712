"""``python -m jppo.export RUN_DIR [--seed S | --member I] [--checkpoint STEP] [--output PATH]
[--check]``: a run's trained policy (seed S of a multi-seed run, labelled by its value as the
run's folders and table are: ``--seed 5 --num-seeds 2`` trained seeds 5 and 6; member I of a
sweep, its member.json index; the checkpoint saved at STEP steps; default the run's first seed,
the newest checkpoint) as the ONNX model Unity's ML-Agents runs (the graph itself:
``jppo.onnx.actor``).

``export_onnx``, ``build_model`` and ``run_model`` are re-exported here for code that used them
from this module. A mistake prints one sentence and exits with code 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jppo.errors import UserError
from jppo.onnx.actor import (MASK_INPUT, MODEL_API_VERSION, OBS_INPUT, build_model, check_inputs,
                             export_onnx, run_model)
from jppo.runs.checkpoint import add_policy_arguments, load_policy


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m jppo.export",
        description="Export a run's trained policy as an ONNX model for Unity ML-Agents.")
    add_policy_arguments(parser, "export")
    parser.add_argument("--output", metavar="PATH",
                        help="where to write the model (default RUN_DIR/<behavior>.onnx)")
    parser.add_argument("--check", action="store_true",
                        help="run the written model once with onnxruntime and print output shapes")
    return parser.parse_args(argv)


def _export_run(args) -> Path:
    policy = load_policy(args.run_dir, steps=args.checkpoint, seed=args.seed, member=args.member)
    default = policy.behavior + ("" if args.seed is None else f"-seed{args.seed}") + (
        "" if args.member is None else f"-member{args.member}") + (
        "" if args.checkpoint is None else f"-{args.checkpoint}")
    path = Path(args.output) if args.output else Path(args.run_dir) / f"{default}.onnx"
    try:
        return export_onnx(path, policy.params, policy.normalizer, policy.config,
                           policy.action_spec, policy.observation_size)
    except ValueError as err:  # a checkpoint inconsistent with its own config
        raise UserError(f"the policy in {str(args.run_dir)!r} cannot be exported: {err}") from None
    except OSError as err:
        raise UserError(f"cannot write the model to {str(path)!r}: "
                        f"{err.strerror or err}; give an --output in a writable folder.") from None


def _print_check(path: Path) -> None:
    try:
        outputs = run_model(path)
    except ImportError:
        raise UserError("--check needs onnxruntime; install it with pip install "
                        "'jppo[onnx]'.") from None
    for name, value in outputs.items():
        print(f"{name}: shape {list(value.shape)} {value.dtype}")


def main(argv=None) -> int:
    """CLI entry point; returns the exit code (0 ok, 2 user error with a one-line message)."""
    args = _parse_args(argv)
    try:
        path = _export_run(args)
        print(f"wrote {path}")
        if args.check:
            _print_check(path)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


__all__ = ["MASK_INPUT", "MODEL_API_VERSION", "OBS_INPUT", "build_model", "check_inputs",
           "export_onnx", "main", "run_model"]


if __name__ == "__main__":
    sys.exit(main())
