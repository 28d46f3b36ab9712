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

from jppo import checkpoint, envs
from jppo.progress import ProgressDisplay, summary_table
from jppo.run_config import RunSettings, UserError
from jppo.run_folder import RunFolder, write_configuration, write_json
from jppo.summaries import RunLog, plot_learning_curve
from jppo.trainer import Trainer

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


def _meta(trainer: Trainer, settings: RunSettings, env_name: str, num_envs: int) -> dict:
    return {**checkpoint.policy_meta(settings.ppo, trainer.action_spec, trainer.observation_size,
                                     settings.behavior),
            "env": env_name, "num_envs": num_envs, "num_seeds": settings.num_seeds,
            "seed": settings.seed}


def train(settings: RunSettings, env_name: str, folder: RunFolder, *, quiet: bool = False,
          stop_after_steps: int | None = None) -> dict:
    """Train, log, checkpoint; returns the run summary also written to run_info.json."""
    env = make_env(env_name, settings.environment_parameters)
    num_envs = settings.num_envs or DEFAULT_NUM_ENVS.get(env_name, 1)
    trainer = Trainer(settings.ppo, env, env.default_params, num_envs)
    spu, total = trainer.steps_per_update, trainer.total_updates
    chunk = max(1, min(settings.summary_freq // spu, total))
    states = trainer.init_seeds(settings.seed, settings.num_seeds)
    meta = _meta(trainer, settings, env_name, num_envs)
    if folder.resume_from is not None:
        saved, states = checkpoint.restore(folder.resume_from, states)
        for key in ("env", "num_envs", "num_seeds"):
            if saved.get(key) != meta[key]:
                raise UserError(f"cannot resume: the checkpoint was made with {key} = "
                                f"{saved.get(key)!r}, this command asks for {meta[key]!r}.")
    done = first = int(np.asarray(states.updates).reshape(-1)[0])
    start_step = done * spu
    write_configuration(folder, settings, {"env": env_name, "num_envs": num_envs,
                                           "steps_per_update": spu, "updates_per_summary": chunk})
    t0 = time.perf_counter()
    run = trainer.chunk(chunk).lower(states, jnp.int32(chunk)).compile()
    compile_s = time.perf_counter() - t0
    log = RunLog(folder.path, settings.behavior, settings.num_seeds,
                 start_step if folder.resume_from else None)
    history: list[list[dict]] = []
    interval = settings.checkpoint_interval
    next_save = (start_step // interval + 1) * interval
    saved_at = start_step if folder.resume_from else -1
    train_s, elapsed0 = 0.0, time.perf_counter()
    display = ProgressDisplay(settings.behavior, total * spu, start_step, quiet=quiet)
    display.message(f"compiled {settings.num_seeds} x {num_envs} {env_name} environment(s) in "
                    f"{compile_s:.1f} s; {spu} steps per update, {chunk} update(s) per summary")
    try:
        with display:
            while done < total:
                t = time.perf_counter()
                states, metrics = run(states, jnp.int32(min(chunk, total - done)))
                metrics = jax.device_get(metrics)
                dt = time.perf_counter() - t
                train_s += dt
                steps_now = min(chunk, total - done) * spu
                done += min(chunk, total - done)
                step = done * spu
                per_seed = [dict(summarize(metrics, s), steps_per_second=steps_now / dt)
                            for s in range(settings.num_seeds)]
                history.append(per_seed)
                log.write(step, time.perf_counter() - elapsed0, per_seed)
                rewards = [p["cumulative_reward"] for p in per_seed]
                mean_reward = float(np.nanmean(rewards)) if not all(map(math.isnan, rewards)) else math.nan
                display.update(step, steps_now / dt, mean_reward)
                display.log(step, time.perf_counter() - elapsed0, mean_reward,
                            per_seed[0]["reward_std"])
                stop = stop_after_steps is not None and step - start_step >= stop_after_steps
                if step >= next_save or done == total or stop:
                    checkpoint.save(folder.path, step, states, meta, settings.keep_checkpoints)
                    saved_at, next_save = step, (step // interval + 1) * interval
                if stop:
                    break
    except KeyboardInterrupt:
        step = done * spu
        if step != saved_at:
            checkpoint.save(folder.path, step, states, meta, settings.keep_checkpoints)
        display.message(f"interrupted at step {step}; checkpoint saved. Continue with --resume.")
        raise
    finally:
        log.close()
    return finish(settings, folder, env_name, num_envs, history, done * spu, (done - first) * spu,
                  compile_s, train_s, display, complete=done == total)


def finish(settings: RunSettings, folder: RunFolder, env_name: str, num_envs: int,
           history: list, step: int, session_steps: int, compile_s: float, train_s: float,
           display: ProgressDisplay, complete: bool) -> dict:
    """Curve, ONNX model, summary table and run_info.json at the end of a run (or a stop)."""
    plot_learning_curve(folder.path / "progress.csv", folder.path / "learning_curve.png",
                        f"{settings.behavior} on {env_name} ({settings.run_id})")
    rows = []
    for seed in range(settings.num_seeds):
        rewards = [h[seed]["cumulative_reward"] for h in history if not math.isnan(h[seed]["cumulative_reward"])]
        last = history[-1][seed] if history else {}
        rows.append({"seed": seed, "steps": step, "final_reward": rewards[-1] if rewards else math.nan,
                     "best_reward": max(rewards) if rewards else math.nan,
                     "episode_length": last.get("episode_length", math.nan),
                     "steps_per_second": last.get("steps_per_second", 0.0)})
    models = export_models(settings, folder, display) if complete and settings.export_onnx else []
    summary_table(display.console, f"{settings.behavior} on {env_name}: {'done' if complete else 'stopped'}", rows)
    info = {"env": env_name, "num_envs": num_envs, "num_seeds": settings.num_seeds, "steps": step,
            "complete": complete, "compile_s": round(compile_s, 3), "train_s": round(train_s, 3),
            "steps_per_second": round(session_steps / train_s, 1) if train_s else None,
            "seeds": rows, "models": [str(m) for m in models], "jax": jax.__version__,
            "backend": jax.default_backend()}
    write_json(folder, "run_info.json", info)
    return info


def export_models(settings: RunSettings, folder: RunFolder, display: ProgressDisplay) -> list:
    """The ONNX policy of each seed, for Unity; skipped with a note if onnx is not installed."""
    try:
        from jppo.export import export_onnx
    except ImportError:
        display.message("ONNX export skipped: install jppo[unity] (the onnx package) to get a model "
                        "Unity can run; python -m jppo.export exports it later.")
        return []
    paths = []
    for seed in range(settings.num_seeds):
        policy = checkpoint.load_policy(folder.path, seed)
        name = settings.behavior if settings.num_seeds == 1 else f"{settings.behavior}-seed{seed}"
        paths.append(export_onnx(folder.path / f"{name}.onnx", policy.params, policy.normalizer,
                                 policy.config, policy.action_spec, policy.observation_size))
    display.message(f"exported {', '.join(str(p) for p in paths)}")
    return paths
