"""A run on host-side environments: Unity (a build or the editor) and Gymnasium vectors.

    python -m jppo.train configs/3DBall.yaml --env path/to/3DBall.x86_64 --num-envs 4 --no-graphics
    python -m jppo.train configs/3DBall.yaml --env editor            # then press Play
    python -m jppo.train configs/CartPole.yaml --env gymnasium:CartPole-v1

    run(launch, mesh) -> run_info        setup (connect), loop, finish

The loop; workers step on their own, each iteration serves those that have answered::

    act on the deciding agents of every worker that reported (one jitted call, padded batch)
    send them their actions (each worker steps in its own process)
    meanwhile: assemble experiences per agent id, queue finished trajectories, update when
               buffer_size experiences are queued, summaries, checkpoints
    wait until at least one worker has answered

Steps count agent decisions summed over agents, as ML-Agents counts them. Runs write the same
folder as the JAX loop (through ``jppo.runs``) and resume from their checkpoints with
``--resume`` (the environment restarts; experience not yet learned from is collected anew).

Design choices: workers are served as they answer, not in lock-step (``unity_env``; the
acting policy may lag an update by a step). The normalizer is updated once per update on the
buffer's observations, inside the compiled update, before values and GAE: ML-Agents updates it
per trajectory, and Chan's merge gives the same statistics either way, only the acting policy
sees them one update later (as in the JAX loop). Each update takes exactly ``buffer_size``
experiences (the straddling trajectory split, its tail kept for the next update), so the
update compiles once per run and the schedules decay over exactly
``total_adam_steps(buffer_size)``.

Several processes (``jax.distributed``) or devices: each process serves its own share of the
workers and fills its share of every update's buffer; the processes meet once per update to
agree on the step count and on whether all are well (``meeting``), then share the one update
(``sharded_update``). Faults end the run with one sentence (``faults``); a consistent checkpoint
is saved first when the run made progress since the last.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib
import time
from typing import Any

import flax.struct
import jax
import numpy as np

from jppo import distributed, interrupts
from jppo.core import observations
from jppo.core.update import TrainState, init_train_state
from jppo.errors import RunFault, UserError
from jppo.host_loop import connect, gym_env, meeting, sharded_update
from jppo.host_loop.acting import Acting
from jppo.host_loop.faults import Interrupted, Stop
from jppo.host_loop.trajectories import TrajectoryAssembler, UpdateBuffer, per_sensor
from jppo.host_loop.vec_env import Actions, EnvFault, VecEnv
from jppo.runs import checkpoint, folder as run_folder, initialize, report, session
from jppo.runs import environment_parameters as env_parameters
from jppo.runs.checkpoint import finite
from jppo.runs.folder import write_configuration
from jppo.runs.launch import Launch
from jppo.runs.progress import ProgressDisplay
from jppo.runs.summaries import PERIOD_LAST, PERIOD_MEANS, RunLog, summary_row


@flax.struct.dataclass
class HostState:
    """What a host run checkpoints: the train state and its counters (no environment state:
    Unity restarts on resume)."""

    train: TrainState
    steps: np.ndarray  # int64 scalar: agent decisions so far
    updates: np.ndarray  # int64 scalar
    # A curriculum's lesson numbers (int32 [P]) and smoothed rewards (float32 [P]), else None
    # (and the checkpoint is what it was before curricula existed).
    lessons: Any = None


@dataclasses.dataclass
class _Period:
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


def run(launch: Launch, mesh=None) -> dict:
    """One host run; returns run_info.json's content. A run that cannot go on raises
    ``RunFault`` (one sentence, an exit code) after saving what it can.

    ``mesh`` (``jppo.distributed.make_mesh``) lays the update out over devices, of this process
    or of every process of a ``jax.distributed`` run: each process then steps its own share of
    the workers and only process 0 writes."""
    workers = connect.num_workers(launch.settings, launch.env)
    connect.check_shares(launch.settings, launch.env, workers)
    layout = sharded_update.make_layout(mesh, launch.settings.ppo, launch.split_minibatches)
    with interrupts.stopping():
        host_run = HostRun(launch, workers, layout)
        try:
            # tensorboardX imports torch where it is installed (seconds): done while Unity
            # connects rather than while it waits for the first actions.
            host_run.background(importlib.import_module, "tensorboardX")
            with host_run.display:
                try:
                    host_run.setup()
                    host_run.loop()
                finally:
                    host_run.close()
            return host_run.finish()
        finally:
            if host_run.folder is not None:
                host_run.folder.release()


class HostRun:
    """One host run: ``setup`` (connect, restore, compile in the background), ``loop``,
    ``finish`` (the shared end of a run)."""

    def __init__(self, launch: Launch, workers: int, layout: sharded_update.Layout):
        self.launch, self.settings, self.config = launch, launch.settings, launch.settings.ppo
        self.workers, self.layout = workers, layout
        self.main = distributed.is_main()
        self.processes = jax.process_count()
        self.local_workers = workers // self.processes
        self.inference = self.settings.inference  # run the policy, learn and write nothing
        self.folder = None if self.inference else session.open_folder(launch)
        saved = (checkpoint.read(self.folder.resume_from)[0]
                 if self.main and self.folder and self.folder.resume_from else None)
        self.display = ProgressDisplay(self.settings.behavior, self.config.max_steps,
                                       int(saved["steps"]) if saved else 0,
                                       quiet=launch.quiet or not self.main)
        self.vec: VecEnv | None = None
        self.history: list = []
        self.compile_s = self.train_s = 0.0
        self.saved_at = -1
        self.complete = False
        self.local_steps = 0  # this process's decisions since the run (re)started
        self.unsent = meeting.EpisodeSums()  # episodes not yet told to the other processes
        self.in_collective = False  # inside a collective: a Ctrl-C cannot be told to the others
        self._what = "interrupted"  # how the run was asked to stop (Ctrl-C, SIGTERM)
        self._pool = concurrent.futures.ThreadPoolExecutor(2)
        # Set by setup: what the run connected to, and what it trains and acts with.
        self.reports: list = []  # each worker's first report
        self.behavior: connect.Behavior | None = None
        self.meta: dict = {}  # what every checkpoint of this run says of it
        self.state: TrainState | None = None
        self.steps = self.updates = self.start_step = 0
        self.acting: Acting | None = None
        self._update = self._compiled = None  # the compiled update; its compile in the background
        # Set by loop.
        self.buffer: UpdateBuffer | None = None
        self.log: RunLog | None = None
        self.period: _Period | None = None
        self._last_metrics: dict = {}
        self._elapsed0 = 0.0

    def background(self, fn, *args) -> concurrent.futures.Future:
        return self._pool.submit(fn, *args)

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        settings, env = self.settings, self.launch.env
        first = jax.process_index() * self.local_workers
        if env == connect.EDITOR:
            base = (settings.base_port or 5004) + first
            ports = ", ".join(str(base + i) for i in range(self.local_workers))
            self.display.message(f"waiting for Unity on port {ports}: press Play in the editor "
                                 f"(or start the player) within {settings.timeout_wait:g} s")
        # A build writes its Player-<worker>.log there, as under mlagents-learn; processes
        # other than 0 write theirs under their own results/<run-id>.
        logs = None if env == connect.EDITOR or self.inference else (
            (self.folder.path if self.folder else run_folder.path_of(settings)) / "run_logs")
        calls = self._environment_parameters()
        try:
            self.vec = connect.make_vec_env(settings, env, self.local_workers,
                                            logs and logs.resolve(), first, calls)
            self.reports = self.vec.reset()
            self.behavior = connect.pick_behavior(self.vec, settings.behavior, env)
            stop = None
        except EnvFault as fault:
            stop = Stop.of(fault, starting=True)
        if self.processes > 1:  # every process learns whether all of them could start
            stopped = meeting.first_stop(meeting.exchange(self._status(stop)))
            if stopped:
                _, s, cause = stopped
                raise RunFault(f"{cause}; every process stopped before training.", s.exit_code)
        elif stop is not None:
            raise RunFault(f"{stop.cause}.", stop.code)
        self._restore()
        self._build_programs()

    def _environment_parameters(self) -> list | None:
        """The EnvironmentParametersChannel calls mlagents-learn makes for the run's
        environment parameters (seeds from the run's seed); a curriculum is kept to advance."""
        settings, plan = self.settings, env_parameters.plan(self.settings.environment_parameters,
                                                            self.settings.seed)
        self.curriculum = None
        if any(p.is_curriculum for p in plan):
            env_parameters.check_behaviors(plan, [settings.behavior])
            if self.processes > 1:
                raise UserError("a curriculum runs in one process; leave out --coordinator.")
            if any(l.criteria.require_reset for p in plan for l in p.lessons if l.criteria):
                raise UserError("completion_criteria.require_reset: true is not implemented for "
                                "Unity runs (the scene would have to be reset mid-run); leave "
                                "it out.")
            self.curriculum = env_parameters.Curriculum(plan)
        if self.launch.env.startswith(gym_env.PREFIX) or not plan:
            return None
        return env_parameters.channel_calls(env_parameters.Curriculum(plan).samplers())

    def _next_lessons(self) -> None:
        """ML-Agents' check after every environment step: lessons advanced, the new samplers
        sent to every worker with its next step."""
        changed, _ = self.curriculum.update(self.steps / self.config.max_steps)
        if changed:
            self.vec.set_environment_parameters(
                env_parameters.channel_calls(self.curriculum.samplers()))
            for line in self.curriculum.announce(changed):
                self.display.message(line)

    def _lesson_state(self):
        if self.curriculum is None:
            return None
        return (np.asarray(self.curriculum.lessons, np.int32),
                np.asarray(self.curriculum.smoothed, np.float32))

    def _resume_lessons(self, saved) -> None:
        """The checkpoint's lessons; Unity, reset with the first lessons' values before the
        checkpoint was read, gets the current ones with its next step."""
        lessons, smoothed = saved
        self.curriculum.lessons = [int(n) for n in lessons]
        self.curriculum.smoothed = [float(v) for v in smoothed]
        if any(self.curriculum.lessons):
            self.vec.set_environment_parameters(
                env_parameters.channel_calls(self.curriculum.samplers()))

    def _restore(self) -> None:
        """The train state: fresh, or the checkpoint's when resuming; the run's configuration."""
        settings, config, env = self.settings, self.config, self.launch.env
        name, size, spec = self.behavior
        self.meta = {**checkpoint.policy_meta(config, spec, size, settings.behavior),
                     "driver": session.HOST_DRIVER, "env": env, "num_envs": self.workers,
                     "unity_behavior": name, "seed": settings.seed}
        # Jitted: eager initialization compiles each of its small operations separately.
        train_state = jax.jit(lambda key: init_train_state(key, config, size, spec))(
            jax.random.PRNGKey(settings.seed))
        start_path = initialize.source(settings, self.launch.resume)
        if start_path is not None:  # checked before the run folder is written
            start = initialize.read(start_path)
            initialize.check_shapes(start, settings.behavior, size, spec)
            train_state = initialize.start_train_state(start, train_state, config, None)
            self.display.message(initialize.describe(start, self.inference))
        state, resumed = session.restore(
            self.folder, HostState(train_state, np.zeros((), np.int64), np.zeros((), np.int64),
                                   self._lesson_state()),
            lambda saved: session.check_host_resume(saved, name, size, spec,
                                                    self.folder.resume_from))
        if resumed:
            self.saved_at = int(state.steps)
            if self.curriculum is not None:
                self._resume_lessons(state.lessons)
        self.state = distributed.place_replicated(self.layout.mesh, state.train)
        self.steps, self.updates = int(state.steps), int(state.updates)
        self.start_step = self.steps
        if self.main and not self.inference:
            extra = {"env": env, "driver": session.HOST_DRIVER, "num_envs": self.workers,
                     "behavior_name": name, "observation_size": observations.to_meta(size),
                     "action_spec": spec.to_meta()}
            if self.layout.mesh is not None:
                extra.update(devices=self.layout.segments, processes=self.processes,
                             split_minibatches=self.launch.split_minibatches)
            write_configuration(self.folder, settings, extra)
        self.display.message(
            f"connected to {self.workers} {self.vec.description} worker(s); behavior {name!r}: "
            f"{observations.describe(size)}, {spec.describe()} actions; an update every "
            f"{config.buffer_size} steps"
            f"{self.layout.describe(self.launch.split_minibatches, self.local_workers)}")

    def _build_programs(self) -> None:
        """The act call, and the update compiled in the background."""
        config, (_, size, spec) = self.config, self.behavior
        self.acting = Acting(config, spec, size, self.settings.seed, self.steps)
        self.acting.use(self.state.params, self.state.normalizer)
        if self.inference:
            return
        update = sharded_update.make_update(self.layout, config, spec,
                                            config.total_adam_steps(config.buffer_size),
                                            self.launch.split_minibatches)
        buffer = sharded_update.abstract_buffer(self.layout, size, spec)

        def compile_update():
            # Compiled while the environment runs, so the first update does not stall Unity for
            # seconds. Compiled only, not run: a run would be a collective across processes.
            t = time.perf_counter()
            compiled = update.lower(self.state, buffer).compile()
            return compiled, time.perf_counter() - t

        self._compiled = self.background(compile_update)

    # ------------------------------------------------------------------ loop

    def loop(self) -> None:
        config, settings, stop_after = self.config, self.settings, self.launch.stop_after_steps
        assembler = TrajectoryAssembler(config.time_horizon, self.behavior.observation_size,
                                        self.behavior.action_spec)
        self.buffer = UpdateBuffer(self.layout.segment)
        self.log = (RunLog(self.folder.path, settings.behavior, 1,
                           self.start_step if self.folder.resume_from else None, settings.seed)
                    if self.main and not self.inference else None)
        summaries = session.Cadence(settings.summary_freq, self.steps)
        saves = session.Cadence(settings.checkpoint_interval, self.steps)
        started = last_shown = self._elapsed0 = time.perf_counter()
        self.period = _Period(started, self.steps)
        self._last_metrics: dict = {}
        reports = dict(enumerate(self.reports))  # worker -> its latest report, not yet acted on
        self.complete = self.steps >= config.max_steps
        try:
            while not self.complete:
                interrupts.check()  # Ctrl-C, SIGTERM: stop here, between steps
                # 1. One policy call for every deciding agent of the workers that reported.
                ready = sorted(reports)
                steps_of = {w: reports[w].get(self.behavior.name) for w in ready}
                ids = {w: s.decision_ids if s is not None else np.zeros(0, np.int64)
                       for w, s in steps_of.items()}
                actions = log_probs = None
                if sum(len(i) for i in ids.values()):
                    deciding = [steps_of[w] for w in ready if len(ids[w])]
                    actions, log_probs = self.acting(*decision_batch(deciding))
                    if not np.isfinite(log_probs).all() or not np.isfinite(actions).all():
                        raise Stop(f"training diverged: the policy's actions are not finite at "
                                   f"step {self.steps}", 1, diverged=True)
                rows, start = {}, 0
                for w in ready:
                    rows[w] = slice(start, start + len(ids[w]))
                    start += len(ids[w])
                # A worker with no deciding agent (a terminal-only report) steps all the same.
                self.vec.send({w: {self.behavior.name: Actions(ids[w], actions[rows[w]])}
                               if len(ids[w]) else {} for w in ready})

                # 2. While the workers step: experiences, trajectories, updates.
                for w in ready:
                    if steps_of[w] is None:
                        continue
                    trajectories, episodes, experiences = assembler.observe(w, steps_of[w])
                    if len(ids[w]):
                        assembler.act(w, ids[w], actions[rows[w]], log_probs[rows[w]])
                    for t in trajectories if not self.inference else ():
                        self.buffer.add(t)
                    (self.period.sums if self.processes == 1 else self.unsent).add(episodes)
                    if self.curriculum is not None:
                        self.curriculum.add_rewards([e.reward for e in episodes])
                    self.local_steps += experiences
                if self.processes == 1:
                    self.steps = self.start_step + self.local_steps
                    if self.curriculum is not None:
                        self._next_lessons()
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
                stop = stop_after is not None and self.steps - self.start_step >= stop_after
                if summaries.due(self.steps) or self.complete or stop:
                    self._summarize(now)
                    summaries.mark(self.steps)
                if now - last_shown > 0.5 or self.complete or stop:
                    rate = (self.steps - self.start_step) / max(now - started, 1e-9)
                    self.display.update(self.steps, rate, self._last_reward())
                    last_shown = now
                if (saves.due(self.steps) or self.complete or stop) and not self.inference:
                    self._save()
                    saves.mark(self.steps)
                if self.complete or stop:
                    break
                reports = self._wait()
                for restart in self.vec.take_restarted():  # a crashed build, started again
                    assembler.forget(restart.worker)
                    self.display.note(f"jppo: warning: {restart.notice}.")
        except Stop as stop:
            if interrupts.pending() is None:
                self._stopped(stop)  # raises
            # SIGTERM reached Unity too (Slurm signals every process of the job): the run was
            # asked to stop, and the environment's end is not its fault.
            asked = interrupts.Interrupted(interrupts.pending())
            self._interrupted(asked)
            raise asked from None
        except Interrupted:
            raise
        except KeyboardInterrupt as stop:
            self._interrupted(stop)
            raise
        finally:
            self.train_s = time.perf_counter() - started
            if self.log is not None:
                self._write(self.log.close)

    def _learn(self) -> None:
        """One update on this process's share of the buffer (every process at once)."""
        if self._update is None:
            self._update, self.compile_s = self._compiled.result()
        parts = [self.buffer.take() for _ in range(self.layout.local_segments)]
        self.in_collective = True
        self.state, self._last_metrics = self._update(
            self.state, sharded_update.global_buffer(self.layout, parts))
        if self.processes > 1:  # not addressable as a whole: this process's copy (waits for it)
            self._last_metrics = distributed.fetch_replicated(self._last_metrics)
        self.in_collective = False
        self.updates += 1
        if not finite(distributed.local_replica(self.state)):  # never acted with, never saved
            raise Stop(f"training diverged: update {self.updates} (at step {self.steps}) made the "
                       "policy NaN or Inf (lower the learning rate, or check the rewards and "
                       "observations)", 1, diverged=True)
        self.acting.use(self.state.params, self.state.normalizer)
        self.period.metrics.append(self._last_metrics)

    def _wait(self):
        try:
            reports = self.vec.receive()
            if len(self.vec.specs) != 1:
                connect.pick_behavior(self.vec, self.settings.behavior, self.launch.env)  # raises
            return reports
        except EnvFault as fault:
            raise Stop.of(fault) from None

    def _save(self) -> None:
        """Process 0 writes its copy of the (replicated) state, TensorBoard flushed first so
        the summaries up to a checkpoint are on disk with it; the others note the step."""
        if self.main:
            state = HostState(distributed.local_replica(self.state), np.asarray(self.steps, np.int64),
                              np.asarray(self.updates, np.int64), self._lesson_state())
            self._write(self.log.flush)
            self._write(checkpoint.save, self.folder.path, self.steps, state, self.meta,
                        self.settings.keep_checkpoints)
        self.saved_at = self.steps

    def _write(self, write, *args):
        """``write(*args)``; a full disk or another write failure is one sentence (exit 1)."""
        try:
            return write(*args)
        except OSError as err:
            raise report.write_failure(err, self.settings.run_id, self.steps,
                                       self.saved_at) from None

    def _summarize(self, now: float) -> None:
        row = self.period.row(self.steps, now, self._last_metrics)
        if self.curriculum is not None:
            row.update(self.curriculum.lesson_scalars())
        self.period = _Period(now, self.steps)
        self.history.append([row])
        if self.log is not None:
            self._write(self.log.write, self.steps, now - self._elapsed0, [row])
        self.display.log(self.steps, now - self._elapsed0, row["cumulative_reward"], row["reward_std"],
                         training=not self.inference)

    def _last_reward(self) -> float:
        for rows in reversed(self.history):
            if not np.isnan(rows[0]["cumulative_reward"]):
                return rows[0]["cumulative_reward"]
        return float("nan")

    # ------------------------------------------------------------------ stopping

    def _status(self, stop: Stop | None = None, code: int = meeting.READY) -> meeting.Status:
        """This process's report for a meeting (FAULT with ``stop``); hands its episodes over."""
        if stop is None:
            status = meeting.Status(code, steps=self.local_steps, sums=self.unsent)
        else:
            status = meeting.Status(meeting.FAULT, stop.code, stop.cause, stop.diverged,
                                    self.local_steps, self.unsent)
        self.unsent = meeting.EpisodeSums()
        return status

    def _meet(self, status: meeting.Status) -> list[meeting.Status]:
        """Exchange statuses with every process: the run's step count and episodes; a process
        that stopped stops every process (``RunFault`` or ``KeyboardInterrupt``)."""
        self.in_collective = True
        statuses = meeting.exchange(status)
        self.in_collective = False
        self.steps = self.start_step + sum(s.steps for s in statuses)
        for s in statuses:
            self.period.sums.merge(s.sums)
        stopped = meeting.first_stop(statuses)
        if stopped is None:
            return statuses
        i, s, cause = stopped
        if s.code == meeting.INTERRUPTED:
            self._note_interrupted(None if i == jax.process_index() else i)
            raise Interrupted
        raise RunFault(self._stop_note(cause, s.diverged), s.exit_code)

    def _stopped(self, stop: Stop) -> None:
        if self.processes == 1:
            raise RunFault(self._stop_note(stop.cause, stop.diverged), stop.code) from None
        self._meet(self._status(stop))  # raises for every process

    def _interrupted(self, stop: KeyboardInterrupt) -> None:
        """Ctrl-C or SIGTERM: save (process 0) and tell the other processes, unless it came in
        the middle of a collective, which the others cannot finish without this process."""
        self._what = getattr(stop, "what", "interrupted")
        stop.noted = True
        if self.processes == 1:
            self._note_interrupted(None)
        elif self.in_collective:
            self.display.note(f"interrupted in the middle of an update; the other processes "
                              f"stop when jax.distributed sees this one gone. Continue with "
                              f"--resume from the last checkpoint (step {max(self.saved_at, 0)}).")
        else:
            try:
                self._meet(self._status(code=meeting.INTERRUPTED))
            except Interrupted:
                pass

    def _note_interrupted(self, by: int | None) -> None:
        what = "interrupted" if by is not None else self._what
        progressed = self.steps > max(self.saved_at, self.start_step)
        if self.inference:
            note = "inference writes nothing."
        elif progressed and finite(distributed.local_replica(self.state)):
            self._save()
            note = "checkpoint saved. Continue with --resume."
        elif self.saved_at >= 0:
            note = f"the checkpoint of step {self.saved_at} stands. Continue with --resume."
        else:
            note = "nothing to save yet."
        who = "" if by is None else f"process {by} was interrupted; "
        self.display.note(f"{who}{what} at step {self.steps}; {note}")

    def _stop_note(self, cause: str, diverged: bool) -> str:
        """The stop's sentence; saves a checkpoint first where the run progressed since the
        last and the train state is consistent."""
        if self.inference:
            return f"{cause}; inference stopped at step {self.steps}, nothing written."
        saved_now = (not diverged and self.steps > max(self.saved_at, self.start_step)
                     and finite(distributed.local_replica(self.state)))
        if saved_now:
            self._save()
        return report.stop_note(cause, self.settings.run_id, self.steps, self.saved_at, saved_now)

    # ------------------------------------------------------------------ finish

    def close(self) -> None:
        if self.vec is not None:
            self.vec.close()
            self.vec = None
        # A compile still running in the background is waited for: XLA crashes a process that
        # exits while it compiles, and an interrupted compile leaves JAX unusable.
        self._pool.shutdown(wait=True, cancel_futures=True)

    def finish(self) -> dict:
        extra = {}
        if self.layout.mesh is not None:  # a collective: every process reports
            extra = {"devices": self.layout.segments, "processes": distributed.process_report(
                self.state.params, self.local_workers, self.local_steps)}
        if not self.main:
            return {"steps": self.steps, "complete": self.complete, **extra}
        outcome = report.Outcome(self.launch.env, self.workers, self.history, self.steps,
                                 self.steps - self.start_step, self.compile_s, self.train_s,
                                 self.complete, extra)
        if self.inference:
            return report.finish_inference(self.settings, outcome, self.display)
        return self._write(report.finish, self.settings, self.folder, outcome, self.display)


def decision_batch(reports: list) -> tuple:
    """``(obs, masks)`` of the deciding agents of several reports, in order, for one policy
    call: observations concatenated per sensor, masks (True: allowed) or None."""
    obs = per_sensor(lambda *o: np.concatenate(o), *[r.decision_obs for r in reports])
    widths = [r.decision_masks.shape[1] for r in reports if r.decision_masks is not None]
    if not widths:
        return obs, None
    return obs, np.concatenate([r.decision_masks if r.decision_masks is not None
                                else np.ones((len(r.decision_ids), widths[0]), bool)
                                for r in reports])


__all__ = ["HostRun", "HostState", "decision_batch", "run"]
