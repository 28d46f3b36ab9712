"""Training on host-side environments: Unity (a build or the editor) and Gymnasium vectors.

    python -m jppo.train configs/3DBall.yaml --env path/to/3DBall.x86_64 --num-envs 4 --no-graphics
    python -m jppo.train configs/3DBall.yaml --env editor            # then press Play
    python -m jppo.train configs/CartPole.yaml --env gymnasium:CartPole-v1

The loop; workers step on their own, each iteration serves those that have answered::

    act on the deciding agents of every worker that reported (one jitted call, padded batch)
    send them their actions (each worker steps in its own process)
    meanwhile: assemble experiences per agent id, queue finished trajectories, update when
               buffer_size experiences are queued, summaries, checkpoints
    wait until at least one worker has answered

The acting policy may therefore lag an update by one step. Steps count agent decisions summed
over agents, as ML-Agents counts them. Runs write the same folder as the JAX driver
(configuration.yaml, TensorBoard with ML-Agents' tags, progress.csv, checkpoints, curve,
run_info.json, the ONNX model) and resume from their checkpoints with ``--resume`` (the
environment restarts; experience not yet learned from is collected anew).

Design choices, measured on the 2-core development machine:

- Workers: one process each (see ``jppo.host_loop.unity_env``), stepped asynchronously: waiting for all
  of them before acting (lock-step) gave 936 agent decisions/s with 2 stand-ins and random
  actions, serving each as it answers 1301: in lock-step the workers and the Unity instances
  all wait for the slowest at every step. The price is a policy call per group of workers that
  answered together rather than one per step of all workers.
- Normalizer: updated once per update on the buffer's observations, then values and GAE
  computed with it, all inside the one compiled update. ML-Agents updates it per trajectory as
  trajectories complete; the statistics end up the same (Chan's merge does not depend on how
  the samples are grouped), only the acting policy sees them one update later, as in the JAX
  driver. Per trajectory would cost a jitted call (and a compile per new trajectory length)
  in the acting loop.
- Buffer: exactly ``buffer_size`` experiences per update (the straddling trajectory split, its
  tail kept for the next update) so the update compiles once per run; the schedules then
  decay over exactly ``total_adam_steps(buffer_size)``. Padding and masking would need a
  masked loss in the shared train step.

Several processes (``jax.distributed``) or devices: each process serves its own share of the
workers and fills its share of every update's buffer; the processes meet once per update to
agree on the step count and on whether all are well, then share the one update
(``jppo.host_loop.meeting``).

Faults end the run with one sentence: exit code 2 where the user has to change something
before training can start (nothing listening, port in use, several behaviors, wrong shapes,
a checkpoint that does not fit), 1 where a running environment failed (it died, froze, or sent
NaN or Inf). A consistent checkpoint is saved first when the run made progress since the last.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib
import math
import pathlib
import sys
import time

import flax.struct
import jax
import numpy as np
import yaml

from jppo import distributed
from jppo.runs import checkpoint
from jppo.host_loop import meeting as host_sync
from jppo.runs import folder as run_folder
from jppo.core.networks import ActionSpec
from jppo.core.policy import make_policy
from jppo.runs.progress import ProgressDisplay
from jppo.runs.settings import RunSettings, UserError
from jppo.runs.folder import RunFolder, write_configuration
from jppo.runs.summaries import RunLog
from jppo.host_loop.trajectories import TrajectoryAssembler, UpdateBuffer
from jppo.core.update import TrainState, init_train_state
from jppo.host_loop.vec_env import Actions, EnvFault, VecEnv

GYM_PREFIX = "gymnasium:"
DRIVER = "host"
# Faults that need the user to change the command, the config or the scene (exit code 2).
_SETUP_KINDS = {"in_use", "config", "shape", "behaviors"}
_MIN_ACT_BATCH = 8


class RunFault(Exception):
    """A run that cannot go on; ``str`` is one sentence, ``code`` the exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


@flax.struct.dataclass
class HostState:
    """What a host run checkpoints: the train state and its counters (no environment state:
    Unity restarts on resume)."""

    train: TrainState
    steps: np.ndarray  # int64 scalar: agent decisions so far
    updates: np.ndarray  # int64 scalar


# ---------------------------------------------------------------------- entry point


def main(settings: RunSettings, env: str, args, mesh=None) -> int:
    """``python -m jppo.train`` for a Unity build, 'editor' or gymnasium:<id>; the exit code.
    ``mesh``: see ``train``."""
    try:
        train(settings, env, args, mesh)
    except RunFault as fault:
        print(f"jppo: error: {fault}", file=sys.stderr)
        return fault.code
    return 0


def num_workers(settings: RunSettings, env: str, args) -> int:
    """``--num-envs``; else for Gymnasium the config's num_envs, for Unity the YAML's
    ``env_settings.num_envs`` (``jppo.num_envs`` counts JAX copies, 12 in configs/3DBall.yaml,
    not Unity instances); else 1."""
    if getattr(args, "num_envs", None) is not None:
        return args.num_envs
    if env.startswith(GYM_PREFIX):
        return settings.num_envs or 1
    from jppo.train import DEFAULT_CONFIG

    path = pathlib.Path(args.config) if getattr(args, "config", None) else DEFAULT_CONFIG
    try:
        data = yaml.safe_load(path.read_text()) or {}
        value = (data.get("env_settings") or {}).get("num_envs")
    except (OSError, yaml.YAMLError, AttributeError):
        value = None
    return value if isinstance(value, int) and value >= 1 else 1


def make_vec_env(settings: RunSettings, env: str, workers: int, folder: RunFolder | None,
                 first_worker: int = 0) -> VecEnv:
    """``workers`` environments numbered from ``first_worker`` (this process's share of a
    multi-process run): their seeds, and for Unity their worker ids and ports, follow on from
    the previous process's."""
    if env.startswith(GYM_PREFIX):
        from jppo.host_loop.gym_env import GymVecEnv

        return GymVecEnv(env[len(GYM_PREFIX):], workers, settings.behavior,
                         seed=settings.seed + first_worker,
                         environment_parameters=settings.environment_parameters)
    from jppo.host_loop.unity_env import UnityVecEnv

    logs = None
    if env != "editor":  # a build writes its Player-<worker>.log there, as under mlagents-learn
        path = folder.path if folder is not None else (
            run_folder.path_of(settings))  # processes other than 0
        logs = (path / "run_logs").resolve()
        logs.mkdir(parents=True, exist_ok=True)
    return UnityVecEnv(None if env == "editor" else str(pathlib.Path(env).resolve()), workers,
                       settings.base_port, seed=settings.seed, no_graphics=settings.no_graphics,
                       timeout_wait=settings.timeout_wait, time_scale=settings.time_scale,
                       environment_parameters=settings.environment_parameters,
                       log_folder=None if logs is None else str(logs), first_worker=first_worker)


# ---------------------------------------------------------------------- checks


def pick_behavior(vec: VecEnv, settings: RunSettings, env: str) -> tuple[str, int, ActionSpec]:
    """``(behavior, observation size, action spec)`` of the one behavior the scene must have."""
    names = sorted(vec.specs)
    if len(names) != 1:
        raise EnvFault("behaviors", f"the environment has {len(names)} behaviors ("
                       f"{', '.join(names) or 'none'}); jppo trains one behavior at a time, so "
                       "give the others a model or Heuristic Only in Behavior Parameters.")
    spec = vec.specs[names[0]]
    if not env.startswith(GYM_PREFIX) and names[0].split("?")[0] != settings.behavior:
        raise EnvFault("behaviors", f"the scene's behavior is {names[0].split('?')[0]!r} but the "
                       f"config trains {settings.behavior!r}; name the behavior in the config's "
                       "'behaviors' section as in Behavior Parameters.")
    shapes = spec.observation_shapes
    if len(shapes) != 1 or len(shapes[0]) != 1:
        raise EnvFault("shape", f"behavior {names[0]!r} observes {list(shapes)}; jppo trains "
                       "behaviors with one vector observation (one Vector Observation, no "
                       "other sensors).")
    action_spec = spec.action_spec()
    if action_spec is None:
        raise EnvFault("shape", f"behavior {names[0]!r} acts with {spec.describe_actions()} "
                       "actions; jppo trains continuous actions or one discrete branch.")
    return names[0], int(shapes[0][0]), action_spec


def check_resume(meta: dict, behavior: str, obs_size: int, action_spec: ActionSpec, path) -> None:
    if meta.get("driver") != DRIVER:
        raise UserError(f"cannot resume: checkpoint {str(path)!r} was written by the JAX driver "
                        f"for env {meta.get('env')!r}; resume it with --env {meta.get('env')}.")
    if int(meta["observation_size"]) != obs_size:
        raise UserError(f"cannot resume: the checkpoint was trained on {meta['observation_size']} "
                        f"observations, but behavior {behavior!r} sends {obs_size}.")
    if list(meta["action_spec"]) != list(action_spec):
        raise UserError(f"cannot resume: the checkpoint acts with {tuple(meta['action_spec'])}, "
                        f"but behavior {behavior!r} needs {tuple(action_spec)}.")


def _finite(tree) -> bool:
    return all(bool(np.isfinite(np.asarray(x)).all()) for x in jax.tree_util.tree_leaves(tree))


def _bucket(n: int) -> int:
    """Padded batch size for ``n`` agents: a power of two, so a run compiles a handful."""
    return max(_MIN_ACT_BATCH, 1 << max(0, n - 1).bit_length())


# ---------------------------------------------------------------------- the run


@dataclasses.dataclass
class _Period:
    """What one summary period collected (episode sums: a multi-process run adds every
    process's at each meeting)."""

    started: float
    start_step: int
    sums: host_sync.EpisodeSums = dataclasses.field(default_factory=host_sync.EpisodeSums)
    metrics: list = dataclasses.field(default_factory=list)

    def summarize(self, step: int, now: float, last_metrics: dict) -> dict:
        s = self.sums
        n = s.episodes
        mean = s.reward_sum / n if n else math.nan
        out = {"episodes": float(n), "cumulative_reward": mean,
               "reward_std": math.sqrt(max(s.reward_sq_sum / n - mean * mean, 0.0)) if n else math.nan,
               "episode_length": s.length_sum / n if n else math.nan,
               "steps_per_second": (step - self.start_step) / max(now - self.started, 1e-9)}
        out["extrinsic_reward"] = out["cumulative_reward"]
        metrics = jax.device_get(self.metrics)
        for name in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction",
                     "value_estimate"):
            out[name] = float(np.mean([m[name] for m in metrics])) if metrics else math.nan
        for name in ("learning_rate", "epsilon", "beta", "kl_coef"):
            out[name] = float(last_metrics[name]) if last_metrics else math.nan
        return out


class _Interrupted(KeyboardInterrupt):
    """A process of the run was interrupted; every process has been told and the checkpoint
    saved."""


class _Stop(Exception):
    """This process cannot go on: ``cause`` (one sentence), exit ``code``, and whether the
    train state itself went bad (then it is not saved)."""

    def __init__(self, cause: str, code: int, diverged: bool = False):
        super().__init__(cause)
        self.cause, self.code, self.diverged = cause, code, diverged


def train(settings: RunSettings, env: str, args, mesh=None) -> dict:
    """One host run from the command line's ``args``; returns run_info.json's content.

    ``mesh`` (``jppo.distributed.make_mesh``) lays the update out over devices, of this process
    or of every process of a ``jax.distributed`` run: each process then steps its own share of
    the workers and only process 0 writes (``jppo.host_loop.meeting``)."""
    if settings.num_seeds != 1:
        raise UserError(f"num_seeds = {settings.num_seeds} is not supported with --env {env}; "
                        "a Unity or Gymnasium environment trains one seed per run.")
    workers = num_workers(settings, env, args)
    if workers < 1:
        raise UserError(f"--num-envs {workers} is not allowed; give a number of workers >= 1.")
    processes = jax.process_count()
    if workers % processes:
        raise UserError(f"{workers} worker(s) cannot be shared evenly by {processes} processes; "
                        f"give --num-envs (the workers of all processes together) a multiple of "
                        f"{processes}.")
    split = bool(getattr(args, "split_minibatches", False))
    layout = host_sync.make_layout(mesh, settings.ppo, split)
    _, folder = distributed.on_main(lambda: run_folder.prepare(settings, args.resume, args.force))
    main = distributed.is_main()
    saved_meta = checkpoint.read(folder.resume_from)[0] if main and folder.resume_from else None
    quiet, stop_after = getattr(args, "quiet", False) or not main, getattr(args, "stop_after_steps", None)
    start_step = int(saved_meta["steps"]) if saved_meta else 0
    display = ProgressDisplay(settings.behavior, settings.ppo.max_steps, start_step, quiet=quiet)
    run = _HostRun(settings, env, folder, workers, layout, split, display, stop_after)
    # tensorboardX imports torch where it is installed (7 s here): done while Unity connects
    # rather than while it waits for the first actions.
    run.background(importlib.import_module, "tensorboardX")
    with display:
        try:
            run.connect(saved_meta)
            run.loop()
        finally:
            run.close()
    return run.finish()


class _HostRun:
    """The state of one host run between ``connect`` and ``finish``."""

    def __init__(self, settings: RunSettings, env: str, folder: RunFolder | None, workers: int,
                 layout: host_sync.Layout, split: bool, display: ProgressDisplay,
                 stop_after: int | None):
        self.settings, self.env_name, self.folder = settings, env, folder
        self.workers, self.layout, self.display, self.stop_after = workers, layout, display, stop_after
        self.config = settings.ppo
        self.split = split  # --split-minibatches
        self.main = distributed.is_main()
        self.processes = jax.process_count()
        self.local_workers = workers // self.processes
        self.vec: VecEnv | None = None
        self.history: list = []
        self.compile_s = self.train_s = 0.0
        self.saved_at = -1
        self.complete = False
        self.local_steps = 0  # this process's decisions since the run (re)started
        self._unsent = host_sync.EpisodeSums()  # episodes not yet told to the other processes
        self._pool = concurrent.futures.ThreadPoolExecutor(2)

    def background(self, fn, *args) -> concurrent.futures.Future:
        return self._pool.submit(fn, *args)

    # ------------------------------------------------------------------ start

    def connect(self, saved_meta: dict | None) -> None:
        settings, config = self.settings, self.config
        first = jax.process_index() * self.local_workers
        if self.env_name == "editor":
            base = (settings.base_port or 5004) + first
            ports = ", ".join(str(base + i) for i in range(self.local_workers))
            self.display.message(f"waiting for Unity on port {ports}: press Play in the editor "
                                 f"(or start the player) within {settings.timeout_wait:g} s")
        try:
            self.vec = make_vec_env(settings, self.env_name, self.local_workers, self.folder,
                                    first_worker=first)
            self.reports = self.vec.reset()
            self.behavior, self.obs_size, self.action_spec = pick_behavior(
                self.vec, settings, self.env_name)
            stop = None
        except EnvFault as fault:
            stop = _Stop(str(fault).rstrip("."), 2 if fault.kind != "nan" else 1)
        if self.processes > 1:  # every process learns whether all of them could start
            stopped = host_sync.first_stop(host_sync.exchange(self._status(stop)))
            if stopped:
                _, s, cause = stopped
                raise RunFault(f"{cause}; every process stopped before training.", s.exit_code)
        elif stop is not None:
            raise RunFault(f"{stop.cause}.", stop.code)
        if saved_meta is not None or self.processes > 1:  # a collective with several processes
            distributed.on_main(lambda: saved_meta and check_resume(
                saved_meta, self.behavior, self.obs_size, self.action_spec, self.folder.resume_from))
        self.meta = {**checkpoint.policy_meta(config, self.action_spec, self.obs_size,
                                              settings.behavior),
                     "driver": DRIVER, "env": self.env_name, "num_envs": self.workers,
                     "unity_behavior": self.behavior, "seed": settings.seed}
        # Jitted: eager initialization compiles each of its small operations separately.
        train_state = jax.jit(lambda key: init_train_state(key, config, self.obs_size, self.action_spec))(
            jax.random.PRNGKey(settings.seed))
        state = HostState(train_state, np.zeros((), np.int64), np.zeros((), np.int64))
        if distributed.broadcast_flag(self.main and self.folder.resume_from is not None):
            def restore():
                return checkpoint.restore(self.folder.resume_from, state)[1]
            _, restored = distributed.on_main(restore)
            state = distributed.broadcast_tree(restored if self.main else jax.device_get(state))
            self.saved_at = int(state.steps)
        self.state = distributed.place_replicated(self.layout.mesh, state.train)
        self.steps, self.updates = int(state.steps), int(state.updates)
        self.start_step = self.steps
        if self.main:
            extra = {"env": self.env_name, "driver": DRIVER, "num_envs": self.workers,
                     "behavior_name": self.behavior, "observation_size": self.obs_size,
                     "action_spec": list(self.action_spec)}
            if self.layout.mesh is not None:
                extra.update(devices=self.layout.segments, processes=self.processes,
                             split_minibatches=self.split)
            write_configuration(self.folder, settings, extra)
        how = "every minibatch split over" if self.split else "replicated on"
        where = "" if self.layout.mesh is None else (
            f"; the update is {how} {self.layout.segments} devices"
            + (f" of {self.processes} processes ({self.local_workers} worker(s) and "
               f"{self.layout.share} steps of each update per process)"
               if self.processes > 1 else ""))
        self.display.message(
            f"connected to {self.workers} {self.vec.description} worker(s); behavior "
            f"{self.behavior!r}: {self.obs_size} observations, {self.action_spec.size} "
            f"{self.action_spec.kind} actions; an update every {config.buffer_size} steps{where}")
        self._build_programs()

    def _build_programs(self) -> None:
        config, spec = self.config, self.action_spec
        policy = make_policy(config, spec)

        def act(params, normalizer, obs, key, counter):
            action, log_prob, _ = policy.act(params, normalizer, obs, jax.random.fold_in(key, counter))
            return action, log_prob

        self._act = jax.jit(act)
        self._act_key = jax.random.fold_in(jax.random.PRNGKey(self.settings.seed), 1)
        if self.processes > 1:  # each process samples its own actions
            self._act_key = jax.random.fold_in(self._act_key, jax.process_index())
        self._act_rows = 0
        self._acting = distributed.local_replica((self.state.params, self.state.normalizer))
        total = config.total_adam_steps(config.buffer_size)
        update = host_sync.make_update(self.layout, config, spec, total, self.split)
        buffer = host_sync.abstract_buffer(self.layout, self.obs_size, spec)

        def compile_update():
            # Compiled while the environment runs, so the first update does not stall Unity for
            # seconds. Compiled only, not run: a run would be a collective across processes.
            t = time.perf_counter()
            compiled = update.lower(self.state, buffer).compile()
            return compiled, time.perf_counter() - t

        self._update = None
        self._compiled = self.background(compile_update)

    # ------------------------------------------------------------------ loop

    def loop(self) -> None:
        config, settings = self.config, self.settings
        assembler = TrajectoryAssembler(config.time_horizon, self.obs_size, self.action_spec)
        self.buffer = UpdateBuffer(self.layout.segment)
        self.log = (RunLog(self.folder.path, settings.behavior, 1,
                           self.start_step if self.folder.resume_from else None)
                    if self.main else None)
        freq, interval = settings.summary_freq, settings.checkpoint_interval
        next_summary = (self.steps // freq + 1) * freq
        next_save = (self.steps // interval + 1) * interval
        started = last_shown = time.perf_counter()
        self._elapsed0 = started
        self.period = _Period(started, self.steps)
        self._last_metrics: dict = {}
        self._in_collective = False
        counter = self.steps
        reports = dict(enumerate(self.reports))  # worker -> its latest report, not yet acted on
        self.complete = self.steps >= config.max_steps
        try:
            while not self.complete:
                # 1. One policy call for every deciding agent of the workers that reported.
                ready = sorted(reports)
                steps_of = {w: reports[w].get(self.behavior) for w in ready}
                ids = {w: s.decision_ids if s is not None else np.zeros(0, np.int64)
                       for w, s in steps_of.items()}
                total = sum(len(i) for i in ids.values())
                actions = log_probs = None
                if total:
                    # The widest batch so far: the number of workers reporting together varies,
                    # and a narrower padding would compile the policy again.
                    self._act_rows = max(self._act_rows, _bucket(total))
                    batch = np.zeros((self._act_rows, self.obs_size), np.float32)
                    batch[:total] = np.concatenate([steps_of[w].decision_obs for w in ready
                                                    if len(ids[w])])
                    a, lp = self._act(*self._acting, batch, self._act_key, counter)
                    counter += 1
                    actions, log_probs = np.asarray(a)[:total], np.asarray(lp)[:total]
                    if not np.isfinite(log_probs).all() or (
                            self.action_spec.is_continuous and not np.isfinite(actions).all()):
                        raise _Stop(f"training diverged: the policy's actions are not finite at "
                                    f"step {self.steps}", 1, diverged=True)
                rows, start = {}, 0
                for w in ready:
                    rows[w] = slice(start, start + len(ids[w]))
                    start += len(ids[w])
                # A worker with no deciding agent (a terminal-only report) steps all the same.
                self.vec.send({w: {self.behavior: Actions(ids[w], actions[rows[w]])}
                               if len(ids[w]) else {} for w in ready})

                # 2. While the workers step: experiences, trajectories, updates.
                for w in ready:
                    if steps_of[w] is None:
                        continue
                    trajectories, episodes, experiences = assembler.observe(w, steps_of[w])
                    if len(ids[w]):
                        assembler.act(w, ids[w], actions[rows[w]], log_probs[rows[w]])
                    for t in trajectories:
                        self.buffer.add(t)
                    (self.period.sums if self.processes == 1 else self._unsent).add(episodes)
                    self.local_steps += experiences
                if self.processes == 1:
                    self.steps = self.start_step + self.local_steps
                    while self.buffer.count >= self.layout.share:
                        self._learn()
                elif self.buffer.count >= self.layout.share:
                    # Every process meets here once per update; the run's step count, its
                    # summaries and the decision to stop are settled at the meeting.
                    self._meet(self._status())
                    self._learn()

                # 3. Summaries, progress, checkpoints, the end.
                now = time.perf_counter()
                self.complete = self.steps >= config.max_steps
                stop = self.stop_after is not None and self.steps - self.start_step >= self.stop_after
                if self.steps >= next_summary or self.complete or stop:
                    self._summarize(now)
                    next_summary = (self.steps // freq + 1) * freq
                if now - last_shown > 0.5 or self.complete or stop:
                    rate = (self.steps - self.start_step) / max(now - started, 1e-9)
                    self.display.update(self.steps, rate, self._last_reward())
                    last_shown = now
                if self.steps >= next_save or self.complete or stop:
                    self._save()
                    next_save = (self.steps // interval + 1) * interval
                if self.complete or stop:
                    break
                reports = self._wait()
        except _Stop as stop:
            self._stopped(stop)
        except _Interrupted:
            raise
        except KeyboardInterrupt:
            self._interrupted()
            raise
        finally:
            self.train_s = time.perf_counter() - started
            if self.log is not None:
                self.log.close()

    def _learn(self) -> None:
        """One update on this process's share of the buffer (every process at once)."""
        if self._update is None:
            self._update, self.compile_s = self._compiled.result()
        parts = [self.buffer.take() for _ in range(self.layout.local_segments)]
        self._in_collective = True
        self.state, self._last_metrics = self._update(
            self.state, host_sync.global_buffer(self.layout, parts))
        if self.processes > 1:  # not addressable as a whole: this process's copy (waits for it)
            self._last_metrics = distributed.fetch_replicated(self._last_metrics)
        self._in_collective = False
        self._acting = distributed.local_replica((self.state.params, self.state.normalizer))
        self.period.metrics.append(self._last_metrics)
        self.updates += 1

    # ------------------------------------------------------------------ processes

    def _status(self, stop: _Stop | None = None, code: int = host_sync.READY) -> host_sync.Status:
        """This process's report for a meeting (FAULT with ``stop``); hands its episodes over."""
        if stop is None:
            status = host_sync.Status(code, steps=self.local_steps, sums=self._unsent)
        else:
            status = host_sync.Status(host_sync.FAULT, stop.code, stop.cause, stop.diverged,
                                      self.local_steps, self._unsent)
        self._unsent = host_sync.EpisodeSums()
        return status

    def _meet(self, status: host_sync.Status) -> list[host_sync.Status]:
        """Exchange statuses with every process: the run's step count and episodes; a process
        that stopped stops every process (``RunFault`` or ``KeyboardInterrupt``)."""
        self._in_collective = True
        statuses = host_sync.exchange(status)
        self._in_collective = False
        self.steps = self.start_step + sum(s.steps for s in statuses)
        for s in statuses:
            self.period.sums.merge(s.sums)
        stopped = host_sync.first_stop(statuses)
        if stopped is None:
            return statuses
        i, s, cause = stopped
        if s.code == host_sync.INTERRUPTED:
            self._note_interrupted(None if i == jax.process_index() else i)
            raise _Interrupted
        raise RunFault(self._stop_note(cause, s.diverged), s.exit_code)

    def _stopped(self, stop: _Stop) -> None:
        if self.processes == 1:
            raise RunFault(self._stop_note(stop.cause, stop.diverged), stop.code) from None
        self._meet(self._status(stop))  # raises for every process

    def _interrupted(self) -> None:
        """Ctrl-C: save (process 0) and tell the other processes, unless it came in the middle
        of a collective, which the others cannot finish without this process."""
        if self.processes == 1:
            self._note_interrupted(None)
        elif self._in_collective:
            self.display.message(f"interrupted in the middle of an update; the other processes "
                                 f"stop when jax.distributed sees this one gone. Continue with "
                                 f"--resume from the last checkpoint (step {max(self.saved_at, 0)}).")
        else:
            try:
                self._meet(self._status(code=host_sync.INTERRUPTED))
            except _Interrupted:
                pass

    def _note_interrupted(self, by: int | None) -> None:
        if self.steps != self.saved_at and _finite(distributed.local_replica(self.state)):
            self._save()
        who = "" if by is None else f"process {by} was interrupted; "
        self.display.message(f"{who}interrupted at step {self.steps}; checkpoint saved. "
                             "Continue with --resume.")

    def _wait(self):
        try:
            reports = self.vec.receive()
            if len(self.vec.specs) != 1:
                pick_behavior(self.vec, self.settings, self.env_name)  # raises, naming them
            return reports
        except EnvFault as fault:
            raise _Stop(str(fault).rstrip("."), 2 if fault.kind in _SETUP_KINDS else 1) from None

    def _stop_note(self, cause: str, diverged: bool) -> str:
        """``cause`` and what became of the checkpoints, in one sentence; saves one first
        where the run progressed since the last and the train state is consistent."""
        run = f"run {self.settings.run_id!r}"
        if not diverged and self.steps > max(self.saved_at, self.start_step) and _finite(
                distributed.local_replica(self.state)):
            self._save()
            return (f"{cause}; {run} stopped at step {self.steps}, saved there: continue with "
                    "--resume once the environment works again.")
        if self.saved_at >= 0:
            return (f"{cause}; {run} stopped at step {self.steps}, its last checkpoint (step "
                    f"{self.saved_at}) is intact: continue with --resume.")
        return f"{cause}; {run} stopped before its first checkpoint: start it again with --force."

    def _save(self) -> None:
        """Process 0 writes its copy of the (replicated) state; the others note the step."""
        if self.main:
            state = HostState(distributed.local_replica(self.state), np.asarray(self.steps, np.int64),
                              np.asarray(self.updates, np.int64))
            checkpoint.save(self.folder.path, self.steps, state, self.meta,
                            self.settings.keep_checkpoints)
        self.saved_at = self.steps

    def _summarize(self, now: float) -> None:
        row = self.period.summarize(self.steps, now, self._last_metrics)
        self.period = _Period(now, self.steps)
        self.history.append([row])
        if self.main:
            self.log.write(self.steps, now - self._elapsed0, [row])
        self.display.log(self.steps, now - self._elapsed0, row["cumulative_reward"], row["reward_std"])

    def _last_reward(self) -> float:
        for rows in reversed(self.history):
            if not math.isnan(rows[0]["cumulative_reward"]):
                return rows[0]["cumulative_reward"]
        return math.nan

    # ------------------------------------------------------------------ end

    def close(self) -> None:
        if self.vec is not None:
            self.vec.close()
            self.vec = None
        # A compile still running in the background is not waited for (the process may go on).
        self._pool.shutdown(wait=False, cancel_futures=True)

    def finish(self) -> dict:
        from jppo.jax_loop.driver import finish

        extra = {}
        if self.layout.mesh is not None:  # a collective: every process reports
            extra = {"devices": self.layout.segments, "processes": distributed.process_report(
                self.state.params, self.local_workers, self.local_steps)}
        if not self.main:
            return {"steps": self.steps, "complete": self.complete, **extra}
        return finish(self.settings, self.folder, self.env_name, self.workers, self.history,
                      self.steps, self.steps - self.start_step, self.compile_s, self.train_s,
                      self.display, complete=self.complete, extra_info=extra)


__all__ = ["HostState", "RunFault", "check_resume", "main", "make_vec_env", "num_workers",
           "pick_behavior", "train"]
