"""One behavior's training in a host run: its policy, its update and everything it writes.

A host run trains every behavior of the scene that its configuration names (a scene with two
agent types trains two policies, as ``mlagents-learn`` runs one trainer per behavior). Each
behavior has its own ``Learner``: its trainer settings (``RunSettings.for_behavior``), its
train state, act call, experience (``TrajectoryAssembler``, ``UpdateBuffer``), compiled update,
step count, summaries, checkpoints and ONNX model. What the behaviors share (the Unity workers,
the loop, Ctrl-C and faults, the multi-process meeting) stays in ``jppo.host_loop.driver``.

Where a run writes (``folder``): a run of one behavior writes into results/<run-id>/ as it
always has; a run of several gives each behavior its own run folder results/<run-id>/<behavior>/
(checkpoints, progress.csv, TensorBoard events, learning curve), which ``python -m
jppo.export`` and ``jppo.evaluate`` take as they take any run folder, and the models go to
results/<run-id>/<behavior>.onnx, where ML-Agents puts them. Steps count this behavior's agent
decisions; each behavior stops learning at its own ``max_steps`` (its agents keep acting with
the last policy, as under ML-Agents, until every behavior is done).
"""
from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any

import flax.struct
import jax
import numpy as np

from jppo import distributed
from jppo.core import observations
from jppo.core.update import TrainState, init_train_state
from jppo.host_loop import meeting, sharded_update
from jppo.host_loop.acting import Acting
from jppo.host_loop.connect import Behavior
from jppo.host_loop.faults import Stop
from jppo.host_loop.trajectories import TrajectoryAssembler, UpdateBuffer
from jppo.runs import checkpoint, initialize, report, session
from jppo.runs.checkpoint import finite
from jppo.runs.settings import RunSettings
from jppo.runs.summaries import PERIOD_LAST, PERIOD_MEANS, RunLog, summary_row


@flax.struct.dataclass
class HostState:
    """What a host run checkpoints: the train state and its counters (no environment state:
    Unity restarts on resume)."""

    train: TrainState
    steps: np.ndarray  # int64 scalar: agent decisions so far
    updates: np.ndarray  # int64 scalar
    # A curriculum's lesson numbers (int32 [P]) and smoothed rewards (float32 [P]), else None
    # (and the checkpoint is what it was before curricula existed). A run of several
    # behaviors keeps them in its first behavior's checkpoints.
    lessons: Any = None


@dataclasses.dataclass
class Period:
    """What one summary period collected (episode sums: a multi-process run adds every
    process's at each meeting) and the metrics of its updates."""

    started: float
    start_step: int
    sums: meeting.EpisodeSums = dataclasses.field(default_factory=meeting.EpisodeSums)
    metrics: list = dataclasses.field(default_factory=list)

    def row(self, step: int, now: float, last_metrics: dict) -> dict:
        metrics = jax.device_get(self.metrics)
        updates = {name: [m[name] for m in metrics] for name in PERIOD_MEANS + PERIOD_LAST}
        if not metrics and last_metrics:  # no update this period: the schedules stand still
            updates.update({name: [last_metrics[name]] for name in PERIOD_LAST})
        s = self.sums
        return summary_row(s.episodes, s.reward_sum, s.reward_sq_sum, s.length_sum, updates,
                           (step - self.start_step) / max(now - self.started, 1e-9))


class Learner:
    """One behavior: ``restore`` (fresh, resumed or initialized from another run), ``start``
    (the act call, the update compiled in ``background``), then per step ``act``, ``observe``
    and ``learn``; ``summarize`` and ``save`` on their own cadences."""

    def __init__(self, settings: RunSettings, behavior: Behavior, layout: sharded_update.Layout,
                 folder: pathlib.Path | None, resume_from: pathlib.Path | None, *,
                 inference: bool, main: bool, split_minibatches: bool = False,
                 several: bool = False, primary: bool = True):
        self.settings, self.config, self.behavior = settings, settings.ppo, behavior
        self.name = settings.behavior
        self.layout, self.folder, self.resume_from = layout, folder, resume_from
        self.inference, self.main, self.split = inference, main, split_minibatches
        self.several = several  # one of several behaviors: its own folder, events in it
        self.primary = primary  # the run's first behavior: its checkpoints keep the lessons
        self._of = f" of behavior {self.name!r}" if several else ""  # for the stop sentences
        self.meta: dict = {}
        self.state: TrainState | None = None
        self.steps = self.updates = self.start_step = 0
        self.local_steps = 0  # this process's decisions of this behavior since the (re)start
        self.saved_at = -1
        self.acting: Acting | None = None
        self.compile_s = 0.0
        self._update = self._compiled = None
        self.assembler = TrajectoryAssembler(self.config.time_horizon, behavior.observation_size,
                                             behavior.action_spec)
        self.buffer = UpdateBuffer(layout.segment)
        self.log: RunLog | None = None
        self.history: list = []
        self.period: Period | None = None
        self.last_metrics: dict = {}
        self.summaries = self.saves = None

    @property
    def done(self) -> bool:
        """This behavior has trained its ``max_steps``: it acts on but learns no more."""
        return self.steps >= self.config.max_steps

    # ------------------------------------------------------------------ setup

    def restore(self, meta: dict, resume: bool, lessons=None, start_message=None) -> Any:
        """The train state: fresh, initialized from another run (or, for --inference with
        ``resume``, from this run's checkpoint), or this run's checkpoint; returns the
        checkpoint's lessons (or ``lessons`` itself when not resuming)."""
        config, settings, (name, size, spec) = self.config, self.settings, self.behavior
        self.meta = {**checkpoint.policy_meta(config, spec, size, self.name), **meta,
                     "unity_behavior": name}
        # Jitted: eager initialization compiles each of its small operations separately.
        train_state = jax.jit(lambda key: init_train_state(key, config, size, spec))(
            jax.random.PRNGKey(settings.seed))
        start_path = initialize.source(settings, resume)
        if start_path is not None:  # checked before the run folder is written
            start = initialize.read(start_path)
            initialize.check_shapes(start, self.name, size, spec)
            train_state = initialize.start_train_state(start, train_state, config, None)
            if start_message is not None:
                start_message(initialize.describe(start, self.inference))
        template = HostState(train_state, np.zeros((), np.int64), np.zeros((), np.int64), lessons)
        state, resumed = session.restore(
            self.resume_from, template,
            lambda saved: session.check_host_resume(saved, name, size, spec, self.resume_from))
        if resumed:
            self.saved_at = int(state.steps)
        self.state = distributed.place_replicated(self.layout.mesh, state.train)
        self.steps, self.updates = int(state.steps), int(state.updates)
        self.start_step = self.steps
        return state.lessons if resumed else lessons

    def record(self) -> dict:
        """What configuration.yaml's run record says of this behavior."""
        name, size, spec = self.behavior
        return {"behavior_name": name, "observation_size": observations.to_meta(size),
                "action_spec": spec.to_meta()}

    def start(self, background, resuming: bool) -> None:
        """The act call; the update compiled by ``background`` (while Unity steps); the log."""
        config, (_, size, spec) = self.config, self.behavior
        self.acting = Acting(config, spec, size, self.settings.seed, self.steps)
        self.acting.use(self.state.params, self.state.normalizer)
        now = time.perf_counter()
        self.period = Period(now, self.steps)
        self.summaries = session.Cadence(self.settings.summary_freq, self.steps)
        self.saves = session.Cadence(self.settings.checkpoint_interval, self.steps)
        if self.inference:
            return
        if self.main:
            if self.several:
                self.folder.mkdir(exist_ok=True)
            self.log = RunLog(self.folder, self.name, 1, self.start_step if resuming else None,
                              self.settings.seed, [self.folder] if self.several else None)
        update = sharded_update.make_update(self.layout, config, spec,
                                            config.total_adam_steps(config.buffer_size),
                                            self.split)
        buffer = sharded_update.abstract_buffer(self.layout, size, spec)
        state = self.state

        def compile_update():
            # Compiled while the environment runs, so the first update does not stall Unity for
            # seconds. Compiled only, not run: a run would be a collective across processes.
            t = time.perf_counter()
            compiled = update.lower(state, buffer).compile()
            return compiled, time.perf_counter() - t

        self._compiled = background(compile_update)

    # ------------------------------------------------------------------ steps

    def act(self, obs, masks, at_step: int):
        actions, log_probs = self.acting(obs, masks)
        if not np.isfinite(log_probs).all() or not np.isfinite(actions).all():
            raise Stop(f"training diverged: the policy's actions{self._of} are not finite at "
                       f"step {at_step}", 1, diverged=True)
        return actions, log_probs

    def observe(self, worker: int, steps, ids, actions, log_probs) -> list:
        """A worker's report for this behavior (and the actions just chosen for it): its
        trajectories queued for the update while this behavior trains; the episodes ended."""
        trajectories, episodes, experiences = self.assembler.observe(worker, steps)
        if len(ids):
            self.assembler.act(worker, ids, actions, log_probs)
        if not self.done:  # a behavior past its max_steps acts on, uncounted, unlearned
            for t in trajectories if not self.inference else ():
                self.buffer.add(t)
            self.local_steps += experiences
        return episodes

    def ready(self) -> bool:
        return not (self.inference or self.done) and self.buffer.count >= self.layout.share

    def learn(self, processes: int, collective) -> None:
        """One update on this process's share of the buffer (every process at once);
        ``collective(flag)`` marks the span a Ctrl-C cannot be told to the other processes."""
        if self._update is None:
            self._update, self.compile_s = self._compiled.result()
        parts = [self.buffer.take() for _ in range(self.layout.local_segments)]
        collective(True)
        self.state, self.last_metrics = self._update(
            self.state, sharded_update.global_buffer(self.layout, parts))
        if processes > 1:  # not addressable as a whole: this process's copy (waits for it)
            self.last_metrics = distributed.fetch_replicated(self.last_metrics)
        collective(False)
        self.updates += 1
        if not finite(distributed.local_replica(self.state)):  # never acted with, never saved
            raise Stop(f"training diverged: update {self.updates}{self._of} (at step "
                       f"{self.steps}) made the policy NaN or Inf (lower the learning rate, or "
                       "check the rewards and observations)", 1, diverged=True)
        self.acting.use(self.state.params, self.state.normalizer)
        self.period.metrics.append(self.last_metrics)

    # ------------------------------------------------------------------ records

    def summarize(self, now: float, elapsed: float, extra: dict, write, display) -> None:
        row = self.period.row(self.steps, now, self.last_metrics)
        row.update(extra)
        self.period = Period(now, self.steps)
        self.history.append([row])
        if self.log is not None:
            write(self.log.write, self.steps, elapsed, [row])
        display.log(self.steps, elapsed, row["cumulative_reward"], row["reward_std"],
                    training=not self.inference, behavior=self.name)

    def last_reward(self) -> float:
        for rows in reversed(self.history):
            if not np.isnan(rows[0]["cumulative_reward"]):
                return rows[0]["cumulative_reward"]
        return float("nan")

    def progressed(self) -> bool:
        return self.steps > max(self.saved_at, self.start_step)

    def consistent(self) -> bool:
        return finite(distributed.local_replica(self.state))

    def save(self, lessons, write) -> None:
        """Process 0 writes its copy of the (replicated) state, TensorBoard flushed first so
        the summaries up to a checkpoint are on disk with it; the others note the step."""
        if self.main:
            state = HostState(distributed.local_replica(self.state), np.asarray(self.steps, np.int64),
                              np.asarray(self.updates, np.int64), lessons)
            if self.log is not None:
                write(self.log.flush)
            write(checkpoint.save, self.folder, self.steps, state, self.meta,
                  self.settings.keep_checkpoints)
        self.saved_at = self.steps

    def close_log(self, write) -> None:
        if self.log is not None:
            log, self.log = self.log, None
            write(log.close)

    def outcome(self, env: str, workers: int, train_s: float, complete: bool,
                extra: dict) -> report.Outcome:
        return report.Outcome(env, workers, self.history, self.steps, self.steps - self.start_step,
                              self.compile_s, train_s, complete, extra)


__all__ = ["HostState", "Learner", "Period"]
