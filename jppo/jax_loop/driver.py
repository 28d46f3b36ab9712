"""A run on a JAX-native environment: the jitted loop, driven chunk by chunk from the host.

    run(launch, mesh) -> run_info        setup, loop, finish

Between chunks (one summary period each) the host logs, moves the progress bar and
checkpoints; a run stopped after a checkpoint and resumed ends exactly as if it had not stopped.
The run folder, resuming and the end of the run are ``jppo.runs``'s, shared with the host loop.

Between chunks is also where the run stops safely: Ctrl-C and SIGTERM (``jppo.interrupts``)
are honoured there, with a checkpoint if the run progressed (every process of a multi-process
run agrees on it there, so all save together); and a chunk that leaves a seed's train state
NaN or Inf stops the run with one sentence, its last checkpoint (finite) intact.
"""
from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from jppo import distributed, interrupts
from jppo.core.config import INT32_MAX
from jppo.errors import RunFault, UserError
from jppo.jax_loop import sharding
from jppo.jax_loop.schedule import Schedule
from jppo.jax_loop.setup import check_sampled, make_env, num_envs_for
from jppo.jax_loop.trainer import Trainer
from jppo.runs import checkpoint, initialize, report, session
from jppo.runs import environment_parameters as env_parameters
from jppo.runs.folder import write_configuration
from jppo.runs.launch import Launch
from jppo.runs.progress import ProgressDisplay
from jppo.runs.summaries import PERIOD_LAST, PERIOD_MEANS, RunLog, summary_row
from jppo.runs.sweep import member_dir, write_member_files


def period_row(metrics: dict, seed: int, steps_per_second: float) -> dict:
    """One seed's summary row from a chunk's per-update metrics (arrays ``[S, L]``)."""
    active = np.asarray(metrics["active"][seed], bool)
    pick = lambda name: np.asarray(metrics[name][seed])[active]
    return summary_row(float(pick("episodes").sum()), pick("return_sum").sum(),
                       pick("return_sq_sum").sum(), pick("length_sum").sum(),
                       {name: pick(name) for name in PERIOD_MEANS + PERIOD_LAST if name in metrics},
                       steps_per_second)


def run(launch: Launch, mesh=None, environment=None) -> dict:
    """Train, log, checkpoint; returns the run summary also written to run_info.json.

    ``mesh`` (``jppo.distributed.make_mesh``) splits the environments over devices, of this
    process or of every process of a ``jax.distributed`` run; only process 0 writes.
    ``launch.sweep`` trains every (setting, seed) pair at once, one folder per member.
    ``environment``: a jppo ``Environment`` object to train on (``jppo.fit``), ``launch.env``
    then only its name; None: made from ``launch.env``."""
    jax_run = JaxRun(launch, mesh, environment)
    with interrupts.stopping():
        try:
            jax_run.setup()
            jax_run.loop()
            return jax_run.finish()
        finally:
            if jax_run.folder is not None:
                jax_run.folder.release()


@jax.jit
def finite_members(train) -> jax.Array:
    """``bool[members]``: whether each member's (seed's) train state is free of NaN and Inf."""
    leaves = [jnp.isfinite(x).reshape(x.shape[0], -1).all(axis=1)
              for x in jax.tree_util.tree_leaves(train) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.stack(leaves).all(axis=0)


class _NoLog:
    """Processes other than 0 train silently."""

    def write(self, *args):
        pass

    def flush(self):
        pass

    def close(self):
        pass


class _MemberLogs:
    """A sweep's summaries: each member's own progress.csv and TensorBoard folder."""

    def __init__(self, dirs: list, seeds: list, behavior: str, resume_step: int | None):
        self.logs = []
        for d, seed in zip(dirs, seeds):
            d.mkdir(parents=True, exist_ok=True)
            self.logs.append(RunLog(d, behavior, 1, resume_step, seed))

    def write(self, step: int, wall_time: float, per_member: list[dict]):
        for log, values in zip(self.logs, per_member):
            log.write(step, wall_time, [values])

    def flush(self):
        for log in self.logs:
            log.flush()

    def close(self):
        for log in self.logs:
            log.close()


class JaxRun:
    """One JAX-loop run: ``setup`` (environment, folder, states, compile), ``loop`` (chunks),
    ``finish`` (the shared end of a run)."""

    def __init__(self, launch: Launch, mesh=None, environment=None):
        self.launch, self.settings, self.mesh = launch, launch.settings, mesh
        self.environment = environment
        self.sweep = launch.sweep
        self.main = distributed.is_main()
        self.inference = launch.settings.inference  # run the policy, learn and write nothing
        self.folder = None
        self.log = None

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        settings, sweep, mesh, env_name = self.settings, self.sweep, self.mesh, self.launch.env
        single = jax.process_count() == 1  # (several processes agree on a stop in the loop)
        if single:
            interrupts.check()
        # Everything that can be refused is checked before the run folder is touched.
        env = self.environment
        plan = env_parameters.plan(settings.environment_parameters, settings.seed)
        varying = [p for p in plan if p.is_curriculum or p.lessons[0].value.kind != "constant"]
        if env is None:
            env = make_env(env_name, {p.name: p.lessons[0].value.numbers[0] for p in plan
                                      if p not in varying})
        self.schedule, sampling = None, {}
        if varying:
            self.schedule, sampling = self._schedule(env, plan, varying)
        self.num_envs = num_envs_for(settings.num_envs, env_name)
        distributed.check_divisible(self.num_envs, mesh)
        trainer = self.trainer = Trainer(settings.ppo, env, env.default_params, self.num_envs, mesh,
                                         **sampling)
        self.spu, self.total = trainer.steps_per_update, trainer.total_iterations
        adam_steps = self.total * settings.ppo.adam_steps_per_update(self.spu)
        if adam_steps > INT32_MAX:
            raise UserError(f"max_steps = {settings.ppo.max_steps} takes {adam_steps:,} Adam steps "
                            f"({self.total:,} updates of {self.spu} steps), more than the "
                            f"optimizer's int32 step counter holds ({INT32_MAX:,}); lower max_steps "
                            "or raise batch_size.")
        self.chunk_length = max(1, min(settings.summary_freq // self.spu, self.total))
        self.members = sweep.members(settings.seed, settings.num_seeds) if sweep else None
        if self.members is None:
            states = trainer.init_seeds(settings.seed, settings.num_seeds)
            self.count = settings.num_seeds
        else:
            kl = ([m.values["kl_coef"] for m in self.members] if "kl_coef" in sweep.names else None)
            states = trainer.init_members([m.seed for m in self.members], kl_coef=kl)
            self.count = len(self.members)
        self.start_from = None  # the other run's policy this one starts from (--initialize-from)
        start_path = initialize.source(settings, self.launch.resume)
        if start_path is not None:
            self.start_from = initialize.read(start_path)
            initialize.check_shapes(self.start_from, settings.behavior, trainer.observation_size,
                                    trainer.action_spec)
            states = states.replace(train=initialize.start_train_state(
                self.start_from, states.train, settings.ppo, self.count))
        self.folder = None if self.inference else session.open_folder(self.launch)
        self.meta = {**checkpoint.policy_meta(settings.ppo, trainer.action_spec,
                                              trainer.observation_size, settings.behavior),
                     "env": env_name, "num_envs": self.num_envs, "num_seeds": settings.num_seeds,
                     "seed": settings.seed}
        if sweep:
            self.meta.update(sweep=sweep.to_meta(), num_members=self.count)
        states, self.resuming = session.restore(
            self.folder, states, lambda saved: session.check_jax_resume(saved, self.meta))
        if self.schedule is not None:
            self.schedule.curricula = self.schedule.curricula[:1] + [
                env_parameters.Curriculum(self.schedule.curricula[0].parameters)
                for _ in range(self.count - 1)]
            self.schedule.restore(states)
        self.states = sharding.place(mesh, states)
        self.done = self.first = int(np.asarray(
            distributed.fetch_replicated(self.states.updates)).reshape(-1)[0])
        self.start_step = self.done * self.spu
        if single:
            interrupts.check()
        if self.main and not self.inference:
            self._write_configuration()
        self.values = ()
        if sweep:
            self.values = (distributed.place_replicated(mesh, sweep.member_arrays(self.members)),)
        t0 = time.perf_counter()
        self.program = trainer.chunk(self.chunk_length, sweep.names if sweep else (),
                                     learn=not self.inference).lower(
            self.states, jnp.int32(self.chunk_length), *self.values).compile()
        self.compile_s = time.perf_counter() - t0

    def _schedule(self, env, plan, varying):
        """The run's sampled parameters and curricula checked, with the Trainer's arguments."""
        env_parameters.check_behaviors(varying, [self.settings.behavior])
        if jax.process_count() > 1:
            raise UserError("sampled environment parameters and curricula run in one process; "
                            "leave out --coordinator or give constants.")
        floors = check_sampled(self.launch.env, env, {
            p.name: [(l.value.kind, l.value.numbers) for l in p.lessons] for p in varying})
        schedule = Schedule([env_parameters.Curriculum(plan)], tuple(p.name for p in varying),
                            floors)
        return schedule, {"sampled": schedule.sampled, "table": schedule.table(schedule.curricula[0])}

    def _write_configuration(self) -> None:
        extra = {"env": self.launch.env, "num_envs": self.num_envs, "steps_per_update": self.spu,
                 "updates_per_summary": self.chunk_length}
        if self.mesh is not None:
            extra.update(devices=distributed.device_count(self.mesh),
                         processes=jax.process_count())
        if self.sweep:
            extra.update(sweep=self.sweep.to_meta())
        write_configuration(self.folder, self.settings, extra)
        if self.sweep:
            write_member_files(self.folder.path, self.members)

    def _open_log(self):
        resume_step = self.start_step if self.resuming else None
        if not self.main or self.inference:
            return _NoLog()
        if self.sweep:
            return _MemberLogs([member_dir(self.folder.path, m) for m in self.members],
                               [m.seed for m in self.members], self.settings.behavior, resume_step)
        return RunLog(self.folder.path, self.settings.behavior, self.settings.num_seeds, resume_step,
                      self.settings.seed)

    # ------------------------------------------------------------------ loop

    def loop(self) -> None:
        settings, spu, total, chunk = self.settings, self.spu, self.total, self.chunk_length
        # --stop-after-steps N ends at the first update past N steps: the chunk that reaches it
        # is cut short there (the program takes its length as a traced argument), and a run
        # resumed from there cuts its first chunk so that summaries fall where they always do.
        stop_after = self.launch.stop_after_steps
        until = total if stop_after is None else min(total, self.first - (-stop_after // spu))
        self.history: list[list[dict]] = []
        saves = session.Cadence(settings.checkpoint_interval, self.start_step)
        self.saved_at = self.start_step if self.resuming else -1
        self.train_s, elapsed0 = 0.0, time.perf_counter()
        self.display = display = ProgressDisplay(settings.behavior, total * spu, self.start_step,
                                                 quiet=self.launch.quiet or not self.main)
        what = (f"{settings.num_seeds}" if not self.sweep else
                f"{self.count} members ({len(self.sweep.settings())} settings x "
                f"{settings.num_seeds} seeds)")
        where = "" if self.mesh is None else (
            f"; environments split over {distributed.device_count(self.mesh)} devices"
            + (f" of {jax.process_count()} processes" if jax.process_count() > 1 else ""))
        if self.start_from is not None and not self.resuming:
            display.message(initialize.describe(self.start_from, self.inference))
        display.message(f"compiled {what} x {self.num_envs} {self.launch.env} environment(s) in "
                        f"{self.compile_s:.1f} s; {spu} steps per update, {chunk} update(s) per "
                        "summary" + where)
        self.log = log = self._open_log()
        try:
            with display:
                while self.done < until:
                    self._check_interrupt()
                    t = time.perf_counter()
                    active = min(chunk - self.done % chunk, until - self.done)
                    self.states, metrics = self.program(self.states, jnp.int32(active), *self.values)
                    metrics = (jax.device_get(metrics) if self.mesh is None
                               else distributed.fetch_replicated(metrics))
                    dt = time.perf_counter() - t
                    self.train_s += dt
                    self.done += active
                    step = self.done * spu
                    self._check_finite(step - active * spu, step)
                    per_seed = [period_row(metrics, s, active * spu / dt) for s in range(self.count)]
                    if self.schedule is not None:
                        self._next_lessons(metrics, step, per_seed)
                    self.history.append(per_seed)
                    self._write(log.write, step, time.perf_counter() - elapsed0, per_seed)
                    rewards = [p["cumulative_reward"] for p in per_seed]
                    mean_reward = (float(np.nanmean(rewards))
                                   if not all(map(math.isnan, rewards)) else math.nan)
                    display.update(step, active * spu / dt, mean_reward)
                    display.log(step, time.perf_counter() - elapsed0, mean_reward,
                                per_seed[0]["reward_std"], training=not self.inference)
                    if (saves.due(step) or self.done == until) and not self.inference:
                        self._save(step)
                        saves.mark(step)
        except KeyboardInterrupt as stop:
            self._interrupted(stop)
            raise
        finally:
            self._write(log.close)

    def _next_lessons(self, metrics, step: int, per_seed: list[dict]) -> None:
        """Curricula advanced after a chunk (new tables are data: nothing recompiles); the
        lesson numbers and parameter means join the summary rows."""
        states, extra = self.schedule.after_chunk(self.trainer, self.states, metrics,
                                                  step / self.settings.ppo.max_steps,
                                                  self.display.message)
        self.states = (jax.device_put(states) if self.mesh is None
                       else sharding.place(self.mesh, jax.device_get(states)))
        for row, values in zip(per_seed, extra):
            row.update(values)

    def _check_interrupt(self) -> None:
        """Ctrl-C or SIGTERM asked to stop: raise here, between chunks (every process at once)."""
        if jax.process_count() == 1:
            interrupts.check()
        elif signum := distributed.max_over_processes(interrupts.pending() or 0):
            raise interrupts.Interrupted(signum, everywhere=True)

    def _interrupted(self, stop: KeyboardInterrupt) -> None:
        """Save where the run progressed since its last checkpoint, and say so."""
        stop.noted = True
        step = self.done * self.spu
        what = getattr(stop, "what", "interrupted")
        if self.inference:
            self.display.message(f"{what} at step {step}; inference writes nothing.")
        elif jax.process_count() > 1 and not getattr(stop, "everywhere", False):
            # Only this process stopped: the others cannot join a gather now.
            self.display.note(f"{what} at step {step}; continue with --resume from the last "
                              f"checkpoint (step {max(self.saved_at, 0)}).")
        elif step > max(self.saved_at, self.start_step):
            self._save(step)
            self.display.note(f"{what} at step {step}; checkpoint saved. Continue with --resume.")
        elif self.saved_at >= 0:
            self.display.note(f"{what} at step {step}; the checkpoint of step {self.saved_at} "
                              "stands. Continue with --resume.")
        else:
            self.display.note(f"{what} at step {step}, before training; nothing to save.")

    def _check_finite(self, before: int, step: int) -> None:
        """A chunk that made a seed's train state NaN or Inf stops the run (never saved)."""
        ok = np.asarray(distributed.fetch_replicated(finite_members(self.states.train)))
        if ok.all():
            return
        bad = [int(i) for i in np.flatnonzero(~ok)]
        who = (f"sweep member {bad[0]} ({self.members[bad[0]].relative_dir()})" if self.members
               else f"seed {self.settings.seed + bad[0]}" if self.count > 1 else "the policy")
        cause = (f"training diverged: {who} became NaN or Inf between steps {before} and {step} "
                 "(lower the learning rate, or check the environment parameters)")
        raise RunFault(report.stop_note(cause, self.settings.run_id, step, self.saved_at, False), 1)

    def _save(self, step: int) -> None:
        # With several processes the gather is a collective: every process takes part.
        host = distributed.fetch(self.states) if jax.process_count() > 1 else self.states
        if self.main:
            # TensorBoard first, so the summaries up to a checkpoint are on disk with it.
            self._write(self.log.flush)
            self._write(checkpoint.save, self.folder.path, step, host, self.meta,
                        self.settings.keep_checkpoints)
        self.saved_at = step

    def _write(self, write, *args):
        """``write(*args)``; a full disk or another write failure is one sentence (exit 1)."""
        try:
            return write(*args)
        except OSError as err:
            raise report.write_failure(err, self.settings.run_id, self.done * self.spu,
                                       self.saved_at) from None

    # ------------------------------------------------------------------ finish

    def finish(self) -> dict:
        return self._write(self._finish)

    def _finish(self) -> dict:
        extra = {}
        if self.mesh is not None:  # a collective: every process reports
            envs = sharding.local_env_count(self.states)
            processes = distributed.process_report(self.states.train.params, envs,
                                                   envs * self.done * self.trainer.num_steps)
            extra = {"devices": distributed.device_count(self.mesh), "processes": processes}
        complete = self.done == self.total
        if not self.main:
            return {"steps": self.done * self.spu, "complete": complete, **extra}
        outcome = report.Outcome(self.launch.env, self.num_envs, self.history, self.done * self.spu,
                                 (self.done - self.first) * self.spu, self.compile_s, self.train_s,
                                 complete, extra)
        if self.inference:
            return report.finish_inference(self.settings, outcome, self.display)
        if self.sweep:
            return report.finish_sweep(self.settings, self.folder, outcome, self.display,
                                       self.sweep, self.members)
        return report.finish(self.settings, self.folder, outcome, self.display)


__all__ = ["JaxRun", "period_row", "run"]
