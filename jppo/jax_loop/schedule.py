"""Sampled parameters and curricula of a JAX-loop run, on the host between chunks.

Each seed (or sweep member) has its own curriculum (``jppo.runs.environment_parameters.
Curriculum``, built by the driver): after every chunk its reward buffer takes the chunk's
episodes, its lessons advance if due, and a changed lesson puts a new ``SamplerTable`` into
that member's loop state: data for the compiled program, which is not recompiled.

ML-Agents checks the completion criteria after every environment step; here they are checked
after every chunk (a summary period), so a lesson ends at the first summary after its criteria
hold. The jitted loop reports each update's episode count and return sum, not each episode's
return: an update's episodes enter the reward buffer as that many copies of their mean, so the
buffer's mean is exact whenever the last ``min_lesson_length`` episodes span whole updates.
``require_reset`` ends every episode of the member (fresh resets under the new lesson), as
ML-Agents' environment reset does.
"""
from __future__ import annotations

import jax
import numpy as np

from jppo.jax_loop.env_sampling import make_table
from jppo.jax_loop.rollout import init_runner

VALUE_TAG = "Environment/Parameter Mean/{}"  # jppo's: the mean over the environment copies


class Schedule:
    """``curricula``: one per member; ``sampled``: the parameters drawn per episode, in the
    order of each curriculum's ``samplers()``; ``floors``: from ``setup.check_sampled``."""

    def __init__(self, curricula: list, sampled: tuple[str, ...], floors: list[float]):
        self.curricula, self.sampled, self.floors = curricula, tuple(sampled), floors
        self.max_ranges = max([1] + [len(l.value.numbers) // 2 for p in curricula[0].parameters
                                     for l in p.lessons if l.value.kind != "gaussian"])

    def table(self, curriculum):
        """The host ``SamplerTable`` of ``curriculum``'s current lessons (sampled names only)."""
        samplers = curriculum.samplers()
        pairs = [(samplers[n].kind, samplers[n].numbers) for n in self.sampled]
        index = [i for i, p in enumerate(curriculum.parameters) if p.name in self.sampled]
        return make_table(pairs, self.floors, self.max_ranges,
                          [curriculum.lessons[i] for i in index],
                          [curriculum.smoothed[i] for i in index])

    def restore(self, states) -> None:
        """Lesson numbers and smoothed rewards from a resumed checkpoint's tables."""
        tables = jax.device_get(states.samplers)
        for m, curriculum in enumerate(self.curricula):
            for i, p in enumerate(curriculum.parameters):
                if p.name in self.sampled:
                    j = self.sampled.index(p.name)
                    curriculum.lessons[i] = int(tables.lesson[m, j])
                    curriculum.smoothed[i] = float(tables.smoothed[m, j])

    def after_chunk(self, trainer, states, metrics, progress: float, say):
        """Feed each member's episodes to its curriculum and advance it; returns the states
        (with new tables where a lesson changed) and one dict of extra scalars per member.
        ``say(text)`` reports a lesson change."""
        tables = None
        reset = []
        for m, curriculum in enumerate(self.curricula):
            active = np.asarray(metrics["active"][m], bool)
            episodes = np.asarray(metrics["episodes"][m])[active]
            returns = np.asarray(metrics["return_sum"][m])[active]
            for count, total in zip(episodes, returns):
                if count:
                    curriculum.add_rewards([total / count] * int(count))
            changed, must_reset = curriculum.update(progress)
            for line in curriculum.announce(changed):
                say(f"member {m}: {line}" if len(self.curricula) > 1 else line)
            if changed:
                if tables is None:
                    tables = jax.tree_util.tree_map(np.array, jax.device_get(states.samplers))
                new = self.table(curriculum)
                for field, value in vars(new).items():
                    getattr(tables, field)[m] = value
                if must_reset:
                    reset.append(m)
        if tables is not None:
            states = states.replace(samplers=jax.tree_util.tree_map(np.asarray, tables))
        if reset:
            states = self._reset(trainer, states, reset)
        return states, self.scalars(states)

    def scalars(self, states) -> list[dict]:
        """Per member: ML-Agents' lesson numbers and the mean of each sampled parameter's
        current values over the environment copies."""
        values = np.asarray(jax.device_get(states.runner.sampled))
        out = []
        for m, curriculum in enumerate(self.curricula):
            row = curriculum.lesson_scalars()
            row.update({VALUE_TAG.format(n): float(values[m, :, j].mean())
                        for j, n in enumerate(self.sampled)})
            out.append(row)
        return out

    def _reset(self, trainer, states, members: list[int]):
        """New episodes for every copy of ``members`` (``require_reset``)."""
        host = jax.device_get(states)
        runners = []
        for m in members:
            table = jax.tree_util.tree_map(lambda x: x[m], host.samplers)
            key = jax.random.fold_in(host.runner.key[m], 1)
            runners.append(jax.device_get(init_runner(trainer.env, trainer.env_params,
                                                      trainer.num_envs, key, self.sampled, table)))
        leaves = jax.tree_util.tree_map(np.array, host.runner)
        for m, runner in zip(members, runners):
            leaves = jax.tree_util.tree_map(lambda all_, one: _set(all_, m, one), leaves, runner)
        return states.replace(runner=leaves)


def _set(array, index, value):
    array[index] = value
    return array


__all__ = ["Schedule", "VALUE_TAG"]
