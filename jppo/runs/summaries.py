"""Training summaries: TensorBoard with ML-Agents' tag names, a CSV of the same, a curve PNG.

    results/<run-id>/<behavior>/events.out.tfevents.*     (one folder per seed if several:
    results/<run-id>/progress.csv                          <behavior>-seed<s>/)
    results/<run-id>/learning_curve.png

Seeds are labelled by the seed they start from (``--seed 5 --num-seeds 2``: seeds 5 and 6) in
folder names and in progress.csv's ``seed`` column.
"""
from __future__ import annotations

import csv
import math
import os
import pathlib
import socket
import struct
import time
from typing import Mapping, Sequence

import numpy as np

TAGS = {  # jppo metric -> ML-Agents tag (jppo's extras keep ML-Agents' naming style)
    "cumulative_reward": "Environment/Cumulative Reward",
    "episode_length": "Environment/Episode Length",
    "policy_loss": "Losses/Policy Loss",
    "value_loss": "Losses/Value Loss",
    "entropy": "Policy/Entropy",
    "learning_rate": "Policy/Learning Rate",
    "epsilon": "Policy/Epsilon",
    "beta": "Policy/Beta",
    "value_estimate": "Policy/Extrinsic Value Estimate",
    "extrinsic_reward": "Policy/Extrinsic Reward",
    "approx_kl": "Policy/Approximate KL",
    "clip_fraction": "Policy/Clip Fraction",
    "kl_coef": "Policy/KL Coefficient",
    "episodes": "Environment/Episodes",
    "steps_per_second": "Performance/Steps per Second",
}
CSV_FIELDS = ["step", "seed", "wall_time_s"] + list(TAGS)
# Update metrics a summary averages over its period's updates, and those it takes from the last.
PERIOD_MEANS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction",
                "value_estimate")
PERIOD_LAST = ("learning_rate", "epsilon", "beta", "kl_coef")


def summary_row(episodes, return_sum, return_sq_sum, length_sum,
                updates: Mapping[str, Sequence], steps_per_second: float) -> dict:
    """One seed's summary of one period, keyed like ``TAGS``: the episodes that ended in it
    (their count and the sums of their returns, squared returns and lengths: sums add up over
    environments and processes, and give the exact mean and std) and ``updates``, each metric's
    values over the period's updates, oldest first (PERIOD_MEANS are averaged, PERIOD_LAST
    taken from the last). NaN where the period had no episode or no update."""
    if episodes:
        mean = return_sum / episodes
        std = math.sqrt(max(return_sq_sum / episodes - mean * mean, 0.0))
        length = length_sum / episodes
    else:
        mean = std = length = math.nan
    row = {"episodes": float(episodes), "cumulative_reward": float(mean),
           "extrinsic_reward": float(mean), "reward_std": float(std),
           "episode_length": float(length), "steps_per_second": float(steps_per_second)}
    for name in PERIOD_MEANS:
        values = updates.get(name, ())
        row[name] = float(np.mean(np.asarray(values))) if len(values) else math.nan
    for name in PERIOD_LAST:
        values = updates.get(name, ())
        row[name] = float(values[-1]) if len(values) else math.nan
    return row


def tensorboard_dirs(run_dir: pathlib.Path, behavior: str, num_seeds: int,
                     first_seed: int = 0) -> list[pathlib.Path]:
    if num_seeds == 1:
        return [run_dir / behavior]
    return [run_dir / f"{behavior}-seed{first_seed + i}" for i in range(num_seeds)]


class _EventFile:
    """One TensorBoard event file (TFRecord framing of tensorboardX's ``Event`` protos) written
    from this thread: each event reaches the operating system when ``write`` returns and the
    disk at ``flush``. (tensorboardX's ``SummaryWriter`` queues events for a thread that writes
    them every ``flush_secs``: a crash lost up to that many seconds of summaries, and summaries
    before a checkpoint could be missing after a resume.)"""

    def __init__(self, folder: pathlib.Path, purge_step: int | None):
        # tensorboardX imports torch where it is installed (seconds): only when a log opens.
        from tensorboardX.proto.event_pb2 import Event, SessionLog
        from tensorboardX.record_writer import masked_crc32c

        self._Event, self._crc = Event, masked_crc32c
        folder.mkdir(parents=True, exist_ok=True)
        now = time.time()
        self._file = (folder / f"events.out.tfevents.{int(now)}.{socket.gethostname()}").open("ab")
        self._record(Event(wall_time=now, file_version="brain.Event:2"))
        if purge_step is not None:  # TensorBoard hides this folder's events from purge_step on
            self._record(Event(wall_time=now, step=purge_step,
                               session_log=SessionLog(status=SessionLog.START)))
        self._file.flush()

    def _record(self, event) -> None:
        data = event.SerializeToString()
        header = struct.pack("<Q", len(data))
        self._file.write(header + struct.pack("<I", self._crc(header)) + data +
                         struct.pack("<I", self._crc(data)))

    def write(self, step: int, summary) -> None:
        self._record(self._Event(wall_time=time.time(), step=step, summary=summary))
        self._file.flush()

    def flush(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            try:
                self.flush()
            finally:
                self._file.close()


class RunLog:
    """Writes one row per seed per summary period to TensorBoard and to ``progress.csv``.

    On resume from step S, CSV rows after S are dropped and TensorBoard is told to purge events
    after S, so a resumed run's summaries read as if it had never stopped. Every row reaches
    the operating system when ``write`` returns (a killed process loses none); ``flush``
    puts them on disk, which both loops do before each checkpoint, so the summaries up to a
    checkpoint survive any crash that the checkpoint survives.
    """

    def __init__(self, run_dir: pathlib.Path, behavior: str, num_seeds: int, resume_step: int | None,
                 first_seed: int = 0, event_dirs: list[pathlib.Path] | None = None):
        self.seeds = range(first_seed, first_seed + num_seeds)
        self.csv_path = run_dir / "progress.csv"
        if resume_step is not None and self.csv_path.exists():
            self._truncate_csv(resume_step)
        new_file = not self.csv_path.exists()
        self._csv_file = self.csv_path.open("a", newline="")
        self._csv = csv.DictWriter(self._csv_file, CSV_FIELDS)
        if new_file:
            self._csv.writeheader()
        purge = None if resume_step is None else resume_step + 1
        # ``event_dirs``: where the events go instead of tensorboard_dirs' folders (a run of
        # several behaviors writes each behavior's into its own folder, as ML-Agents does).
        self._events = [_EventFile(d, purge) for d in
                        event_dirs or tensorboard_dirs(run_dir, behavior, num_seeds, first_seed)]

    def _truncate_csv(self, step: int):
        with self.csv_path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
        with self.csv_path.open("w", newline="") as f:
            writer = csv.DictWriter(f, CSV_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, step: int, wall_time: float, per_seed: list[dict]):
        """``per_seed[i]`` maps metric names (keys of ``TAGS``) to floats; NaN means no data."""
        from tensorboardX.proto.summary_pb2 import Summary  # loaded by __init__ already

        for seed, events, values in zip(self.seeds, self._events, per_seed):
            # ML-Agents' dashboards and scripts expect the tag names with spaces
            # ("Environment/Cumulative Reward"), which add_scalar would rewrite: built here.
            # A name that is already a tag (an environment parameter's "Environment/Lesson
            # Number/<name>") goes to TensorBoard as it is, not to the CSV's fixed columns.
            scalars = [Summary.Value(tag=TAGS.get(name, name), simple_value=float(value))
                       for name, value in values.items()
                       if (name in TAGS or "/" in name) and not math.isnan(value)]
            events.write(step, Summary(value=scalars))
            self._csv.writerow({"step": step, "seed": seed, "wall_time_s": round(wall_time, 3),
                                **{k: values.get(k, float("nan")) for k in TAGS}})
        self._csv_file.flush()

    def flush(self):
        """Every row so far on disk (fsync): called before each checkpoint."""
        for events in self._events:
            events.flush()
        self._csv_file.flush()
        os.fsync(self._csv_file.fileno())

    def close(self):
        try:
            for events in self._events:
                events.close()
        finally:
            self._csv_file.close()


def read_curve(csv_path: pathlib.Path, metric: str = "cumulative_reward") -> dict[int, list]:
    """``{seed: [(step, value), ...]}`` from a progress CSV, skipping periods with no episodes."""
    curves: dict[int, list] = {}
    with csv_path.open(newline="") as f:
        for row in csv.DictReader(f):
            value = float(row[metric])
            if not math.isnan(value):
                curves.setdefault(int(row["seed"]), []).append((int(row["step"]), value))
    return curves


def plot_learning_curve(csv_path: pathlib.Path, out: pathlib.Path, title: str) -> pathlib.Path:
    import matplotlib  # the Agg backend must be chosen before pyplot is imported

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = read_curve(csv_path)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for seed, points in sorted(curves.items()):
        steps, values = zip(*points) if points else ((), ())
        ax.plot(steps, values, lw=1.2, alpha=0.85, label=f"seed {seed}" if len(curves) > 1 else None)
    ax.set_xlabel("steps (agent decisions)")
    ax.set_ylabel(TAGS["cumulative_reward"])
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_sweep_comparison(groups: dict[str, list[pathlib.Path]], out: pathlib.Path,
                          title: str) -> pathlib.Path:
    """One line per hyperparameter setting: the mean over its seeds' ``progress.csv`` curves at
    each summary step, with a band of +- one standard deviation over the seeds."""
    import matplotlib  # the Agg backend must be chosen before pyplot is imported

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for label, paths in groups.items():
        by_step: dict[int, list[float]] = {}
        for path in paths:
            for points in read_curve(path).values():
                for step, value in points:
                    by_step.setdefault(step, []).append(value)
        if not by_step:
            continue
        steps = sorted(by_step)
        mean = np.array([np.mean(by_step[s]) for s in steps])
        std = np.array([np.std(by_step[s]) for s in steps])
        (line,) = ax.plot(steps, mean, lw=1.4, label=f"{label} ({len(paths)} seed"
                          f"{'s' if len(paths) > 1 else ''})")
        ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel("steps (agent decisions)")
    ax.set_ylabel(TAGS["cumulative_reward"] + " (mean ± std over seeds)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if groups:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
