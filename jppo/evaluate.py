"""``python -m jppo.evaluate RUN_DIR``: play a trained run's policy and report its returns.

    python -m jppo.evaluate results/cartpole                      # the first seed, newest checkpoint
    python -m jppo.evaluate results/cartpole --seed 3 --checkpoint 250000 --episodes 500
    python -m jppo.evaluate results/lr --member 5                 # a sweep's member 5
    python -m jppo.evaluate results/ball --animation ball.mp4     # (ffmpeg for .mp4)

Prints mean, std, min and max return (and mean length) over fresh episodes for the stochastic
and the deterministic policy, and writes an animation of one deterministic episode for the
environments with a renderer (3DBall, 3DBallHard, CartPole-v1, Pendulum-v1, or any added with
``jppo.render.register``). The same as a function: ``jppo.evaluate_run``. A mistake prints one
sentence and exits with code 2.
"""
from __future__ import annotations

import argparse
import sys

from jppo.api.evaluation import Evaluation, add_policy_arguments, evaluate_run
from jppo.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jppo.evaluate",
        description="Play a trained run's policy for whole episodes: returns of the stochastic "
                    "and the deterministic policy, and an animation of one episode.")
    add_policy_arguments(p, "play")
    p.add_argument("--episodes", type=int, default=100, help="episodes per policy (default 100)")
    p.add_argument("--max-steps", type=int, default=1000,
                   help="decisions after which an episode is cut (default 1000)")
    p.add_argument("--animation", metavar="PATH",
                   help="where to write the animation, .gif or .mp4 (default "
                        "RUN_DIR/evaluation/seed<S>-step<N>.gif)")
    p.add_argument("--no-animation", action="store_true", help="write no animation")
    p.add_argument("--frames", type=int, default=200,
                   help="at most this many frames in the animation (default 200)")
    p.add_argument("--fps", type=int, default=25, help="frames per second (default 25)")
    p.add_argument("--key", type=int, default=0, help="random seed of the episodes (default 0)")
    return p


def report(result: Evaluation) -> str:
    """The figures as a small table, then where the animation went."""
    who = f"seed {result.seed}" if result.member is None else f"member {result.member}"
    lines = [f"{result.run}: {who}, checkpoint at step {result.steps:,}, "
             f"{result.env}, {result.stochastic.episodes} episodes per policy",
             f"{'policy':<14}{'mean':>10}{'std':>10}{'min':>10}{'max':>10}{'length':>9}"]
    for label, s in (("stochastic", result.stochastic), ("deterministic", result.deterministic)):
        lines.append(f"{label:<14}{s.mean:>10.2f}{s.std:>10.2f}{s.min:>10.2f}{s.max:>10.2f}"
                     f"{s.mean_length:>9.1f}")
    if result.animation is not None:
        lines.append(f"animation: {result.animation} ({result.frames} frames); still: "
                     f"{result.still}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    animation = None if args.no_animation else (args.animation or "auto")
    try:
        result = evaluate_run(args.run_dir, seed=args.seed, member=args.member,
                              checkpoint_step=args.checkpoint,
                              episodes=args.episodes, max_steps=args.max_steps,
                              animation=animation, frames=args.frames, fps=args.fps,
                              key=args.key)
    except UserError as err:
        print(f"jppo: error: {err}", file=sys.stderr)
        return 2
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
