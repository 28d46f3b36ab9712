"""3DBallHard as Unity's ``Ball3DHardAgent`` sends it: 3DBall's scene (the same physics,
``jppo.standin.scenes.Scene``) observed through two stacking sensors instead of one vector.

The agent declares two ``[Observable(numStackedObservations: 9)]`` properties, so Unity
sends two observations, sorted by sensor name: the ball's position relative to the platform
stacked over the last 9 decisions (27 floats, oldest first), then the platform's rotation
(q.z, q.x) stacked alike (18 floats); no velocities. A stack takes the newest frame each time
the agent sends an observation (every decision request, and its terminal info), and is zeroed
when its episode ends (``StackingSensor.Reset``), as the JAX port ``jppo.envs.ball3d``
models it.
"""
from __future__ import annotations

import numpy as np

from jppo.envs.ball3d import STACK
from jppo.standin.scenes import Decisions, Scene, Sensor, Terminals

_PREFIX = f"StackingSensor_size{STACK}_ObservableAttribute:Ball3DHardAgent."


def _frames(obs8: np.ndarray) -> np.ndarray:
    """[m, 5] frames (ball - agent (3), q.z, q.x) from 3DBall's [m, 8] observations."""
    return np.concatenate([obs8[:, 2:5], obs8[:, 0:2]], axis=1)


def _push(stacks: np.ndarray, frames: np.ndarray) -> np.ndarray:
    return np.concatenate([stacks[:, 1:], frames[:, None]], axis=1)


def _split(stacks: np.ndarray) -> list:
    m = len(stacks)
    frames = stacks.shape[1]  # sized explicitly: m may be 0
    return [stacks[:, :, :3].reshape(m, frames * 3).copy(),
            stacks[:, :, 3:].reshape(m, frames * (stacks.shape[2] - 3)).copy()]


class HardScene(Scene):
    """``n`` Ball3DHardAgents: 3DBall's scene with per-agent stacks of 9 frames."""

    sensors = [Sensor(_PREFIX + "PositionDelta", (STACK * 3,)),
               Sensor(_PREFIX + "Rotation", (STACK * 2,))]

    def __init__(self, n: int, seed: int = 0, **kwargs):
        super().__init__(n, seed=seed, **kwargs)
        self._stacks = np.zeros((n, STACK, 5), np.float32)

    def reset_all(self, mid_step: bool) -> None:
        super().reset_all(mid_step)
        self._stacks = np.zeros_like(self._stacks)  # every agent starts an episode

    def terminals(self, ended: Terminals) -> Terminals:
        stacks = _push(self._stacks[ended.rows], _frames(ended.obs[0]))
        self._stacks[ended.rows] = 0.0
        return ended._replace(obs=_split(stacks))

    def decisions(self) -> Decisions:
        self._stacks = _push(self._stacks, _frames(self.obs))
        return Decisions(np.arange(self.n), self.ids, _split(self._stacks), self.reward, None)


__all__ = ["HardScene"]
