"""``python -m jppo.train``: train a behavior, in the spirit of ``mlagents-learn``.

    python -m jppo.train                                  # 3DBall (JAX port), configs/3DBall.yaml
    python -m jppo.train configs/CartPole.yaml --run-id cp --num-seeds 4
    python -m jppo.train my_mlagents_config.yaml --env 3DBall --set learning_rate=1e-3
    python -m jppo.train configs/3DBall.yaml --run-id ball --resume
    python -m jppo.train configs/3DBall.yaml --run-id tuned --initialize-from ball
    python -m jppo.train configs/3DBall.yaml --run-id ball --resume --inference
    python -m jppo.train configs/3DBall.yaml --devices all          # every local GPU / TPU core
    python -m jppo.train configs/CartPole.yaml --sweep learning_rate=1e-4,3e-4,1e-3 --num-seeds 4

The ``jppo-learn`` console script (pyproject.toml, mlagents-learn's counterpart) is this
module's ``main``, with the same arguments.

A user's mistake prints one sentence and exits with code 2; nothing is overwritten. Ctrl-C
and SIGTERM stop the run at its next safe point with a checkpoint (exit 130 and 143).
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import warnings

from jppo import interrupts

CONSOLE_SCRIPT = "jppo-learn"
# The script pip writes imports this module and then calls main(); its file is bin/jppo-learn
# (Scripts\jppo-learn.exe or jppo-learn-script.py on Windows).
_SCRIPT = pathlib.PurePath(sys.argv[0] if sys.argv else "").name.split(".")[0] in (
    CONSOLE_SCRIPT, f"{CONSOLE_SCRIPT}-script")

if __name__ == "__main__" or _SCRIPT:  # before the imports below load JAX: a Ctrl-C from the
    interrupts.hold()                  # start is ours

from jppo import distributed, envs  # noqa: E402 (after the hold above, as is the rest)
from jppo.core.config import ConfigWarning  # noqa: E402
from jppo.errors import RunFault, UserError  # noqa: E402
from jppo.host_loop.connect import is_host_env  # noqa: E402
from jppo.host_loop.gym_env import PREFIX as GYMNASIUM  # noqa: E402
from jppo.runs import initialize, shipped, sweep as sweeps  # noqa: E402
from jppo.runs.launch import Launch  # noqa: E402
from jppo.runs.settings import DEFAULT_CONFIG, apply_overrides, load, validate_run  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=CONSOLE_SCRIPT if _SCRIPT else "python -m jppo.train",
        description="Train a PPO agent with jppo. The config is an ML-Agents trainer YAML "
                    "(accepted as is) with an optional 'jppo:' section.")
    p.add_argument("config", nargs="?", default=None,
                   help="trainer config YAML (default: configs/3DBall.yaml); configs/<name>.yaml "
                   "not found here is the one jppo ships")
    p.add_argument("--env", help="a JAX environment (3DBall, 3DBallHard, CartPole-v1, "
                   "Pendulum-v1, one registered with jppo.envs.register, gymnax:<id>, or "
                   "package.module:factory), a Unity build path, 'editor', or gymnasium:<id>")
    p.add_argument("--run-id", help="name of the run folder under --results-dir (default: ppo)")
    p.add_argument("--results-dir", help="where run folders go (default: results)")
    p.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    p.add_argument("--force", action="store_true", help="overwrite an existing run folder")
    p.add_argument("--initialize-from", metavar="RUN_ID",
                   help="start from run RUN_ID's policy (parameters, normalizer, Adam moments) "
                   "under --results-dir, with the step count and schedules at 0, as "
                   "mlagents-learn --initialize-from")
    p.add_argument("--inference", action="store_true",
                   help="run the trained policy (of --resume's run, or --initialize-from's) "
                   "without training, reporting episode rewards, until max_steps or Ctrl-C; "
                   "writes nothing")
    p.add_argument("--seed", type=int, help="random seed (seeds seed..seed+N-1 with --num-seeds N)")
    p.add_argument("--num-envs", type=int, help="parallel environments: JAX copies (one agent each), "
                   "or Unity worker processes")
    p.add_argument("--num-seeds", type=int, help="independent agents trained in one compiled program")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                   help="override one hyperparameter, e.g. --set learning_rate=1e-3 (repeatable)")
    p.add_argument("--stop-after-steps", type=int, metavar="N",
                   help="stop (with a checkpoint) once N more steps are done: at the first "
                   "update past them (JAX environments), or step (Unity, Gymnasium); continue "
                   "with --resume")
    p.add_argument("--no-export", action="store_true", help="do not write the ONNX model at the end")
    p.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    scale = p.add_argument_group("Scale out")
    scale.add_argument("--devices", metavar="N|all",
                       help="split the environments (JAX) or the update's buffer (Unity, "
                       "Gymnasium) over N local devices (GPUs, TPU cores, or CPU devices forced "
                       "by XLA_FLAGS), or 'all'; one shared update (default 1)")
    scale.add_argument("--sweep", action="append", default=[], metavar="NAME=V1,V2,...",
                       help="JAX environments: train every value (and every seed of --num-seeds) in one compiled "
                       "program, e.g. --sweep learning_rate=1e-4,3e-4,1e-3; repeat to sweep a "
                       "product")
    scale.add_argument("--split-minibatches", action="store_true",
                       help="Unity, Gymnasium: split every minibatch across the devices and "
                       "all-reduce the gradient at each Adam step (for big batches on fast "
                       "links) instead of gathering the buffer once per update and running the "
                       "update on every device (the default)")
    scale.add_argument("--coordinator", metavar="HOST:PORT",
                       help="multi-process run: address of process 0 (jax.distributed)")
    scale.add_argument("--num-processes", type=int, metavar="N",
                       help="multi-process run: number of processes")
    scale.add_argument("--process-id", type=int, metavar="I",
                       help="multi-process run: this process's rank, 0 .. N-1")
    scale.add_argument("--distributed", action="store_true",
                       help="multi-process run configured by the cluster (Slurm, Open MPI, "
                       "Cloud TPU, JAX_COORDINATOR_ADDRESS): jax.distributed.initialize()")
    unity = p.add_argument_group("Unity")
    unity.add_argument("--base-port", type=int, help="first gRPC port (default 5005, editor 5004)")
    unity.add_argument("--time-scale", type=float, help="Unity time scale (default 20)")
    unity.add_argument("--no-graphics", action="store_true", help="run Unity builds without graphics")
    unity.add_argument("--timeout-wait", type=float, help="seconds to wait for Unity (default 60)")
    unity.add_argument("--max-lifetime-restarts", type=int, metavar="N",
                       help="restarts of each crashed Unity build over the run (default 10, -1: "
                       "no limit)")
    unity.add_argument("--restarts-rate-limit-n", type=int, metavar="N",
                       help="restarts of each build within --restarts-rate-limit-period-s "
                       "(default 1, -1: no limit)")
    unity.add_argument("--restarts-rate-limit-period-s", type=int, metavar="S",
                       help="the window of --restarts-rate-limit-n, in seconds (default 60)")
    p.add_argument("--bind", metavar="ADDRESS",
                   help="where the sockets jppo listens on accept connections: the gRPC servers "
                   "Unity connects to (default localhost: this machine only) and process 0's "
                   "jax.distributed coordinator (default: the --coordinator host); e.g. 0.0.0.0 "
                   "for Unity in another container or machine")
    return p


def resolve(args) -> Launch:
    """The YAML's settings with the command line applied on top, as a ``Launch``."""
    path = shipped.locate(args.config) if args.config else DEFAULT_CONFIG
    settings = load(path)
    changes = {k: v for k, v in {
        "run_id": args.run_id, "results_dir": args.results_dir, "seed": args.seed,
        "num_envs": args.num_envs, "num_workers": args.num_envs, "num_seeds": args.num_seeds,
        "base_port": args.base_port, "time_scale": args.time_scale,
        "timeout_wait": args.timeout_wait, "max_lifetime_restarts": args.max_lifetime_restarts,
        "restarts_rate_limit_n": args.restarts_rate_limit_n,
        "restarts_rate_limit_period_s": args.restarts_rate_limit_period_s,
    }.items() if v is not None}
    if args.no_graphics:
        changes["no_graphics"] = True
    if args.initialize_from is not None:
        changes["initialize_from"] = args.initialize_from
    if args.inference:
        changes["inference"] = True
    if args.no_export:
        changes["export_onnx"] = False
    if args.bind is not None:
        changes["bind"] = distributed.check_bind(args.bind)
    settings = validate_run(dataclasses.replace(apply_overrides(settings, args.overrides), **changes))
    if args.env is not None and not args.env.strip():
        raise UserError("--env '' is empty; give a JAX environment's name "
                        f"({', '.join(envs.names())}), a Unity build path, 'editor', or "
                        "gymnasium:<id>.")
    env = args.env or settings.env or settings.behavior
    if args.stop_after_steps is not None and args.stop_after_steps < 1:
        raise UserError(f"--stop-after-steps {args.stop_after_steps} is not allowed; give a number "
                        "of steps >= 1.")
    host = env not in envs.names() and is_host_env(env)
    unity = host and not env.startswith(GYMNASIUM)
    if args.bind is not None and not (unity or args.coordinator or args.distributed):
        raise UserError(f"--bind has nothing to bind with --env {env}: it places the sockets jppo "
                        "listens on, the gRPC servers a Unity build or the editor connects to "
                        "and a multi-process run's coordinator (--coordinator, --distributed).")
    if settings.others:
        _check_several_behaviors(settings, env, unity, args)
    if host and args.sweep:
        raise UserError(f"--sweep works with the JAX environments only ({', '.join(envs.names())}"
                        "); a Unity or Gymnasium environment trains one setting per run.")
    if not host and args.split_minibatches:
        raise UserError("--split-minibatches is for Unity and Gymnasium environments; the JAX "
                        "environments always split their minibatches across --devices.")
    initialize.check_choices(settings, args.resume, args.force, args.initialize_from is not None)
    if settings.inference and (args.sweep or args.devices or args.coordinator or args.distributed):
        raise UserError("--inference runs one policy in one process; leave out --sweep, "
                        "--devices and the multi-process flags.")
    sweep = sweeps.parse(args.sweep, settings.ppo)
    if sweep:
        overridden = {item.partition("=")[0].strip() for item in args.overrides}
        for name in sweep.names:
            if name in overridden:
                raise UserError(f"--sweep {name} and --set {name} contradict each other; give "
                                f"{name}'s values with --sweep only.")
    return Launch(settings, env, resume=args.resume, force=args.force, quiet=args.quiet,
                  stop_after_steps=args.stop_after_steps, sweep=sweep,
                  split_minibatches=args.split_minibatches)


def _check_several_behaviors(settings, env: str, unity: bool, args) -> None:
    """A run of several behaviors trains them together from one Unity scene, in one process."""
    names = ", ".join(settings.behavior_names)
    if not unity:
        other = (f", or keep one behavior for --env {env}" if args.env or settings.env else "")
        raise UserError(f"the configuration trains {len(settings.behavior_names)} behaviors "
                        f"({names}); several behaviors train together through Unity only (a "
                        f"scene with several agent types): give --env a build or 'editor'"
                        f"{other}.")
    for flag, given in (("--devices", args.devices), ("--coordinator", args.coordinator),
                        ("--distributed", args.distributed)):
        if given:
            raise UserError(f"{flag} is not supported with several behaviors ({names}); a run "
                            "of several behaviors trains in one process on one device.")


def run(args) -> int:
    interrupts.check()  # a Ctrl-C while Python loaded (see the top of this module)
    launch = resolve(args)
    host = launch.env not in envs.names() and is_host_env(launch.env)
    # Parsed before JAX starts; jax.distributed must be initialized before any JAX computation.
    devices = distributed.parse_devices(args.devices)
    distributed.initialize(args.coordinator, args.num_processes, args.process_id, args.distributed,
                           launch.settings.bind)
    mesh = distributed.make_mesh(devices)
    if host:
        from jppo.host_loop import driver  # imported once jax.distributed is up (see above)
    else:
        from jppo.jax_loop import driver
    driver.run(launch, mesh)
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("once", ConfigWarning)
        shown = warnings.showwarning

        def show(message, category, *rest, **kwargs):
            if issubclass(category, ConfigWarning):  # one sentence, like an error
                print(f"jppo: warning: {message}", file=sys.stderr)
            else:
                shown(message, category, *rest, **kwargs)

        warnings.showwarning = show
        return _main(args)


def _main(args) -> int:
    try:
        with interrupts.stopping():
            return run(args)
    except UserError as err:
        print(f"jppo: error: {err}", file=sys.stderr)
        return 2
    except RunFault as fault:
        print(f"jppo: error: {fault}", file=sys.stderr)
        return fault.code
    except KeyboardInterrupt as stop:
        if isinstance(stop, interrupts.Interrupted) and not stop.noted and not args.quiet:
            print(f"jppo: {stop.what} before training began; nothing to save.", file=sys.stderr)
        return getattr(stop, "exit_code", 130)


if __name__ == "__main__":
    sys.exit(main())
