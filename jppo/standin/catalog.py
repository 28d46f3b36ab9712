"""The scenes the Unity stand-in plays, by name (``python -m jppo.standin --scene NAME``).

| scene | agents | sensors | actions |
|---|---|---|---|
| 3DBall | 12 | one vector of 8 | 2 continuous |
| 3DBallHard | 12 | two stacked vectors, 27 and 18 (as Unity's Ball3DHardAgent) | 2 continuous |
| Basic | 1 | one vector of 20 (one-hot position) | one branch of 3 |
| GridWorld | 9 | a vector of 6 (positions) and the goal, 2 (a goal signal) | one branch of 5, masked at walls |
| Reach | 8 | a vector of 4 and the target's colour, 3 | 2 continuous + branches (3, 2), grab masked out of reach |
| VisualGridWorld | 9 | GridWorld's camera, 64 x 84 x 3 (PNG), and the goal, 2 (a goal signal) | one branch of 5, masked at walls |

``max_step`` is the scene's Agent.MaxStep: physics steps for 3DBall and 3DBallHard (5000,
decisions every 5), decisions for the others (GridWorld 100, Reach 50; Basic has none). VisualGridWorld is
ML-Agents' GridWorld scene itself (behavior GridWorld): its agent's CameraSensor (84 x 64,
colour, PNG compression) rendered by ``jppo.envs.visual_gridworld``, which also plays the rules;
``--fault uncompressed-images`` sends the images as raw floats (compression None).

Scenes combine into one Unity scene with several behaviors, ``A+B`` (``jppo.standin.composite``):

| composite | behaviors | agents | decisions |
|---|---|---|---|
| 3DBall+Basic | 3DBall?team=0, Basic?team=0 | 12 + 1 (``--agents 4+1``) | 3DBall every 5 physics steps, Basic every step |
| GridWorld+3DBall | GridWorld?team=0, 3DBall?team=0 | 9 + 12 | GridWorld every step (masked), 3DBall every 5 |
| Basic:Left+Basic:Right | Left?team=0, Right?team=0 | 1 + 1 | the same scene twice needs a name per part |

Any ``+``-joined list of the scenes above plays; each part keeps its own agents, sensors,
actions, decision period, MaxStep and seed stream.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from jppo.envs.basic import Basic
from jppo.envs.gridworld import GridWorld
from jppo.envs.reach import Reach
from jppo.envs.visual_gridworld import HEIGHT, WIDTH, VisualGridWorld
from jppo.standin.env_scene import EnvScene
from jppo.standin.scenes import Scene, Sensor
from jppo.standin.stacked import HardScene
from jppo.standin.wire import COMPRESSION_PNG

GOAL_SIGNAL = 1  # ObservationTypeProto.GOAL_SIGNAL
# CameraSensor's dimension properties: translational equivariance (2) on height and width,
# none (1) on the channels.
CAMERA_DIMENSIONS = (2, 2, 1)


class SceneInfo(NamedTuple):
    behavior: str  # the behavior name, without the team suffix
    agents: int  # agents in the scene by default
    make: Callable  # (agents, seed, max_step or None) -> scene


def _ball(cls):
    def make(n, seed, max_step):
        return cls(n, seed=seed, **({} if max_step is None else {"max_step": max_step}))
    return make


def _env(env_class, sensors, continuous, branches, **scene_kwargs):
    def make(n, seed, max_step):
        env = env_class(**({} if max_step is None else {"max_steps": max_step}))
        return EnvScene(env, n, sensors, continuous, branches, seed=seed, **scene_kwargs)
    return make


SCENES = {
    "3DBall": SceneInfo("3DBall", 12, _ball(Scene)),
    "3DBallHard": SceneInfo("3DBallHard", 12, _ball(HardScene)),
    "Basic": SceneInfo("Basic", 1, _env(Basic, [Sensor("Basic", (20,))], 0, (3,),
                                        new_agent_per_episode=True)),
    "GridWorld": SceneInfo("GridWorld", 9, _env(
        GridWorld, [Sensor("GridWorldVector", (6,)),
                    Sensor("VectorSensor", (2,), observation_type=GOAL_SIGNAL)], 0, (5,))),
    "VisualGridWorld": SceneInfo("GridWorld", 9, _env(
        VisualGridWorld, [Sensor("CameraSensor", (HEIGHT, WIDTH, 3), 0, CAMERA_DIMENSIONS,
                                 COMPRESSION_PNG),
                          Sensor("VectorSensor", (2,), observation_type=GOAL_SIGNAL)], 0, (5,))),
    "Reach": SceneInfo("Reach", 8, _env(Reach, [Sensor("ReachVector", (4,)),
                                               Sensor("ReachColour", (3,))], 2, (3, 2))),
}


def make_scene(name: str, agents: int | None, seed: int, max_step: int | None):
    """``(scene, behavior name)`` for one of ``SCENES``; a ValueError names the others."""
    if name not in SCENES:
        raise ValueError(f"unknown scene {name!r}; the stand-in plays: {', '.join(SCENES)}")
    info = SCENES[name]
    return info.make(agents or info.agents, seed, max_step), info.behavior


__all__ = ["SCENES", "SceneInfo", "make_scene"]
