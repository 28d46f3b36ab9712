"""The end of a run that both loops share: the learning curve, the ONNX models, the table on
the console and run_info.json (for a sweep: each member's curve and model, the table over
settings, sweep_summary.csv and sweep_comparison.png)."""
from __future__ import annotations

import dataclasses
import math

import jax

from jppo.errors import RunFault
from jppo.runs import checkpoint
from jppo.runs.folder import RunFolder, describe, write_json
from jppo.runs.progress import ProgressDisplay, summary_table
from jppo.runs.settings import RunSettings
from jppo.runs.summaries import plot_learning_curve, plot_sweep_comparison
from jppo.runs.sweep import (Sweep, member_dir, print_summary, setting_label, setting_table,
                             write_summary_csv)


@dataclasses.dataclass
class Outcome:
    """How a run went, as its loop hands it over at the end (or at a stop)."""

    env: str
    num_envs: int  # JAX environments, or Unity / Gymnasium workers
    history: list  # per summary period: one summary row per seed (or sweep member)
    steps: int  # the run's step count at the end
    session_steps: int  # steps taken since this process started (or resumed) the run
    compile_s: float
    train_s: float
    complete: bool  # max_steps reached
    extra_info: dict = dataclasses.field(default_factory=dict)  # devices, processes, ...


def stop_note(cause: str, run_id: str, step, saved_at: int, saved_now: bool,
              saved_each: str | None = None) -> str:
    """``cause`` and what became of the checkpoints, in one sentence: saved at ``step`` just
    now, or the last one (``saved_at``; -1: none yet) intact. A run of several behaviors gives
    its steps per behavior in ``step`` and its last checkpoints in ``saved_each``."""
    run = f"run {run_id!r}"
    if saved_now:
        return (f"{cause}; {run} stopped at step {step}, saved there: continue with --resume "
                "once the environment works again.")
    if saved_at >= 0 and saved_each:
        return (f"{cause}; {run} stopped at step {step}, its last checkpoints ({saved_each}) "
                "are intact: continue with --resume.")
    if saved_at >= 0:
        return (f"{cause}; {run} stopped at step {step}, its last checkpoint (step {saved_at}) "
                "is intact: continue with --resume.")
    return f"{cause}; {run} stopped before its first checkpoint: start it again with --force."


def write_failure(err: OSError, run_id: str, step: int, saved_at: int) -> RunFault:
    """A run that could not write its results mid-run or at its end (a full disk): one
    sentence, exit 1, saying which checkpoint stands."""
    return RunFault(stop_note(f"cannot write the run's results: {describe(err)}", run_id, step,
                              saved_at, False), 1)


def seed_rows(history: list, count: int, step: int, first_seed: int = 0) -> list[dict]:
    """One row per seed (or member), labelled by its seed (``first_seed + i``): final and best
    mean reward, last episode length, speed."""
    rows = []
    for seed in range(count):
        rewards = [h[seed]["cumulative_reward"] for h in history
                   if not math.isnan(h[seed]["cumulative_reward"])]
        last = history[-1][seed] if history else {}
        rows.append({"seed": first_seed + seed, "steps": step, "final_reward": rewards[-1] if rewards else math.nan,
                     "best_reward": max(rewards) if rewards else math.nan,
                     "episode_length": last.get("episode_length", math.nan),
                     "steps_per_second_last_period": last.get("steps_per_second", 0.0)})
    return rows


def run_info(settings: RunSettings, outcome: Outcome) -> dict:
    """What every run_info.json holds: the run, its length and timings, the JAX build.
    ``steps_per_second`` is the whole run's (the steps this process trained over ``train_s``,
    compile excluded); each seed row's ``steps_per_second_last_period`` is its last summary
    period's, as the table shows it."""
    o = outcome
    return {"env": o.env, "num_envs": o.num_envs, "num_seeds": settings.num_seeds, "steps": o.steps,
            "complete": o.complete, "compile_s": round(o.compile_s, 3), "train_s": round(o.train_s, 3),
            "steps_per_second": round(o.session_steps / o.train_s, 1) if o.train_s else None,
            "jax": jax.__version__, "backend": jax.default_backend()}


def whole_run_rate(info: dict, outcome: Outcome) -> str:
    """The table's caption: the whole run's speed, as run_info.json has it."""
    if info["steps_per_second"] is None:
        return ""
    return (f"whole run: {info['steps_per_second']:,.0f} steps/s ({outcome.session_steps:,} "
            f"steps in {outcome.train_s:,.1f} s, compile excluded; run_info.json)")


def finish(settings: RunSettings, folder: RunFolder, outcome: Outcome,
           display: ProgressDisplay) -> dict:
    """Curve, ONNX model, summary table and run_info.json at the end of a run (or a stop)."""
    title = f"{settings.behavior} on {outcome.env}"
    plot_learning_curve(folder.path / "progress.csv", folder.path / "learning_curve.png",
                        f"{title} ({settings.run_id})")
    rows = seed_rows(outcome.history, settings.num_seeds, outcome.steps, settings.seed)
    models = (export_models(settings, folder, display)
              if outcome.complete and settings.export_onnx else [])
    info = {**run_info(settings, outcome), "seeds": rows, "models": [str(m) for m in models],
            **outcome.extra_info}
    summary_table(display.console, f"{title}: {'done' if outcome.complete else 'stopped'}", rows,
                  whole_run_rate(info, outcome))
    write_json(folder, "run_info.json", info)
    return info


def finish_several(settings: RunSettings, folder: RunFolder | None, outcomes: dict,
                   display: ProgressDisplay) -> dict:
    """The end of a run of several behaviors (``outcomes``: {behavior: Outcome}): each
    behavior's curve in its folder, its model at results/<run-id>/<behavior>.onnx (where
    ML-Agents puts it), its table; run_info.json with a section per behavior. ``folder`` None:
    an --inference run, which writes nothing."""
    behaviors = {}
    for name, outcome in outcomes.items():
        view = settings.for_behavior(name)
        if folder is None:
            behaviors[name] = finish_inference(view, outcome, display)
            continue
        where = folder.path / name
        title = f"{name} on {outcome.env}"
        plot_learning_curve(where / "progress.csv", where / "learning_curve.png",
                            f"{title} ({settings.run_id})")
        rows = seed_rows(outcome.history, 1, outcome.steps, settings.seed)
        done = outcome.steps >= view.ppo.max_steps
        models = (export_models(view, folder, display, source=where)
                  if done and settings.export_onnx else [])
        summary_table(display.console, f"{title}: {'done' if done else 'stopped'}", rows)
        behaviors[name] = {"steps": outcome.steps, "complete": done, "seeds": rows,
                           "models": [str(m) for m in models],
                           "compile_s": round(outcome.compile_s, 3)}
    first = next(iter(outcomes.values()))
    whole = dataclasses.replace(first, steps=sum(o.steps for o in outcomes.values()),
                                session_steps=sum(o.session_steps for o in outcomes.values()),
                                compile_s=sum(o.compile_s for o in outcomes.values()))
    info = {**run_info(settings, whole), "behaviors": behaviors, **first.extra_info}
    if folder is None:
        return {**info, "inference": True}
    display.message(whole_run_rate(info, whole))
    write_json(folder, "run_info.json", info)
    return info


def finish_inference(settings: RunSettings, outcome: Outcome, display: ProgressDisplay) -> dict:
    """The end of an ``--inference`` run: the table of rewards on the console, nothing
    written; returns what a training run's run_info.json would hold of it."""
    rows = seed_rows(outcome.history, settings.num_seeds, outcome.steps)
    episodes = [sum(h[i]["episodes"] for h in outcome.history) for i in range(len(rows))]
    for row, count in zip(rows, episodes):
        row["episodes"] = count
    summary_table(display.console, f"{settings.behavior} on {outcome.env}: inference "
                  f"{'done' if outcome.complete else 'stopped'}", rows)
    for i, row in enumerate(rows):  # over every episode of the run, not the last period's
        periods = [h[i] for h in outcome.history if h[i]["episodes"]]
        row["mean_reward"] = (sum(p["cumulative_reward"] * p["episodes"] for p in periods)
                              / row["episodes"] if periods else math.nan)
    return {**run_info(settings, outcome), "inference": True, "seeds": rows}


def finish_sweep(settings: RunSettings, folder: RunFolder, outcome: Outcome,
                 display: ProgressDisplay, sweep: Sweep, members: list) -> dict:
    """A sweep's end: each member's curve and model in its folder, then the table over
    settings (mean +- std over seeds), sweep_summary.csv, sweep_comparison.png, run_info.json."""
    title = f"{settings.behavior} on {outcome.env}"
    rows = seed_rows(outcome.history, len(members), outcome.steps)
    models = []
    for m, row in zip(members, rows):
        d = member_dir(folder.path, m)
        plot_learning_curve(d / "progress.csv", d / "learning_curve.png",
                            f"{title} ({setting_label(m.values)}, seed {m.seed})")
        row.update(member=m.index, seed=m.seed, folder=str(m.relative_dir()), **m.values)
    if outcome.complete and settings.export_onnx:
        models = export_models(settings, folder, display, members)
    table = setting_table(sweep, members, rows)
    write_summary_csv(folder.path / "sweep_summary.csv", sweep, table)
    groups: dict = {}
    for m in members:
        groups.setdefault(setting_label(m.values), []).append(member_dir(folder.path, m) / "progress.csv")
    plot_sweep_comparison(groups, folder.path / "sweep_comparison.png",
                          f"{title}: sweep ({settings.run_id})")
    print_summary(display.console, f"{title}: sweep {'done' if outcome.complete else 'stopped'} "
                  f"at {outcome.steps:,} steps", sweep, table)
    info = {**run_info(settings, outcome), "num_members": len(members), "sweep": sweep.to_meta(),
            "steps_per_second_all_members": (
                round(len(members) * outcome.session_steps / outcome.train_s, 1)
                if outcome.train_s else None),
            "summary": table, "members": rows, "models": [str(p) for p in models],
            **outcome.extra_info}
    write_json(folder, "run_info.json", info)
    return info


def export_models(settings: RunSettings, folder: RunFolder, display: ProgressDisplay,
                  members: list | None = None, source=None) -> list:
    """The ONNX policy of each seed (or sweep member, in its own folder), for Unity; skipped
    with a note if onnx is not installed. ``source``: the folder of the checkpoints (a
    behavior's own, in a run of several), else the run folder."""
    try:
        # Imported here: onnx is an optional extra, and a run without it still ends well.
        from jppo.onnx.actor import export_onnx, not_exportable
    except ImportError:
        display.message("ONNX export skipped: install jppo[unity] (the onnx package) to get a model "
                        "Unity can run; python -m jppo.export exports it later.")
        return []
    if members is None:
        single = settings.num_seeds == 1
        targets = [(i, folder.path / (f"{settings.behavior}.onnx" if single else
                                      f"{settings.behavior}-seed{settings.seed + i}.onnx"), {})
                   for i in range(settings.num_seeds)]
    else:
        targets = [(m.index, member_dir(folder.path, m) / f"{settings.behavior}.onnx", m.values)
                   for m in members]
    paths = []
    for index, path, values in targets:
        policy = checkpoint.load_policy(source or folder.path, index)
        refusal = not_exportable(policy.observation_size)
        if refusal:
            display.message(f"ONNX export skipped: {refusal}")
            return []
        paths.append(export_onnx(path, policy.params, policy.normalizer,
                                 policy.config.replace(**values), policy.action_spec,
                                 policy.observation_size))
    display.message(f"exported {len(paths)} models, one in each member's folder" if members
                    else f"exported {', '.join(str(p) for p in paths)}")
    return paths


__all__ = ["Outcome", "export_models", "finish", "finish_inference", "finish_several", "finish_sweep",
           "run_info", "seed_rows",
           "stop_note", "write_failure"]
