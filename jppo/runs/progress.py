"""What the user watches: a live progress bar, ML-Agents-style log lines, a summary table.

Progress goes to stdout, as mlagents-learn logs it; errors, warnings and the notes of a run
stopped by a signal go to stderr. On a terminal the bar is live and long lines wrap to its
width; anywhere else (a pipe, a file, a cluster's job log) there is no bar and no colour code,
and each line is written whole, never wrapped at 80 columns.
"""
from __future__ import annotations

import math
import sys

from rich.console import Console
from rich.progress import (BarColumn, Progress, TaskProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


class ProgressDisplay:
    """A bar of steps with steps/s, mean reward and ETA; log lines print above it."""

    def __init__(self, behavior: str, total_steps: int, start_step: int, quiet: bool = False):
        self.console = make_console(sys.stdout, quiet)
        self.notes = make_console(sys.stderr, quiet)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
            TextColumn("{task.fields[rate]} steps/s"), TextColumn("reward {task.fields[reward]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, transient=False, disable=not self.console.is_terminal)
        self._task = self._progress.add_task(behavior, total=total_steps, completed=start_step,
                                             rate="-", reward="-")
        self.behavior = behavior

    def __enter__(self):
        self._progress.start()
        return self

    def __exit__(self, *exc):
        self._progress.stop()

    def update(self, step: int, steps_per_second: float, mean_reward: float):
        self._progress.update(self._task, completed=step, rate=f"{steps_per_second:,.0f}",
                              reward=_fmt(mean_reward))

    def log(self, step: int, elapsed: float, mean_reward: float, std_reward: float,
            training: bool = True, behavior: str | None = None):
        """The line ML-Agents prints every summary period ("Not Training." in inference), for
        ``behavior`` (default: the one the display was made for)."""
        self._progress.console.print(
            f"[INFO] {behavior or self.behavior}. Step: {step}. Time Elapsed: {elapsed:.3f} s. "
            f"Mean Reward: {_fmt(mean_reward)}. Std of Reward: {_fmt(std_reward)}. "
            f"{'Training.' if training else 'Not Training.'}", highlight=False)

    def message(self, text: str):
        self._progress.console.print(text, highlight=False)

    def note(self, text: str):
        """A note on stderr, such as what became of a run a signal stopped."""
        self.notes.print(text, highlight=False)


# Not a terminal: the width tables may take (rich's default is 80, which wraps their headers).
FILE_WIDTH = 160


def make_console(file, quiet: bool = False) -> Console:
    """A rich console on ``file``; one that is not a terminal never wraps a line."""
    made = Console(file=file, quiet=quiet)
    if not made.is_terminal:
        made = Console(file=file, quiet=quiet, soft_wrap=True, width=FILE_WIDTH)
    return made


def summary_table(console: Console, title: str, rows: list[dict], caption: str = ""):
    """One row per seed: final mean reward, best, episode length, steps and the last summary
    period's throughput (``caption``: the whole run's, under the table)."""
    table = Table(title=title)
    for column in ("seed", "steps", "final reward", "best reward", "episode length",
                   "steps/s, last period"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(str(row["seed"]), f"{row['steps']:,}", _fmt(row["final_reward"]),
                      _fmt(row["best_reward"]), _fmt(row["episode_length"], 1),
                      f"{row['steps_per_second_last_period']:,.0f}")
    console.print(table)
    if caption:
        console.print(caption, highlight=False)
