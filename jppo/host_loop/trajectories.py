"""Per-agent experience from host environments, cut into trajectories, and the update they feed.

``TrajectoryAssembler`` follows ML-Agents' ``AgentProcessor``: an agent's experience is
``(obs it decided on, raw action, log-prob, reward that followed)``, completed when the agent
next appears, as a deciding or a terminal agent. Terminal agents are processed before deciding
ones, so an id that is in both (it ended and was reset in one message) closes its episode and
then starts a new one. A trajectory is emitted when the episode ends or when it reaches
``time_horizon`` experiences; it carries the observation after its last step and whether the
episode *really* ended there (``done``: nothing to bootstrap). An interrupted episode (a time
limit) and a time-horizon cut are not done: GAE bootstraps from V(next observation).

``UpdateBuffer`` queues trajectories and hands out exactly ``buffer_size`` experiences at a
time as one flat ``FlatBuffer``; a trajectory that straddles the cut is split, its head ending
in a cut (bootstrapping from the tail's first observation) and its tail waiting for the next
update. A fixed size means one compiled update for the whole run; ML-Agents instead takes
everything it holds once it passes buffer_size, a length that changes every update.

Observations are one array per experience, or a tuple (one per sensor) for a behavior with
several sensors; a behavior with discrete branches stores, with each experience, the action
mask its action was chosen under (True: allowed), so the update scores it under that mask.

The learning step on a ``FlatBuffer`` is ``jppo.core.buffer_update``.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

from jppo.core import observations
from jppo.core.buffer_update import FlatBuffer
from jppo.core.networks import ActionSpec
from jppo.host_loop.vec_env import AgentSteps


def per_sensor(fn: Callable, *obs):
    """``fn`` applied sensor by sensor to observations (arrays, or tuples of per-sensor arrays)."""
    if isinstance(obs[0], tuple):
        return tuple(fn(*parts) for parts in zip(*obs))
    return fn(*obs)


class Trajectory(NamedTuple):
    """T consecutive experiences of one agent.

    ``obs`` ``[T, D]`` float32 (what each action was chosen from; a tuple of ``[T, D_i]`` for
    several sensors), ``actions`` in the spec's array form (``[T, A]`` float32 raw samples,
    ``[T]`` int32, ...), ``log_probs`` ``[T, Dl]`` at acting time, ``rewards`` ``[T]`` (the
    reward that followed each action), ``next_obs`` ``[D]`` (the observation after step T-1:
    the final one if the episode ended), ``done`` (the episode really ended after step T-1: no
    bootstrap), ``agent`` ``(worker, agent id)``, ``masks`` ``[T, M]`` bool (True: allowed) the
    masks the actions were chosen under, or None for a behavior without discrete branches.
    """

    obs: Any
    actions: np.ndarray
    log_probs: np.ndarray
    rewards: np.ndarray
    next_obs: Any
    done: bool
    agent: tuple
    masks: Optional[np.ndarray] = None

    def __len__(self) -> int:  # the number of experiences, not of fields
        return int(self.rewards.shape[0])

    def cut(self, start: int, end: int | None, next_obs, done: bool) -> "Trajectory":
        """Experiences ``start:end`` as a trajectory ending in ``next_obs`` / ``done``."""
        part = lambda x: None if x is None else x[start:end]
        return Trajectory(per_sensor(part, self.obs), part(self.actions), part(self.log_probs),
                          part(self.rewards), next_obs, done, self.agent, part(self.masks))


class Episode(NamedTuple):
    """A finished episode: ``reward`` summed over its experiences, ``length`` experiences."""

    reward: float
    length: int


class TrajectoryAssembler:
    """Experience of every agent of one behavior across the workers of a ``VecEnv``.

    Call ``observe(worker, steps)`` for each worker's report, then ``act(worker, ids, actions,
    log_probs)`` with what the policy chose for that report's deciding agents. Agent state
    lives in slots of preallocated arrays, so a step costs a few vectorized numpy operations
    whatever the number of agents.
    """

    def __init__(self, time_horizon: int, obs_size, action_spec: ActionSpec):
        self.time_horizon = int(time_horizon)
        self.obs_size = obs_size
        self._single = observations.is_single(obs_size)
        self._shapes = observations.sensor_shapes(obs_size)
        self._action_shape = action_spec.action_shape
        self._action_dtype = np.float32 if action_spec.continuous_size else np.int32
        self._log_prob_dims = action_spec.log_prob_dims
        self._mask_size = action_spec.mask_size
        self._slot: dict[tuple, int] = {}
        self._free: list[int] = []
        self._slots = self._steps = 0
        self._allocate(8, min(self.time_horizon, 64))

    # ------------------------------------------------------------------ storage

    def _allocate(self, slots: int, steps: int) -> None:
        """Grow the arrays to ``slots`` agents x ``steps`` experiences, keeping the contents."""
        def grown(old, shape, dtype):
            new = np.zeros(shape, dtype)
            if old is not None:
                new[tuple(slice(0, n) for n in old.shape)] = old
            return new

        get = lambda name: getattr(self, name, None)
        old = get("_obs") or [None] * len(self._shapes)
        self._obs = [grown(o, (slots, steps) + shape, np.float32)
                     for o, shape in zip(old, self._shapes)]
        self._masks = grown(get("_masks"), (slots, steps, self._mask_size), bool)
        self._actions = grown(get("_actions"), (slots, steps) + self._action_shape, self._action_dtype)
        self._log_probs = grown(get("_log_probs"), (slots, steps, self._log_prob_dims), np.float32)
        self._rewards = grown(get("_rewards"), (slots, steps), np.float32)
        self._cursor = grown(get("_cursor"), (slots,), np.int64)  # experiences completed
        self._pending = grown(get("_pending"), (slots,), bool)  # acted, outcome not seen yet
        self._episode_reward = grown(get("_episode_reward"), (slots,), np.float64)
        self._episode_length = grown(get("_episode_length"), (slots,), np.int64)
        self._free.extend(range(slots - 1, self._slots - 1, -1))
        self._slots, self._steps = slots, steps

    def _slot_of(self, worker: int, agent: int) -> int:
        slot = self._slot.get((worker, agent))
        if slot is None:
            if not self._free:
                self._allocate(2 * self._slots, self._steps)
            slot = self._slot[(worker, agent)] = self._free.pop()
        return slot

    def _release(self, slot: int) -> None:
        self._cursor[slot] = 0
        self._pending[slot] = False
        self._episode_reward[slot] = 0.0
        self._episode_length[slot] = 0
        self._free.append(slot)

    def _form(self, per_sensor_values: list):
        """One array for a single sensor, else the tuple."""
        return per_sensor_values[0] if self._single else tuple(per_sensor_values)

    def _emit(self, slot: int, agent: tuple, next_obs, done: bool) -> Trajectory:
        n = int(self._cursor[slot])
        self._cursor[slot] = 0
        return Trajectory(self._form([o[slot, :n].copy() for o in self._obs]),
                          self._actions[slot, :n].copy(), self._log_probs[slot, :n].copy(),
                          self._rewards[slot, :n].copy(),
                          per_sensor(lambda o: np.array(o, np.float32), next_obs), bool(done),
                          agent, self._masks[slot, :n].copy() if self._mask_size else None)

    def _complete(self, slots: np.ndarray, rewards: np.ndarray) -> None:
        """The pending experiences of ``slots`` end with ``rewards``."""
        self._rewards[slots, self._cursor[slots]] = rewards
        self._episode_reward[slots] += rewards
        self._episode_length[slots] += 1
        self._cursor[slots] += 1
        self._pending[slots] = False

    # ------------------------------------------------------------------ steps

    @property
    def agents(self) -> int:
        """Agents being tracked (seen deciding and not ended since)."""
        return len(self._slot)

    def observe(self, worker: int, steps: AgentSteps) -> tuple[list[Trajectory], list[Episode], int]:
        """One worker's report: ``(trajectories completed, episodes finished, experiences
        completed)``, trajectories in ML-Agents' order (terminal agents, then deciding ones)."""
        trajectories, episodes, experiences = [], [], 0
        for j, agent in enumerate(steps.terminal_ids.tolist()):
            slot = self._slot.pop((worker, agent), None)
            if slot is None:
                continue  # ended before its first decision: no experience
            if self._pending[slot]:
                self._complete(np.array([slot]), steps.terminal_rewards[j:j + 1])
                experiences += 1
                episodes.append(Episode(float(self._episode_reward[slot]),
                                        int(self._episode_length[slot])))
                final = per_sensor(lambda o: o[j], steps.terminal_obs)
                trajectories.append(self._emit(slot, (worker, agent), final,
                                               done=not steps.interrupted[j]))
            self._release(slot)
        ids = steps.decision_ids.tolist()
        if not ids:
            return trajectories, episodes, experiences
        slots = np.array([self._slot_of(worker, a) for a in ids])
        pending = self._pending[slots]
        if pending.any():
            done_slots = slots[pending]
            self._complete(done_slots, steps.decision_rewards[pending])
            experiences += len(done_slots)
            for j in np.flatnonzero(pending)[self._cursor[done_slots] >= self.time_horizon]:
                trajectories.append(self._emit(int(slots[j]), (worker, ids[j]),
                                               per_sensor(lambda o: o[j], steps.decision_obs),
                                               done=False))
        if self._cursor[slots].max() >= self._steps:
            self._allocate(self._slots, min(self.time_horizon, 2 * self._steps))
        cursor = self._cursor[slots]
        sensors = (steps.decision_obs,) if self._single else steps.decision_obs
        for store, values in zip(self._obs, sensors):
            store[slots, cursor] = values
        if self._mask_size:
            self._masks[slots, cursor] = True if steps.decision_masks is None else steps.decision_masks
        return trajectories, episodes, experiences

    def forget(self, worker: int) -> None:
        """Drop every agent of ``worker``, whose environment was restarted (its new agents reuse
        the ids): their unfinished trajectories are not emitted and their unfinished episodes
        not counted, as ML-Agents' ``AgentProcessor.end_episode`` drops them after a restart.
        The experiences already counted as steps stay counted: those decisions were made."""
        for key in [k for k in self._slot if k[0] == worker]:
            self._release(self._slot.pop(key))

    def act(self, worker: int, ids: np.ndarray, actions: np.ndarray, log_probs: np.ndarray) -> None:
        """Record what the deciding agents ``ids`` of ``worker``'s last report were given."""
        slots = np.array([self._slot[(worker, a)] for a in np.asarray(ids).tolist()], np.int64)
        if len(slots) == 0:
            return
        cursor = self._cursor[slots]
        self._actions[slots, cursor] = actions
        self._log_probs[slots, cursor] = log_probs
        self._pending[slots] = True


class UpdateBuffer:
    """Trajectories waiting for an update; ``take()`` returns exactly ``size`` experiences."""

    def __init__(self, size: int):
        self.size = size
        self._queue: deque[Trajectory] = deque()
        self.count = 0

    def add(self, trajectory: Trajectory) -> None:
        if len(trajectory):
            self._queue.append(trajectory)
            self.count += len(trajectory)

    def ready(self) -> bool:
        return self.count >= self.size

    def take(self) -> FlatBuffer:
        """The oldest ``size`` experiences; the trajectory crossing the cut is split."""
        if not self.ready():
            raise ValueError(f"the buffer holds {self.count} experiences, fewer than {self.size}")
        parts, n = [], 0
        while n < self.size:
            t = self._queue.popleft()
            room = self.size - n
            if len(t) > room:
                head = t.cut(0, room, per_sensor(lambda o: o[room], t.obs), False)
                self._queue.appendleft(t.cut(room, None, t.next_obs, t.done))
                t = head
            parts.append(t)
            n += len(t)
        self.count -= self.size
        ends = np.cumsum([len(t) for t in parts]) - 1
        dones = np.zeros(self.size, np.float32)
        truncations = np.zeros(self.size, np.float32)
        final_obs = per_sensor(lambda o: np.zeros((self.size,) + o.shape[1:], np.float32),
                               parts[0].obs)
        for end, t in zip(ends, parts):
            if t.done:
                dones[end] = 1.0
            else:
                truncations[end] = 1.0
                per_sensor(lambda store, o: store.__setitem__(end, o), final_obs, t.next_obs)
        cat = lambda name: np.concatenate([getattr(t, name) for t in parts])
        obs = per_sensor(lambda *o: np.concatenate(o), *[t.obs for t in parts])
        masks = None if parts[0].masks is None else cat("masks")
        return FlatBuffer(obs, cat("actions"), cat("log_probs"), cat("rewards"), dones,
                          truncations, final_obs, masks)


__all__ = ["Episode", "Trajectory", "TrajectoryAssembler", "UpdateBuffer"]
