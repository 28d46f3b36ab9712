"""A host run's environment parameters: sent to Unity as ``mlagents-learn`` sends them, and a
curriculum's lessons advanced as the behaviors train (``jppo.runs.environment_parameters``).

The samplers of the first lessons go to every worker before its first reset (seeds from the
run's seed); after every environment step the lessons whose ``completion_criteria`` are met
advance (progress: the criteria's behavior's steps / its max_steps; reward: its episodes'
returns) and the new values reach every worker with its next step. The lesson numbers and
smoothed rewards are checkpointed (in the first behavior's checkpoints) and resumed.
"""
from __future__ import annotations

import numpy as np

from jppo.errors import UserError
from jppo.host_loop import gym_env
from jppo.runs import environment_parameters as env_parameters
from jppo.runs.settings import RunSettings


class Lessons:
    """The run's parameters: ``calls`` for the workers' start, then ``add_rewards`` /
    ``advance`` as the run goes; ``curriculum`` is None without lessons to advance."""

    def __init__(self, settings: RunSettings, env: str, processes: int):
        plan = env_parameters.plan(settings.environment_parameters, settings.seed)
        self.curriculum = None
        if any(p.is_curriculum for p in plan):
            env_parameters.check_behaviors(plan, settings.behavior_names)
            if processes > 1:
                raise UserError("a curriculum runs in one process; leave out --coordinator.")
            if any(l.criteria.require_reset for p in plan for l in p.lessons if l.criteria):
                raise UserError("completion_criteria.require_reset: true is not implemented for "
                                "Unity runs (the scene would have to be reset mid-run); leave "
                                "it out.")
            self.curriculum = env_parameters.Curriculum(plan)
        self.several = len(settings.behavior_names) > 1
        # The EnvironmentParametersChannel calls mlagents-learn makes before the first reset.
        self.calls = (None if env.startswith(gym_env.PREFIX) or not plan else
                      env_parameters.channel_calls(env_parameters.Curriculum(plan).samplers()))

    def add_rewards(self, behavior: str, returns: list) -> None:
        if self.curriculum is not None and returns:
            self.curriculum.add_rewards(returns, behavior if self.several else None)

    def advance(self, progress: dict, vec, message) -> None:
        """ML-Agents' check after every environment step (``progress``: {behavior: steps /
        max_steps}): lessons advanced, the new samplers sent to every worker with its next
        step, one line each."""
        if self.curriculum is None:
            return
        changed, _ = self.curriculum.update(progress if self.several else
                                            next(iter(progress.values())))
        if changed:
            vec.set_environment_parameters(
                env_parameters.channel_calls(self.curriculum.samplers()))
            for line in self.curriculum.announce(changed):
                message(line)

    def state(self):
        """What a checkpoint keeps: (lesson numbers int32, smoothed rewards float32) or None."""
        if self.curriculum is None:
            return None
        return (np.asarray(self.curriculum.lessons, np.int32),
                np.asarray(self.curriculum.smoothed, np.float32))

    def resume(self, saved, vec) -> None:
        """The checkpoint's lessons; Unity, reset with the first lessons' values before the
        checkpoint was read, gets the current ones with its next step."""
        if self.curriculum is None or saved is None:
            return
        lessons, smoothed = saved
        self.curriculum.lessons = [int(n) for n in lessons]
        self.curriculum.smoothed = [float(v) for v in smoothed]
        if any(self.curriculum.lessons):
            vec.set_environment_parameters(
                env_parameters.channel_calls(self.curriculum.samplers()))

    def scalars(self) -> dict:
        return {} if self.curriculum is None else self.curriculum.lesson_scalars()


__all__ = ["Lessons"]
