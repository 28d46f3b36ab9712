"""The scene behind the Unity 3DBall stand-in: 12 Ball3DAgents, their academy clock and side channels.

``jppo.standin.server`` speaks the protocol; this module is what Unity would be doing between
messages. One frame is one Unity FixedUpdate after its message exchange, in
``Academy.EnvironmentStep``'s order: every agent's ``OnActionReceived`` (rotate, test, SetReward,
maybe ``EndEpisode`` -> terminal info queued, ``OnEpisodeBegin``), the ``MaxStep`` test, then the
physics of the frame (for an agent that was just reset: its fresh state). The frames of one
decision period run as one jitted call (a scan over frames of a vmap over agents), because
nothing Python says between two decisions changes them unless it resets or sends side-channel
data, in which case the frames computed ahead are discarded.

Environment parameters follow the 3DBall scene: ``mass`` and ``scale`` are read by
``Ball3DAgent.SetResetParameters`` in each agent's ``OnEpisodeBegin`` (so a change reaches an agent
at its next episode), ``gravity`` goes through the callback that ``ProjectSettingsOverrides``
registers (global, immediate, float messages only). Samplers draw a new value at every read, as
``EnvironmentParametersChannel`` does.
"""
from __future__ import annotations

import struct
import uuid
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jppo.envs.ball3d_physics import Ball3DParams, Ball3DState, integrate, observe, physics_step, reset_state

# ---------------------------------------------------------------- what a scene reports
# The protocol side (``jppo.standin.server``) asks every scene the same things: its sensors and
# actions, ``advance`` one FixedUpdate (returning the terminal infos it queued), and, when it
# writes a message, ``terminals`` and ``decisions``.


class Sensor(NamedTuple):
    """One ObservationProto's description: ``name`` as Unity names the sensor, ``shape``,
    ``observation_type`` (ObservationTypeProto: 0 default, 1 goal signal), and
    ``dimension_properties`` (DimensionPropertyProto per axis: 1 none, 2 translational
    equivariance, 4 variable size), ``compression`` (CompressionTypeProto: 0 none, float
    data; 1 PNG, for images (rank 3), as a CameraSensor with its default compression)."""

    name: str
    shape: tuple
    observation_type: int = 0
    dimension_properties: tuple = (1,)
    compression: int = 0


class Terminals(NamedTuple):
    """Agents whose episode ended: scene ``rows``, agent ``ids``, final ``obs`` (one array per
    sensor), last ``reward``, ``maxed`` (MaxStep: interrupted)."""

    rows: np.ndarray
    ids: np.ndarray
    obs: list
    reward: np.ndarray
    maxed: np.ndarray


class Decisions(NamedTuple):
    """Agents requesting a decision: scene ``rows``, agent ``ids``, ``obs`` (one array per
    sensor), ``reward`` since their last decision, ``masks`` [n, sum(branches)] bool (True:
    allowed) or None."""

    rows: np.ndarray
    ids: np.ndarray
    obs: list
    reward: np.ndarray
    masks: np.ndarray | None


ENV_PARAMS_CHANNEL = uuid.UUID("534c891e-810f-11ea-a9d0-822485860400")
ENGINE_CONFIG_CHANNEL = uuid.UUID("e951342c-4f7e-11ea-b238-784f4387d1f7")
TRAINING_ANALYTICS_CHANNEL = uuid.UUID("b664a4a9-d86f-5a5f-95cb-e8353a7e8356")
OBS_SIZE = 8
HOST_WIDTH = 2 * OBS_SIZE + 4  # one row per agent of a frame's host block, see _frame
WINDOW = 5  # frames computed per call: a decision period
_BASE = Ball3DParams()


# ---------------------------------------------------------------- side channels


def split_side_channels(data: bytes) -> list[tuple[uuid.UUID, bytes]]:
    """``[16-byte UUID bytes_le][int32 LE length][payload]...`` -> [(channel id, payload)]."""
    out, offset = [], 0
    while offset < len(data):
        channel = uuid.UUID(bytes_le=bytes(data[offset:offset + 16]))
        (length,) = struct.unpack_from("<i", data, offset + 16)
        offset += 20
        payload = bytes(data[offset:offset + length])
        if len(payload) != length:
            raise ValueError(f"side channel {channel}: {length} bytes announced, {len(payload)} sent")
        out.append((channel, payload))
        offset += length
    return out


class _Reader:
    """Little-endian reads in the order Python's ``OutgoingMessage`` wrote them."""

    def __init__(self, payload: bytes):
        self.data, self.offset = payload, 0

    def int32(self) -> int:
        (value,) = struct.unpack_from("<i", self.data, self.offset)
        self.offset += 4
        return value

    def float32(self) -> float:
        (value,) = struct.unpack_from("<f", self.data, self.offset)
        self.offset += 4
        return value

    def string(self) -> str:
        n = self.int32()
        value = self.data[self.offset:self.offset + n].decode("ascii")
        self.offset += n
        return value

    def float32_list(self) -> list[float]:
        return [self.float32() for _ in range(self.int32())]


def _sampler(kind: int, r: _Reader, seed: int) -> Callable[[], float]:
    """C#'s SamplerFactory: uniform, gaussian or multi-range uniform, seeded, one draw per call."""
    rng = np.random.default_rng(seed)
    if kind == 0:
        lo, hi = r.float32(), r.float32()
        return lambda: float(rng.uniform(lo, hi))
    if kind == 1:
        mean, std = r.float32(), r.float32()
        return lambda: float(rng.normal(mean, std))
    if kind == 2:
        bounds = np.asarray(r.float32_list(), np.float64).reshape(-1, 2)
        widths = bounds[:, 1] - bounds[:, 0]

        def draw() -> float:
            # An interval is picked in proportion to its width, then a point inside it.
            i = rng.choice(len(bounds), p=widths / widths.sum())
            return float(rng.uniform(bounds[i, 0], bounds[i, 1]))
        return draw
    raise ValueError(f"unknown sampler type {kind}")


class EnvironmentParameters:
    """Unity's EnvironmentParametersChannel: key -> value or sampler, plus float callbacks."""

    def __init__(self):
        self._values: dict[str, tuple[bool, Callable[[], float]]] = {}  # key -> (sampled, read)
        self.callbacks: dict[str, Callable[[float], None]] = {}
        self.received: list[bytes] = []  # every message as it came, for tests to compare

    def on_message(self, payload: bytes) -> None:
        self.received.append(bytes(payload))
        r = _Reader(payload)
        key, kind = r.string(), r.int32()
        if kind == 0:  # FLOAT
            value = r.float32()
            self._values[key] = (False, lambda: value)
            if key in self.callbacks:
                self.callbacks[key](value)
        elif kind == 1:  # SAMPLER
            seed, sampler_kind = r.int32(), r.int32()
            self._values[key] = (True, _sampler(sampler_kind, r, seed))
        else:
            raise ValueError(f"environment parameter {key!r}: unknown data type {kind}")

    def get(self, key: str, default: float) -> float:
        """``GetWithDefault``: a sampler draws anew at every call."""
        return self._values[key][1]() if key in self._values else default

    def is_sampled(self, key: str) -> bool:
        return self._values.get(key, (False, None))[0]


ENGINE_FIELDS = {0: ("width", "height"), 1: ("quality_level",), 2: ("time_scale",),
                 3: ("target_frame_rate",), 4: ("capture_frame_rate",)}


def parse_engine_config(payload: bytes) -> dict[str, float]:
    """One EngineConfigurationChannel message -> {field: value}. Unity clamps the time scale to
    [1, 100]; the stand-in records it and otherwise ignores it: ``timeScale`` changes how many
    FixedUpdates run per wall-clock second, never the 0.02 s physics step a decision sees."""
    r = _Reader(payload)
    kind = r.int32()
    if kind not in ENGINE_FIELDS:
        raise ValueError(f"unknown engine configuration type {kind}")
    if kind == 2:
        return {"time_scale": min(max(r.float32(), 1.0), 100.0)}
    return {name: r.int32() for name in ENGINE_FIELDS[kind]}


# ---------------------------------------------------------------- the jitted physics


class Carry(NamedTuple):
    """Device-side scene state, one row per agent: the physics, the action being repeated between
    decisions, and the ball's mass and scale for the current episode."""

    state: Ball3DState
    action: jax.Array
    mass: jax.Array
    scale: jax.Array


def _params(mass, scale, gravity, max_step) -> Ball3DParams:
    return _BASE._replace(mass=mass, scale=scale, gravity=gravity, max_physics_steps=max_step)


def _fresh(key, mass, scale, gravity):
    """OnEpisodeBegin, then the frame's physics (it runs after the reset, in the same frame)."""
    params = _params(mass, scale, gravity, _BASE.max_physics_steps)
    return integrate(reset_state(key, params), params)


def _frame(carry: Carry, next_mass, next_scale, gravity, key, count, max_step):
    """All agents, one FixedUpdate: OnActionReceived, the MaxStep test, then physics. Returns
    (carry, host float32 [N, HOST_WIDTH]) where a row is [terminal obs (8), reward, fell,
    max_step_reached, obs after the frame (8), pending reward]. ``count`` numbers the frame's
    reset draws (folded into ``key`` here: an eager fold_in costs more than a frame)."""
    step = jax.vmap(lambda s, a, m, sc: physics_step(s, a, _params(m, sc, gravity, max_step)))
    stepped, reward, fell = step(carry.state, carry.action, carry.mass, carry.scale)
    # Agent.AgentStep tests MaxStep after OnActionReceived; a fall has already reset the count.
    maxed = ~fell & (stepped.step_count >= max_step)
    ended = fell | maxed

    def with_resets(_):
        keys = jax.random.split(jax.random.fold_in(key, count), ended.shape[0])
        fresh = jax.vmap(_fresh, in_axes=(0, 0, 0, None))(keys, next_mass, next_scale, gravity)
        return jax.tree_util.tree_map(
            lambda a, b: jnp.where(ended.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), fresh, stepped)

    # Most frames end no episode: skip drawing and integrating fresh states for them.
    new = jax.lax.cond(ended.any(), with_resets, lambda _: stepped, None)
    # m_Reward for the next decision request: SetReward overwrote it this frame, unless
    # NotifyAgentDone sent it with the terminal info and zeroed it.
    pending = jnp.where(ended, 0.0, reward)
    obs = jax.vmap(observe)
    host = jnp.concatenate([obs(stepped), reward[:, None], fell[:, None].astype(jnp.float32),
                            maxed[:, None].astype(jnp.float32), obs(new), pending[:, None]], axis=1)
    carry = Carry(new, jnp.where(ended[:, None], 0.0, carry.action),  # ResetData clears actions
                  jnp.where(ended, next_mass, carry.mass), jnp.where(ended, next_scale, carry.scale))
    return carry, host


@jax.jit
def _run(carry: Carry, next_mass, next_scale, gravity, key, count, max_step, frames):
    """``frames`` (1..WINDOW) FixedUpdates in one call: a decision's frames, computed ahead of the
    terminal-only messages they may cause. Frames past ``frames`` leave the carry unchanged (one
    compiled function serves every length). Returns (carry, carries after each frame, hosts
    [WINDOW, N, HOST_WIDTH]); ``count`` numbers the frames' reset draws (count + frame)."""
    def one(c, i):
        new, host = _frame(c, next_mass, next_scale, gravity, key, count + i, max_step)
        new = jax.tree_util.tree_map(lambda a, b: jnp.where(i < frames, a, b), new, c)
        return new, (new, host)

    carry, (stack, hosts) = jax.lax.scan(one, carry, jnp.arange(WINDOW))
    return carry, stack, hosts


@jax.jit
def _pick(stack: Carry, frame) -> Carry:
    """The carry after ``frame`` from ``_run``'s stacked carries (one call, not one per leaf)."""
    return jax.tree_util.tree_map(lambda x: x[frame], stack)


@jax.jit
def _reset_all(key, count, mass, scale, step_count):
    """Every agent's OnEpisodeBegin (the academy's forced reset): states and their observations."""
    keys = jax.random.split(jax.random.fold_in(key, count), mass.shape[0])
    params = jax.vmap(lambda m, s: _BASE._replace(mass=m, scale=s))(mass, scale)
    states = jax.vmap(reset_state)(keys, params)
    states = states._replace(step_count=jnp.full_like(states.step_count, step_count))
    return states, jax.vmap(observe)(states)


# ---------------------------------------------------------------- the scene


class Scene:
    """``n`` agents of 3DBall with Unity's per-agent bookkeeping; numpy views for the protocol.

    ``obs`` float32 [n, 8] and ``reward`` float32 [n] are what a decision request reports now.
    """

    decision_period = 5  # DecisionRequester.DecisionPeriod
    sensors = [Sensor(f"VectorSensor_size{OBS_SIZE}", (OBS_SIZE,))]
    continuous_size, discrete_branches = 2, ()

    def __init__(self, n: int, seed: int = 0, max_step: int = _BASE.max_physics_steps):
        self.n, self.max_step = n, int(max_step)
        self.ids = np.arange(n)
        self.params = EnvironmentParameters()
        self.gravity = float(_BASE.gravity)
        self.params.callbacks["gravity"] = self._set_gravity
        self.engine_config: dict[str, float] = {}
        self.seed(seed)
        self._zeros = jnp.zeros((n, 2), jnp.float32)
        self._next = None
        self.carry: Carry | None = None  # after the last frame computed (consumed or not)
        self._ahead, self._used, self._before, self._stack = None, 0, None, None
        self.obs = np.zeros((n, OBS_SIZE), np.float32)
        self.reward = np.zeros(n, np.float32)  # m_Reward is 0 before any OnActionReceived

    def _set_gravity(self, value: float) -> None:
        self.gravity = float(value)  # ProjectSettingsOverrides: Physics.gravity = (0, -g, 0)

    def seed(self, seed: int) -> None:
        """Unity's Random.InitState(seed), from Python's initialization input."""
        self._key = jax.random.PRNGKey(seed)
        self._draws = 0  # numbers folded into the key: every reset draw has its own stream

    def _next_params(self):
        """Device copies of each agent's next-episode mass and scale. Constant parameters are
        read once per change; a sampler is redrawn after the agents that used its draws reset."""
        if self._next is None:
            draw = lambda key, default: jnp.asarray(
                [self.params.get(key, default) for _ in range(self.n)], jnp.float32)
            self._next = (draw("mass", _BASE.mass), draw("scale", _BASE.scale))
        return self._next

    def on_side_channels(self, data: bytes) -> None:
        """Dispatch Python's side-channel block: environment parameters, engine configuration;
        the training-analytics channel and unknown channels are accepted and ignored (Unity logs
        a warning for unknown ones)."""
        for channel, payload in split_side_channels(data):
            if channel == ENV_PARAMS_CHANNEL:
                self.params.on_message(payload)
                self._next = None
            elif channel == ENGINE_CONFIG_CHANNEL:
                self.engine_config.update(parse_engine_config(payload))

    def reset_all(self, mid_step: bool) -> None:
        """Academy.ForcedFullReset: every agent's _AgentReset (no terminal info is sent).

        ``mid_step``: the reset arrived inside a FixedUpdate (a RESET answer to a message); that
        frame's OnActionReceived and physics still follow, but Unity had already counted the
        frame, so the new episodes start their step count at -1 to be at 0 after it.
        """
        self._assert_caught_up()
        mass, scale = self._next_params()
        self._draws += 1
        states, obs = _reset_all(self._key, self._draws, mass, scale, -1 if mid_step else 0)
        action = self._zeros if self.carry is None else self.carry.action
        self.carry = Carry(states, action, mass, scale)
        if self._sampled():
            self._next = None  # every agent used its draw
        self.obs = np.asarray(obs)
        if not mid_step:
            self.reward = np.zeros(self.n, np.float32)  # no OnActionReceived has run yet

    def set_actions(self, actions, discrete=None) -> None:
        """The actions to repeat until the next decision, float32 [n, 2] (no discrete ones)."""
        self._assert_caught_up()
        self.carry = self.carry._replace(action=jnp.asarray(actions, jnp.float32))

    def warm_up(self) -> None:
        """Compile the jitted frames before connecting, so Python's first reset does not wait."""
        self.reset_all(mid_step=False)
        self.advance(self.decision_period)
        self.discard_lookahead()
        self.carry = None

    def clear_actions(self) -> None:
        """A decision request that got no actions back: every agent acts with zeros."""
        self._assert_caught_up()
        self.carry = self.carry._replace(action=self._zeros)

    def advance(self, horizon: int) -> Terminals | None:
        """The next FixedUpdate's actions and physics; the terminal infos it queued, or None.

        Frames are computed ``horizon`` (1..WINDOW, the frames up to the next decision) at a
        time; they stay valid as long as nothing reaches the scene in between, which only a
        RESET or side-channel data in an answer to a terminal-only message can do (then the
        protocol calls ``discard_lookahead``).
        """
        if self._ahead is None or self._used == len(self._ahead):
            self._compute(horizon)
        host = self._ahead[self._used]
        self._used += 1
        self.obs = host[:, OBS_SIZE + 3:2 * OBS_SIZE + 3]
        self.reward = host[:, -1]
        ended = np.flatnonzero(host[:, OBS_SIZE + 1:OBS_SIZE + 3].any(axis=1))
        if not len(ended):
            return None
        rows = host[ended]
        return Terminals(ended, self.ids[ended], [rows[:, :OBS_SIZE]], rows[:, OBS_SIZE],
                         rows[:, OBS_SIZE + 2] > 0)

    def terminals(self, ended: Terminals) -> Terminals:
        """The terminal infos of a message, from what ``advance`` returned."""
        return ended

    def decisions(self) -> Decisions:
        """Every agent requests a decision (on a decision step)."""
        return Decisions(np.arange(self.n), self.ids, [self.obs], self.reward, None)

    def discard_lookahead(self) -> None:
        """Rewind the carry to the last frame handed out and forget the frames after it."""
        if self._ahead is not None and self._used < len(self._ahead):
            self.carry = self._before if self._used == 0 else _pick(self._stack, self._used - 1)
        self._ahead = None

    def _compute(self, frames: int) -> None:
        mass, scale = self._next_params()
        self._before = self.carry
        self.carry, self._stack, hosts = _run(self.carry, mass, scale, self.gravity, self._key,
                                              self._draws + 1, self.max_step, frames)
        self._draws += WINDOW
        self._ahead, self._used = np.asarray(hosts)[:frames], 0
        if self._sampled() and self._ahead[:, :, OBS_SIZE + 1:OBS_SIZE + 3].any():
            self._next = None  # the agents that reset used their draws

    def _sampled(self) -> bool:
        return self.params.is_sampled("mass") or self.params.is_sampled("scale")

    def _assert_caught_up(self) -> None:
        assert self._ahead is None or self._used == len(self._ahead), "frames computed ahead"
