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

Several behaviors (a scene with several agent types, each section of the YAML's
``behaviors``): one ``Learner`` each (``jppo.host_loop.learner``: its policy, update, steps,
summaries, checkpoints and model), all acting in the one policy call per behavior per
iteration and fed from the same workers; a behavior may first appear mid-run (an agent that
switches behavior, a spawned agent type) and gets its learner then. The run ends when every
behavior has trained its max_steps.

Several processes (``jax.distributed``) or devices (one behavior): each process serves its own share of the
workers and fills its share of every update's buffer; the processes meet once per update to
agree on the step count and on whether all are well (``meeting``), then share the one update
(``sharded_update``). Faults end the run with one sentence (``faults``); a consistent checkpoint
is saved first when the run made progress since the last.
"""
from __future__ import annotations

import concurrent.futures
import importlib
import time

import jax
import numpy as np

from jppo import distributed, interrupts
from jppo.core import observations
from jppo.errors import RunFault, UserError
from jppo.host_loop import connect, meeting, sharded_update
from jppo.host_loop.faults import Interrupted, Stop
from jppo.host_loop.learner import HostState, Learner
from jppo.host_loop.lessons import Lessons
from jppo.host_loop.stopping import Stopping
from jppo.host_loop.trajectories import per_sensor
from jppo.host_loop.vec_env import Actions, EnvFault, VecEnv
from jppo.runs import checkpoint, folder as run_folder, report, session
from jppo.runs.folder import write_configuration
from jppo.runs.launch import Launch
from jppo.runs.progress import ProgressDisplay

_NO_IDS = np.zeros(0, np.int64)


def run(launch: Launch, mesh=None) -> dict:
    """One host run; returns run_info.json's content. A run that cannot go on raises
    ``RunFault`` (one sentence, an exit code) after saving what it can.

    ``mesh`` (``jppo.distributed.make_mesh``) lays the update out over devices, of this process
    or of every process of a ``jax.distributed`` run: each process then steps its own share of
    the workers and only process 0 writes."""
    workers = connect.num_workers(launch.settings, launch.env)
    connect.check_shares(launch.settings, launch.env, workers)
    with interrupts.stopping():
        host_run = HostRun(launch, workers, mesh)
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


class HostRun(Stopping):
    """One host run: ``setup`` (connect, restore, compile in the background), ``loop``,
    ``finish`` (the shared end of a run)."""

    def __init__(self, launch: Launch, workers: int, mesh):
        self.launch, self.settings = launch, launch.settings
        self.workers, self.mesh = workers, mesh
        self.main = distributed.is_main()
        self.processes = jax.process_count()
        self.local_workers = workers // self.processes
        self.inference = self.settings.inference  # run the policy, learn and write nothing
        self.several = len(self.settings.behavior_names) > 1
        self.folder = None if self.inference else session.open_folder(launch)
        self.display = ProgressDisplay(
            " + ".join(self.settings.behavior_names),
            sum(s.ppo.max_steps for s in self.settings.each_behavior()),
            self._saved_steps(), quiet=launch.quiet or not self.main)
        self.vec: VecEnv | None = None
        self.train_s = 0.0
        self.complete = False
        self.unsent = meeting.EpisodeSums()  # episodes not yet told to the other processes
        self.in_collective = False  # inside a collective: a Ctrl-C cannot be told to the others
        self._what = "interrupted"  # how the run was asked to stop (Ctrl-C, SIGTERM)
        self._pool = concurrent.futures.ThreadPoolExecutor(2)
        self.reports: list = []  # each worker's first report
        self.lessons: Lessons | None = None
        self.learners: dict[str, Learner] = {}  # by the scene's behavior name, as they appear
        self._elapsed0 = 0.0

    def _saved_steps(self) -> int:
        """Where the progress bar starts: the steps of the checkpoints a resume continues."""
        if not (self.main and self.folder and self.folder.resume_from):
            return 0
        return sum(int(checkpoint.read(p)[0]["steps"]) for p in map(
            checkpoint.latest, [self._folder_of(n) for n in self.settings.behavior_names]) if p)

    def background(self, fn, *args) -> concurrent.futures.Future:
        return self._pool.submit(fn, *args)

    @property
    def steps(self) -> int:
        """The run's steps: every behavior's decisions."""
        return sum(learner.steps for learner in self.learners.values())

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
        self.lessons = Lessons(settings, env, self.processes)
        try:
            self.vec = connect.make_vec_env(settings, env, self.local_workers,
                                            logs and logs.resolve(), first, self.lessons.calls)
            self.reports = self.vec.reset()
            behaviors = connect.pick_behaviors(self.vec, settings.behavior_names, env)
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
        if self.folder is not None and self.folder.resume_from is not None:
            self._check_resume_layout()
        for behavior in behaviors:
            self._add_learner(behavior)

    def _folder_of(self, name: str):
        """Where behavior ``name`` writes: the run folder, or its own under it."""
        if self.folder is None:
            return None
        return self.folder.path / name if self.several else self.folder.path

    def _check_resume_layout(self) -> None:
        """A run resumes only with as many behaviors as it was trained with."""
        top = checkpoint.latest(self.folder.path) is not None
        if top == self.several:
            trained = "one behavior" if top else "several behaviors"
            raise UserError(f"cannot resume: run {self.settings.run_id!r} was trained with "
                            f"{trained}, but this configuration trains "
                            f"{', '.join(self.settings.behavior_names)}; resume it with the "
                            "configuration it was started with (its configuration.yaml).")

    def _add_learner(self, behavior: connect.Behavior) -> Learner:
        """A learner for a behavior the scene announced: restored, its programs started."""
        settings, env = self.settings.for_behavior(connect.trained_name(behavior.name)), self.launch.env
        layout = sharded_update.make_layout(self.mesh, settings.ppo, self.launch.split_minibatches)
        where = self._folder_of(settings.behavior)
        resuming = self.folder is not None and self.folder.resume_from is not None
        resume_from = checkpoint.latest(where) if resuming and self.main else None
        primary = not self.learners
        learner = Learner(settings, behavior, layout, where, resume_from, inference=self.inference,
                          main=self.main, split_minibatches=self.launch.split_minibatches,
                          several=self.several, primary=primary)
        lessons = learner.restore(
            {"driver": session.HOST_DRIVER, "env": env, "num_envs": self.workers,
             "seed": settings.seed}, self.launch.resume, self.lessons.state() if primary else None,
            self.display.message)
        if primary and resume_from is not None:
            self.lessons.resume(lessons, self.vec)
        self.learners[behavior.name] = learner
        if self.main and not self.inference:
            self._write_configuration()
        name, size, spec = behavior
        self.display.message(
            f"connected to {self.workers} {self.vec.description} worker(s); behavior {name!r}: "
            f"{observations.describe(size)}, {spec.describe()} actions; an update every "
            f"{settings.ppo.buffer_size} steps"
            f"{layout.describe(self.launch.split_minibatches, self.local_workers)}")
        learner.start(self.background, resuming)
        return learner

    def _write_configuration(self) -> None:
        extra = {"env": self.launch.env, "driver": session.HOST_DRIVER, "num_envs": self.workers}
        records = {learner.name: learner.record() for learner in self.learners.values()}
        if self.several:
            extra["behaviors"] = records
        else:
            extra.update(next(iter(records.values())))
        if self.mesh is not None:
            layout = next(iter(self.learners.values())).layout
            extra.update(devices=layout.segments, processes=self.processes,
                         split_minibatches=self.launch.split_minibatches)
        write_configuration(self.folder, self.settings, extra)

    # ------------------------------------------------------------------ loop

    def loop(self) -> None:
        stop_after = self.launch.stop_after_steps
        started = last_shown = self._elapsed0 = time.perf_counter()
        start_total = self.steps
        reports = dict(enumerate(self.reports))  # worker -> its latest report, not yet acted on
        self.complete = all(learner.done for learner in self.learners.values())
        finished = {name for name, learner in self.learners.items() if learner.done}
        try:
            while not self.complete:
                interrupts.check()  # Ctrl-C, SIGTERM: stop here, between steps
                ready = sorted(reports)
                # 1. One policy call per behavior for its deciding agents of every worker that
                #    reported; every worker that reported steps (one with no deciding agent,
                #    a terminal-only report, too).
                acted, sends = [], {w: {} for w in ready}
                for name, learner in list(self.learners.items()):
                    acted.append(self._act(learner, name, ready, reports, sends))
                self.vec.send(sends)

                # 2. While the workers step: experiences, trajectories, updates.
                for learner, steps_of, ids, actions, log_probs, rows in acted:
                    for w in ready:
                        if steps_of[w] is None:
                            continue
                        chosen = rows[w]
                        episodes = learner.observe(
                            w, steps_of[w], ids[w], None if chosen is None else actions[chosen],
                            None if chosen is None else log_probs[chosen])
                        (learner.period.sums if self.processes == 1 else self.unsent).add(episodes)
                        self.lessons.add_rewards(learner.name, [e.reward for e in episodes])
                self._learn_what_is_due()

                # 3. Summaries, progress, checkpoints, the end.
                now = time.perf_counter()
                self.complete = all(learner.done for learner in self.learners.values())
                stop = stop_after is not None and self.steps - start_total >= stop_after
                for name, learner in self.learners.items():
                    if name in finished:
                        continue
                    last = learner.done or stop
                    if learner.summaries.due(learner.steps) or last:
                        learner.summarize(now, now - self._elapsed0, self.lessons.scalars(),
                                          self._write, self.display)
                        learner.summaries.mark(learner.steps)
                    if (learner.saves.due(learner.steps) or last) and not self.inference:
                        self._save(learner)
                        learner.saves.mark(learner.steps)
                    if learner.done:
                        finished.add(name)
                if now - last_shown > 0.5 or self.complete or stop:
                    rate = (self.steps - start_total) / max(now - started, 1e-9)
                    self.display.update(self.steps, rate, self._last_reward())
                    last_shown = now
                if self.complete or stop:
                    break
                reports = self._wait()
                for restart in self.vec.take_restarted():  # a crashed build, started again
                    for learner in self.learners.values():
                        learner.assembler.forget(restart.worker)
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
            for learner in self.learners.values():
                learner.close_log(self._write)

    def _act(self, learner: Learner, name: str, ready: list, reports: dict, sends: dict):
        """``learner``'s policy call for its deciding agents of the ``ready`` workers; their
        actions added to ``sends``. Returns what ``observe`` needs for each worker."""
        steps_of = {w: reports[w].get(name) for w in ready}
        ids = {w: s.decision_ids if s is not None else _NO_IDS for w, s in steps_of.items()}
        actions = log_probs = None
        rows, start = {}, 0
        if sum(len(i) for i in ids.values()):
            deciding = [steps_of[w] for w in ready if len(ids[w])]
            actions, log_probs = learner.act(*decision_batch(deciding), self.steps)
        for w in ready:
            if len(ids[w]):
                rows[w] = slice(start, start + len(ids[w]))
                sends[w][name] = Actions(ids[w], actions[rows[w]])
                start += len(ids[w])
            else:
                rows[w] = None
        return learner, steps_of, ids, actions, log_probs, rows

    def _learn_what_is_due(self) -> None:
        if self.processes == 1:
            for learner in self.learners.values():
                learner.steps = learner.start_step + learner.local_steps
            self.lessons.advance({l.name: l.steps / l.config.max_steps
                                  for l in self.learners.values()}, self.vec, self.display.message)
            for learner in self.learners.values():
                while learner.ready():
                    learner.learn(1, self._collective)
            return
        (learner,) = self.learners.values()  # several processes train one behavior
        if learner.ready():
            # Every process meets here once per update; the run's step count, its
            # summaries and the decision to stop are settled at the meeting.
            self._meet(self._status())
            learner.learn(self.processes, self._collective)

    def _collective(self, inside: bool) -> None:
        self.in_collective = inside

    def _wait(self):
        try:
            reports = self.vec.receive()
            for name in self.vec.specs:
                if name not in self.learners:
                    behavior = connect.admit_behavior(self.vec, name, self.settings.behavior_names,
                                                      self.launch.env, self.several)  # or raises
                    self._add_learner(behavior)
            return reports
        except EnvFault as fault:
            raise Stop.of(fault) from None

    def _save(self, learner: Learner) -> None:
        lessons = self.lessons.state() if learner.primary else None
        learner.save(lessons, self._write)

    def _write(self, write, *args):
        """``write(*args)``; a full disk or another write failure is one sentence (exit 1)."""
        try:
            return write(*args)
        except OSError as err:
            raise report.write_failure(err, self.settings.run_id, self.steps,
                                       self._saved_at()) from None

    def _saved_at(self) -> int:
        saved = [learner.saved_at for learner in self.learners.values()]
        return max(saved) if saved else -1

    def _last_reward(self) -> float:
        first = next(iter(self.learners.values()), None)
        return float("nan") if first is None else first.last_reward()

    # ------------------------------------------------------------------ finish

    def close(self) -> None:
        if self.vec is not None:
            self.vec.close()
            self.vec = None
        # A compile still running in the background is waited for: XLA crashes a process that
        # exits while it compiles, and an interrupted compile leaves JAX unusable.
        self._pool.shutdown(wait=True, cancel_futures=True)

    def finish(self) -> dict:
        learners = list(self.learners.values())
        extra = {}
        if self.mesh is not None:  # a collective: every process reports
            (learner,) = learners
            extra = {"devices": learner.layout.segments, "processes": distributed.process_report(
                learner.state.params, self.local_workers, learner.local_steps)}
        if not self.main:
            return {"steps": self.steps, "complete": self.complete, **extra}
        outcomes = {l.name: l.outcome(self.launch.env, self.workers, self.train_s,
                                      self.complete, extra) for l in learners}
        if self.inference:
            if not self.several:
                return report.finish_inference(self.settings, outcomes[learners[0].name],
                                               self.display)
            return report.finish_several(self.settings, None, outcomes, self.display)
        if not self.several:
            return self._write(report.finish, self.settings, self.folder,
                               outcomes[learners[0].name], self.display)
        return self._write(report.finish_several, self.settings, self.folder, outcomes,
                           self.display)


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
