"""Hyperparameter sweeps: every (setting, seed) pair a member of one compiled program.

    python -m jppo.train configs/CartPole.yaml --sweep learning_rate=1e-4,3e-4,1e-3 --num-seeds 4

trains 3 x 4 = 12 agents at once: the members are stacked on the leading axis of the loop
state (``vmap``), and each member's swept values enter the program as traced float32 arguments
(``Trainer.chunk(length, sweep=names)``), so the program is compiled once. Only the floats in
``jppo.core.config.SWEEPABLE`` can be swept; everything else fixes shapes or code paths. Several
``--sweep`` flags sweep their product. Member (v, s) starts from the same initial state as a
single run with ``--set name=v --seed s`` and equals it up to float rounding (float32 instead
of Python-float constants, batched matmuls).

The run folder holds what the members share and one folder per member::

    results/<run-id>/configuration.yaml, run_info.json
    results/<run-id>/checkpoints/            one checkpoint of the whole batch (resume restores
                                             every member at the same step, atomically)
    results/<run-id>/sweep_summary.csv       final and best reward, mean and std over seeds,
                                             one row per setting
    results/<run-id>/sweep_comparison.png    mean learning curve per setting, +- std over seeds
    results/<run-id>/learning_rate=0.0003/seed-1/   progress.csv, <behavior>/ (TensorBoard),
                                             learning_curve.png, member.json, <behavior>.onnx
"""
from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import pathlib

import numpy as np
import yaml
from rich.table import Table

from jppo.core.config import SWEEPABLE, ConfigError, PPOConfig, field_names
from jppo.errors import UserError
from jppo.files import write_atomic
from jppo.runs.settings import check_name, yaml11_float


@dataclasses.dataclass(frozen=True)
class Member:
    index: int  # position on the members axis
    values: dict  # {name: float}: this member's swept hyperparameters
    seed_index: int  # 0 .. num_seeds - 1
    seed: int  # the seed it starts from (settings.seed + seed_index)

    @property
    def setting(self) -> tuple:
        return tuple(self.values.items())

    def relative_dir(self) -> pathlib.Path:
        """``name=value/.../seed-<seed>``: one folder level per swept name."""
        parts = [check_name("sweep member folder", f"{name}={format_value(value)}")
                 for name, value in self.values.items()]
        return pathlib.Path(*parts, check_name("seed folder", f"seed-{self.seed}"))


@dataclasses.dataclass(frozen=True)
class Sweep:
    """The swept names and their values, in command-line order."""

    values: dict  # {name: [float, ...]}

    @property
    def names(self) -> tuple:
        return tuple(self.values)

    def settings(self) -> list[dict]:
        """Every combination, the first name varying slowest."""
        return [dict(zip(self.names, combo)) for combo in itertools.product(*self.values.values())]

    def members(self, seed: int, num_seeds: int) -> list[Member]:
        """Setting-major: member ``i`` is setting ``i // num_seeds``, seed ``i % num_seeds``."""
        return [Member(i * num_seeds + s, values, s, seed + s)
                for i, values in enumerate(self.settings()) for s in range(num_seeds)]

    def member_arrays(self, members: list[Member]) -> dict:
        """``{name: float32[members]}``, the program's per-member argument."""
        return {name: np.asarray([m.values[name] for m in members], np.float32)
                for name in self.names}

    def to_meta(self) -> dict:
        return {name: list(values) for name, values in self.values.items()}


def format_value(value: float) -> str:
    """The shortest text that reads back as the same float: 0.0003, 1e-05, 0.99."""
    return repr(float(value))


def parse(items: list[str], base: PPOConfig) -> Sweep | None:
    """``--sweep name=v1,v2,...`` flags as a ``Sweep`` (None if there are none); every mistake is
    a ``UserError`` of one sentence."""
    if not items:
        return None
    allowed = ", ".join(SWEEPABLE)
    values: dict = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name or not raw.strip():
            raise UserError(f"--sweep {item!r} is not of the form name=value,value,..., e.g. "
                            "--sweep learning_rate=1e-4,3e-4,1e-3.")
        if name not in SWEEPABLE:
            why = ("unknown hyperparameter" if name not in field_names() else
                   "not sweepable (it fixes array shapes or code paths, so it cannot vary inside "
                   "one compiled program)")
            raise UserError(f"--sweep {name}: {why}; sweepable hyperparameters are: {allowed}.")
        if name in values:
            raise UserError(f"--sweep {name} is given twice; list all its values in one flag, "
                            f"e.g. --sweep {name}=a,b,c.")
        parsed = []
        for text in raw.split(","):
            text = text.strip()
            try:
                value = yaml.safe_load(text) if text else None
            except yaml.YAMLError:
                value = text
            value = yaml11_float(name, value)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UserError(f"--sweep {name}: {text!r} is not a number; give numbers separated "
                                f"by commas, e.g. --sweep {name}=0.1,0.2.")
            value = float(value)
            if value in parsed:
                raise UserError(f"--sweep {name} lists {format_value(value)} twice; give each value "
                                "once (--num-seeds repeats a setting over seeds).")
            try:
                base.replace(**{name: value})
            except ConfigError as err:
                raise UserError(f"--sweep {name}: {err}") from None
            parsed.append(value)
        values[name] = parsed
    return Sweep(values)


def member_dir(run_dir: pathlib.Path, member: Member) -> pathlib.Path:
    return pathlib.Path(run_dir) / member.relative_dir()


def write_member_files(run_dir: pathlib.Path, members: list[Member]):
    for m in members:
        info = {"index": m.index, "seed": m.seed, "seed_index": m.seed_index, "values": m.values,
                "checkpoints": "../" * (len(m.values) + 1) + "checkpoints"}
        write_atomic(member_dir(run_dir, m) / "member.json",
                     (json.dumps(info, indent=2) + "\n").encode())


def _mean_std(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan, math.nan
    return float(np.mean(finite)), float(np.std(finite))


def setting_table(sweep: Sweep, members: list[Member], rows: list[dict]) -> list[dict]:
    """One row per setting: final and best reward, mean and std over its seeds.
    ``rows[i]`` is member i's row of the run summary (``final_reward``, ``best_reward``, ...)."""
    out = []
    for setting in sweep.settings():
        mine = [rows[m.index] for m in members if m.values == setting]
        final, final_std = _mean_std([r["final_reward"] for r in mine])
        best, best_std = _mean_std([r["best_reward"] for r in mine])
        length, _ = _mean_std([r["episode_length"] for r in mine])
        out.append({**setting, "seeds": len(mine), "final_reward_mean": final,
                    "final_reward_std": final_std, "best_reward_mean": best,
                    "best_reward_std": best_std, "episode_length_mean": length})
    return out


def write_summary_csv(path: pathlib.Path, sweep: Sweep, table: list[dict]):
    fields = list(sweep.names) + ["seeds", "final_reward_mean", "final_reward_std",
                                  "best_reward_mean", "best_reward_std", "episode_length_mean"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(table)


def print_summary(console, title: str, sweep: Sweep, table: list[dict]):
    fmt = lambda v: "n/a" if v is None or math.isnan(v) else f"{v:.3f}"
    t = Table(title=title)
    for name in sweep.names:
        t.add_column(name, justify="right")
    for column in ("seeds", "final reward (mean ± std)", "best reward (mean ± std)",
                   "episode length"):
        t.add_column(column, justify="right")
    for row in table:
        t.add_row(*[format_value(row[n]) for n in sweep.names], str(row["seeds"]),
                  f"{fmt(row['final_reward_mean'])} ± {fmt(row['final_reward_std'])}",
                  f"{fmt(row['best_reward_mean'])} ± {fmt(row['best_reward_std'])}",
                  fmt(row["episode_length_mean"]))
    console.print(t)


def setting_label(setting: dict) -> str:
    return ", ".join(f"{name}={format_value(value)}" for name, value in setting.items())
