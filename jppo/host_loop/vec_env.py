"""Host-side vector environments whose agents come and go (Unity scenes, Gymnasium vectors).

One *worker* is one environment instance (a Unity process, a Gymnasium vector); it holds any
number of agents per *behavior*. After every step a worker reports, per behavior, an
``AgentSteps``: the agents that request a decision now and the agents whose episode ended since
the last report (one agent id may be in both: it ended, was reset and decides again). Actions
go back keyed by agent id, as the policy's raw output; each adapter maps them onto what its
environment accepts (Unity: ``clamp(a, -3, 3) / 3``).

    reports = env.reset()                  # [ {behavior: AgentSteps} per worker ]
    env.send({w: {behavior: Actions}})     # workers w step (each answered its last report)
    ready = env.receive()                  # {w: {behavior: AgentSteps}}: every worker that has
                                           # answered by now, at least one
    env.close()

Workers step independently: the caller acts for whichever workers have answered while the
others still step (``step`` is the lock-step convenience: all send, all receive). Failures are
``EnvFault`` with one sentence naming the cause.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Any, Mapping, NamedTuple, Optional, Sequence

import numpy as np

from jppo.core import observations
from jppo.core.networks import ActionSpec
from jppo.core.policy import ACTION_CLAMP


class AgentSteps(NamedTuple):
    """One worker's agents of one behavior after a step (n deciding, m terminal).

    - ``decision_ids``: ``[n]`` int, agents requesting an action now;
    - ``decision_obs``: ``[n, obs]`` float32, their observations (a tuple of ``[n, obs_i]``,
      one per sensor, where the behavior has several sensors);
    - ``decision_rewards``: ``[n]`` float32, reward since each agent's previous decision;
    - ``terminal_ids``: ``[m]`` int, agents whose episode ended since the last report;
    - ``terminal_obs``: ``[m, obs]`` float32 (or a tuple per sensor), their final observations;
    - ``terminal_rewards``: ``[m]`` float32, their last rewards;
    - ``interrupted``: ``[m]`` bool, True where a time limit ended the episode (bootstrap),
      False where it really ended (no bootstrap);
    - ``decision_masks``: ``[n, sum(branches)]`` bool, True where a discrete choice is allowed
      for the deciding agent (``1 - DecisionSteps.action_mask``), or None: every choice.
    """

    decision_ids: np.ndarray
    decision_obs: Any
    decision_rewards: np.ndarray
    terminal_ids: np.ndarray
    terminal_obs: Any
    terminal_rewards: np.ndarray
    interrupted: np.ndarray
    decision_masks: Optional[np.ndarray] = None

    @staticmethod
    def empty(obs_size) -> "AgentSteps":
        """No agents, for observations of ``obs_size`` (an int, or one shape per sensor)."""
        ids, f = np.zeros(0, np.int64), np.zeros(0, np.float32)
        shapes = [(0,) + s for s in observations.sensor_shapes(obs_size)]
        obs = (np.zeros(shapes[0], np.float32) if observations.is_single(obs_size)
               else tuple(np.zeros(s, np.float32) for s in shapes))
        return AgentSteps(ids, obs, f, ids, obs, f, np.zeros(0, bool))


class Actions(NamedTuple):
    """Actions for one worker's behavior: ``ids`` ``[n]`` and ``values`` in the array form of
    the action spec (``jppo.core.distributions``): ``[n, A]`` float (the raw Gaussian sample),
    ``[n]`` int (one discrete branch), ``[n, B]`` int (branches), ``[n, A + B]`` float (both),
    row i for agent ``ids[i]``."""

    ids: np.ndarray
    values: np.ndarray


class Restart(NamedTuple):
    """A worker whose environment failed and was started again: its agents' unfinished
    experience is void (the new environment reuses their ids). ``notice``: one sentence naming
    the worker, the cause and the restarts left."""

    worker: int
    notice: str


@dataclasses.dataclass(frozen=True)
class BehaviorSpec:
    """What a behavior observes and does, as the environment declares it.

    ``observation_shapes``: one shape per sensor; ``observation_names`` and
    ``dimension_properties`` (ML-Agents' ``ObservationSpec``, per sensor; empty where the
    environment does not say) name and describe them; ``continuous_size`` and
    ``discrete_branches`` as in ML-Agents (a Gymnasium Discrete(n) is one branch of n).
    """

    name: str
    observation_shapes: tuple
    continuous_size: int
    discrete_branches: tuple = ()
    observation_names: tuple = ()
    dimension_properties: tuple = ()

    def action_spec(self) -> ActionSpec | None:
        """jppo's ActionSpec (any mix of continuous actions and discrete branches), or None for
        a behavior without actions."""
        if self.continuous_size == 0 and not self.discrete_branches:
            return None
        return ActionSpec(self.continuous_size, tuple(self.discrete_branches))

    def describe_actions(self) -> str:
        spec = self.action_spec()
        return spec.describe() if spec is not None else "no actions"


class EnvFault(Exception):
    """An environment failure; ``str(fault)`` is one sentence naming the cause.

    ``kind``: "timeout" (no answer within the wait), "in_use" (port taken), "exited" (the
    process ended), "nan" (NaN or Inf in what it sent), "shape" (observations or actions of an
    unexpected shape), "behaviors" (more than one behavior, or an unknown one), "unity" (any
    other error the environment reported), "config" (the environment cannot be made as asked).
    ``worker`` is the index of the failing worker, where one is to blame.
    """

    def __init__(self, kind: str, message: str, worker: int | None = None):
        super().__init__(message)
        self.kind, self.worker = kind, worker


class VecEnv(abc.ABC):
    """Workers stepped together; see the module docstring."""

    num_workers: int
    specs: dict  # behavior name -> BehaviorSpec, every behavior seen so far
    description: str  # for messages: "Unity worker", "Gymnasium vector"

    @abc.abstractmethod
    def reset(self) -> list[dict[str, AgentSteps]]:
        """Start every worker; the first report of each."""

    @abc.abstractmethod
    def send(self, actions: Mapping[int, dict[str, Actions]]) -> None:
        """Step workers ``w`` with the actions for the agents that requested them in their last
        report (an empty dict where none did: the worker still steps)."""

    @abc.abstractmethod
    def receive(self) -> dict[int, dict[str, AgentSteps]]:
        """The next report of every stepping worker that has answered, waiting for at least one
        (none when a worker was restarted meanwhile: see ``take_restarted``)."""

    def take_restarted(self) -> list[Restart]:
        """The workers restarted since the last call (a Unity build that crashed), in order;
        their next report is their new environment's first."""
        return []

    def step(self, actions: Sequence[dict[str, Actions]]) -> list[dict[str, AgentSteps]]:
        """All workers step together: ``actions[w]`` for worker w; their reports in order."""
        self.send(dict(enumerate(actions)))
        got: dict[int, dict[str, AgentSteps]] = {}
        while len(got) < len(actions):
            got.update(self.receive())
        return [got[w] for w in range(len(actions))]

    @abc.abstractmethod
    def close(self) -> None:
        """Stop every worker; safe to call twice and after a fault."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def order_actions(actions: Actions, decision_ids: np.ndarray, worker: int, behavior: str) -> np.ndarray:
    """``actions.values`` reordered to follow ``decision_ids`` (the environment's order).

    Every agent that requested a decision needs exactly one action; anything else is a bug in
    the caller, raised as ValueError.
    """
    ids = np.asarray(actions.ids)
    if len(ids) == len(decision_ids) and np.array_equal(ids, decision_ids):
        return np.asarray(actions.values)
    position = {int(a): i for i, a in enumerate(ids)}
    if len(position) != len(ids) or set(position) != {int(a) for a in decision_ids}:
        raise ValueError(f"worker {worker}, behavior {behavior!r}: actions for agents "
                         f"{sorted(position)} but agents {sorted(int(a) for a in decision_ids)} "
                         "requested decisions")
    return np.asarray(actions.values)[[position[int(a)] for a in decision_ids]]


def to_unit_range(raw: np.ndarray) -> np.ndarray:
    """ML-Agents' continuous action for the environment: ``clamp(a, -3, 3) / 3`` (float32)."""
    return (np.clip(raw, -ACTION_CLAMP, ACTION_CLAMP) / ACTION_CLAMP).astype(np.float32)
