"""Training on a JAX-native environment: the jitted loop, driven chunk by chunk from the host.

Between chunks (one summary period each) the host logs, moves the progress bar and
checkpoints; a run stopped after a checkpoint and resumed ends exactly as if it had not stopped.
"""
from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from jppo import distributed, envs
from jppo.runs import checkpoint
from jppo.runs.progress import ProgressDisplay, summary_table
from jppo.runs.settings import RunSettings, UserError
from jppo.runs.folder import RunFolder, write_configuration, write_json
from jppo.runs.summaries import RunLog, plot_learning_curve, plot_sweep_comparison
from jppo.runs.sweep import (Sweep, member_dir, print_summary, setting_label, write_member_files,
                        write_summary_csv)
from jppo.runs.sweep import summarize as sweep_summarize
from jppo.jax_loop.trainer import Trainer

# Unity's 3DBall scene holds 12 agents; a JAX environment is one agent.
DEFAULT_NUM_ENVS = {"3DBall": 12, "3DBallHard": 12}


def make_env(name: str, parameters: dict):
    """The named environment with ``environment_parameters`` applied to its default params."""
    try:
        env = envs.make(name)
    except envs.UnknownEnvironmentError as err:
        raise UserError(str(err) + "; or pass a Unity build path, 'editor', or gymnasium:<id>.") from None
    defaults = env.default_params
    allowed = getattr(defaults, "_fields", ())
    unknown = sorted(set(parameters) - set(allowed))
    if unknown:
        raise UserError(f"environment parameter {unknown[0]!r} is not one of {name}'s: "
                        f"{', '.join(allowed)}.")
    typed = {k: type(getattr(defaults, k))(v) for k, v in parameters.items()}
    return envs.make(name, **typed)


def summarize(metrics: dict, seed: int) -> dict:
    """One summary period of one seed from the chunk's per-update metrics (arrays [S, L])."""
    active = np.asarray(metrics["active"][seed], bool)
    pick = lambda name: np.asarray(metrics[name][seed])[active]
    episodes = float(pick("episodes").sum())
    mean = pick("return_sum").sum() / episodes if episodes else math.nan
    variance = pick("return_sq_sum").sum() / episodes - mean * mean if episodes else math.nan
    out = {name: float(pick(name).mean()) for name in
           ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "value_estimate")}
    out.update({name: float(pick(name)[-1]) for name in ("learning_rate", "epsilon", "beta", "kl_coef")})
    out.update(episodes=episodes, cumulative_reward=float(mean), extrinsic_reward=float(mean),
               reward_std=float(math.sqrt(max(variance, 0.0))) if episodes else math.nan,
               episode_length=float(pick("length_sum").sum() / episodes) if episodes else math.nan)
    return out


def num_envs_for(settings: RunSettings, env_name: str) -> int:
    """The configured number of environments, or the environment's default."""
    return settings.num_envs or DEFAULT_NUM_ENVS.get(env_name, 1)


def _meta(trainer: Trainer, settings: RunSettings, env_name: str, num_envs: int) -> dict:
    return {**checkpoint.policy_meta(settings.ppo, trainer.action_spec, trainer.observation_size,
                                     settings.behavior),
            "env": env_name, "num_envs": num_envs, "num_seeds": settings.num_seeds,
            "seed": settings.seed}


def train(settings: RunSettings, env_name: str, folder: RunFolder | None, *, quiet: bool = False,
          stop_after_steps: int | None = None, mesh=None, sweep: Sweep | None = None) -> dict:
    """Train, log, checkpoint; returns the run summary also written to run_info.json.

    ``mesh`` (``jppo.distributed.make_mesh``) splits the environments over devices, of this
    process or of every process of a ``jax.distributed`` run; only process 0 writes (``folder``
    is None on the others). ``sweep`` trains every (setting, seed) pair at once, one folder per
    member (``jppo.runs.sweep``)."""
    env = make_env(env_name, settings.environment_parameters)
    num_envs = num_envs_for(settings, env_name)
    distributed.check_divisible(num_envs, mesh)
    trainer = Trainer(settings.ppo, env, env.default_params, num_envs, mesh)
    spu, total = trainer.steps_per_update, trainer.total_updates
    chunk = max(1, min(settings.summary_freq // spu, total))
    main = distributed.is_main()
    members = sweep.members(settings.seed, settings.num_seeds) if sweep else None
    if members is None:
        states = trainer.init_seeds(settings.seed, settings.num_seeds)
        count = settings.num_seeds
    else:
        kl = ([m.values["kl_coef"] for m in members] if "kl_coef" in sweep.names else None)
        states = trainer.init_members([m.seed for m in members], kl_coef=kl)
        count = len(members)
    meta = _meta(trainer, settings, env_name, num_envs)
    if sweep:
        meta.update(sweep=sweep.to_meta(), num_members=count)
    resuming = distributed.broadcast_flag(folder is not None and folder.resume_from is not None)
    if resuming:
        def restore():
            saved, restored = checkpoint.restore(folder.resume_from, states)
            for key in ("env", "num_envs", "num_seeds"):
                if saved.get(key) != meta[key]:
                    raise UserError(f"cannot resume: the checkpoint was made with {key} = "
                                    f"{saved.get(key)!r}, this command asks for {meta[key]!r}.")
            if saved.get("sweep") != meta.get("sweep"):
                raise UserError(f"cannot resume: the checkpoint was made with sweep = "
                                f"{saved.get('sweep')!r}, this command asks for "
                                f"{meta.get('sweep')!r}; give the same --sweep flags.")
            return restored
        _, restored = distributed.on_main(restore)
        states = distributed.broadcast_tree(restored if main else jax.device_get(states))
    states = distributed.place(mesh, states)
    done = first = int(np.asarray(distributed.fetch_replicated(states.updates)).reshape(-1)[0])
    start_step = done * spu
    extra = {"env": env_name, "num_envs": num_envs, "steps_per_update": spu,
             "updates_per_summary": chunk}
    if mesh is not None:
        extra.update(devices=distributed.device_count(mesh), processes=jax.process_count())
    if sweep:
        extra.update(sweep=sweep.to_meta())
    if main:
        write_configuration(folder, settings, extra)
        if sweep:
            write_member_files(folder.path, members, checkpoint.write_atomic)
    values = ()
    if sweep:
        values = (distributed.place_replicated(mesh, sweep.member_arrays(members)),)
    t0 = time.perf_counter()
    run = trainer.chunk(chunk, sweep.names if sweep else ()).lower(
        states, jnp.int32(chunk), *values).compile()
    compile_s = time.perf_counter() - t0
    resume_step = start_step if resuming else None
    if not main:
        log = _NoLog()
    elif sweep:
        log = _MemberLogs([member_dir(folder.path, m) for m in members], settings.behavior,
                          resume_step)
    else:
        log = RunLog(folder.path, settings.behavior, settings.num_seeds, resume_step)
    history: list[list[dict]] = []
    interval = settings.checkpoint_interval
    next_save = (start_step // interval + 1) * interval
    saved_at = start_step if resuming else -1
    train_s, elapsed0 = 0.0, time.perf_counter()
    display = ProgressDisplay(settings.behavior, total * spu, start_step, quiet=quiet or not main)
    what = (f"{settings.num_seeds}" if not sweep else
            f"{count} members ({len(sweep.settings())} settings x {settings.num_seeds} seeds)")
    where = "" if mesh is None else (
        f"; environments split over {distributed.device_count(mesh)} devices"
        + (f" of {jax.process_count()} processes" if jax.process_count() > 1 else ""))
    display.message(f"compiled {what} x {num_envs} {env_name} environment(s) in "
                    f"{compile_s:.1f} s; {spu} steps per update, {chunk} update(s) per summary"
                    + where)

    def save(step):
        # With several processes the gather is a collective: every process takes part.
        host = distributed.fetch(states) if jax.process_count() > 1 else states
        if main:
            checkpoint.save(folder.path, step, host, meta, settings.keep_checkpoints)

    try:
        with display:
            while done < total:
                t = time.perf_counter()
                states, metrics = run(states, jnp.int32(min(chunk, total - done)), *values)
                metrics = (jax.device_get(metrics) if mesh is None
                           else distributed.fetch_replicated(metrics))
                dt = time.perf_counter() - t
                train_s += dt
                steps_now = min(chunk, total - done) * spu
                done += min(chunk, total - done)
                step = done * spu
                per_seed = [dict(summarize(metrics, s), steps_per_second=steps_now / dt)
                            for s in range(count)]
                history.append(per_seed)
                log.write(step, time.perf_counter() - elapsed0, per_seed)
                rewards = [p["cumulative_reward"] for p in per_seed]
                mean_reward = float(np.nanmean(rewards)) if not all(map(math.isnan, rewards)) else math.nan
                display.update(step, steps_now / dt, mean_reward)
                display.log(step, time.perf_counter() - elapsed0, mean_reward,
                            per_seed[0]["reward_std"])
                stop = stop_after_steps is not None and step - start_step >= stop_after_steps
                if step >= next_save or done == total or stop:
                    save(step)
                    saved_at, next_save = step, (step // interval + 1) * interval
                if stop:
                    break
    except KeyboardInterrupt:
        step = done * spu
        if jax.process_count() > 1:
            # The other processes cannot join a gather now; the last checkpoint stands.
            display.message(f"interrupted at step {step}; continue with --resume from the last "
                            f"checkpoint (step {max(saved_at, 0)}).")
        else:
            if step != saved_at:
                save(step)
            display.message(f"interrupted at step {step}; checkpoint saved. Continue with --resume.")
        raise
    finally:
        log.close()
    extra_info = {}
    if mesh is not None:
        envs = distributed.local_env_count(states)
        processes = distributed.process_report(states.train.params, envs, envs * done * trainer.num_steps)
        extra_info = {"devices": distributed.device_count(mesh), "processes": processes}
    if not main:
        return {"steps": done * spu, "complete": done == total, **extra_info}
    if sweep:
        return finish_sweep(settings, folder, env_name, num_envs, sweep, members, history,
                            done * spu, (done - first) * spu, compile_s, train_s, display,
                            complete=done == total, extra_info=extra_info)
    return finish(settings, folder, env_name, num_envs, history, done * spu, (done - first) * spu,
                  compile_s, train_s, display, complete=done == total, extra_info=extra_info)


class _NoLog:
    """Processes other than 0 train silently."""

    def write(self, *args):
        pass

    def close(self):
        pass


class _MemberLogs:
    """A sweep's summaries: each member's own progress.csv and TensorBoard folder."""

    def __init__(self, dirs: list, behavior: str, resume_step: int | None):
        self.logs = []
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
            self.logs.append(RunLog(d, behavior, 1, resume_step))

    def write(self, step: int, wall_time: float, per_member: list[dict]):
        for log, values in zip(self.logs, per_member):
            log.write(step, wall_time, [values])

    def close(self):
        for log in self.logs:
            log.close()


def _rows(history: list, count: int, step: int) -> list[dict]:
    rows = []
    for seed in range(count):
        rewards = [h[seed]["cumulative_reward"] for h in history if not math.isnan(h[seed]["cumulative_reward"])]
        last = history[-1][seed] if history else {}
        rows.append({"seed": seed, "steps": step, "final_reward": rewards[-1] if rewards else math.nan,
                     "best_reward": max(rewards) if rewards else math.nan,
                     "episode_length": last.get("episode_length", math.nan),
                     "steps_per_second": last.get("steps_per_second", 0.0)})
    return rows


def _run_info(settings: RunSettings, env_name: str, num_envs: int, step: int, session_steps: int,
              compile_s: float, train_s: float, complete: bool) -> dict:
    """What every run_info.json holds: the run, its length and timings, the JAX build."""
    return {"env": env_name, "num_envs": num_envs, "num_seeds": settings.num_seeds, "steps": step,
            "complete": complete, "compile_s": round(compile_s, 3), "train_s": round(train_s, 3),
            "steps_per_second": round(session_steps / train_s, 1) if train_s else None,
            "jax": jax.__version__, "backend": jax.default_backend()}


def finish(settings: RunSettings, folder: RunFolder, env_name: str, num_envs: int,
           history: list, step: int, session_steps: int, compile_s: float, train_s: float,
           display: ProgressDisplay, complete: bool, extra_info: dict | None = None) -> dict:
    """Curve, ONNX model, summary table and run_info.json at the end of a run (or a stop)."""
    plot_learning_curve(folder.path / "progress.csv", folder.path / "learning_curve.png",
                        f"{settings.behavior} on {env_name} ({settings.run_id})")
    rows = _rows(history, settings.num_seeds, step)
    models = export_models(settings, folder, display) if complete and settings.export_onnx else []
    summary_table(display.console, f"{settings.behavior} on {env_name}: {'done' if complete else 'stopped'}", rows)
    info = {**_run_info(settings, env_name, num_envs, step, session_steps, compile_s, train_s,
                        complete),
            "seeds": rows, "models": [str(m) for m in models], **(extra_info or {})}
    write_json(folder, "run_info.json", info)
    return info


def finish_sweep(settings: RunSettings, folder: RunFolder, env_name: str, num_envs: int,
                 sweep: Sweep, members: list, history: list, step: int, session_steps: int,
                 compile_s: float, train_s: float, display: ProgressDisplay, complete: bool,
                 extra_info: dict | None = None) -> dict:
    """A sweep's end: each member's curve and model in its folder, then the table over
    settings (mean +- std over seeds), sweep_summary.csv, sweep_comparison.png, run_info.json."""
    rows = _rows(history, len(members), step)
    models = []
    for m, row in zip(members, rows):
        d = member_dir(folder.path, m)
        plot_learning_curve(d / "progress.csv", d / "learning_curve.png",
                            f"{settings.behavior} on {env_name} ({setting_label(m.values)}, "
                            f"seed {m.seed})")
        row.update(member=m.index, seed=m.seed, folder=str(m.relative_dir()), **m.values)
    if complete and settings.export_onnx:
        models = export_models(settings, folder, display, members)
    table = sweep_summarize(sweep, members, rows)
    write_summary_csv(folder.path / "sweep_summary.csv", sweep, table)
    groups: dict = {}
    for m in members:
        groups.setdefault(setting_label(m.values), []).append(member_dir(folder.path, m) / "progress.csv")
    plot_sweep_comparison(groups, folder.path / "sweep_comparison.png",
                          f"{settings.behavior} on {env_name}: sweep ({settings.run_id})")
    print_summary(display.console, f"{settings.behavior} on {env_name}: sweep "
                  f"{'done' if complete else 'stopped'} at {step:,} steps", sweep, table)
    info = {**_run_info(settings, env_name, num_envs, step, session_steps, compile_s, train_s,
                        complete),
            "num_members": len(members), "sweep": sweep.to_meta(),
            "steps_per_second_all_members": (round(len(members) * session_steps / train_s, 1)
                                             if train_s else None),
            "summary": table, "members": rows, "models": [str(p) for p in models],
            **(extra_info or {})}
    write_json(folder, "run_info.json", info)
    return info


def export_models(settings: RunSettings, folder: RunFolder, display: ProgressDisplay,
                  members: list | None = None) -> list:
    """The ONNX policy of each seed (or sweep member, in its own folder), for Unity; skipped
    with a note if onnx is not installed."""
    try:
        from jppo.export import export_onnx
    except ImportError:
        display.message("ONNX export skipped: install jppo[unity] (the onnx package) to get a model "
                        "Unity can run; python -m jppo.export exports it later.")
        return []
    if members is None:
        single = settings.num_seeds == 1
        targets = [(seed, folder.path / (f"{settings.behavior}.onnx" if single else
                                         f"{settings.behavior}-seed{seed}.onnx"), {})
                   for seed in range(settings.num_seeds)]
    else:
        targets = [(m.index, member_dir(folder.path, m) / f"{settings.behavior}.onnx", m.values)
                   for m in members]
    paths = []
    for index, path, values in targets:
        policy = checkpoint.load_policy(folder.path, index)
        paths.append(export_onnx(path, policy.params, policy.normalizer,
                                 policy.config.replace(**values), policy.action_spec,
                                 policy.observation_size))
    display.message(f"exported {len(paths)} models, one in each member's folder" if members
                    else f"exported {', '.join(str(p) for p in paths)}")
    return paths
