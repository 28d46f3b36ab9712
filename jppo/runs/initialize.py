"""Starting a run from another run's policy, as ``mlagents-learn --initialize-from`` does, and
finding the policy ``--inference`` runs.

Where the policy comes from (ML-Agents' ``learn.setup_init_path``, release 19):

- ``--initialize-from RUN_ID`` / ``checkpoint_settings.initialize_from``: the newest
  checkpoint of ``<results_dir>/<RUN_ID>``;
- the behavior's ``init_path``: a run folder (its newest checkpoint) or a checkpoint file; a
  bare file name (no folder) with ``initialize_from`` is that run's ``checkpoints/<name>``,
  as ML-Agents reads a bare name inside the initialize-from run's behavior folder;
- ``--inference`` with ``--resume``: the run's own newest checkpoint.

What is taken (ML-Agents' ``TorchModelSaver._load_model`` with ``reset_global_steps``): the
parameters (actor and critic), the observation normalizer, and Adam's moments and its own
step count (ML-Agents restores every registered module, its ``torch.optim.Adam`` among them:
``Optimizer:value_optimizer``). What starts afresh (ML-Agents' ``policy.set_step(0)``): the
step count, and with it the clock of the learning-rate, epsilon and beta schedules, which
start again from the configured values and decay over this run's ``max_steps``; the adaptive
KL coefficient (this run's ``kl_coef``), the random key (this run's seed) and the
environments. Unlike ML-Agents, which loads what fits and re-initializes the rest with a
warning, a policy of other observation or action shapes or another network is refused with
one sentence naming the difference, before anything is written.

Seeds: a source with one agent starts every seed of this run; one with as many seeds (or
sweep members) as this run starts each from its own; any other pairing is refused.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable, Optional

import flax.serialization
import jax
import numpy as np
import optax

from jppo.core import observations
from jppo.core.networks import ActionSpec
from jppo.errors import UserError, brief
from jppo.runs import checkpoint
from jppo.runs.settings import RunSettings, check_name

# Network settings that decide the parameters' shapes, named when two runs' differ.
_NETWORK_KEYS = ("network", "hidden_units", "num_layers")


def check_choices(settings: RunSettings, resume: bool, force: bool,
                  initialize_flag: bool = False) -> None:
    """The command's combination of --initialize-from / init_path, --resume, --force and
    --inference, refused by name where it contradicts itself. ``initialize_flag``: the
    command line gave --initialize-from. A YAML's ``initialize_from`` or ``init_path`` under
    --resume gives way to the run's own checkpoint, as ML-Agents' ``prioritize_resume_init``
    lets resume win (a fine-tune started from a YAML resumes with the same YAML)."""
    initializing = settings.initialize_from is not None or settings.init_path is not None
    if settings.initialize_from is not None:
        check_name("run id", settings.initialize_from)
    if initialize_flag and resume:
        raise UserError(f"--resume and --initialize-from contradict each other; --resume "
                        f"continues run {settings.run_id!r} from its own checkpoint, "
                        "--initialize-from starts a new run from another run's policy: give one.")
    if settings.initialize_from is not None and settings.initialize_from == settings.run_id \
            and not settings.inference:
        raise UserError(f"--initialize-from {settings.initialize_from} names this run's own run "
                        "id; give a new --run-id for the fine-tuned run (or --resume to continue "
                        "this one).")
    if settings.inference:
        if force:
            raise UserError("--inference and --force contradict each other; --inference runs a "
                            "trained policy and writes nothing, --force deletes a run.")
        if not (initializing or resume):
            raise UserError("--inference needs a trained policy: give --resume (run --run-id's "
                            "own), --initialize-from RUN_ID, or the behavior's init_path.")


def source(settings: RunSettings, resume: bool = False) -> Optional[pathlib.Path]:
    """The checkpoint file the run starts from (or, for ``--inference``, runs), or None for
    a fresh start; a missing run, folder or file is one sentence."""
    results = pathlib.Path(settings.results_dir)
    if resume:  # the run's own checkpoint: resumed by the loop, or run by --inference
        return (_newest(_of_behavior(results / settings.run_id, settings.behavior),
                        f"--resume: run {settings.run_id!r}") if settings.inference else None)
    run = None
    if settings.initialize_from is not None:
        run = results / settings.initialize_from
        if not run.is_dir():
            raise UserError(f"--initialize-from: run {settings.initialize_from!r} does not exist "
                            f"in {settings.results_dir!r}; check the run id and --results-dir.")
        run = _of_behavior(run, settings.behavior)
    path = settings.init_path
    if path is None:
        return None if run is None else _newest(run, f"run {settings.initialize_from!r}")
    where = f"behaviors.{settings.behavior}.init_path {brief(path)}"
    given = pathlib.Path(path)
    if run is not None and given.name == path:  # a bare name: inside initialize_from's run
        given = checkpoint.directory(run) / path
    if given.is_dir():
        return _newest(given, where)
    if not given.is_file():
        raise UserError(f"{where} does not exist ({str(given)!r}); give a run folder such as "
                        "results/<run-id> or one of its checkpoints/checkpoint-*.msgpack files.")
    return given


def _of_behavior(run: pathlib.Path, behavior: str) -> pathlib.Path:
    """Where a run keeps ``behavior``'s checkpoints: its own folder in a run of several
    behaviors (results/<run>/<behavior>/), else the run folder."""
    own = run / behavior
    return own if checkpoint.latest(own) is not None else run


def _newest(run: pathlib.Path, what: str) -> pathlib.Path:
    last = checkpoint.latest(run)
    if last is None:
        where = "does not exist" if not run.is_dir() else "holds no checkpoint"
        raise UserError(f"{what} {where} ({str(run)!r}); train it first, or check the run id "
                        "and --results-dir.")
    return last


@dataclasses.dataclass(frozen=True)
class Start:
    """A source checkpoint, read: its meta, its train state as a raw state dict, and the
    number of agents it stacks on a leading axis (None: one agent, no axis; host runs)."""

    path: pathlib.Path
    meta: dict
    train: dict
    members: Optional[int]


def read(path: pathlib.Path) -> Start:
    meta, raw = checkpoint.read(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("train"), dict):
        raise UserError(f"checkpoint {str(path)!r} is corrupt or not a jppo checkpoint (it holds "
                        "no train state).")
    stacked = "num_seeds" in meta and meta.get("driver") != "host"
    members = int(meta.get("num_members", meta.get("num_seeds", 1)) or 1) if stacked else None
    return Start(path, meta, raw["train"], members)


def check_shapes(start: Start, behavior: str, obs_size, action_spec: ActionSpec) -> None:
    """The source's observation and action shapes must be this run's."""
    meta, name = start.meta, str(start.path)
    try:
        trained = observations.from_meta(meta["observation_size"])
        saved_spec = ActionSpec.from_meta(meta["action_spec"])
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"checkpoint {name!r} is corrupt or not a jppo checkpoint "
                        f"({type(err).__name__}).") from None
    if observations.canonical(trained) != observations.canonical(obs_size):
        raise UserError(f"cannot initialize from {name!r}: it was trained on "
                        f"{observations.describe(trained)}, but behavior {behavior!r} sends "
                        f"{observations.describe(obs_size)}.")
    if saved_spec != action_spec:
        raise UserError(f"cannot initialize from {name!r}: it acts with {saved_spec.describe()} "
                        f"actions, but behavior {behavior!r} needs {action_spec.describe()}.")


def _mapper(start: Start, target: Optional[int]) -> Callable[[np.ndarray], np.ndarray]:
    """Source arrays to this run's layout: ``target`` agents on a leading axis (None: one
    agent, no axis)."""
    src = start.members
    if src is not None and src != 1 and src != target:
        want = "one agent" if target is None else f"{target} seed(s)"
        raise UserError(f"cannot initialize from {str(start.path)!r}: it holds {src} agents "
                        f"(seeds or sweep members) and this run trains {want}; start from a run "
                        "of one seed, or of as many seeds as this one.")

    if src == target:
        return np.asarray
    one = (lambda x: np.asarray(x)[0]) if src == 1 else np.asarray  # one agent, no axis
    if target is None:
        return one
    return lambda x: np.repeat(one(x)[None], target, axis=0)


def _restore(template, raw, mapper, what: str, start: Start, settings_text: str):
    try:
        mapped = jax.tree_util.tree_map(mapper, raw)
        tree = flax.serialization.from_state_dict(template, mapped)
        for a, b in zip(jax.tree_util.tree_leaves(template), jax.tree_util.tree_leaves(tree)):
            if np.shape(a) != np.shape(b):
                raise ValueError(f"an array of shape {np.shape(b)} where this run has {np.shape(a)}")
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"cannot initialize from {str(start.path)!r}: its {what} do not fit this "
                        f"run's ({err}){settings_text}.") from None
    return jax.tree_util.tree_map(lambda t, x: np.asarray(x, np.asarray(t).dtype), template, tree)


def _network_text(start: Start, config) -> str:
    saved = start.meta.get("ppo", {})
    differ = [f"{k} {saved.get(k)!r} there, {getattr(config, k)!r} here" for k in _NETWORK_KEYS
              if k in saved and saved.get(k) != getattr(config, k)]
    return "; the network settings differ: " + ", ".join(differ) if differ else ""


def _adam_states(opt_state) -> list:
    return [s for s in (opt_state if isinstance(opt_state, tuple) else (opt_state,))
            if isinstance(s, optax.ScaleByAdamState)]


def start_train_state(start: Start, template, config, members: Optional[int]):
    """``template`` (this run's fresh ``TrainState``; a leading axis of ``members`` agents, or
    none) with the source's parameters, normalizer and Adam moments put in (see the module
    docstring); everything else stays ``template``'s."""
    mapper = _mapper(start, members)
    net = _network_text(start, config)
    params = _restore(template.params, start.train.get("params"), mapper, "parameters", start, net)
    normalizer = _restore(template.normalizer, start.train.get("normalizer"), mapper,
                          "normalizer statistics", start, "")
    opt_state = template.opt_state
    raw_opt = start.train.get("opt_state") or {}
    raw_adam = [v for v in (raw_opt.values() if isinstance(raw_opt, dict) else ())
                if isinstance(v, dict) and {"count", "mu", "nu"} <= set(v)]
    fresh_adam = _adam_states(opt_state)
    if fresh_adam and raw_adam:
        adam = _restore(fresh_adam[0], raw_adam[0], mapper, "optimizer moments", start, net)
        opt_state = tuple(adam if isinstance(s, optax.ScaleByAdamState) else s
                          for s in opt_state)
    return template.replace(params=params, normalizer=normalizer, opt_state=opt_state)


def describe(start: Start, inference: bool = False) -> str:
    """For the run's first lines: where its policy comes from."""
    trained = f"{str(start.path)!r} (trained {int(start.meta.get('steps', 0)):,} steps)"
    if inference:
        return (f"inference: running the policy of {trained}, sampling its actions; no "
                "training, nothing written")
    return (f"initialized from {trained}: its parameters, normalizer and Adam moments; step "
            "count and schedules start at 0")


__all__ = ["Start", "check_choices", "check_shapes", "describe", "read", "source",
           "start_train_state"]
