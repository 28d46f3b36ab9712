"""The scenes of one stand-in: one part per behavior, as a Unity scene with several Behavior
Parameters (``--scene 3DBall+Basic``: 3DBall's 12 agents and Basic's one in one academy).

Each part is a catalog scene with its own agents, sensors, actions, decision period, MaxStep,
episode ends and masks; they share the academy: one clock (a part decides when
``step % its period == 0``), one message per FixedUpdate in which any part has something to
say, the side channels and commands of every answer (environment parameters, engine
configuration and RESET reach every part). As RpcCommunicator.cs does, every behavior is
subscribed from the start, so each message carries each behavior's agent list, empty when it
has nothing this frame (``SubscribeBrain`` adds the list, the send clears it and keeps the
key); its BrainParametersProto rides on the first message in which its list is not empty;
the actions of an answer go, per behavior, to that behavior's requesting agents in order.

Composite text: ``PART+PART...``, where a part is a catalog scene, optionally ``SCENE:NAME``
to give its behavior another name (``Basic:Left+Basic:Right``: two Basic areas, two
behaviors); a behavior name used twice is refused. Per-part values (``--agents``,
``--max-step``) are one number for a single scene, or a ``+``-joined list with one entry per
part (``4+1``); for a composite, a missing value keeps each part's own default.

Sensor faults (``bad-shape``, ``nan-after``, ``two-behaviors``, ``image-sensor``,
``buffer-sensor``, ``uncompressed-images``) shape the first part only; message faults act on
the whole process.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from mlagents_envs.communicator_objects.brain_parameters_pb2 import ActionSpecProto, BrainParametersProto

from jppo.standin.catalog import SCENES, make_scene
from jppo.standin.scenes import Sensor
from jppo.standin.wire import InfoEncoder

# The extra sensors of the image-sensor and buffer-sensor faults: a small camera, and a
# BufferSensor of up to 4 entities of 6 floats (DimensionProperty VariableSize, None).
EXTRA_SENSORS = {"image-sensor": Sensor("CameraSensor", (8, 8, 3), 0, (2, 2, 1)),
                 "buffer-sensor": Sensor("BufferSensor_size6", (4, 6), 0, (4, 1))}
SEED_STRIDE = 1_000_003  # part i plays seed + i * SEED_STRIDE: its own random stream
_SEED_MOD = 2 ** 31


def split_parts(scene: str) -> list[tuple[str, str]]:
    """``"3DBall+Basic:Other"`` -> [("3DBall", "3DBall"), ("Basic", "Other")] (scene,
    behavior name without the team suffix); a ValueError names what is wrong."""
    parts = []
    for text in scene.split("+"):
        name, _, behavior = text.partition(":")
        if name not in SCENES:
            raise ValueError(f"unknown scene {name!r} in {scene!r}; the stand-in plays: "
                             f"{', '.join(SCENES)} (several as A+B)")
        behavior = behavior or SCENES[name].behavior
        if not behavior or any(c in behavior for c in "?+:= "):
            raise ValueError(f"behavior name {behavior!r} in {scene!r}: a name without ?+:= "
                             "or spaces")
        if any(behavior == b for _, b in parts):
            raise ValueError(f"scene {scene!r} names behavior {behavior!r} twice; give each part "
                             "its own name as SCENE:NAME (e.g. Basic:Left+Basic:Right)")
        parts.append((name, behavior))
    return parts


def per_part(value, parts: int, flag: str) -> list[int | None]:
    """``None``, an int, ``"4+1"`` or a sequence -> one value (or None: the scene's own) per
    part; a ValueError names the flag when the count of values is not the count of parts."""
    if value is None:
        return [None] * parts
    if isinstance(value, str):
        try:
            value = [int(v) for v in value.split("+")]
        except ValueError:
            raise ValueError(f"{flag} {value!r}: a number, or one per scene joined by '+'") from None
    elif not isinstance(value, Sequence):
        value = [int(value)] * parts if parts == 1 else [int(value)]
    if len(value) != parts:
        raise ValueError(f"{flag} {'+'.join(map(str, value))}: {len(value)} value(s) for {parts} "
                         f"scene(s); give one per scene joined by '+' (e.g. "
                         f"{'+'.join(['4'] * parts)})")
    if any(v is not None and v < 1 for v in value):
        raise ValueError(f"{flag} {'+'.join(map(str, value))}: each must be at least 1")
    return list(value)


class Part:
    """One behavior group of the stand-in: a catalog scene, its behaviors (``groups``: (name,
    first agent, end); two under the two-behaviors fault), its sensors as sent (faults
    applied), the masks of its last decision requests, and its frames' state for the loop
    (``ended``: the terminal infos queued by the last frame)."""

    def __init__(self, name: str, behavior: str, scene, fault_kind: str | None = None):
        self.name, self.behavior, self.scene = name, behavior, scene
        n = scene.n
        # The two-behaviors fault gives the second half of the agents another behavior name
        # (the agent count, and so the compiled physics, stay).
        half = n // 2 if fault_kind == "two-behaviors" else n
        self.groups = ([(f"{behavior}?team=0", 0, half)]
                       + ([(f"{behavior}Copy?team=0", half, n)] if half < n else []))
        sensors = list(scene.sensors)
        if fault_kind == "bad-shape":  # the first sensor one float short
            size = sensors[0].shape[0] - 1
            sensor_name = (f"VectorSensor_size{size}"
                           if sensors[0].name.startswith("VectorSensor_size") else sensors[0].name)
            sensors[0] = sensors[0]._replace(name=sensor_name, shape=(size,))
        if fault_kind in EXTRA_SENSORS:
            sensors.append(EXTRA_SENSORS[fault_kind])
        if fault_kind == "uncompressed-images":  # a camera set to compression None: raw floats
            sensors = [s._replace(compression=0) for s in sensors]
        self.sensors = sensors
        self.nan_fault = fault_kind == "nan-after"
        self._encoder = InfoEncoder(sensors)
        self.allowed = None  # the masks of the last decision requests
        self.ended = None
        self.brains_sent: set[str] = set()

    @property
    def period(self) -> int:
        return self.scene.decision_period

    def decides(self, step: int) -> bool:
        return step % self.period == 0

    def _infos(self, ids, obs: list, rewards, done: bool, maxed, allowed, nan: bool) -> list[bytes]:
        """Encoded AgentInfoProtos of several agents (``obs``: one array per scene sensor);
        the faults' sensors are shaped here, and ``nan`` replaces the observations."""
        m = len(ids)
        # A behavior with none of the frame's ended agents has empty arrays: sized explicitly.
        obs = [np.asarray(o, np.float32).reshape(m, int(np.prod(np.shape(o)[1:]))) for o in obs]
        obs[0] = obs[0][:, :int(np.prod(self.sensors[0].shape))]  # bad-shape
        obs += [np.zeros((m, int(np.prod(s.shape))), np.float32) for s in self.sensors[len(obs):]]
        if nan and self.nan_fault:
            obs = [np.full_like(o, np.nan) for o in obs]
        encode = self._encoder.encode
        # Images stay arrays (their encoder packs or compresses them whole); vectors as lists.
        image = [len(s.shape) == 3 for s in self.sensors]
        rows = [[o[i] if big else o[i].tolist() for o, big in zip(obs, image)] for i in range(m)]
        masks = [None] * m if allowed is None else [None if a.all() else ~a for a in allowed]
        return [encode(int(a), float(r), done, bool(x), values, mask)
                for a, r, x, values, mask in zip(ids, rewards, maxed, rows, masks)]

    def entries(self, decision: bool, nan: bool = False) -> tuple[dict, list[bytes]]:
        """This part's share of a frame's message: {behavior: encoded infos} (the terminal infos
        the last frame queued, then, on a decision step, every agent's request; every behavior
        has its list, empty or not) and the BrainParametersProtos not sent before."""
        terminals = self.scene.terminals(self.ended) if self.ended is not None else None
        decisions = self.scene.decisions() if decision else None
        if decisions is not None:
            self.allowed = decisions.masks
        agent_infos, brains = {}, []
        for behavior, lo, hi in self.groups:
            infos = []
            if terminals is not None:
                pick = (terminals.rows >= lo) & (terminals.rows < hi)
                infos += self._infos(terminals.ids[pick], [o[pick] for o in terminals.obs],
                                     terminals.reward[pick], True, terminals.maxed[pick], None, nan)
            if decisions is not None:
                pick = (decisions.rows >= lo) & (decisions.rows < hi)
                infos += self._infos(decisions.ids[pick], [o[pick] for o in decisions.obs],
                                     decisions.reward[pick], False, np.zeros(pick.sum(), bool),
                                     None if decisions.masks is None else decisions.masks[pick], nan)
            agent_infos[behavior] = infos
            if infos and behavior not in self.brains_sent:
                # Brain parameters ride on the first message that has this behavior's agents.
                branches = list(self.scene.discrete_branches)
                spec = ActionSpecProto(num_continuous_actions=self.scene.continuous_size,
                                       num_discrete_actions=len(branches),
                                       discrete_branch_sizes=branches)
                brains.append(BrainParametersProto(brain_name=behavior, is_training=True,
                                                   action_spec=spec).SerializeToString())
                self.brains_sent.add(behavior)
        return agent_infos, brains

    def actions(self, agent_actions, warn) -> tuple[np.ndarray, np.ndarray]:
        """(continuous float32 [n, c], discrete int32 [n, branches]) from an answer's
        ``agent_actions``: the i-th action of a behavior goes to its i-th requesting agent; an
        agent that got none (behavior missing, list short) acts with zeros, as in Unity.
        ``warn(text, ...)`` reports a list of the wrong length."""
        n, c, b = self.scene.n, self.scene.continuous_size, len(self.scene.discrete_branches)
        continuous, discrete = np.zeros((n, c), np.float32), np.zeros((n, b), np.int32)
        for behavior, lo, hi in self.groups:
            if behavior not in agent_actions:
                continue
            given = agent_actions[behavior].value
            if len(given) != hi - lo:
                warn("%s: %d actions for %d agents", behavior, len(given), hi - lo)
            for i, action in enumerate(given[:hi - lo]):
                values = list(action.continuous_actions or action.vector_actions_deprecated)[:c]
                continuous[lo + i, :len(values)] = values
                choices = list(action.discrete_actions)[:b]
                discrete[lo + i, :len(choices)] = choices
        return continuous, discrete

    def count_masked(self, discrete: np.ndarray) -> int:
        """The discrete choices Python made although the agent's mask forbade them (Unity would
        carry them out; the tests assert that jppo never sends one)."""
        if self.allowed is None or not discrete.shape[1]:
            return 0
        offsets = np.cumsum([0] + list(self.scene.discrete_branches))[:-1]
        chosen = self.allowed[np.arange(len(discrete))[:, None], offsets + discrete]
        return int((~chosen).sum())


def make_parts(scene: str, agents, seed: int, max_step, fault_kind: str | None) -> list[Part]:
    """The parts of ``scene`` (one catalog scene, or several joined by ``+``); ``agents`` and
    ``max_step`` as ``per_part`` reads them; the sensor fault goes to the first part."""
    names = split_parts(scene)
    counts = per_part(agents, len(names), "--agents")
    steps = per_part(max_step, len(names), "--max-step")
    parts = []
    for i, ((name, behavior), n, limit) in enumerate(zip(names, counts, steps)):
        made, _ = make_scene(name, n, part_seed(seed, i), limit)
        parts.append(Part(name, behavior, made, fault_kind if i == 0 else None))
    return parts


def seed_parts(parts: list[Part], seed: int) -> None:
    """Unity's Random.InitState(seed) from Python's initialization input, per part."""
    for i, part in enumerate(parts):
        part.scene.seed(part_seed(seed, i))


def part_seed(seed: int, i: int) -> int:
    """Part 0 plays the seed itself (a single scene as before); the others their own streams."""
    return seed if i == 0 else (seed + i * SEED_STRIDE) % _SEED_MOD


__all__ = ["EXTRA_SENSORS", "Part", "make_parts", "part_seed", "per_part", "seed_parts", "split_parts"]
